//! The dynamic cluster's control loop: this member's row and heartbeats in the keyspace, the
//! watch over the others, kills of the silent, slot claims and hand-overs by the rules of
//! `ownership`, and a new [`View`] for the cores whenever it changes. Runs on a thread of its
//! own (a tokio current-thread runtime with its own scylla session); cores never wait on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use crate::storage::scylla::timed;

use super::ownership::{
    slot_writes, to_release, Beat, BeatWrite, Holder, Lease, Outcome, SlotRow, SlotWrite, Timing,
    Watch,
};

/// What a member needs to take part.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// `--node`: unique in the cluster, kept across restarts.
    pub name: String,
    /// Where clients, the admin API and the bus reach this member (`host:port` each).
    pub client: String,
    pub admin: String,
    pub bus: String,
    pub timing: Timing,
    /// The keyspace's slot count: fixed by its first member, refused if another differs.
    pub slots: u32,
    /// The longest any one statement may take.
    pub timeout: Duration,
}

/// A member's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's number for the keyspace's life (`member_ids`): its `NodeId` on the bus.
    pub id: u16,
    pub name: String,
    pub incarnation: u64,
    pub beat: u64,
    pub alive: bool,
    pub client: String,
    pub admin: String,
    pub bus: String,
    /// Draining: still alive and holding slots, but they go to the others.
    pub leaving: bool,
}

/// The cluster as this member last read it; the cores route by it, swapped whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub me: Holder,
    /// This member's id (its `NodeId` on the bus).
    pub id: u16,
    pub members: Vec<Member>,
    /// Indexed by slot.
    pub slots: Vec<SlotRow>,
    /// Slots this member holds but has stopped serving, to hand them over.
    pub releasing: Vec<u32>,
}

impl View {
    /// The alive members that slots may go to (not leaving).
    pub fn live(&self) -> Vec<Holder> {
        self.holders(|m| m.alive && !m.leaving)
    }

    /// Every member whose row says alive, leaving ones included (they still hold slots).
    pub fn alive(&self) -> Vec<Holder> {
        self.holders(|m| m.alive)
    }

    fn holders(&self, which: impl Fn(&Member) -> bool) -> Vec<Holder> {
        self.members
            .iter()
            .filter(|m| which(m))
            .map(|m| Holder {
                name: m.name.clone(),
                incarnation: m.incarnation,
            })
            .collect()
    }

    /// The epoch at which this member serves `slot`, if it does.
    pub fn serving(&self, slot: u32) -> Option<u32> {
        let row = self.slots.get(slot as usize)?;
        (row.holder.as_ref() == Some(&self.me) && !self.releasing.contains(&slot))
            .then_some(row.epoch)
    }
}

pub use crate::fencing::LeaseClock;

/// A running control loop. Dropping it stops the loop without leaving the cluster: to the
/// others this member falls silent, as after a crash.
pub struct Control {
    stop: Arc<AtomicBool>,
    /// Set by `leave`: hand every slot over, then end.
    leave: Arc<AtomicBool>,
    lease: Arc<LeaseClock>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Control {
    /// Starts the loop. `on_view` gets every changed view (on the control thread: hand it to the
    /// cores, do not block); `drained(slot)` says whether the cores stopped serving a slot of
    /// `View::releasing` and have no write of it in flight, so it may be handed over.
    pub fn start(
        s: Settings,
        on_view: impl FnMut(Arc<View>) + Send + 'static,
        drained: impl FnMut(u32) -> bool + Send + 'static,
    ) -> Result<Control, String> {
        Self::start_with_lease(s, Arc::new(LeaseClock::new()), on_view, drained)
    }

    /// `start`, keeping this member's lease on `lease` (which the stores' fences read).
    pub fn start_with_lease(
        s: Settings,
        lease: Arc<LeaseClock>,
        on_view: impl FnMut(Arc<View>) + Send + 'static,
        drained: impl FnMut(u32) -> bool + Send + 'static,
    ) -> Result<Control, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let (stop2, leave2, lease2) = (stop.clone(), leave.clone(), lease.clone());
        let thread = std::thread::Builder::new()
            .name("ipush-control".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
                rt.block_on(run(s, stop2, leave2, lease2, on_view, drained))
            })
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(Control {
            stop,
            leave,
            lease,
            thread: Some(thread),
        })
    }

    /// Starts leaving the cluster: this member is marked leaving (slots stop coming to it),
    /// hands each slot over once `drained` says so, marks itself down and the loop ends
    /// (`is_running` turns false; `stop` then says whether all went well).
    pub fn leave(&self) {
        self.leave.store(true, Ordering::Release);
    }

    /// Whether the loop still runs (it ends by itself only on an error it cannot retry, or
    /// once it has left).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn lease(&self) -> Arc<LeaseClock> {
        self.lease.clone()
    }

    /// Waits up to `limit` for the loop to end by itself (only an error it cannot retry ends
    /// it, such as a slot count other than the keyspace's): its result, or None if it runs on.
    pub fn ended_within(mut self, limit: Duration) -> Option<Result<(), String>> {
        let t0 = Instant::now();
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if t0.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.halt())
    }

    /// Stops the loop (as `drop` does) and says why it had ended, if it had failed.
    pub fn stop(mut self) -> Result<(), String> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the control thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

