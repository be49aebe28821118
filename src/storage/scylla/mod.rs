//! `--storage=scylla`: one core's users in ScyllaDB / Apache Cassandra. `ScyllaStore` runs on
//! its core's executor; the driver runs on a bridge thread of its own (one per core, a
//! current-thread tokio runtime, one `Session`).
//!
//! # The bridge
//! The core queues its requests (a core-local `Vec`, no lock) and sends them to the bridge in
//! batches over an unbounded tokio mpsc channel: the first request of a turn spawns a task
//! that runs after the tasks already runnable, so everything the core issues in one executor
//! turn crosses with one send and one wake of the bridge's runtime (a full batch of
//! `SEND_BATCH` goes at once). Each request carries a `tokio::sync::oneshot` sender for its
//! answer; the bridge's tasks do not complete it themselves (that would wake the core from a
//! foreign thread once per request) but hand it with its result to a forwarder task, which
//! sends whatever has accumulated in one runtime turn back to the core as one batch; a task
//! on the core completes the oneshots there, so each waiting task is woken locally. One
//! foreign wake each way per batch instead of per request. The channel's send is lock-free;
//! it is unbounded because what it carries is bounded by the tasks that await the answers
//! (one per request in progress on the core), and statements in flight are bounded on the
//! bridge (`MAX_STATEMENTS`). Core and bridge share no lock of ours (waking the bridge's
//! runtime from the core takes tokio's own, uncontended, run-queue mutex once per batch).
//! Every statement is prepared once at open, runs with `--scylla_consistency` and under
//! `--scylla_timeout_ms` (a driver request timeout and a tokio timeout around it), as does
//! session creation. Errors come back as `StorageError::Unavailable("scylla: ...")`.
//!
//! # Ordering (the `Storage` contract: a read sees every write issued before it)
//! The bridge takes requests in issue order. Writes are pipelined (started at once, many in
//! flight, at most `MAX_STATEMENTS` statements per core), except that each user has one write
//! of its messages in flight: what arrives meanwhile waits and goes out as the next batch
//! (`users.rs`). Pipelining is safe because every write commutes with every other one issued
//! by this core: message rows and bodies have distinct keys, and every cell of a user is
//! written `USING TIMESTAMP fence(epoch, value)` — a row by its seq, the static `max_seq` and
//! `last_ack` by their value (so the highest wins whatever the arrival order), a membership
//! change by a millisecond clock that increases in issue order (so subscribe-then-unsubscribe
//! ends unsubscribed even if the two arrive reversed). A read first waits until every write
//! issued before it has completed, then runs (reads run concurrently with one another and with
//! later writes); a write being sent again because its outcome is unknown is not waited for
//! (its user's reads and writes are refused meanwhile). `flush` waits for every earlier write,
//! `close` for everything but such retries, and then stops the thread.
//!
//! # Fencing (rules 4–7 of `cluster::ownership`; `users.rs`)
//! `open_fenced` takes the dynamic cluster's `Fences`: a user is written at the epoch its slot
//! is held at, and only if that is the epoch it was loaded at; a load of a user last written at
//! an older epoch writes its highest seq back at `shadow(epoch)` first; an answer is an `ok`
//! only if it came back within the lease while the slot is still held at that epoch. `open`
//! (the static cluster) is the same at a fixed epoch 0, always held and within the lease, with
//! no shadow (no other member ever writes its users). It writes fenced timestamps too: one set
//! of statements, and a keyspace that later serves a dynamic cluster orders its old cells below
//! every epoch's. After a write that failed, or whose answer was not an `ok`, a user must be
//! loaded again before anything more of it is written (the core's memory may be ahead of the
//! store; the shard reloads it), so its stored seqs stay `1..=max_seq`.
//!
//! # Acks
//! `set_ack` is one `UPDATE users USING TIMESTAMP fence(epoch, last_ack) SET last_ack = ?`:
//! last-write-wins by timestamp keeps the maximum, so acks are monotonic without a
//! read-modify-write or a lightweight transaction (the owning core is the only writer anyway).
//! Acked messages are not deleted (no range tombstones); `offline` reads `last_ack` alongside
//! and hides them, and their TTL removes them.
//!
//! # Failures
//! Before any core starts, `schema::check_blocking` (on the main thread) connects, retrying
//! for a bounded time, and checks the keyspace against the columns the queries use: missing
//! tables are created with `--scylla_init_schema=true` or stop the server with both remedies
//! named; another layout always stops it, and nothing is altered. While serving, a database
//! that does not answer within the timeout gives `StorageError::Unavailable` (503 to the
//! client); `check` (for `/health`) is a quick read that does not wait for writes in flight.
//! The driver reconnects by itself, so nothing needs restarting when the database is back.
//!
//! # Files
//! `mod.rs` the core's handle, `bridge.rs` the bridge thread, its loop and its forwarder,
//! `ops.rs` what crosses between them, `users.rs` a user's fenced writes and loads,
//! `queries.rs` the statements and their handlers, `schema.rs` the schema and start-up check.
//!
//! Schema and the reasons for its layout: `cql/create_schema.cql`.

