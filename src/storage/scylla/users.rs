//! One core's users as its bridge writes them (rules 4–7 of `cluster::ownership`): the epoch
//! each was loaded at, one write in flight per user (what arrives meanwhile goes into the next
//! write), fenced timestamps, the shadow on load, the lease check on every answer, and the
//! retry, unchanged, of a write whose outcome is unknown. Runs on the bridge thread.
//!
//! Without `Fences` (the static cluster) every user is at epoch 0, always held, always within
//! the lease: the same statements and timestamps (`fence(0, seq)`), no shadow (nobody else
//! ever writes the user), and a user first written without a load is taken as loaded.

use std::sync::Arc;
use std::time::Duration;

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::serialize::SerializationError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::MaybeUnset;
use tokio::sync::watch;
use uuid::Uuid;

use super::ops::{timed, BodyData};
use super::queries::{first_row, Ctx};
use crate::fencing::{epoch_of, fence, shadow, UserQueue, FENCE_BASE, MAX_FENCED};
use crate::storage::UserMeta;

pub(crate) use super::ops::Fencing;

/// Where a shared (channel) body is written: resolved once its row in `bodies` is (or is not).
pub(super) type BodyGate = watch::Receiver<Option<Result<(), String>>>;

pub(super) enum RowBody {
    Inline(Arc<BodyData>),
    Shared(Uuid, BodyGate),
}

/// A message row: unix seconds it expires at, its TTL, its body.
pub(super) struct Row {
    pub(super) exp: i64,
    pub(super) ttl: i32,
    pub(super) body: RowBody,
}

/// An idempotency row written in the same (logged) batch: id, fingerprint, answer,
/// expires_at, TTL. The answer is the item's seq; it is stored as the row's fenced timestamp
/// (`fence(epoch, seq)`), so a repeat can tell whether that row is still this message
/// (`queries::idem_still_holds`).
pub(super) type IdemRow = (String, i64, i64, i64, i32);

/// One seq of one user in a write.
pub(super) struct Item {
    pub(super) seq: u64,
    /// None: already expired, only the highest seq is raised.
    pub(super) row: Option<Row>,
    pub(super) idem: Option<IdemRow>,
    /// The request this item answers; None once answered (a retry).
    pub(super) pending: Option<u64>,
}

/// A user as the bridge knows it.
pub(super) struct UserState {
    /// The epoch it was loaded at: written at that epoch only.
    pub(super) epoch: u32,
    /// The highest row seq the partition held at load (rows above the highest seq are
    /// invisible, an old owner's): a seq up to it is written with every column, so nothing of
    /// the old row survives.
    pub(super) top: u64,
    pub(super) queue: UserQueue<Item>,
    /// A write's outcome is unknown: it is being sent again; nothing else is written.
    pub(super) stuck: bool,
    /// Memory on the core may be ahead of the store (a write failed): load it again first.
    pub(super) stale: bool,
}

impl UserState {
    pub(super) fn new(epoch: u32, top: u64) -> UserState {
        UserState {
            epoch,
            top,
            queue: UserQueue::default(),
            stuck: false,
            stale: false,
        }
    }
}

/// How a user's write ended.
pub(super) enum Outcome {
    Applied,
    /// Known not to have been applied (refused before it was carried out).
    Refused(String),
    /// No answer, or one that does not say: it may have been applied.
    Unknown(String),
}

/// A user's write that has come back.
pub(super) struct Landed {
    pub(super) uid: String,
    pub(super) epoch: u32,
    pub(super) top: u64,
    pub(super) items: Vec<Item>,
    pub(super) outcome: Outcome,
    /// Sends so far (1 for a first write).
    pub(super) sends: u32,
}

