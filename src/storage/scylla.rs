//! `--storage=scylla`: one core's users in ScyllaDB / Apache Cassandra. `ScyllaStore` runs on
//! its core's executor; the driver runs on a bridge thread of its own (one per core, a
//! current-thread tokio runtime, one `Session`).
//!
//! # The bridge
//! The core sends each request over an unbounded tokio mpsc channel (a lock-free send that
//! never blocks) with a `tokio::sync::oneshot` sender for the answer; the core's task awaits
//! the oneshot receiver, which the bridge thread completes and so wakes the glommio task from a
//! foreign thread. Core and bridge share no lock. Every statement is prepared once at open,
//! runs with `--scylla_consistency` and under `--scylla_timeout_ms` (a driver request timeout
//! and a tokio timeout around it), as does session creation. Errors come back as
//! `StorageError::Unavailable("scylla: ...")`.
//!
//! # Ordering (the `Storage` contract: a read sees every write issued before it)
//! The bridge takes requests in issue order. Writes are pipelined (started at once, many in
//! flight, at most `MAX_STATEMENTS` statements per core): that is safe because every write
//! commutes with every other one issued by this core: message rows and bodies have distinct
//! keys, `max_seq` and `last_ack` are written `USING TIMESTAMP <value>` (so the highest wins
//! whatever the arrival order), and membership changes carry `USING TIMESTAMP` from a clock
//! that increases in issue order (so subscribe-then-unsubscribe ends unsubscribed even if the
//! two arrive reversed). A read first waits until every write issued before it has completed,
//! then runs (reads run concurrently with one another and with later writes). `flush` waits for
//! every earlier write, `close` for everything, and then stops the thread.
//!
//! # Acks
//! `set_ack` is one `UPDATE users USING TIMESTAMP <last_ack> SET last_ack = <last_ack>`:
//! last-write-wins by timestamp keeps the maximum, so acks are monotonic without a
//! read-modify-write or a lightweight transaction (the owning core is the only writer anyway).
//! Acked messages are not deleted (no range tombstones); `offline` reads `last_ack` alongside
//! and hides them, and their TTL removes them.
//!
//! Schema and the reasons for its layout: `cql/create_schema.cql`.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::MaybeUnset;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Storage, StorageError, StoredMsg, UserMeta};
use crate::config::ScyllaConsistency;
use crate::protocol::{MsgBody, MsgType};

/// Statements in flight per core (the bridge's pipeline depth).
const MAX_STATEMENTS: usize = 256;
/// Rows per page when loading a channel's members.
const MEMBER_PAGE: i32 = 5000;
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
    /// This core and the node's core count: the member shard `CORE/CORES`.
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

/// The `channel_members.shard` of core `core` of `cores`.
pub fn member_shard(core: u32, cores: u32) -> String {
    format!("{core}/{cores}")
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

/// The statements of a schema file (`cql/create_schema.cql`) with the keyspace `ipush`
/// renamed to `keyspace`: comments removed, split on `;`. For tests and tools that create a
/// keyspace of their own.
pub fn schema_statements(cql: &str, keyspace: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| rename_keyspace(s.trim(), keyspace))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Replaces the identifier `ipush` (a whole word) by `keyspace`.
fn rename_keyspace(stmt: &str, keyspace: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(stmt.len());
    let mut rest = stmt;
    while let Some(i) = rest.find("ipush") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + 5..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(word) || after.is_some_and(word) {
            out.push_str("ipush");
        } else {
            out.push_str(keyspace);
        }
        rest = &rest[i + 5..];
    }
    out.push_str(rest);
    out
}

/// Runs `statements` one after another on a session of its own, blocking the calling thread
/// (it starts a tokio runtime). For tests and tools (creating or dropping a keyspace); never
/// call it on a core.
pub fn execute_blocking(
    nodes: &[String],
    statements: &[String],
    timeout: Duration,
) -> Result<(), StorageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| unavailable(format!("cannot start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let session = timed(
            timeout,
            "connect",
            SessionBuilder::new()
                .known_nodes(nodes)
                .connection_timeout(timeout)
                .build(),
        )
        .await
        .map_err(StorageError::Unavailable)?;
        for s in statements {
            let what = s.lines().next().unwrap_or_default();
            timed(timeout, what, session.query_unpaged(s.as_str(), &[]))
                .await
                .map_err(StorageError::Unavailable)?;
        }
        Ok(())
    })
}

