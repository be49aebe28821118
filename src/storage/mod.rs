//! The `Storage` contract every backend keeps, and `Store`, the per-core handle; runs on a core's executor.
//!
//! One `Store` belongs to one core and holds only that core's users (and their channel
//! memberships). Operations issued from one core take effect in issue order: a read sees every
//! write issued before it. The replay seam relies on this (see `shard::attach`).

mod bodies;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
pub mod log;
pub mod memory;
#[cfg(feature = "scylla")]
pub mod scylla;
mod seqlog;
mod tickets;

use std::rc::Rc;

use crate::protocol::MsgBody;

/// One message in one user's sequence.
#[derive(Debug, Clone)]
pub struct StoredMsg {
    pub seq: u64,
    /// Unix seconds after which the message is never delivered or listed.
    pub expires_at: u64,
    pub body: Rc<MsgBody>,
}

/// The durable part of a user's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserMeta {
    /// Highest seq ever given to the user (0 = none yet).
    pub max_seq: u64,
    pub last_ack: u64,
}

/// A publish made with an idempotency key, kept until `expires_at` so a repeat answers the
/// same (see `shard::idem`). Stored with the message it published (unicast) or alone (ttl 0,
/// and the deciding core of a channel publish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// `u:<uid> <key>` or `c:<channel> <key>`: the destination and the key.
    pub id: String,
    /// `shard::idem::fingerprint` of from, ttl and body: a repeat must match it.
    pub fingerprint: u64,
    /// The first answer: the seq given (0 = none, ttl 0) or the members reached.
    pub answer: u64,
    /// Unix seconds; after it the key is free again.
    pub expires_at: u64,
}

/// What a fenced store says of a user whose slot this member does not serve (at the epoch
/// its routing thought): refused before anything was written, so the request may follow the
/// slot elsewhere.
pub const NOT_SERVED: &str = "this member does not serve its slot now";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage corrupt: {0}")]
    Corrupt(String),
}

/// The operations the per-core code needs. Futures are `!Send`: they run on the calling core.
#[allow(async_fn_in_trait)]
pub trait Storage {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError>;
    /// Stores `body` once for every `(uid, seq)` in `entries`.
    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError>;
    /// `append` of a one-recipient message together with its idempotency record, in one
    /// write (so a restart finds both or neither).
    async fn append_keyed(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
        idem: &IdemRecord,
    ) -> Result<(), StorageError>;
    /// Records an idempotency key whose publish stored no message here.
    async fn put_idem(&self, idem: &IdemRecord) -> Result<(), StorageError>;
    /// The unexpired record of `id`, if any.
    async fn idem_get(&self, id: &str, now: u64) -> Result<Option<IdemRecord>, StorageError>;
    /// Idempotency records held in this core's memory (0 for a backend that keeps them in
    /// the database), for the per-core cap.
    fn idem_held(&self, now: u64) -> usize;
    /// Records `last_ack`; messages at or below it may be dropped by the backend.
    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError>;
    /// The newest `limit` unexpired messages with `after < seq <= upto`, in ascending seq.
    async fn offline(
        &self,
        uid: &str,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<StoredMsg>, StorageError>;
    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError>;
    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError>;
    /// This core's members of `cid`.
    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError>;
    /// Drops expired messages; returns how many.
    async fn purge_expired(&self, now: u64) -> Result<usize, StorageError>;
    /// Makes every earlier write durable (no-op for memory).
    async fn flush(&self) -> Result<(), StorageError>;
    /// Whether the backend answers now (for `/health`); quick, and without waiting for
    /// writes in flight. Local backends are always up.
    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Flushes and releases the backend's threads and files (at shutdown).
    async fn close(&self) -> Result<(), StorageError> {
        self.flush().await
    }
}

/// The backend chosen by `--storage`, one per core. An enum rather than `dyn` because the
/// trait's async methods are not object safe and the match costs nothing on the hot path.
pub enum Store {
    Memory(memory::MemoryStore),
    Embedded(embedded::EmbeddedStore),
    #[cfg(feature = "scylla")]
    Scylla(scylla::ScyllaStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Embedded($s) => $e,
            #[cfg(feature = "scylla")]
            Store::Scylla($s) => $e,
        }
    };
}

impl Store {
    /// While `on`, the embedded store queues appends for its committer instead of writing
    /// each at once: the publishes of a batch, started in one poll, share one write.
    pub fn set_corked(&self, on: bool) {
        if let Store::Embedded(s) = self {
            s.set_corked(on);
        }
    }
}

impl Storage for Store {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError> {
        delegate!(self, s => s.load_user(uid).await)
    }
    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        delegate!(self, s => s.append(body, expires_at, entries).await)
    }
    async fn append_keyed(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
        idem: &IdemRecord,
    ) -> Result<(), StorageError> {
        delegate!(self, s => s.append_keyed(body, expires_at, entries, idem).await)
    }
    async fn put_idem(&self, idem: &IdemRecord) -> Result<(), StorageError> {
        delegate!(self, s => s.put_idem(idem).await)
    }
    async fn idem_get(&self, id: &str, now: u64) -> Result<Option<IdemRecord>, StorageError> {
        delegate!(self, s => s.idem_get(id, now).await)
    }
    fn idem_held(&self, now: u64) -> usize {
        delegate!(self, s => s.idem_held(now))
    }
    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError> {
        delegate!(self, s => s.set_ack(uid, last_ack).await)
    }
    async fn offline(
        &self,
        uid: &str,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<StoredMsg>, StorageError> {
        delegate!(self, s => s.offline(uid, after, upto, limit, now).await)
    }
    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        delegate!(self, s => s.subscribe(cid, uid).await)
    }
    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        delegate!(self, s => s.unsubscribe(cid, uid).await)
    }
    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        delegate!(self, s => s.channel_members(cid).await)
    }
    async fn purge_expired(&self, now: u64) -> Result<usize, StorageError> {
        delegate!(self, s => s.purge_expired(now).await)
    }
    async fn flush(&self) -> Result<(), StorageError> {
        delegate!(self, s => s.flush().await)
    }
    async fn check(&self) -> Result<(), StorageError> {
        delegate!(self, s => s.check().await)
    }
    async fn close(&self) -> Result<(), StorageError> {
        delegate!(self, s => s.close().await)
    }
}
