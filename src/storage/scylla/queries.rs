//! Every CQL statement of the backend: prepared once per session at connect, and the
//! request handlers that run them. Runs on the bridge thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::MaybeUnset;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::ops::Fencing;
use super::ops::{timed, Answers, BodyData, Listing, Read, Reply, Write};
use super::{
    consistency, member_shard, slot_shard, ttl_for, ScyllaParams, MAX_STATEMENTS, MEMBER_PAGE,
};
use crate::fencing::{epoch_of, value_of, Fences, FENCE_BASE};
use crate::storage::IdemRecord;

/// The `users` key a health check reads: not a valid uid (it has a space), so never a user's.
const HEALTH_KEY: &str = "ipush health";
/// The longest a health check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `st` once under the timeout and decodes its first row, if any, as `R`.
pub(super) async fn first_row<R>(
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

pub(super) fn to_i64(v: u64, what: &str) -> Result<i64, String> {
    i64::try_from(v).map_err(|_| format!("scylla: {what} {v} is out of range"))
}

/// Every statement, prepared once per session. A user's write is a batch of the row
/// statements and `raise_max` (`users::write`).
pub(super) struct Statements {
    /// `max_seq, last_ack` of `users` (`max_seq` only as written before the static cell).
    pub(super) user: PreparedStatement,
    /// The highest row seq, the static highest seq and its write time.
    pub(super) top: PreparedStatement,
    /// A message row with its body inline / referring to a shared body, at a fenced timestamp.
    pub(super) insert_inline: PreparedStatement,
    pub(super) insert_ref: PreparedStatement,
    /// The same, every column written (nulls included): over an old owner's invisible row.
    pub(super) over_inline: PreparedStatement,
    pub(super) over_ref: PreparedStatement,
    pub(super) insert_idem: PreparedStatement,
    idem: PreparedStatement,
    /// The write time of one message row (`expires_at` is written by every statement that
    /// writes a row): what a repeat of a unicast idempotency key checks its record against.
    row_stamp: PreparedStatement,
    /// A tombstone for one message row at a fenced timestamp: a seq given to a message that had
    /// expired before it was written, so no old owner's row at that seq ever shows.
    pub(super) drop_row: PreparedStatement,
    /// The static highest seq, at a fenced timestamp, no TTL.
    pub(super) raise_max: PreparedStatement,
    insert_body: PreparedStatement,
    body: PreparedStatement,
    ack: PreparedStatement,
    list: PreparedStatement,
    subscribe: PreparedStatement,
    unsubscribe: PreparedStatement,
    members: PreparedStatement,
    /// The members of one channel in several slots' partitions (a dynamic cluster).
    slot_members: PreparedStatement,
}

/// Where a core's channel memberships live (`channel_members.shard`).
pub(super) enum MemberLayout {
    /// One partition per core of a static deployment: `NODE/CORE/CORES`.
    Core(String),
    /// One partition per slot of a dynamic cluster (`s/SLOT`), so memberships move with their
    /// slot; a core reads the slots its node serves and keeps the uids of its own core.
    Slots {
        fences: Arc<Fences>,
        core: u32,
        cores: u32,
    },
}

/// Partitions per `IN` of a member read: bounds the coordinator's fan-out per statement.
const SLOTS_PER_READ: usize = 64;

pub(super) struct Ctx {
    pub(super) session: Session,
    pub(super) st: Statements,
    pub(super) timeout: Duration,
    members: MemberLayout,
    /// Bounds the statements in flight (a bridge-local semaphore; the core never touches it).
    pub(super) permits: Arc<Semaphore>,
}

pub(super) async fn connect(p: &ScyllaParams, fencing: &Fencing) -> Result<Ctx, String> {
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
    let insert_idem = prepare(format!(
        "INSERT INTO {ks}.idempotency (id, fingerprint, answer, expires_at) VALUES (?, ?, ?, ?) \
         USING TTL ?"
    ))
    .await?;
    let mut members = prepare(format!(
        "SELECT uid FROM {ks}.channel_members WHERE cid = ? AND shard = ?"
    ))
    .await?;
    members.set_page_size(MEMBER_PAGE);
    let mut slot_members = prepare(format!(
        "SELECT uid FROM {ks}.channel_members WHERE cid = ? AND shard IN ?"
    ))
    .await?;
    slot_members.set_page_size(MEMBER_PAGE);
    let st = Statements {
        user: prepare(format!(
            "SELECT max_seq, last_ack FROM {ks}.users WHERE uid = ?"
        ))
        .await?,
        top: prepare(format!(
            "SELECT seq, max_seq, WRITETIME(max_seq) FROM {ks}.messages WHERE uid = ? LIMIT 1"
        ))
        .await?,
        insert_inline: prepare(format!(
            "INSERT INTO {ks}.messages (uid, seq, expires_at, kind, sender, channel, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?"
        ))
        .await?,
        insert_ref: prepare(format!(
            "INSERT INTO {ks}.messages (uid, seq, expires_at, body_id) VALUES (?, ?, ?, ?) \
             USING TTL ? AND TIMESTAMP ?"
        ))
        .await?,
        over_inline: prepare(format!(
            "INSERT INTO {ks}.messages (uid, seq, expires_at, kind, sender, channel, body, \
             body_id) VALUES (?, ?, ?, ?, ?, ?, ?, null) USING TTL ? AND TIMESTAMP ?"
        ))
        .await?,
        over_ref: prepare(format!(
            "INSERT INTO {ks}.messages (uid, seq, expires_at, kind, sender, channel, body, \
             body_id) VALUES (?, ?, ?, null, null, null, null, ?) USING TTL ? AND TIMESTAMP ?"
        ))
        .await?,
        raise_max: prepare(format!(
            "UPDATE {ks}.messages USING TIMESTAMP ? SET max_seq = ? WHERE uid = ?"
        ))
        .await?,
        idem: prepare(format!(
            "SELECT fingerprint, answer, expires_at FROM {ks}.idempotency WHERE id = ?"
        ))
        .await?,
        row_stamp: prepare(format!(
            "SELECT WRITETIME(expires_at) FROM {ks}.messages WHERE uid = ? AND seq = ?"
        ))
        .await?,
        drop_row: prepare(format!(
            "DELETE FROM {ks}.messages USING TIMESTAMP ? WHERE uid = ? AND seq = ?"
        ))
        .await?,
        insert_idem,
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
            "SELECT seq, expires_at, kind, sender, channel, body, body_id, max_seq FROM {ks}.messages \
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
        slot_members,
    };
    let members = match fencing {
        Fencing::Static => MemberLayout::Core(member_shard(&p.node, p.core, p.cores)),
        Fencing::Dynamic(fences) => MemberLayout::Slots {
            fences: fences.clone(),
            core: p.core,
            cores: p.cores,
        },
    };
    Ok(Ctx {
        session,
        st,
        timeout: p.timeout,
        members,
        permits: Arc::new(Semaphore::new(MAX_STATEMENTS)),
    })
}

/// A write that is not a user's message rows: an idempotency key, an ack, a membership.
/// `stamp`: the fencing, the epoch and the timestamp of an ack or a membership change (rule
/// 4); its answer is an `ok` only if it came back within the lease at that epoch (rule 6).
pub(super) async fn write(ctx: Arc<Ctx>, w: Write, stamp: Option<Stamp>, out: Answers) {
    let valid = |uid: &str, res: Result<(), String>| match (&stamp, res) {
        (Some(s), Ok(())) if !s.fencing.valid(uid, s.epoch) => Err(format!(
            "scylla: the write of {uid} answered after the slot moved or the lease lapsed"
        )),
        (_, res) => res,
    };
    let ts = stamp.as_ref().map_or(0, |s| s.ts);
    match w {
        Write::Append { reply, .. } | Write::AppendKeyed { reply, .. } => {
            out.send(
                reply,
                Err("scylla: appends go through the user's queue".into()),
            );
        }
        Write::Idem { idem, reply } => {
            let _ = reply.send(put_idem(&ctx, &idem).await);
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
                    ctx.session.execute_unpaged(&ctx.st.ack, (ts, v, &uid)),
                )
                .await
                .map(drop)
            }
            .await;
            out.send(reply, valid(&uid, res));
        }
        Write::Member {
            cid,
            uid,
            on,
            reply,
        } => {
            let shard = ctx.member_shard(&uid);
            let _permit = ctx.permits.acquire().await;
            let res = if on {
                timed(
                    ctx.timeout,
                    "subscribe",
                    ctx.session
                        .execute_unpaged(&ctx.st.subscribe, (&cid, &shard, &uid, ts)),
                )
                .await
            } else {
                timed(
                    ctx.timeout,
                    "unsubscribe",
                    ctx.session
                        .execute_unpaged(&ctx.st.unsubscribe, (ts, &cid, &shard, &uid)),
                )
                .await
            };
            out.send(reply, valid(&uid, res.map(drop)));
        }
    }
}