fn unavailable(msg: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("scylla: {msg}"))
}

/// `fut` under `timeout`; its error or the timeout as `scylla: <what>: ...`.
async fn timed<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("scylla: {what}: {e}")),
        Err(_) => Err(format!(
            "scylla: {what}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Runs `st` once under the timeout and decodes its first row, if any, as `R`.
async fn first_row<R>(
    ctx: &Ctx,
    what: &str,
    st: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
) -> Result<Option<R>, String>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let res = timed(ctx.timeout, what, ctx.session.execute_unpaged(st, values)).await?;
    let rows = res
        .into_rows_result()
        .map_err(|e| format!("scylla: {what}: {e}"))?;
    rows.maybe_first_row::<R>()
        .map_err(|e| format!("scylla: {what}: {e}"))
}

/// An absent column is left unset rather than written as null (a null is a tombstone).
fn unset_if_none<T>(v: Option<T>) -> MaybeUnset<T> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

fn to_i64(v: u64, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("scylla: {what} {v} is out of range"))
}

// ---- what crosses the bridge (owned, `Send`) -------------------------------------------------

/// A message body as it crosses to the bridge thread and back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BodyData {
    kind: i8,
    sender: String,
    channel: Option<String>,
    body: String,
}

impl BodyData {
    fn of(b: &MsgBody) -> Self {
        BodyData {
            kind: b.kind as u8 as i8,
            sender: b.from.to_string(),
            channel: b.channel.as_deref().map(str::to_string),
            body: b.body.to_string(),
        }
    }

    fn into_msg_body(self) -> Result<MsgBody, StorageError> {
        let kind = u8::try_from(self.kind)
            .ok()
            .and_then(MsgType::from_u8)
            .ok_or_else(|| {
                StorageError::Corrupt(format!("scylla: unknown message kind {}", self.kind))
            })?;
        Ok(MsgBody {
            kind,
            from: self.sender.into(),
            channel: self.channel.map(Into::into),
            body: self.body.into(),
        })
    }
}

/// `offline`'s answer: `(seq, expires_at, index into bodies)`, ascending, and the bodies
/// (each once, however many rows refer to it).
#[derive(Debug, Default)]
struct Listing {
    rows: Vec<(u64, u64, usize)>,
    bodies: Vec<BodyData>,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Write {
    Append {
        body: BodyData,
        expires_at: u64,
        entries: Vec<(String, u64)>,
        reply: Reply<()>,
    },
    Ack {
        uid: String,
        last_ack: u64,
        reply: Reply<()>,
    },
    Member {
        cid: String,
        uid: String,
        on: bool,
        reply: Reply<()>,
    },
}

enum Read {
    User {
        uid: String,
        reply: Reply<UserMeta>,
    },
    Offline {
        uid: String,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
        reply: Reply<Listing>,
    },
    Members {
        cid: String,
        reply: Reply<Vec<String>>,
    },
}

enum Req {
    Write(Write),
    Read(Read),
    /// Answered once every earlier write has completed.
    Flush(Reply<()>),
    /// Answered once everything earlier has completed; then the bridge thread ends.
    Close(Reply<()>),
}

// ---- the core's side ----------------------------------------------------------------------

/// One core's handle on the database. Lives on the core; the driver lives on its bridge thread.
pub struct ScyllaStore {
    tx: mpsc::UnboundedSender<Req>,
    closed: Cell<bool>,
}

impl ScyllaStore {
    /// Starts this core's bridge thread, connects its session and prepares the statements
    /// (all under `params.timeout`). Awaits without blocking the executor.
    pub async fn open(params: ScyllaParams) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let name = format!("ipush-scylla{}", params.core);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || bridge_thread(params, rx, ready_tx))
            .map_err(|e| unavailable(format!("cannot start the bridge thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(ScyllaStore {
                tx,
                closed: Cell::new(false),
            }),
            Ok(Err(e)) => Err(StorageError::Unavailable(e)),
            Err(_) => Err(unavailable("the bridge thread stopped while connecting")),
        }
    }

    /// Sends a request now (in issue order) and returns its answer's future.
    fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Req,
    ) -> impl Future<Output = Result<T, StorageError>> {
        let (reply, answer) = oneshot::channel();
        let sent = !self.closed.get() && self.tx.send(make(reply)).is_ok();
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

    async fn close(&self) -> Result<(), StorageError> {
        if self.closed.get() {
            return Ok(());
        }
        let done = self.call(Req::Close);
        self.closed.set(true);
        done.await
    }
}