mod bridge;
mod ops;
mod queries;
mod schema;
mod users;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use scylla::statement::Consistency;
use tokio::sync::{mpsc, oneshot};

use self::bridge::{bridge_thread, Req};
pub(crate) use self::ops::timed;
use self::ops::{Answer, BodyData, Read, Reply, Write};
pub use self::schema::{
    check_blocking, execute_blocking, schema_problems, schema_statements, CREATE_SCHEMA,
};
use self::users::Fencing;
use super::{IdemRecord, MsgBody, Storage, StorageError, StoredMsg, UserMeta};
use crate::config::ScyllaConsistency;
use crate::fencing::Fences;

/// Statements in flight per core (the bridge's pipeline depth).
pub(super) const MAX_STATEMENTS: usize = 256;
/// Requests a core queues before it sends them to the bridge without waiting for the end of
/// its turn.
const SEND_BATCH: usize = 256;
/// Rows per page when loading a channel's members.
pub(super) const MEMBER_PAGE: i32 = 5000;
/// Rows outlive `expires_at` by this much in the database, so a clock ahead of ipush's never
/// removes a message early; reads filter on `expires_at` exactly.
const TTL_GRACE_S: u64 = 60;
/// The largest TTL Cassandra and ScyllaDB accept (20 years).
const MAX_TTL_S: u64 = 630_720_000;
/// Cassandra before 5.0 rejects an expiry past 2038-01-19 (`i32` seconds); keep a day clear.
const MAX_EXPIRY_S: u64 = i32::MAX as u64 - 86_400;

/// What one core's store needs to connect.
#[derive(Debug, Clone)]
pub struct ScyllaParams {
    /// Contact points, `HOST:PORT`.
    pub nodes: Vec<String>,
    pub keyspace: String,
    pub consistency: ScyllaConsistency,
    /// Session creation and every query.
    pub timeout: Duration,
    /// This node's name (`--node`; `self` without `--nodes`), this core and the node's core
    /// count: the member shard `NODE/CORE/CORES`.
    pub node: String,
    pub core: u32,
    pub cores: u32,
}

/// The driver's consistency level for `--scylla_consistency`.
pub fn consistency(c: ScyllaConsistency) -> Consistency {
    match c {
        ScyllaConsistency::One => Consistency::One,
        ScyllaConsistency::Quorum => Consistency::Quorum,
        ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
        ScyllaConsistency::All => Consistency::All,
    }
}

/// The `channel_members.shard` of core `core` of `cores` on node `node`: one partition per
/// owning core of the whole deployment, so nodes sharing a keyspace never read each other's
/// members (see `cql/create_schema.cql`).
pub fn member_shard(node: &str, core: u32, cores: u32) -> String {
    format!("{node}/{core}/{cores}")
}

/// The `channel_members.shard` of slot `slot` in a dynamic cluster: memberships move with
/// their slot, whichever node and core serve it.
pub fn slot_shard(slot: u32) -> String {
    format!("s/{slot}")
}

/// The TTL (seconds) of a row that expires at `expires_at`, written at `now`; `None` when it
/// has already expired (then it is not written at all).
pub fn ttl_for(expires_at: u64, now: u64) -> Option<i32> {
    if expires_at <= now {
        return None;
    }
    let ttl = (expires_at - now + TTL_GRACE_S)
        .min(MAX_TTL_S)
        .min(MAX_EXPIRY_S.saturating_sub(now))
        .max(1);
    Some(ttl as i32)
}

pub(super) fn unavailable(msg: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("scylla: {msg}"))
}

// ---- the core's side ----------------------------------------------------------------------