/// How a write other than a message row is fenced.
pub(super) struct Stamp {
    pub(super) fencing: Fencing,
    pub(super) epoch: u32,
    pub(super) ts: i64,
}

/// Writes a channel message's body once to `bodies` (before any row refers to it), then
/// opens `gate` for the rows that wait on it.
pub(super) async fn store_body(
    ctx: Arc<Ctx>,
    id: Uuid,
    body: Arc<BodyData>,
    ttl: i32,
    gate: watch::Sender<Option<Result<(), String>>>,
) {
    let _permit = ctx.permits.acquire().await;
    let res = timed(
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
    .await
    .map(drop);
    let _ = gate.send(Some(res));
}

/// The values of an idempotency row (the fingerprint stored as its bit pattern), or `None`
/// when the record has expired already.
pub(super) type IdemValues<'a> = (&'a str, i64, i64, i64, i32);

pub(super) fn idem_values(r: &IdemRecord, now: u64) -> Result<Option<IdemValues<'_>>, String> {
    let Some(ttl) = ttl_for(r.expires_at, now) else {
        return Ok(None);
    };
    let (answer, exp) = (
        to_i64(r.answer, "answer")?,
        to_i64(r.expires_at, "expires_at")?,
    );
    Ok(Some((&r.id, r.fingerprint as i64, answer, exp, ttl)))
}

