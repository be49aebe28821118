//! The bridge between a core and the driver: what crosses it (owned, `Send`), the bridge
//! thread (a current-thread tokio runtime, one `Session`), its loop, which keeps the ordering
//! promised in the module doc of `storage::scylla` and owns the core's users as written
//! (`users`), and the forwarder that sends answers back to the core in batches. Runs on the
//! bridge thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::ops::{Answer, Answers, BodyData, Read, Reply, Write};
use super::queries::{check, connect, idem_values, read, store_body, write, Ctx, Stamp};
use super::users::{self, Fencing, Item, Landed, Outcome, Row, RowBody, UserState};
use super::{ttl_for, ScyllaParams};
use crate::fencing::{fence, MAX_FENCED};
use crate::storage::{IdemRecord, UserMeta};

pub(super) enum Req {
    Write(Write),
    Read(Read),
    /// Answered once every earlier write has completed.
    Flush(Reply<()>),
    /// A quick read at once (not after earlier writes): does the database answer?
    Check(Reply<()>),
    /// Answered once everything earlier has completed; then the bridge thread ends.
    Close(Reply<()>),
}

/// Answers per batch sent to the core (more wait for the next batch).
const ANSWER_BATCH: usize = 1024;
/// How often the users that need no memory here are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How long a close keeps sending the writes whose outcome is unknown: one that lands after
/// the node stopped could carry a seq its next start gives again (a static cluster has no
/// newer epoch to fence it).
const SETTLE_AT_CLOSE: Duration = Duration::from_secs(10);