/// Requests queued on the core during one executor turn, sent to the bridge together.
struct Outbox {
    tx: mpsc::UnboundedSender<Vec<Req>>,
    queue: RefCell<Vec<Req>>,
}

impl Outbox {
    /// Queues `req` (in issue order). The first request of a batch schedules the batch's send
    /// as a task of its own, which runs after the tasks already runnable on this core: those
    /// queue their requests first, and the whole batch crosses with one wake of the bridge.
    fn push(self: &Rc<Self>, req: Req) {
        let len = {
            let mut q = self.queue.borrow_mut();
            q.push(req);
            q.len()
        };
        if len >= SEND_BATCH {
            self.send();
        } else if len == 1 {
            let me = self.clone();
            glommio::spawn_local(async move { me.send() }).detach();
        }
    }

    /// Sends what is queued. If the bridge thread has stopped, the requests are dropped and
    /// their callers see their replies closed.
    fn send(&self) {
        let batch = std::mem::take(&mut *self.queue.borrow_mut());
        if !batch.is_empty() {
            let _ = self.tx.send(batch);
        }
    }
}

/// Completes on the core the replies the bridge sends back, a batch at a time (each batch is
/// one wake of this core from the bridge thread; each reply then wakes its task locally).
async fn deliver_answers(mut rx: mpsc::UnboundedReceiver<Vec<Answer>>) {
    while let Some(batch) = rx.recv().await {
        for answer in batch {
            answer.deliver();
        }
    }
}

/// One core's handle on the database. Lives on the core; the driver lives on its bridge thread.
pub struct ScyllaStore {
    outbox: Rc<Outbox>,
    closed: Cell<bool>,
}

impl ScyllaStore {
    /// Starts this core's bridge thread, connects its session and prepares the statements
    /// (all under `params.timeout`). Awaits without blocking the executor. Must run on a
    /// glommio executor (it spawns the task that delivers the bridge's answers).
    pub async fn open(params: ScyllaParams) -> Result<Self, StorageError> {
        Self::open_with(params, Fencing::Static).await
    }

    /// `open` for a member of the dynamic cluster: every write of a user is fenced at the
    /// epoch at which `fences` says this member serves the user's slot, a load shadows, and
    /// an answer is an `ok` only within the lease while the slot is still held at that epoch
    /// (rules 4–7 of `cluster::ownership`). A user whose slot is not served gets
    /// `StorageError::Unavailable`.
    pub async fn open_fenced(
        params: ScyllaParams,
        fences: std::sync::Arc<Fences>,
    ) -> Result<Self, StorageError> {
        Self::open_with(params, Fencing::Dynamic(fences)).await
    }

    async fn open_with(params: ScyllaParams, fencing: Fencing) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (answers_tx, answers_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let name = format!("ipush-scylla{}", params.core);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || bridge_thread(params, fencing, rx, answers_tx, ready_tx))
            .map_err(|e| unavailable(format!("cannot start the bridge thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => {
                glommio::spawn_local(deliver_answers(answers_rx)).detach();
                Ok(ScyllaStore {
                    outbox: Rc::new(Outbox {
                        tx,
                        queue: RefCell::new(Vec::new()),
                    }),
                    closed: Cell::new(false),
                })
            }
            Ok(Err(e)) => Err(StorageError::Unavailable(e)),
            Err(_) => Err(unavailable("the bridge thread stopped while connecting")),
        }
    }

    /// Queues a request now (in issue order; it crosses with this turn's batch) and returns
    /// its answer's future.
    fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Req,
    ) -> impl Future<Output = Result<T, StorageError>> {
        let (reply, answer) = oneshot::channel();
        let sent = !self.closed.get() && !self.outbox.tx.is_closed();
        if sent {
            self.outbox.push(make(reply));
        }
        async move {
            if !sent {
                return Err(unavailable("the store is closed"));
            }
            match answer.await {
                Ok(res) => res.map_err(StorageError::Unavailable),
                Err(_) => Err(unavailable("the bridge thread stopped")),
            }
        }
    }
}