async fn put_idem(ctx: &Ctx, idem: &IdemRecord) -> Result<(), String> {
    let Some(values) = idem_values(idem, crate::stats::unix_now())? else {
        return Ok(());
    };
    let _permit = ctx.permits.acquire().await;
    timed(
        ctx.timeout,
        "store an idempotency key",
        ctx.session.execute_unpaged(&ctx.st.insert_idem, values),
    )
    .await
    .map(drop)
}

async fn get_idem(ctx: &Ctx, id: &str, now: u64) -> Result<Option<IdemRecord>, String> {
    let _permit = ctx.permits.acquire().await;
    let row: Option<(Option<i64>, Option<i64>, Option<i64>)> =
        first_row(ctx, "read an idempotency key", &ctx.st.idem, (id,)).await?;
    let Some((Some(fp), Some(answer), Some(exp))) = row else {
        return Ok(None);
    };
    let expires_at = exp.max(0) as u64;
    if expires_at <= now {
        return Ok(None);
    }
    let answer = if answer >= FENCE_BASE {
        // A unicast key stored with its message: the answer is that row's fenced timestamp.
        let seq = value_of(answer);
        let uid = user_of(id).ok_or_else(|| {
            format!("scylla: idempotency key {id:?} has a fenced answer and no user")
        })?;
        let (top, row) = tokio::join!(
            first_row::<(Option<i64>, Option<i64>, Option<i64>)>(
                ctx,
                "read an idempotency key (highest seq)",
                &ctx.st.top,
                (uid,)
            ),
            first_row::<(Option<i64>,)>(
                ctx,
                "read an idempotency key (its message)",
                &ctx.st.row_stamp,
                (uid, seq as i64)
            ),
        );
        let (_, max_seq, max_at) = top?.unwrap_or_default();
        let row_at = row?.and_then(|r| r.0);
        let max = max_seq.zip(max_at);
        if !idem_still_holds(answer, row_at, max) {
            return Ok(None);
        }
        seq
    } else {
        answer.max(0) as u64
    };
    Ok(Some(IdemRecord {
        id: id.to_string(),
        fingerprint: fp as u64,
        answer,
        expires_at,
    }))
}

