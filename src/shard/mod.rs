//! The per-core world: `Shard` owns this core's users (seq counters, acks, streams), their send
//! queues, the channel member cache, the counters and the storage handle, and offers named
//! operations on them (attach, replay, publish, ack, subscribe, ...) and the idle-user sweep
//! that keeps memory bounded by users in use (`evict.rs`). It knows nothing of
//! transports, other cores or other nodes: the router above it does. Runs on its core's
//! executor only; everything inside is `Rc`/`RefCell`, so nothing here can be shared by mistake.

mod channels;
pub mod conn;
mod evict;
pub mod idem;
mod publish;
mod streams;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::config::Config;
use crate::ids::{ConnId, ShardId};
use crate::protocol::MsgBody;
use crate::stats::{Counters, Latencies, Sampler, Stamp};
use crate::storage::{Storage, StorageError, Store, UserMeta};
use channels::Channel;
use conn::Conn;

pub use streams::AttachError;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Set<K> = HashSet<K, ahash::RandomState>;

/// Default message lifetime: 7 days.
pub const DEFAULT_TTL: u64 = 604_800;

/// A user of this core. Created on first touch; its meta is loaded from storage, again after
/// an idle eviction (`evict.rs`). Public only as a type (its size is part of the memory
/// budget); its fields are the shard's.
pub struct User {
    uid: Rc<str>,
    meta: Cell<UserMeta>,
    /// Every seq up to this one is settled: written (then delivered live, if the user had a
    /// stream) or failed (never shown). Seqs above it are in flight; a stream shows nothing
    /// above it, and replay reads up to it.
    durable: Cell<u64>,
    loaded: Cell<bool>,
    /// Used since the idle sweep last looked at it.
    touched: Cell<bool>,
    /// In the idle queue (once at most).
    queued: Cell<bool>,
    /// A write of its state failed: memory is ahead of the store, so it is never evicted.
    unsynced: Cell<bool>,
    /// Its stream. A `Cell` (taken and put back), not a `RefCell`: a user is 16 bytes smaller
    /// in the allocator, and most of a core's users are offline.
    conn: Cell<Option<Rc<Conn>>>,
}

impl User {
    fn conn(&self) -> Option<Rc<Conn>> {
        let conn = self.conn.take();
        self.conn.set(conn.clone());
        conn
    }

    fn streams(&self) -> bool {
        let conn = self.conn.take();
        let streams = conn.is_some();
        self.conn.set(conn);
        streams
    }
}

/// A message whose write landed, and when it was published (for the publish-to-written
/// histogram).
type Written = (Rc<MsgBody>, Stamp);

/// One user's settled seqs waiting for an earlier one: None where the write failed.
type Held = BTreeMap<u64, Option<Written>>;

pub struct Shard {
    id: ShardId,
    cfg: Arc<Config>,
    store: Store,
    stats: Counters,
    lat: Latencies,
    /// Wall clock at start, unix microseconds.
    started_unix_us: u64,
    started: Instant,
    conn_limit: usize,
    users: RefCell<Map<Rc<str>, Rc<User>>>,
    /// Users that may be idle, oldest first, with the shard clock when queued (`evict.rs`).
    idle: RefCell<VecDeque<(u32, Weak<User>)>>,
    /// Tasks waiting for a user whose meta is being loaded (kept here, not in every `User`).
    loading: RefCell<Map<Rc<str>, Vec<Waker>>>,
    channels: RefCell<Map<Rc<str>, Channel>>,
    conns: RefCell<Map<ConnId, Rc<Conn>>>,
    next_conn: Cell<u64>,
    sampler: RefCell<Sampler>,
    closing: Cell<bool>,
    /// Streams with queued messages, for the flusher; each appears once (`Conn::dirty`).
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// The flusher, parked while `dirty` is empty.
    flusher: RefCell<Option<Waker>>,
    /// Idempotency keys whose first publish is in flight here.
    in_flight: idem::InFlight,
    /// Writes settled before an earlier one of the same user, waiting to be released in seq
    /// order: seq -> the message (and when it was published) if it was written, None if its write failed. Empty unless a
    /// backend completes writes out of order (scylla can).
    held: RefCell<Map<Rc<str>, Held>>,
}