// ---- the bridge thread --------------------------------------------------------------------

/// Every statement, prepared once per session.
struct Statements {
    user: PreparedStatement,
    /// `[message row with the body inline, raise max_seq]`, one partition key.
    append_inline: Batch,
    /// `[message row referring to a body, raise max_seq]`.
    append_ref: Batch,
    raise_max: PreparedStatement,
    insert_body: PreparedStatement,
    body: PreparedStatement,
    ack: PreparedStatement,
    list: PreparedStatement,
    subscribe: PreparedStatement,
    unsubscribe: PreparedStatement,
    members: PreparedStatement,
}

struct Ctx {
    session: Session,
    st: Statements,
    timeout: Duration,
    shard: String,
    /// Bounds the statements in flight (a bridge-local semaphore; the core never touches it).
    permits: Arc<Semaphore>,
}

fn bridge_thread(
    params: ScyllaParams,
    rx: mpsc::UnboundedReceiver<Req>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("scylla: cannot start a tokio runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        match connect(&params).await {
            Ok(ctx) => {
                if ready.send(Ok(())).is_ok() {
                    serve(Arc::new(ctx), rx).await;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

async fn connect(p: &ScyllaParams) -> Result<Ctx, String> {
    let profile = ExecutionProfile::builder()
        .consistency(consistency(p.consistency))
        .request_timeout(Some(p.timeout))
        .build();
    let session = timed(
        p.timeout,
        &format!("cannot connect to {}", p.nodes.join(",")),
        SessionBuilder::new()
            .known_nodes(&p.nodes)
            .connection_timeout(p.timeout)
            .default_execution_profile_handle(profile.into_handle())
            .build(),
    )
    .await?;
    let ks = &p.keyspace;
    let prepare = |cql: String| {
        let session = &session;
        async move {
            timed(
                p.timeout,
                &format!("cannot prepare `{cql}` (is the schema of cql/create_schema.cql in keyspace {ks}?)"),
                session.prepare(cql.as_str()),
            )
            .await
        }
    };
    let insert_inline = prepare(format!(
        "INSERT INTO {ks}.messages (uid, seq, expires_at, kind, sender, channel, body) \
         VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
    ))
    .await?;
    let insert_ref = prepare(format!(
        "INSERT INTO {ks}.messages (uid, seq, expires_at, body_id) VALUES (?, ?, ?, ?) USING TTL ?"
    ))
    .await?;
    let raise_max = prepare(format!(
        "UPDATE {ks}.users USING TIMESTAMP ? SET max_seq = ? WHERE uid = ?"
    ))
    .await?;
    let batch = |row: &PreparedStatement| {
        let mut b = Batch::new(BatchType::Unlogged);
        b.append_statement(row.clone());
        b.append_statement(raise_max.clone());
        b.set_request_timeout(Some(p.timeout));
        b
    };
    let (append_inline, append_ref) = (batch(&insert_inline), batch(&insert_ref));
    let mut members = prepare(format!(
        "SELECT uid FROM {ks}.channel_members WHERE cid = ? AND shard = ?"
    ))
    .await?;
    members.set_page_size(MEMBER_PAGE);
    let st = Statements {
        user: prepare(format!(
            "SELECT max_seq, last_ack FROM {ks}.users WHERE uid = ?"
        ))
        .await?,
        append_inline,
        append_ref,
        insert_body: prepare(format!(
            "INSERT INTO {ks}.bodies (id, kind, sender, channel, body) VALUES (?, ?, ?, ?, ?) \
             USING TTL ?"
        ))
        .await?,
        body: prepare(format!(
            "SELECT kind, sender, channel, body FROM {ks}.bodies WHERE id = ?"
        ))
        .await?,
        ack: prepare(format!(
            "UPDATE {ks}.users USING TIMESTAMP ? SET last_ack = ? WHERE uid = ?"
        ))
        .await?,
        // Newest first (the clustering order); the filter on expires_at stays inside one
        // partition's slice, so ALLOW FILTERING costs at most that slice.
        list: prepare(format!(
            "SELECT seq, expires_at, kind, sender, channel, body, body_id FROM {ks}.messages \
             WHERE uid = ? AND seq > ? AND seq <= ? AND expires_at > ? LIMIT ? ALLOW FILTERING"
        ))
        .await?,
        subscribe: prepare(format!(
            "INSERT INTO {ks}.channel_members (cid, shard, uid) VALUES (?, ?, ?) USING TIMESTAMP ?"
        ))
        .await?,
        unsubscribe: prepare(format!(
            "DELETE FROM {ks}.channel_members USING TIMESTAMP ? WHERE cid = ? AND shard = ? AND uid = ?"
        ))
        .await?,
        members,
        raise_max,
    };
    Ok(Ctx {
        session,
        st,
        timeout: p.timeout,
        shard: member_shard(p.core, p.cores),
        permits: Arc::new(Semaphore::new(MAX_STATEMENTS)),
    })
}

/// Microsecond write timestamps for membership changes that increase in issue order.
#[derive(Debug, Default)]
struct Clock {
    last: i64,
}

impl Clock {
    fn next(&mut self, now_micros: i64) -> i64 {
        self.last = now_micros.max(self.last + 1);
        self.last
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The bridge's loop: takes requests in issue order (see the module doc for the ordering).
async fn serve(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Req>) {
    let mut writes: JoinSet<()> = JoinSet::new();
    let mut reads: JoinSet<()> = JoinSet::new();
    let mut clock = Clock::default();
    while let Some(req) = rx.recv().await {
        while writes.try_join_next().is_some() {}
        while reads.try_join_next().is_some() {}
        match req {
            Req::Write(w) => {
                let ts = clock.next(now_micros());
                writes.spawn(write(ctx.clone(), w, ts));
            }
            Req::Read(r) => {
                while writes.join_next().await.is_some() {}
                reads.spawn(read(ctx.clone(), r));
            }
            Req::Flush(reply) => {
                while writes.join_next().await.is_some() {}
                let _ = reply.send(Ok(()));
            }
            Req::Close(reply) => {
                while writes.join_next().await.is_some() {}
                while reads.join_next().await.is_some() {}
                let _ = reply.send(Ok(()));
                return;
            }
        }
    }
    // The store was dropped without close: finish what was started.
    while writes.join_next().await.is_some() {}
    while reads.join_next().await.is_some() {}
}

async fn write(ctx: Arc<Ctx>, w: Write, ts: i64) {
    match w {
        Write::Append {
            body,
            expires_at,
            entries,
            reply,
        } => {
            let res = append(&ctx, Arc::new(body), expires_at, entries).await;
            let _ = reply.send(res);
        }
        Write::Ack {
            uid,
            last_ack,
            reply,
        } => {
            let res = async {
                let v = to_i64(last_ack, "last_ack")?;
                let _permit = ctx.permits.acquire().await;
                timed(
                    ctx.timeout,
                    "set_ack",
                    ctx.session.execute_unpaged(&ctx.st.ack, (v, v, &uid)),
                )
                .await
                .map(drop)
            }
            .await;
            let _ = reply.send(res);
        }
        Write::Member {
            cid,
            uid,
            on,
            reply,
        } => {
            let _permit = ctx.permits.acquire().await;
            let res = if on {
                timed(
                    ctx.timeout,
                    "subscribe",
                    ctx.session
                        .execute_unpaged(&ctx.st.subscribe, (&cid, &ctx.shard, &uid, ts)),
                )
                .await
            } else {
                timed(
                    ctx.timeout,
                    "unsubscribe",
                    ctx.session
                        .execute_unpaged(&ctx.st.unsubscribe, (ts, &cid, &ctx.shard, &uid)),
                )
                .await
            };
            let _ = reply.send(res.map(drop));
        }
    }
}

/// One body for many `(uid, seq)`: inline when there is one recipient; otherwise the body is
/// written once to `bodies` first (so no row ever refers to a missing body) and every member's
/// row refers to it. Each entry is one single-partition batch (message row + max_seq), run
/// concurrently up to the permit limit.
async fn append(
    ctx: &Arc<Ctx>,
    body: Arc<BodyData>,
    expires_at: u64,
    entries: Vec<(String, u64)>,
) -> Result<(), String> {
    let ttl = ttl_for(expires_at, crate::stats::unix_now());
    let exp = to_i64(expires_at, "expires_at")?;
    let shared = match ttl {
        Some(ttl) if entries.len() > 1 => {
            let id = Uuid::new_v4();
            let _permit = ctx.permits.acquire().await;
            timed(
                ctx.timeout,
                "store a channel body",
                ctx.session.execute_unpaged(
                    &ctx.st.insert_body,
                    (
                        id,
                        body.kind,
                        &body.sender,
                        unset_if_none(body.channel.as_deref()),
                        &body.body,
                        ttl,
                    ),
                ),
            )
            .await?;
            Some(id)
        }
        _ => None,
    };
    let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
    let mut first_err = None;
    for (uid, seq) in entries {
        let permit = ctx
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "scylla: the bridge is closing".to_string())?;
        let (ctx, body) = (ctx.clone(), body.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let s = to_i64(seq, "seq")?;
            let t = ctx.timeout;
            match (ttl, shared) {
                (None, _) => timed(
                    t,
                    "append (max_seq)",
                    ctx.session.execute_unpaged(&ctx.st.raise_max, (s, s, &uid)),
                )
                .await
                .map(drop),
                (Some(ttl), Some(id)) => timed(
                    t,
                    "append",
                    ctx.session
                        .batch(&ctx.st.append_ref, ((&uid, s, exp, id, ttl), (s, s, &uid))),
                )
                .await
                .map(drop),
                (Some(ttl), None) => {
                    let channel = unset_if_none(body.channel.as_deref());
                    let row = (
                        &uid,
                        s,
                        exp,
                        body.kind,
                        &body.sender,
                        channel,
                        &body.body,
                        ttl,
                    );
                    timed(
                        t,
                        "append",
                        ctx.session
                            .batch(&ctx.st.append_inline, (row, (s, s, &uid))),
                    )
                    .await
                    .map(drop)
                }
            }
        });
        while let Some(done) = tasks.try_join_next() {
            note(&mut first_err, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        note(&mut first_err, done);
    }
    first_err.map_or(Ok(()), Err)
}

fn note(first: &mut Option<String>, done: Result<Result<(), String>, tokio::task::JoinError>) {
    let err = match done {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(e) => format!("scylla: append task failed: {e}"),
    };
    first.get_or_insert(err);
}

async fn read(ctx: Arc<Ctx>, r: Read) {
    match r {
        Read::User { uid, reply } => {
            let _permit = ctx.permits.acquire().await;
            let _ = reply.send(load_user(&ctx, &uid).await);
        }
        Read::Offline {
            uid,
            after,
            upto,
            limit,
            now,
            reply,
        } => {
            let _ = reply.send(offline(&ctx, &uid, after, upto, limit, now).await);
        }
        Read::Members { cid, reply } => {
            let _ = reply.send(members(&ctx, &cid).await);
        }
    }
}

/// A user's counters (the caller holds a permit).
async fn load_user(ctx: &Ctx, uid: &str) -> Result<UserMeta, String> {
    let row: Option<(Option<i64>, Option<i64>)> =
        first_row(ctx, "load_user", &ctx.st.user, (uid,)).await?;
    let (max_seq, last_ack) = row.unwrap_or_default();
    let (max_seq, last_ack) = (
        max_seq.unwrap_or(0).max(0) as u64,
        last_ack.unwrap_or(0).max(0) as u64,
    );
    Ok(UserMeta {
        max_seq: max_seq.max(last_ack),
        last_ack,
    })
}

type ListRow = (
    i64,
    i64,
    Option<i8>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
);

async fn offline(
    ctx: &Arc<Ctx>,
    uid: &str,
    after: u64,
    upto: u64,
    limit: usize,
    now: u64,
) -> Result<Listing, String> {
    let (a, u, n) = (
        to_i64(after, "after")?,
        to_i64(upto, "upto")?,
        to_i64(now, "now")?,
    );
    let lim = i32::try_from(limit).unwrap_or(i32::MAX);
    let list = timed(
        ctx.timeout,
        "offline",
        ctx.session
            .execute_unpaged(&ctx.st.list, (uid, a, u, n, lim)),
    );
    // The ack is read alongside: acked rows are hidden, not deleted. One permit covers both
    // (and is released before the bodies are read, which take their own).
    let permit = ctx.permits.acquire().await;
    let (res, meta) = tokio::join!(list, load_user(ctx, uid));
    drop(permit);
    let (res, last_ack) = (res?, meta?.last_ack);
    let rows = res
        .into_rows_result()
        .map_err(|e| format!("scylla: offline: {e}"))?;
    let mut out = Listing::default();
    // Rows (newest first) whose body is shared, by body id; resolved below.
    let mut refs: Vec<(usize, Uuid)> = Vec::new();
    for row in rows
        .rows::<ListRow>()
        .map_err(|e| format!("scylla: offline: {e}"))?
    {
        let (seq, exp, kind, sender, channel, body, body_id) =
            row.map_err(|e| format!("scylla: offline: {e}"))?;
        let seq = seq.max(0) as u64;
        // The LIMIT took the newest rows; those at or below the ack are the oldest of them, so
        // dropping them leaves exactly the newest `limit` of (max(after, last_ack), upto].
        if seq <= last_ack {
            continue;
        }
        let b = match body_id {
            Some(id) => {
                refs.push((out.rows.len(), id));
                usize::MAX
            }
            None => {
                out.bodies.push(BodyData {
                    kind: kind.unwrap_or_default(),
                    sender: sender.unwrap_or_default(),
                    channel,
                    body: body.unwrap_or_default(),
                });
                out.bodies.len() - 1
            }
        };
        out.rows.push((seq, exp.max(0) as u64, b));
    }
    if !refs.is_empty() {
        let mut ids: Vec<Uuid> = refs.iter().map(|(_, id)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = fetch_bodies(ctx, ids).await?;
        let mut index: HashMap<Uuid, usize> = HashMap::with_capacity(found.len());
        for (id, body) in found {
            out.bodies.push(body);
            index.insert(id, out.bodies.len() - 1);
        }
        for (row, id) in refs {
            // A body expires with the rows that refer to it (same TTL); one missing is gone.
            out.rows[row].2 = index.get(&id).copied().unwrap_or(usize::MAX);
        }
        out.rows.retain(|r| r.2 != usize::MAX);
    }
    out.rows.reverse();
    Ok(out)
}

/// kind, sender, channel, body of a shared channel body.
type BodyRow = (Option<i8>, Option<String>, Option<String>, Option<String>);

/// Reads shared bodies concurrently; a missing id is left out.
async fn fetch_bodies(ctx: &Arc<Ctx>, ids: Vec<Uuid>) -> Result<Vec<(Uuid, BodyData)>, String> {
    let mut tasks: JoinSet<Result<Option<(Uuid, BodyData)>, String>> = JoinSet::new();
    for id in ids {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _permit = ctx.permits.acquire().await;
            let row: Option<BodyRow> =
                first_row(&ctx, "read a channel body", &ctx.st.body, (id,)).await?;
            Ok(row.map(|(kind, sender, channel, body)| {
                (
                    id,
                    BodyData {
                        kind: kind.unwrap_or_default(),
                        sender: sender.unwrap_or_default(),
                        channel,
                        body: body.unwrap_or_default(),
                    },
                )
            }))
        });
    }
    let mut out = Vec::new();
    let mut first_err = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Some(b))) => out.push(b),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("scylla: body read task failed: {e}"));
            }
        }
    }
    first_err.map_or(Ok(out), Err)
}