async fn run(
    s: Settings,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    clock: Arc<LeaseClock>,
    mut on_view: impl FnMut(Arc<View>),
    mut drained: impl FnMut(u32) -> bool,
) -> Result<(), String> {
    let db = Arc::new(Db::connect(&s).await?);
    db.check_slot_count(s.slots).await?;
    let my_id = loop {
        match db.claim_id(&s.name).await {
            Ok(id) => break id,
            Err(e) if e.starts_with(NO_ID) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "claiming this member's id failed: retrying");
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(s.timing.beat_every_ms.max(1))).await;
            }
        }
    };
    tracing::info!(name = %s.name, id = my_id, "member id");
    let every = Duration::from_millis(s.timing.beat_every_ms.max(1));
    let mut last_view: Option<Arc<View>> = None;
    'incarnation: while !stop.load(Ordering::Acquire) {
        let me = Holder {
            name: s.name.clone(),
            incarnation: new_incarnation(),
        };
        if !register(&db, &s, &me, &stop, &clock).await {
            return Ok(());
        }
        let mut lease = Lease::new(&s.timing, me.incarnation);
        let mut watch = Watch::default();
        let mut releasing: Vec<u32> = Vec::new();
        let mut marked_leaving = false;
        while !stop.load(Ordering::Acquire) {
            if leave.load(Ordering::Acquire) && !marked_leaving {
                marked_leaving = db.set_leaving(&me).await == Outcome::Applied;
            }
            let started = Instant::now();
            if let Some(w) = lease.beat(clock.now_ms()) {
                lease.on_beat(&w, db.beat(&me.name, &w).await);
                let until = lease.until().unwrap_or(0);
                clock.set_until(until);
            }
            if lease.is_lost() {
                clock.set_until(0);
                tracing::warn!(name = %me.name, "declared down by the others: joining again");
                continue 'incarnation;
            }
            let (Ok(members), Ok(mut rows)) = (db.members().await, db.slots(s.slots).await) else {
                tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
                continue;
            };
            let now = clock.now_ms();
            for m in &members {
                let beat = Beat {
                    incarnation: m.incarnation,
                    count: m.beat,
                };
                match (m.alive, m.name == me.name) {
                    (true, false) => watch.observe(&m.name, beat, now),
                    (false, _) => watch.forget(&m.name),
                    (true, true) => {}
                }
            }
            for (name, beat) in watch.silent(now, s.timing.member_timeout_ms) {
                if db.kill(&name, beat).await == Outcome::Applied {
                    tracing::warn!(member = %name, "silent for the member timeout: declared down");
                }
            }
            let view = View {
                me: me.clone(),
                id: my_id,
                members,
                slots: rows.clone(),
                releasing: releasing.clone(),
            };
            let (live, alive) = (view.live(), view.alive());
            if lease.valid_at(clock.now_ms()) && alive.contains(&me) {
                for slot in to_release(&me, &rows, &live) {
                    if !releasing.contains(&slot) {
                        releasing.push(slot);
                    }
                }
                releasing.retain(|slot| rows[*slot as usize].holder.as_ref() == Some(&me));
                let ready: Vec<u32> = releasing.iter().copied().filter(|s| drained(*s)).collect();
                let writes = slot_writes(&me, &rows, &alive, &live, &ready);
                if !writes.is_empty() && db.change_slots(writes).await > 0 {
                    rows = db.slots(s.slots).await.unwrap_or(rows);
                }
            }
            let view = Arc::new(View {
                slots: rows,
                releasing: releasing.clone(),
                ..view
            });
            if last_view.as_deref() != Some(&view) {
                on_view(view.clone());
                last_view = Some(view.clone());
            }
            // Left once nothing is held (or nobody is there to take it): down, not silent, so
            // the others need not wait out the timeout.
            let holds = view.slots.iter().any(|r| r.holder.as_ref() == Some(&me));
            if marked_leaving && (!holds || live.is_empty()) {
                if db.retire(&me).await == Outcome::Applied {
                    tracing::info!(name = %me.name, "left the cluster");
                }
                clock.set_until(0);
                return Ok(());
            }
            tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
        }
    }
    Ok(())
}