impl Shard {
    /// This core's state; `cores` is the node's core count (the connection limit is split
    /// evenly between cores).
    pub fn new(
        id: ShardId,
        cores: usize,
        cfg: Arc<Config>,
        store: Store,
        started_unix_us: u64,
    ) -> Self {
        Shard {
            id,
            conn_limit: cfg.max_connections.div_ceil(cores.max(1)),
            cfg,
            store,
            stats: Counters::default(),
            lat: Latencies::default(),
            started_unix_us,
            started: Instant::now(),
            users: RefCell::default(),
            idle: RefCell::default(),
            loading: RefCell::default(),
            channels: RefCell::default(),
            conns: RefCell::default(),
            next_conn: Cell::new(1),
            sampler: RefCell::default(),
            closing: Cell::new(false),
            dirty: RefCell::default(),
            flusher: RefCell::default(),
            in_flight: idem::InFlight::default(),
            held: RefCell::default(),
        }
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Counters {
        &self.stats
    }

    /// This core's latency histograms.
    pub fn latency(&self) -> &Latencies {
        &self.lat
    }

    /// See `Store::set_corked`: set around the start of a batch of publishes.
    pub fn cork_store(&self, on: bool) {
        self.store.set_corked(on);
    }

    pub fn bump(&self, c: &Cell<u64>) {
        c.set(c.get() + 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, c: &Cell<u64>, n: u64) {
        c.set(c.get() + n);
    }

    /// The node's per-second maxima (sampled by core 0).
    pub fn sampler(&self) -> &RefCell<Sampler> {
        &self.sampler
    }

    /// Wall clock at start, unix microseconds.
    pub fn started_unix_us(&self) -> u64 {
        self.started_unix_us
    }

    /// Seconds since this core started (the clock of heartbeats).
    pub fn clock(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Drops expired messages from storage; the number dropped.
    pub async fn purge_expired(&self) -> Result<usize, StorageError> {
        let n = self.store.purge_expired(crate::stats::unix_now()).await?;
        self.add(&self.stats.purged, n as u64);
        Ok(n)
    }

    /// Whether this core's store answers now (a quick read, for `/health`).
    pub async fn check_store(&self) -> Result<(), StorageError> {
        self.store.check().await
    }

    /// Flushes and closes the store (the last step of a core's shutdown).
    pub async fn close_store(&self) -> Result<(), StorageError> {
        self.store.close().await
    }

    /// The user, its meta loaded (once; concurrent callers wait for the first load).
    async fn user(&self, uid: &str) -> Result<Rc<User>, StorageError> {
        loop {
            let existing = self.users.borrow().get(uid).cloned();
            match existing {
                Some(u) if u.loaded.get() => {
                    u.touched.set(true);
                    if u.unsynced.get() && u.durable.get() == u.meta.get().max_seq {
                        return self.reload_user(u).await;
                    }
                    return Ok(u);
                }
                Some(u) => self.wait_loaded(&u).await,
                None => return self.load_user(uid).await,
            }
        }
    }

    /// Waits for another task's load of `u` to end (it may fail: the caller looks again).
    async fn wait_loaded(&self, u: &User) {
        let mut registered = false;
        poll_fn(|cx| {
            if u.loaded.get() || registered {
                return Poll::Ready(());
            }
            registered = true;
            self.loading
                .borrow_mut()
                .entry(u.uid.clone())
                .or_default()
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    async fn load_user(&self, uid: &str) -> Result<Rc<User>, StorageError> {
        let uid: Rc<str> = Rc::from(uid);
        let user = Rc::new(User {
            uid: uid.clone(),
            meta: Cell::default(),
            durable: Cell::new(0),
            loaded: Cell::new(false),
            touched: Cell::new(false),
            queued: Cell::new(false),
            unsynced: Cell::new(false),
            conn: Cell::default(),
        });
        self.users.borrow_mut().insert(uid.clone(), user.clone());
        self.count_resident();
        let res = self.store.load_user(&uid).await;
        match &res {
            Ok(meta) => {
                user.meta.set(*meta);
                // What storage holds was written before.
                user.durable.set(meta.max_seq);
                user.loaded.set(true);
                self.queue_idle(&user);
            }
            Err(_) => {
                self.bump(&self.stats.storage_error);
                self.users.borrow_mut().remove(&uid);
                self.count_resident();
            }
        }
        let waiters = self.loading.borrow_mut().remove(&uid);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
        res.map(|_| user)
    }

    /// Reads back a user whose write failed, once none of its writes is in flight: memory may
    /// be ahead of the store (seqs given but never stored), and a store that fences (scylla)
    /// writes nothing more of the user until it is loaded again. Every seq shown was stored,
    /// so the stored highest seq is at or above each; concurrent callers wait for the load.
    async fn reload_user(&self, user: Rc<User>) -> Result<Rc<User>, StorageError> {
        user.loaded.set(false);
        let res = self.store.load_user(&user.uid).await;
        if let Ok(meta) = &res {
            user.meta.set(*meta);
            user.durable.set(meta.max_seq);
            user.unsynced.set(false);
        } else {
            self.bump(&self.stats.storage_error);
        }
        user.loaded.set(true);
        let waiters = self.loading.borrow_mut().remove(&user.uid);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
        res.map(|_| user)
    }

    /// A user already loaded on this core, without waiting.
    fn loaded_user(&self, uid: &str) -> Option<Rc<User>> {
        let u = self
            .users
            .borrow()
            .get(uid)
            .filter(|u| u.loaded.get())
            .cloned()?;
        u.touched.set(true);
        Some(u)
    }
}