/// The bridge thread: `rx` brings the core's requests a batch at a time, `to_core` takes the
/// answers back the same way; `ready` says whether the session connected.
pub(super) fn bridge_thread(
    params: ScyllaParams,
    fencing: Fencing,
    rx: mpsc::UnboundedReceiver<Vec<Req>>,
    to_core: mpsc::UnboundedSender<Vec<Answer>>,
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
        match connect(&params, &fencing).await {
            Ok(ctx) => {
                if ready.send(Ok(())).is_ok() {
                    let (tx, answers) = mpsc::unbounded_channel();
                    let forwarder = tokio::spawn(forward(answers, to_core));
                    Bridge::new(Arc::new(ctx), fencing, Answers(tx))
                        .serve(rx)
                        .await;
                    // Every task that held an `Answers` has ended: the forwarder drains the
                    // last answers (the close's among them), then ends.
                    let _ = forwarder.await;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

/// The values of membership changes' fenced timestamps: milliseconds that increase in issue
/// order (a fenced timestamp has 42 bits for them: milliseconds until 2109). A burst of more
/// than one change per millisecond runs ahead of the clock while it lasts.
#[derive(Debug, Default)]
pub(super) struct Clock {
    last: u64,
}

impl Clock {
    pub(super) fn next(&mut self, now_ms: u64) -> u64 {
        self.last = now_ms.max(self.last + 1).min(MAX_FENCED);
        self.last
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends the answers to the core, as many at a time as have come in since the last send: the
/// tasks that complete in one turn of this runtime answer with one wake of the core.
async fn forward(
    mut answers: mpsc::UnboundedReceiver<Answer>,
    to_core: mpsc::UnboundedSender<Vec<Answer>>,
) {
    let mut batch = Vec::new();
    while answers.recv_many(&mut batch, ANSWER_BATCH).await > 0 {
        // A core that is gone (its store dropped) wants no answers.
        let _ = to_core.send(std::mem::take(&mut batch));
    }
}

fn not_served(uid: &str) -> String {
    format!("scylla: {uid}: {}", crate::storage::NOT_SERVED)
}

/// A request whose items wait in users' queues: answered once all of them have settled.
struct Pending {
    left: usize,
    err: Option<String>,
    reply: Reply<()>,
}

/// What a finished task hands back to the loop.
enum Done {
    /// It answered its request itself.
    Answered,
    Landed(Landed),
    /// A load's result, recorded before it is answered.
    Loaded {
        uid: String,
        epoch: u32,
        res: Result<users::Loaded, String>,
        reply: Reply<UserMeta>,
    },
}

/// The bridge's loop and what it owns: the core's users as written, the requests whose items
/// are queued, the tasks in flight.
struct Bridge {
    ctx: Arc<Ctx>,
    fencing: Fencing,
    out: Answers,
    users: HashMap<String, UserState>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Writes and what follows from them: a read waits for every one issued before it.
    writes: JoinSet<Done>,
    /// Writes sent again until their outcome is known: no read waits for them.
    retries: JoinSet<Done>,
    reads: JoinSet<Done>,
    clock: Clock,
}

impl Bridge {
    fn new(ctx: Arc<Ctx>, fencing: Fencing, out: Answers) -> Bridge {
        Bridge {
            ctx,
            fencing,
            out,
            users: HashMap::new(),
            pending: HashMap::new(),
            next_id: 0,
            writes: JoinSet::new(),
            retries: JoinSet::new(),
            reads: JoinSet::new(),
            clock: Clock::default(),
        }
    }

    /// Takes requests in issue order, a batch at a time (see the module doc of
    /// `storage::scylla` for the ordering), and the tasks' results as they come.
    async fn serve(mut self, mut rx: mpsc::UnboundedReceiver<Vec<Req>>) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                biased;
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => {
                    self.on_done(done.ok());
                }
                Some(done) = self.retries.join_next(), if !self.retries.is_empty() => {
                    self.on_done(done.ok());
                }
                Some(done) = self.reads.join_next(), if !self.reads.is_empty() => {
                    self.on_done(done.ok());
                }
                batch = rx.recv() => {
                    let Some(batch) = batch else { break };
                    for req in batch {
                        if self.take(req).await {
                            return;
                        }
                    }
                }
                _ = prune.tick() => self.prune(),
            }
        }
        // The store was dropped without close: finish what was started.
        self.finish().await;
    }

    /// Handles one request; true for the close (everything has ended then).
    async fn take(&mut self, req: Req) -> bool {
        match req {
            Req::Write(Write::Append {
                body,
                expires_at,
                entries,
                reply,
            }) => self.append(body, expires_at, entries, None, reply),
            Req::Write(Write::AppendKeyed {
                body,
                expires_at,
                entries,
                idem,
                reply,
            }) => self.append(body, expires_at, entries, Some(idem), reply),
            Req::Write(w) => {
                let stamp = match self.stamp(&w) {
                    Ok(stamp) => stamp,
                    Err(e) => {
                        refuse(w, e, &self.out);
                        return false;
                    }
                };
                let (ctx, out) = (self.ctx.clone(), self.out.clone());
                self.writes.spawn(async move {
                    write(ctx, w, stamp, out).await;
                    Done::Answered
                });
            }
            Req::Read(Read::User { uid, reply }) => {
                self.drain().await;
                self.load(uid, reply);
            }
            Req::Read(r) => {
                self.drain().await;
                let (ctx, out) = (self.ctx.clone(), self.out.clone());
                self.reads.spawn(async move {
                    read(ctx, r, out).await;
                    Done::Answered
                });
            }
            Req::Check(reply) => {
                let (ctx, out) = (self.ctx.clone(), self.out.clone());
                self.reads.spawn(async move {
                    check(ctx, reply, out).await;
                    Done::Answered
                });
            }
            Req::Flush(reply) => {
                self.drain().await;
                self.out.send(reply, Ok(()));
            }
            Req::Close(reply) => {
                self.finish().await;
                self.out.send(reply, Ok(()));
                return true;
            }
        }
        false
    }

    /// The fence of an ack or a membership change: its user's epoch now and its timestamp
    /// (`fence(epoch, last_ack)`, `fence(epoch, clock)`); none for an idempotency key.
    fn stamp(&mut self, w: &Write) -> Result<Option<Stamp>, String> {
        let (uid, value) = match w {
            Write::Ack { uid, last_ack, .. } => (uid, (*last_ack).min(MAX_FENCED)),
            Write::Member { uid, .. } => (uid, self.clock.next(now_ms())),
            _ => return Ok(None),
        };
        let epoch = self.fencing.epoch(uid).ok_or_else(|| not_served(uid))?;
        Ok(Some(Stamp {
            fencing: self.fencing.clone(),
            epoch,
            ts: fence(epoch, value),
        }))
    }

    /// Queues each `(uid, seq)` in its user's queue (rule 7); a shared body is written first,
    /// and the rows that refer to it wait for it. Answered once every item has settled.
    fn append(
        &mut self,
        body: BodyData,
        expires_at: u64,
        entries: Vec<(String, u64)>,
        idem: Option<IdemRecord>,
        reply: Reply<()>,
    ) {
        let now = crate::stats::unix_now();
        let mut idem = match idem.as_ref().map(|r| idem_values(r, now)).transpose() {
            Ok(v) => v
                .flatten()
                .map(|(id, fp, a, e, t)| (id.to_string(), fp, a, e, t)),
            Err(e) => return self.out.send(reply, Err(e)),
        };
        if entries.is_empty() {
            return self.out.send(reply, Ok(()));
        }
        let ttl = ttl_for(expires_at, now);
        let exp = expires_at.min(i64::MAX as u64) as i64;
        let body = Arc::new(body);
        let shared = match ttl {
            Some(ttl) if entries.len() > 1 => {
                let (tx, gate) = watch::channel(None);
                let id = Uuid::new_v4();
                let (ctx, b) = (self.ctx.clone(), body.clone());
                self.writes.spawn(async move {
                    store_body(ctx, id, b, ttl, tx).await;
                    Done::Answered
                });
                Some((id, gate))
            }
            _ => None,
        };
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(
            id,
            Pending {
                left: entries.len(),
                err: None,
                reply,
            },
        );
        for (uid, seq) in entries {
            let row = ttl.map(|ttl| Row {
                exp,
                ttl,
                body: match &shared {
                    Some((bid, gate)) => RowBody::Shared(*bid, gate.clone()),
                    None => RowBody::Inline(body.clone()),
                },
            });
            let item = Item {
                seq,
                row,
                idem: idem.take(),
                pending: Some(id),
            };
            self.enqueue(uid, item);
        }
    }

    /// One item into its user's queue; refused at once when the user's slot is not served
    /// here at the epoch it was loaded at, or the user must be loaded again first.
    fn enqueue(&mut self, uid: String, item: Item) {
        let Some(epoch) = self.fencing.epoch(&uid) else {
            if let Some(u) = self.users.get_mut(&uid) {
                u.stale = true;
            }
            return self.settle(&item, Err(format!("scylla: append: {}", not_served(&uid))));
        };
        if self.fencing.is_static() && !self.users.contains_key(&uid) {
            // Nobody else writes a static cluster's users: one written before any load is as
            // good as loaded.
            self.users.insert(uid.clone(), UserState::new(0, 0));
        }
        let refusal = match self.users.get_mut(&uid) {
            None => Some(format!(
                "scylla: append: {uid} is written before it was loaded"
            )),
            Some(u) if u.stuck => Some(format!(
                "scylla: append: an earlier write of {uid} has no known outcome yet"
            )),
            Some(u) if u.stale => Some(format!(
                "scylla: append: {uid} must be loaded again (an earlier write failed)"
            )),
            Some(u) if u.epoch != epoch => {
                u.stale = true;
                Some(format!(
                    "scylla: append: {uid} was loaded at epoch {}, its slot is at epoch {epoch} now",
                    u.epoch
                ))
            }
            Some(_) => None,
        };
        if let Some(e) = refusal {
            return self.settle(&item, Err(e));
        }
        let u = self.users.get_mut(&uid).expect("checked above");
        if let Some(batch) = u.queue.push(item) {
            let (epoch, top) = (u.epoch, u.top);
            self.spawn_write(uid, epoch, top, batch, 1);
        }
    }

    fn spawn_write(&mut self, uid: String, epoch: u32, top: u64, items: Vec<Item>, sends: u32) {
        let ctx = self.ctx.clone();
        let task =
            async move { Done::Landed(users::write(ctx, uid, epoch, top, items, sends).await) };
        if sends > 1 {
            self.retries.spawn(task);
        } else {
            self.writes.spawn(task);
        }
    }

    /// Loads a user (after every earlier write): refused at once while one of its writes has
    /// no known outcome, or when its slot is not served here.
    fn load(&mut self, uid: String, reply: Reply<UserMeta>) {
        if self.users.get(&uid).is_some_and(|u| u.stuck) {
            let e =
                format!("scylla: load_user: an earlier write of {uid} has no known outcome yet");
            return self.out.send(reply, Err(e));
        }
        let Some(epoch) = self.fencing.epoch(&uid) else {
            return self.out.send(reply, Err(not_served(&uid)));
        };
        let (ctx, fencing) = (self.ctx.clone(), self.fencing.clone());
        self.reads.spawn(async move {
            let res = {
                let _permit = ctx.permits.acquire().await;
                users::load(&ctx, &fencing, &uid, epoch).await
            };
            Done::Loaded {
                uid,
                epoch,
                res,
                reply,
            }
        });
    }

    fn on_done(&mut self, done: Option<Done>) {
        match done {
            None | Some(Done::Answered) => {}
            Some(Done::Landed(l)) => self.landed(l),
            Some(Done::Loaded {
                uid,
                epoch,
                res,
                reply,
            }) => {
                let res = res.map(|l| {
                    // A user with a write unsettled keeps its state (the core loads a user
                    // before it writes it, so that write is an older one's).
                    let busy = self
                        .users
                        .get(&uid)
                        .is_some_and(|u| u.stuck || !u.queue.is_idle());
                    if !busy {
                        self.users.insert(uid, UserState::new(epoch, l.top));
                    }
                    l.meta
                });
                self.out.send(reply, res);
            }
        }
    }

    /// A user's write came back: its items settle (`ok` only if it applied and the answer
    /// came within the lease at its epoch), and the user's next batch goes out; a write with
    /// no known outcome is sent again, unchanged, while the slot is held at its epoch.
    fn landed(&mut self, l: Landed) {
        let Landed {
            uid,
            epoch,
            top,
            items,
            outcome,
            sends,
        } = l;
        let res = match outcome {
            Outcome::Applied if self.fencing.valid(&uid, epoch) => Ok(()),
            Outcome::Applied => Err(format!(
                "scylla: append: {uid}: answered after the slot moved or the lease lapsed"
            )),
            Outcome::Refused(e) => Err(e),
            Outcome::Unknown(e) => {
                for it in &items {
                    self.settle(it, Err(e.clone()));
                }
                let held = self.fencing.holds(&uid, epoch);
                let retry: Vec<Item> = items
                    .into_iter()
                    .map(|it| Item {
                        pending: None,
                        ..it
                    })
                    .collect();
                let Some(u) = self.users.get_mut(&uid) else {
                    return;
                };
                u.stale = true;
                let waiting = u.queue.done();
                if held {
                    // Nothing else is written meanwhile: the next write would depend on it.
                    u.stuck = true;
                    if sends == 1 {
                        tracing::warn!(%uid, error = %e, "a write has no known outcome: sending it again until it has");
                    }
                    self.spawn_write(uid.clone(), epoch, top, retry, sends + 1);
                } else {
                    u.stuck = false;
                }
                self.fail_waiting(&uid, waiting);
                return;
            }
        };
        for it in &items {
            self.settle(it, res.clone());
        }
        let Some(u) = self.users.get_mut(&uid) else {
            return;
        };
        u.stuck = false;
        if res.is_err() || sends > 1 {
            u.stale = true;
            let waiting = u.queue.done();
            self.fail_waiting(&uid, waiting);
        } else if let Some(next) = u.queue.done() {
            let (epoch, top) = (u.epoch, u.top);
            self.spawn_write(uid, epoch, top, next, 1);
        }
    }

    /// Items queued behind a write that failed: not sent (their seqs would leave a gap).
    fn fail_waiting(&mut self, uid: &str, waiting: Option<Vec<Item>>) {
        let e = format!("scylla: append: an earlier write of {uid} failed");
        for it in waiting.into_iter().flatten() {
            self.settle(&it, Err(e.clone()));
        }
        if let Some(u) = self.users.get_mut(uid) {
            if !u.stuck {
                u.queue = Default::default();
            }
        }
    }

    fn settle(&mut self, item: &Item, res: Result<(), String>) {
        let Some(id) = item.pending else {
            return;
        };
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.left -= 1;
        if let Err(e) = res {
            p.err.get_or_insert(e);
        }
        if p.left == 0 {
            let p = self.pending.remove(&id).expect("present");
            self.out.send(p.reply, p.err.map_or(Ok(()), Err));
        }
    }

    /// Waits for every write issued so far (and what follows from them), not for retries.
    async fn drain(&mut self) {
        while let Some(done) = self.writes.join_next().await {
            self.on_done(done.ok());
        }
    }

    /// Everything ends; the writes whose outcome is unknown are sent again for up to
    /// `SETTLE_AT_CLOSE`, then given up (their outcome stays unknown, and the log says so).
    async fn finish(&mut self) {
        self.drain().await;
        while let Some(done) = self.reads.join_next().await {
            self.on_done(done.ok());
        }
        if self.retries.is_empty() {
            return;
        }
        let unknown = self.retries.len();
        tracing::info!(
            writes = unknown,
            "closing: sending writes whose outcome is unknown again until it is known"
        );
        let end = tokio::time::Instant::now() + SETTLE_AT_CLOSE;
        while let Ok(Some(done)) = tokio::time::timeout_at(end, self.retries.join_next()).await {
            self.on_done(done.ok());
            self.drain().await;
        }
        if self.retries.is_empty() {
            tracing::info!(writes = unknown, "closing: every write's outcome is known");
        } else {
            tracing::warn!(
                writes = self.retries.len(),
                "closing with writes whose outcome is unknown (given up after {} s)",
                SETTLE_AT_CLOSE.as_secs()
            );
            self.retries.abort_all();
        }
    }

    /// Forgets the users this bridge need not remember: idle ones of the static cluster, and
    /// idle ones whose slot is no longer held at the epoch they were loaded at (a write would
    /// be refused either way: a missing user must be loaded first).
    fn prune(&mut self) {
        let fencing = &self.fencing;
        self.users.retain(|uid, u| {
            let busy = u.stuck || !u.queue.is_idle();
            busy || (fencing.is_static() && u.stale)
                || (!fencing.is_static() && fencing.holds(uid, u.epoch))
        });
    }
}

/// Answers a write that cannot be fenced (its user's slot is not served here).
fn refuse(w: Write, e: String, out: &Answers) {
    match w {
        Write::Append { reply, .. }
        | Write::AppendKeyed { reply, .. }
        | Write::Idem { reply, .. }
        | Write::Ack { reply, .. }
        | Write::Member { reply, .. } => out.send(reply, Err(e)),
    }
}