impl Storage for ScyllaStore {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError> {
        let uid = uid.to_string();
        self.call(|reply| Req::Read(Read::User { uid, reply }))
            .await
    }

    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let body = BodyData::of(body);
        let entries = entries.iter().map(|(u, s)| (u.to_string(), *s)).collect();
        self.call(|reply| {
            Req::Write(Write::Append {
                body,
                expires_at,
                entries,
                reply,
            })
        })
        .await
    }

    async fn append_keyed(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
        idem: &IdemRecord,
    ) -> Result<(), StorageError> {
        let body = BodyData::of(body);
        let entries = entries.iter().map(|(u, s)| (u.to_string(), *s)).collect();
        let idem = idem.clone();
        self.call(|reply| {
            Req::Write(Write::AppendKeyed {
                body,
                expires_at,
                entries,
                idem,
                reply,
            })
        })
        .await
    }

    async fn put_idem(&self, idem: &IdemRecord) -> Result<(), StorageError> {
        let idem = idem.clone();
        self.call(|reply| Req::Write(Write::Idem { idem, reply }))
            .await
    }

    async fn idem_get(&self, id: &str, now: u64) -> Result<Option<IdemRecord>, StorageError> {
        let id = id.to_string();
        self.call(|reply| Req::Read(Read::Idem { id, now, reply }))
            .await
    }

    /// Kept in the database (TTL = the window), not in memory.
    fn idem_held(&self, _now: u64) -> usize {
        0
    }

    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError> {
        let uid = uid.to_string();
        self.call(|reply| {
            Req::Write(Write::Ack {
                uid,
                last_ack,
                reply,
            })
        })
        .await
    }

    async fn offline(
        &self,
        uid: &str,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<StoredMsg>, StorageError> {
        if upto <= after || limit == 0 {
            return Ok(Vec::new());
        }
        let uid = uid.to_string();
        let listing = self
            .call(|reply| {
                Req::Read(Read::Offline {
                    uid,
                    after,
                    upto,
                    limit,
                    now,
                    reply,
                })
            })
            .await?;
        let bodies = listing
            .bodies
            .into_iter()
            .map(|b| b.into_msg_body().map(Rc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(listing
            .rows
            .into_iter()
            .map(|(seq, expires_at, b)| StoredMsg {
                seq,
                expires_at,
                body: bodies[b].clone(),
            })
            .collect())
    }

    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        let (cid, uid) = (cid.to_string(), uid.to_string());
        self.call(|reply| {
            Req::Write(Write::Member {
                cid,
                uid,
                on: true,
                reply,
            })
        })
        .await
    }

    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        let (cid, uid) = (cid.to_string(), uid.to_string());
        self.call(|reply| {
            Req::Write(Write::Member {
                cid,
                uid,
                on: false,
                reply,
            })
        })
        .await
    }

    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        let cid = cid.to_string();
        let uids = self
            .call(|reply| Req::Read(Read::Members { cid, reply }))
            .await?;
        Ok(uids.into_iter().map(|u| Rc::from(u.as_str())).collect())
    }

    /// Expiry is the database's job (`USING TTL`); reads hide what has expired meanwhile.
    async fn purge_expired(&self, _now: u64) -> Result<usize, StorageError> {
        Ok(0)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.call(Req::Flush).await
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.call(Req::Check).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        if self.closed.get() {
            return Ok(());
        }
        let done = self.call(Req::Close);
        self.closed.set(true);
        done.await
    }
}

#[cfg(test)]
mod tests {
    use super::bridge::Clock;
    use super::schema::rename_keyspace;
    use super::*;
    use crate::protocol::MsgType;

    #[test]
    fn ttl_has_a_grace_and_stays_within_what_the_databases_accept() {
        let now = 1_800_000_000;
        assert_eq!(ttl_for(now, now), None, "expired: not written");
        assert_eq!(ttl_for(now - 5, now), None);
        assert_eq!(ttl_for(now + 1, now), Some(1 + TTL_GRACE_S as i32));
        assert_eq!(ttl_for(now + 3600, now), Some(3600 + TTL_GRACE_S as i32));
        // Far futures: capped at 20 years and before 2038-01-19.
        let far = ttl_for(4_000_000_000, now).unwrap() as u64;
        assert!(far <= MAX_TTL_S);
        assert!(now + far <= i32::MAX as u64);
        assert_eq!(ttl_for(4_000_000_000, 1_000).unwrap() as u64, MAX_TTL_S);
        // Past the 2038 limit already: still a positive TTL.
        assert_eq!(ttl_for(u64::MAX, i32::MAX as u64), Some(1));
    }