/// The uid of a unicast key's id (`u:<uid> <key>`; a key has no space).
fn user_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("u:")?;
    Some(&rest[..rest.rfind(' ')?])
}

/// Whether a unicast key's record still names its message. `stamp` is the record's answer,
/// `fence(epoch, seq)` of the row written in the same logged batch; `row_at` the write time of
/// the user's row at that seq now (None: no row); `max` its highest seq and that cell's write
/// time. A write fenced out by a newer owner (rules 4–5 of `cluster::ownership`) leaves its
/// record behind: its row is above the highest seq, or was overwritten (every row a later
/// owner writes at that seq has a newer stamp; a seq given to an expired message is a
/// tombstone). Without a row (it expired), the record holds only if no other epoch has
/// written the user since: then nobody else can have given that seq. A record that does not
/// hold is a fresh key: the repeat publishes.
pub(super) fn idem_still_holds(stamp: i64, row_at: Option<i64>, max: Option<(i64, i64)>) -> bool {
    let seq = value_of(stamp) as i64;
    let Some((max_seq, max_at)) = max else {
        return false;
    };
    if max_seq < seq {
        return false;
    }
    match row_at {
        Some(t) => t == stamp,
        None => max_at >= FENCE_BASE && epoch_of(max_at) == epoch_of(stamp),
    }
}

/// A single-partition read of `users` at the configured consistency, under a short timeout
/// (at most `CHECK_TIMEOUT`): answers whether the keyspace is readable now.
pub(super) async fn check(ctx: Arc<Ctx>, reply: Reply<()>, out: Answers) {
    let t = ctx.timeout.min(CHECK_TIMEOUT);
    let res = timed(
        t,
        "health check",
        ctx.session.execute_unpaged(&ctx.st.user, (HEALTH_KEY,)),
    )
    .await;
    out.send(reply, res.map(drop));
}

pub(super) async fn read(ctx: Arc<Ctx>, r: Read, out: Answers) {
    match r {
        Read::User { reply, .. } => {
            out.send(
                reply,
                Err("scylla: loads go through the bridge's users".into()),
            );
        }
        Read::Offline {
            uid,
            after,
            upto,
            limit,
            now,
            reply,
        } => {
            out.send(reply, offline(&ctx, &uid, after, upto, limit, now).await);
        }
        Read::Members { cid, reply } => {
            out.send(reply, members(&ctx, &cid).await);
        }
        Read::Idem { id, now, reply } => {
            let _ = reply.send(get_idem(&ctx, &id, now).await);
        }
    }
}