/// The bound values of one statement of a user's batch (one type, so a batch of any shape is
/// a `Vec` of them).
enum Values<'a> {
    Inline(
        (
            &'a str,
            i64,
            i64,
            i8,
            &'a str,
            MaybeUnset<&'a str>,
            &'a str,
            i32,
            i64,
        ),
    ),
    Ref((&'a str, i64, i64, Uuid, i32, i64)),
    OverInline(
        (
            &'a str,
            i64,
            i64,
            i8,
            &'a str,
            Option<&'a str>,
            &'a str,
            i32,
            i64,
        ),
    ),
    Max((i64, i64, &'a str)),
    Idem((&'a str, i64, i64, i64, i32)),
    Drop((i64, &'a str, i64)),
}

impl SerializeRow for Values<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        w: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        match self {
            Values::Inline(v) => v.serialize(ctx, w),
            Values::Ref(v) => v.serialize(ctx, w),
            Values::OverInline(v) => v.serialize(ctx, w),
            Values::Max(v) => v.serialize(ctx, w),
            Values::Idem(v) => v.serialize(ctx, w),
            Values::Drop(v) => v.serialize(ctx, w),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

fn to_i64(v: u64) -> Result<i64, String> {
    if v > MAX_FENCED {
        return Err(format!("scylla: seq {v} is out of range"));
    }
    Ok(v as i64)
}

/// Whether the driver's error says the statement was never carried out (so it changed
/// nothing); anything else leaves the outcome unknown.
fn refused(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_) => true,
        ExecutionError::LastAttemptError(a) => match a {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(d, _) => matches!(
                d,
                DbError::SyntaxError
                    | DbError::Invalid
                    | DbError::AlreadyExists { .. }
                    | DbError::Unauthorized
                    | DbError::ConfigError
                    | DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::Unprepared { .. }
                    | DbError::RateLimitReached { .. }
            ),
            _ => false,
        },
        _ => false,
    }
}

/// Sends one user's batch: its rows at `fence(epoch, seq)`, its highest seq (a static cell,
/// no TTL) at `fence(epoch, highest)`, in one single-partition batch (logged when it carries an
/// idempotency row, which lives in another partition). `delay` first, for a retry.
pub(super) async fn write(
    ctx: Arc<Ctx>,
    uid: String,
    epoch: u32,
    top: u64,
    items: Vec<Item>,
    sends: u32,
) -> Landed {
    if sends > 1 {
        let backoff = 50u64 << (sends - 1).min(5);
        tokio::time::sleep(Duration::from_millis(backoff.min(1000))).await;
    }
    let outcome = send(&ctx, &uid, epoch, top, &items).await;
    Landed {
        uid,
        epoch,
        top,
        items,
        outcome,
        sends,
    }
}

async fn send(ctx: &Ctx, uid: &str, epoch: u32, top: u64, items: &[Item]) -> Outcome {
    for it in items {
        if let Some(Row {
            body: RowBody::Shared(_, gate),
            ..
        }) = &it.row
        {
            let mut gate = gate.clone();
            let res = gate.wait_for(Option::is_some).await.map(|v| v.clone());
            match res {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => return Outcome::Refused(e),
                _ => return Outcome::Refused("scylla: the bridge is closing".into()),
            }
        }
    }
    let mut values = Vec::with_capacity(items.len() + 1);
    let mut batch = Batch::new(if items.iter().any(|i| i.idem.is_some()) {
        BatchType::Logged
    } else {
        BatchType::Unlogged
    });
    batch.set_request_timeout(Some(ctx.timeout));
    let st = &ctx.st;
    let mut highest = 0;
    for it in items {
        let s = match to_i64(it.seq) {
            Ok(s) => s,
            Err(e) => return Outcome::Refused(e.replacen("scylla: ", "scylla: append: ", 1)),
        };
        highest = highest.max(it.seq);
        let ts = fence(epoch, it.seq);
        if let Some(r) = &it.row {
            let over = it.seq <= top;
            match &r.body {
                RowBody::Inline(b) => {
                    let channel = b.channel.as_deref();
                    if over {
                        batch.append_statement(st.over_inline.clone());
                        values.push(Values::OverInline((
                            uid, s, r.exp, b.kind, &b.sender, channel, &b.body, r.ttl, ts,
                        )));
                    } else {
                        batch.append_statement(st.insert_inline.clone());
                        let channel = channel.map_or(MaybeUnset::Unset, MaybeUnset::Set);
                        values.push(Values::Inline((
                            uid, s, r.exp, b.kind, &b.sender, channel, &b.body, r.ttl, ts,
                        )));
                    }
                }
                RowBody::Shared(id, _) => {
                    let stmt = if over { &st.over_ref } else { &st.insert_ref };
                    batch.append_statement(stmt.clone());
                    values.push(Values::Ref((uid, s, r.exp, *id, r.ttl, ts)));
                }
            }
        }
        if it.row.is_none() {
            // A seq given to a message that expired before it was written: an old owner's
            // row at this seq would show once the highest seq passes it.
            batch.append_statement(st.drop_row.clone());
            values.push(Values::Drop((ts, uid, s)));
        }
        if let Some((id, fp, answer, exp, ttl)) = &it.idem {
            debug_assert_eq!(*answer, s, "a unicast key answers its message's seq");
            batch.append_statement(st.insert_idem.clone());
            values.push(Values::Idem((id, *fp, ts, *exp, *ttl)));
        }
    }
    batch.append_statement(st.raise_max.clone());
    values.push(Values::Max((fence(epoch, highest), highest as i64, uid)));
    let _permit = ctx.permits.acquire().await;
    match tokio::time::timeout(ctx.timeout, ctx.session.batch(&batch, values)).await {
        Ok(Ok(_)) => Outcome::Applied,
        Ok(Err(e)) if refused(&e) => Outcome::Refused(format!("scylla: append: {e}")),
        Ok(Err(e)) => Outcome::Unknown(format!("scylla: append: {e}")),
        Err(_) => Outcome::Unknown(format!(
            "scylla: append: no answer within {} ms",
            ctx.timeout.as_millis()
        )),
    }
}

/// What a load found: the user's counters and the highest row seq in its partition.
pub(super) struct Loaded {
    pub(super) meta: UserMeta,
    pub(super) top: u64,
}

/// The static highest seq and the highest row: `(seq, max_seq, writetime(max_seq))`.
type TopRow = (Option<i64>, Option<i64>, Option<i64>);

/// Loads `uid` to be served at `epoch` (rule 5): reads its highest seq `M` (the static cell;
/// `users.max_seq` of a keyspace written before it existed is a floor) and `last_ack`; if `M`
/// was written at an older epoch (or never), writes it back at `shadow(epoch)` first, so an
/// old owner's write still in flight loses to it. A cell of a newer epoch means another member
/// owns the user now: refused. The caller holds a permit.
pub(super) async fn load(
    ctx: &Ctx,
    fencing: &Fencing,
    uid: &str,
    epoch: u32,
) -> Result<Loaded, String> {
    let (top, user) = tokio::join!(
        first_row::<TopRow>(ctx, "load_user", &ctx.st.top, (uid,)),
        first_row::<(Option<i64>, Option<i64>)>(ctx, "load_user", &ctx.st.user, (uid,)),
    );
    let (row_seq, cell, written) = top?.unwrap_or_default();
    let (legacy, last_ack) = user?.unwrap_or_default();
    let fenced_at = written.filter(|&ts| ts >= FENCE_BASE);
    if let Some(ts) = fenced_at.filter(|&ts| epoch_of(ts) > epoch) {
        return Err(format!(
            "scylla: load_user: {uid} was written at epoch {} (this member serves epoch \
             {epoch}): another member owns it",
            epoch_of(ts)
        ));
    }
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let last_ack = n(last_ack);
    let max_seq = n(cell).max(n(legacy)).max(last_ack);
    if !fencing.is_static() && fenced_at.is_none_or(|ts| ts < shadow(epoch)) {
        let m = to_i64(max_seq)?;
        timed(
            ctx.timeout,
            "load_user (shadow)",
            ctx.session
                .execute_unpaged(&ctx.st.raise_max, (shadow(epoch), m, uid)),
        )
        .await?;
    }
    if !fencing.valid(uid, epoch) {
        return Err(format!(
            "scylla: load_user: {uid}: the slot moved or the lease lapsed while loading"
        ));
    }
    Ok(Loaded {
        meta: UserMeta { max_seq, last_ack },
        top: n(row_seq).max(max_seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_say_nothing_ran_are_refusals() {
        let db = |d| ExecutionError::LastAttemptError(RequestAttemptError::DbError(d, "x".into()));
        assert!(refused(&db(DbError::Invalid)));
        assert!(refused(&db(DbError::Overloaded)));
        assert!(!refused(&db(DbError::ServerError)));
        assert!(!refused(&ExecutionError::RequestTimeout(
            Duration::from_secs(1)
        )));
        assert!(!refused(&db(DbError::WriteTimeout {
            consistency: scylla::statement::Consistency::One,
            received: 0,
            required: 1,
            write_type: scylla::errors::WriteType::Simple,
        })));
    }
}