    #[test]
    fn schema_file_renames_its_keyspace() {
        let cql = include_str!("../../../cql/create_schema.cql");
        let stmts = schema_statements(cql, "ipush_test_42");
        assert_eq!(stmts.len(), 10, "{stmts:#?}");
        assert!(stmts[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ipush_test_42"));
        let tables = [
            "messages",
            "bodies",
            "users",
            "channel_members",
            "idempotency",
        ];
        for table in tables
            .into_iter()
            .chain(["cluster", "members", "member_ids", "slots"])
        {
            let create = format!("CREATE TABLE IF NOT EXISTS ipush_test_42.{table} (");
            assert!(
                stmts.iter().any(|s| s.starts_with(&create)),
                "{table}: {stmts:#?}"
            );
        }
        for s in &stmts {
            assert!(!s.contains("--"), "comment left in {s}");
            assert!(!s.contains("ipush."), "keyspace not renamed in {s}");
        }
        // The layout the code relies on.
        let messages = stmts.iter().find(|s| s.contains(".messages")).unwrap();
        assert!(messages.contains("PRIMARY KEY (uid, seq)"));
        assert!(messages.contains("CLUSTERING ORDER BY (seq DESC)"));
        let members = stmts
            .iter()
            .find(|s| s.contains(".channel_members"))
            .unwrap();
        assert!(members.contains("PRIMARY KEY ((cid, shard), uid)"));
        let clear = schema_statements(include_str!("../../../cql/clear_db.cql"), "k");
        assert_eq!(clear, ["DROP KEYSPACE IF EXISTS k"]);
    }

    #[test]
    fn only_the_whole_word_is_renamed() {
        assert_eq!(
            rename_keyspace("SELECT ipush_x, myipush FROM ipush.t", "ks"),
            "SELECT ipush_x, myipush FROM ks.t"
        );
        assert_eq!(rename_keyspace("ipush", "ks"), "ks");
    }

    #[test]
    fn member_shards_and_consistency() {
        assert_eq!(member_shard("a", 2, 8), "a/2/8");
        assert_eq!(slot_shard(17), "s/17");
        assert_eq!(consistency(ScyllaConsistency::One), Consistency::One);
        assert_eq!(consistency(ScyllaConsistency::Quorum), Consistency::Quorum);
        assert_eq!(
            consistency(ScyllaConsistency::LocalQuorum),
            Consistency::LocalQuorum
        );
        assert_eq!(consistency(ScyllaConsistency::All), Consistency::All);
    }

    #[test]
    fn membership_timestamps_increase_in_issue_order() {
        let mut c = Clock::default();
        assert_eq!(c.next(100), 100);
        assert_eq!(c.next(100), 101, "same microsecond");
        assert_eq!(c.next(50), 102, "clock stepped back");
        assert_eq!(c.next(500), 500);
    }

    #[test]
    fn bodies_cross_the_bridge_intact() {
        let b = MsgBody {
            kind: MsgType::Channel,
            from: "op".into(),
            channel: Some("news".into()),
            body: "héllo".into(),
        };
        let d = BodyData::of(&b);
        assert_eq!(d.kind, 4);
        assert_eq!(d.clone().into_msg_body().unwrap(), b);
        let bad = BodyData { kind: 99, ..d };
        assert!(matches!(
            bad.into_msg_body(),
            Err(StorageError::Corrupt(e)) if e.starts_with("scylla:")
        ));
    }

    #[test]
    fn an_unreachable_cluster_is_reported_without_blocking_the_core() {
        // Nothing listens on port 1: the bridge thread fails to connect and the core's task is
        // woken from that thread with the error.
        let res = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let params = ScyllaParams {
                    nodes: vec!["127.0.0.1:1".into()],
                    keyspace: "ipush".into(),
                    node: "self".into(),
                    consistency: ScyllaConsistency::One,
                    timeout: Duration::from_millis(2000),
                    core: 0,
                    cores: 1,
                };
                // The executor stays responsive meanwhile.
                let ticker = glommio::spawn_local(async {
                    let mut n = 0u32;
                    loop {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                        n += 1;
                        if n == 3 {
                            return n;
                        }
                    }
                });
                let res = ScyllaStore::open(params).await.map(|_| ());
                (res, ticker.await)
            })
            .unwrap()
            .join()
            .unwrap();
        match res {
            (Err(StorageError::Unavailable(e)), 3) => assert!(e.starts_with("scylla: "), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