async fn members(ctx: &Ctx, cid: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut paging = PagingState::start();
    loop {
        let _permit = ctx.permits.acquire().await;
        let (res, next) = timed(
            ctx.timeout,
            "channel_members",
            ctx.session
                .execute_single_page(&ctx.st.members, (cid, &ctx.shard), paging),
        )
        .await?;
        let rows = res
            .into_rows_result()
            .map_err(|e| format!("scylla: channel_members: {e}"))?;
        for row in rows
            .rows::<(String,)>()
            .map_err(|e| format!("scylla: channel_members: {e}"))?
        {
            out.push(row.map_err(|e| format!("scylla: channel_members: {e}"))?.0);
        }
        match next.into_paging_control_flow() {
            std::ops::ControlFlow::Break(()) => return Ok(out),
            std::ops::ControlFlow::Continue(p) => paging = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cql = include_str!("../../cql/create_schema.cql");
        let stmts = schema_statements(cql, "ipush_test_42");
        assert_eq!(stmts.len(), 5, "{stmts:#?}");
        assert!(stmts[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ipush_test_42"));
        for table in ["messages", "bodies", "users", "channel_members"] {
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
        let clear = schema_statements(include_str!("../../cql/clear_db.cql"), "k");
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
        assert_eq!(member_shard(2, 8), "2/8");
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
