//! The `Storage` contract every backend keeps, and `Store`, the per-core handle; runs on a core's executor.
//!
//! One `Store` belongs to one core and holds only that core's users (and their channel
//! memberships). Operations issued from one core take effect in issue order: a read sees every
//! write issued before it. The replay seam relies on this (see `shard::attach`).

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod embedded;
pub mod log;
pub mod memory;
pub mod scylla;

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
    Scylla(scylla::ScyllaStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Embedded($s) => $e,
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