/// Microseconds since the Unix epoch: a fresh incarnation for every start of a process.
fn new_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// Writes this member's row: at once when there is none or it is down; after the earlier
/// incarnation has been silent for the member timeout when it still looks alive (it may be a
/// paused process of ours, not a dead one). False when stopped first.
async fn register(
    db: &Db,
    s: &Settings,
    me: &Holder,
    stop: &AtomicBool,
    clock: &LeaseClock,
) -> bool {
    let mut own = Watch::default();
    while !stop.load(Ordering::Acquire) {
        let expect = match db.member(&me.name).await {
            Ok(None) => Some(None),
            Ok(Some(m)) if !m.alive => Some(Some((m.incarnation, None))),
            Ok(Some(m)) => {
                let beat = Beat {
                    incarnation: m.incarnation,
                    count: m.beat,
                };
                own.observe(&me.name, beat, clock.now_ms());
                let silent = !own
                    .silent(clock.now_ms(), s.timing.member_timeout_ms)
                    .is_empty();
                silent.then_some(Some((m.incarnation, Some(m.beat))))
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading this member's row failed");
                None
            }
        };
        if let Some(expect) = expect {
            if db.register(s, me, expect).await == Outcome::Applied {
                tracing::info!(name = %me.name, incarnation = me.incarnation, "joined the cluster");
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(s.timing.beat_every_ms.max(1))).await;
    }
    false
}

/// The control loop's statements, prepared once.
struct Db {
    session: Session,
    timeout: Duration,
    member: PreparedStatement,
    members: PreparedStatement,
    insert_member: PreparedStatement,
    revive_member: PreparedStatement,
    replace_member: PreparedStatement,
    beat: PreparedStatement,
    kill: PreparedStatement,
    slots: PreparedStatement,
    insert_slot: PreparedStatement,
    move_slot: PreparedStatement,
    slot_count: PreparedStatement,
    set_slot_count: PreparedStatement,
    set_leaving: PreparedStatement,
    retire: PreparedStatement,
    ids: PreparedStatement,
    claim_id: PreparedStatement,
}

/// Member ids are `NodeId`s on the bus: at most this many names per keyspace.
pub const MAX_MEMBERS: u16 = 1024;
const NO_ID: &str = "no free member id";

const MEMBER_COLUMNS: &str = "name, incarnation, beat, alive, client, admin, bus, leaving";

impl Db {
    async fn connect(s: &Settings) -> Result<Db, String> {
        let session = timed(
            s.timeout,
            "connect",
            SessionBuilder::new()
                .known_nodes(&s.nodes)
                .connection_timeout(s.timeout)
                .build(),
        )
        .await?;
        let ks = &s.keyspace;
        let cql = [
            format!("SELECT {MEMBER_COLUMNS} FROM {ks}.members WHERE name = ?"),
            format!("SELECT {MEMBER_COLUMNS} FROM {ks}.members"),
            format!(
                "INSERT INTO {ks}.members ({MEMBER_COLUMNS}) VALUES (?, ?, 0, true, ?, ?, ?, false) \
                 IF NOT EXISTS"
            ),
            format!(
                "UPDATE {ks}.members SET incarnation = ?, beat = 0, alive = true, client = ?, \
                 admin = ?, bus = ?, leaving = false WHERE name = ? \
                 IF alive = false AND incarnation = ?"
            ),
            format!(
                "UPDATE {ks}.members SET incarnation = ?, beat = 0, alive = true, client = ?, \
                 admin = ?, bus = ?, leaving = false WHERE name = ? \
                 IF alive = true AND incarnation = ? AND beat = ?"
            ),
            format!(
                "UPDATE {ks}.members SET beat = ? WHERE name = ? \
                 IF alive = true AND incarnation = ? AND beat IN (?, ?)"
            ),
            format!(
                "UPDATE {ks}.members SET alive = false WHERE name = ? \
                 IF alive = true AND incarnation = ? AND beat = ?"
            ),
            format!("SELECT slot, holder, incarnation, epoch FROM {ks}.slots"),
            format!(
                "INSERT INTO {ks}.slots (slot, holder, incarnation, epoch) VALUES (?, ?, ?, ?) \
                 IF NOT EXISTS"
            ),
            format!(
                "UPDATE {ks}.slots SET holder = ?, incarnation = ?, epoch = ? WHERE slot = ? \
                 IF holder = ? AND incarnation = ? AND epoch = ?"
            ),
            format!("SELECT slots FROM {ks}.cluster WHERE id = 0"),
            format!("INSERT INTO {ks}.cluster (id, slots) VALUES (0, ?) IF NOT EXISTS"),
            format!(
                "UPDATE {ks}.members SET leaving = true WHERE name = ? \
                 IF alive = true AND incarnation = ?"
            ),
            format!(
                "UPDATE {ks}.members SET alive = false WHERE name = ? \
                 IF alive = true AND incarnation = ?"
            ),
            format!("SELECT id, name FROM {ks}.member_ids"),
            format!("INSERT INTO {ks}.member_ids (id, name) VALUES (?, ?) IF NOT EXISTS"),
        ];
        let mut prepared = Vec::with_capacity(cql.len());
        for c in &cql {
            let what = format!(
                "cannot prepare `{c}` (is the schema of cql/create_schema.cql in keyspace {ks}?)"
            );
            prepared.push(timed(s.timeout, &what, session.prepare(c.as_str())).await?);
        }
        let mut p = prepared.into_iter();
        let mut next = || p.next().expect("one statement each");
        Ok(Db {
            timeout: s.timeout,
            member: next(),
            members: next(),
            insert_member: next(),
            revive_member: next(),
            replace_member: next(),
            beat: next(),
            kill: next(),
            slots: next(),
            insert_slot: next(),
            move_slot: next(),
            slot_count: next(),
            set_slot_count: next(),
            set_leaving: next(),
            retire: next(),
            ids: next(),
            claim_id: next(),
            session,
        })
    }

    async fn rows(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<Row>, String> {
        let res = timed(self.timeout, what, self.session.execute_unpaged(st, values)).await?;
        let rows = res.into_rows_result().map_err(|e| format!("{what}: {e}"))?;
        let rows = rows.rows::<Row>().map_err(|e| format!("{what}: {e}"))?;
        rows.collect::<Result<Vec<Row>, _>>()
            .map_err(|e| format!("{what}: {e}"))
    }

    /// A conditional write: applied, refused, or (no answer) unknown.
    async fn lwt(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Outcome {
        match self.rows(what, st, values).await {
            Ok(rows) => match rows.first().and_then(|r| r.columns.first()) {
                Some(Some(CqlValue::Boolean(true))) => Outcome::Applied,
                _ => Outcome::Refused,
            },
            Err(e) => {
                tracing::warn!(error = %e, "a conditional write has no known outcome");
                Outcome::Unknown
            }
        }
    }

    async fn check_slot_count(&self, slots: u32) -> Result<(), String> {
        let n = i32::try_from(slots).map_err(|_| format!("slot count {slots} is too large"))?;
        let _ = self
            .lwt("fix the slot count", &self.set_slot_count, (n,))
            .await;
        let rows = self
            .rows("read the slot count", &self.slot_count, ())
            .await?;
        match rows.first().and_then(|r| r.columns.first()) {
            Some(Some(CqlValue::Int(have))) if *have == n => Ok(()),
            Some(Some(CqlValue::Int(have))) => Err(format!(
                "the keyspace has {have} slots, this member was started with {slots}: \
                 a keyspace keeps its slot count for life"
            )),
            _ => Err("the keyspace's slot count could not be read".into()),
        }
    }

    async fn member(&self, name: &str) -> Result<Option<Member>, String> {
        let rows = self.rows("read this member", &self.member, (name,)).await?;
        Ok(rows.iter().find_map(|r| member_of(r, &[])))
    }

    /// Every member that has an id (a name registers only after claiming one), by name.
    async fn members(&self) -> Result<Vec<Member>, String> {
        let ids = self.ids().await?;
        let rows = self.rows("read the members", &self.members, ()).await?;
        let mut m: Vec<Member> = rows.iter().filter_map(|r| member_of(r, &ids)).collect();
        m.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(m)
    }

    async fn ids(&self) -> Result<Vec<(u16, String)>, String> {
        let rows = self.rows("read the member ids", &self.ids, ()).await?;
        Ok(rows
            .iter()
            .filter_map(|r| match (r.columns.first(), r.columns.get(1)) {
                (Some(Some(CqlValue::Int(id))), Some(Some(CqlValue::Text(name)))) => {
                    Some((u16::try_from(*id).ok()?, name.clone()))
                }
                _ => None,
            })
            .collect())
    }

    /// This name's id: the one it already has, else the lowest free one, claimed.
    async fn claim_id(&self, name: &str) -> Result<u16, String> {
        loop {
            let ids = self.ids().await?;
            if let Some((id, _)) = ids.iter().find(|(_, n)| n == name) {
                return Ok(*id);
            }
            let Some(free) = (0..MAX_MEMBERS).find(|i| ids.iter().all(|(id, _)| id != i)) else {
                return Err(format!(
                    "{NO_ID}: the keyspace has given out all {MAX_MEMBERS} member ids"
                ));
            };
            // Refused: another name took it first; read again.
            if let Outcome::Unknown = self
                .lwt("claim a member id", &self.claim_id, (free as i32, name))
                .await
            {
                return Err("claiming a member id has no known outcome".into());
            }
        }
    }

    /// `expect`: None for no row, else the row's incarnation and, when it looks alive, its beat.
    async fn register(
        &self,
        s: &Settings,
        me: &Holder,
        expect: Option<(u64, Option<u64>)>,
    ) -> Outcome {
        let inc = me.incarnation as i64;
        let addrs = (s.client.as_str(), s.admin.as_str(), s.bus.as_str());
        match expect {
            None => {
                let v = (me.name.as_str(), inc, addrs.0, addrs.1, addrs.2);
                self.lwt("register", &self.insert_member, v).await
            }
            Some((old, None)) => {
                let v = (inc, addrs.0, addrs.1, addrs.2, me.name.as_str(), old as i64);
                self.lwt("register", &self.revive_member, v).await
            }
            Some((old, Some(beat))) => {
                let v = (
                    inc,
                    addrs.0,
                    addrs.1,
                    addrs.2,
                    me.name.as_str(),
                    old as i64,
                    beat as i64,
                );
                self.lwt("register", &self.replace_member, v).await
            }
        }
    }

    async fn beat(&self, name: &str, w: &BeatWrite) -> Outcome {
        let also = w.also.unwrap_or(w.expect);
        let v = (
            w.next.count as i64,
            name,
            w.expect.incarnation as i64,
            w.expect.count as i64,
            also.count as i64,
        );
        self.lwt("heartbeat", &self.beat, v).await
    }

    async fn set_leaving(&self, me: &Holder) -> Outcome {
        let v = (me.name.as_str(), me.incarnation as i64);
        self.lwt("mark this member leaving", &self.set_leaving, v)
            .await
    }

    /// This incarnation ends: marked down by itself.
    async fn retire(&self, me: &Holder) -> Outcome {
        let v = (me.name.as_str(), me.incarnation as i64);
        self.lwt("mark this member down", &self.retire, v).await
    }

    async fn kill(&self, name: &str, b: Beat) -> Outcome {
        let v = (name, b.incarnation as i64, b.count as i64);
        self.lwt("declare a member down", &self.kill, v).await
    }

    /// Every slot's row, absent ones as never held.
    async fn slots(&self, slots: u32) -> Result<Vec<SlotRow>, String> {
        let mut out = vec![
            SlotRow {
                holder: None,
                epoch: 0
            };
            slots as usize
        ];
        for r in self.rows("read the slots", &self.slots, ()).await? {
            let c = &r.columns;
            if let (
                Some(Some(CqlValue::Int(slot))),
                Some(Some(CqlValue::Text(name))),
                Some(Some(CqlValue::BigInt(inc))),
                Some(Some(CqlValue::Int(epoch))),
            ) = (c.first(), c.get(1), c.get(2), c.get(3))
            {
                if let Some(row) = usize::try_from(*slot).ok().and_then(|i| out.get_mut(i)) {
                    *row = SlotRow {
                        holder: Some(Holder {
                            name: name.clone(),
                            incarnation: *inc as u64,
                        }),
                        epoch: *epoch as u32,
                    };
                }
            }
        }
        Ok(out)
    }

    /// Runs the claims and hand-overs side by side; how many applied.
    async fn change_slots(self: &Arc<Self>, writes: Vec<SlotWrite>) -> usize {
        let mut set = tokio::task::JoinSet::new();
        for w in writes {
            let db = self.clone();
            set.spawn(async move { db.change_slot(&w).await });
        }
        let mut applied = 0;
        while let Some(o) = set.join_next().await {
            applied += usize::from(matches!(o, Ok(Outcome::Applied)));
        }
        applied
    }

    async fn change_slot(&self, w: &SlotWrite) -> Outcome {
        let Some(next) = w.next.holder.as_ref() else {
            return Outcome::Refused;
        };
        let (slot, epoch) = (w.slot as i32, w.next.epoch as i32);
        let (name, inc) = (next.name.as_str(), next.incarnation as i64);
        match &w.expect.holder {
            None => {
                let v = (slot, name, inc, epoch);
                self.lwt("claim a slot", &self.insert_slot, v).await
            }
            Some(old) => {
                let v = (
                    name,
                    inc,
                    epoch,
                    slot,
                    old.name.as_str(),
                    old.incarnation as i64,
                    w.expect.epoch as i32,
                );
                self.lwt("move a slot", &self.move_slot, v).await
            }
        }
    }
}

/// A member row with its id from `ids` (an empty `ids`: id 0, for reading one's own row).
fn member_of(r: &Row, ids: &[(u16, String)]) -> Option<Member> {
    let text = |i: usize| match r.columns.get(i) {
        Some(Some(CqlValue::Text(t))) => t.clone(),
        _ => String::new(),
    };
    let (Some(Some(CqlValue::BigInt(inc))), Some(Some(CqlValue::BigInt(beat)))) =
        (r.columns.get(1), r.columns.get(2))
    else {
        return None;
    };
    let name = text(0);
    let id = match ids.iter().find(|(_, n)| *n == name) {
        Some((id, _)) => *id,
        None if ids.is_empty() => 0,
        None => return None,
    };
    Some(Member {
        id,
        name,
        incarnation: *inc as u64,
        beat: *beat as u64,
        alive: matches!(r.columns.get(3), Some(Some(CqlValue::Boolean(true)))),
        client: text(4),
        admin: text(5),
        bus: text(6),
        leaving: matches!(r.columns.get(7), Some(Some(CqlValue::Boolean(true)))),
    })
}