type ListRow = (
    i64,
    i64,
    Option<i8>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Uuid>,
    Option<i64>,
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
    let (res, user) = tokio::join!(
        list,
        first_row::<(Option<i64>, Option<i64>)>(ctx, "offline", &ctx.st.user, (uid,))
    );
    drop(permit);
    let (legacy_max, last_ack) = user?.unwrap_or_default();
    let (res, last_ack) = (res?, last_ack.unwrap_or(0).max(0) as u64);
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
        let (seq, exp, kind, sender, channel, body, body_id, max_seq) =
            row.map_err(|e| format!("scylla: offline: {e}"))?;
        let seq = seq.max(0) as u64;
        // Rows above the highest seq are an old owner's, fenced out (rule 5): invisible.
        if seq > max_seq.max(legacy_max).unwrap_or(0).max(0) as u64 {
            continue;
        }
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

impl Ctx {
    /// The `channel_members.shard` that holds `uid`'s memberships.
    fn member_shard(&self, uid: &str) -> String {
        match &self.members {
            MemberLayout::Core(shard) => shard.clone(),
            MemberLayout::Slots { fences, .. } => slot_shard(fences.slot_of(uid)),
        }
    }
}

/// This core's members of `cid`: its partition, or in a dynamic cluster the partitions of the
/// slots this node serves now, keeping the uids this core owns.
async fn members(ctx: &Ctx, cid: &str) -> Result<Vec<String>, String> {
    match &ctx.members {
        MemberLayout::Core(shard) => {
            let mut out = Vec::new();
            read_members(ctx, &ctx.st.members, (cid, shard), &mut out).await?;
            Ok(out)
        }
        MemberLayout::Slots {
            fences,
            core,
            cores,
        } => {
            let served: Vec<String> = (0..fences.slot_count())
                .filter(|&s| fences.held(s).is_some())
                .map(slot_shard)
                .collect();
            let mut out = Vec::new();
            for chunk in served.chunks(SLOTS_PER_READ) {
                read_members(ctx, &ctx.st.slot_members, (cid, chunk), &mut out).await?;
            }
            out.retain(|uid| ipush_placement::core_of(uid, *cores as usize) == *core as usize);
            Ok(out)
        }
    }
}

/// Appends every uid `st` selects with `values`, a page at a time.
async fn read_members(
    ctx: &Ctx,
    st: &PreparedStatement,
    values: impl scylla::serialize::row::SerializeRow,
    out: &mut Vec<String>,
) -> Result<(), String> {
    let mut paging = PagingState::start();
    loop {
        let _permit = ctx.permits.acquire().await;
        let (res, next) = timed(
            ctx.timeout,
            "channel_members",
            ctx.session.execute_single_page(st, &values, paging),
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
            std::ops::ControlFlow::Break(()) => return Ok(()),
            std::ops::ControlFlow::Continue(p) => paging = p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fencing::fence;

    #[test]
    fn a_unicast_key_holds_only_while_its_row_is_its_message() {
        let stamp = fence(1, 5);
        // Its row, at or below the highest seq (written at this epoch or a later one).
        assert!(idem_still_holds(stamp, Some(stamp), Some((5, fence(1, 5)))));
        assert!(idem_still_holds(stamp, Some(stamp), Some((9, fence(2, 9)))));
        // Fenced out: above the highest seq, or the seq written again by a newer owner.
        assert!(!idem_still_holds(
            stamp,
            Some(stamp),
            Some((4, fence(2, 0)))
        ));
        assert!(!idem_still_holds(
            stamp,
            Some(fence(2, 5)),
            Some((5, fence(2, 5)))
        ));
        assert!(!idem_still_holds(stamp, Some(stamp), None));
        // No row (expired, or a tombstone): holds only if no other epoch wrote the user.
        assert!(idem_still_holds(stamp, None, Some((7, fence(1, 7)))));
        assert!(!idem_still_holds(stamp, None, Some((7, fence(2, 7)))));
        assert!(!idem_still_holds(
            stamp,
            None,
            Some((7, 1_700_000_000_000_000))
        ));
    }

    #[test]
    fn the_uid_of_a_key() {
        assert_eq!(user_of("u:alice k-1"), Some("alice"));
        assert_eq!(user_of("u:a b"), Some("a"));
        assert_eq!(user_of("c:news k"), None);
        assert_eq!(user_of("u:nospace"), None);
    }
}
