//! A model test of the ownership protocol: members drive `super`'s rules against a simulated
//! database (linearizable conditional writes, last-write-wins cells)
//! under random delays, lost answers, writes that land seconds late, pauses longer than the
//! member timeout, crashes and drifting clocks; a checker then holds every run to the
//! invariants. Deterministic per seed (`IPUSH_MODEL_SEED=N` replays one run).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::*;

const MS: u64 = 1000; // the simulation runs in µs of real time
const NODES: usize = 3;
const SLOTS: u32 = 8;
const USERS: usize = 12;
const OP_TIMEOUT: u64 = 400 * MS;

/// A small deterministic generator (xorshift64*), so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn timing() -> Timing {
    Timing {
        member_timeout_ms: 1000,
        beat_every_ms: 100,
        max_drift_ppm: 2000,
    }
}

#[derive(Debug, Clone)]
enum Op {
    ReadSelf,
    Register {
        expect: Option<Beat>,
        next: Beat,
    },
    Beat(BeatWrite),
    Kill {
        name: String,
        beat: Beat,
    },
    ReadMembers,
    ReadSlots,
    Slot(SlotWrite),
    Load {
        uid: usize,
    },
    /// A stream connecting: the owner replays what the store lists for the user.
    Replay {
        uid: usize,
        epoch: u32,
    },
    Shadow {
        uid: usize,
        epoch: u32,
        max: u64,
    },
    Write {
        uid: usize,
        epoch: u32,
        rows: Vec<(u64, u64)>,
        fenced: bool,
    },
}

#[derive(Debug, Clone)]
enum Answer {
    Done(Outcome),
    Member(Option<(Beat, bool)>),
    Members(Vec<(String, Beat, bool)>),
    Slots(Vec<SlotRow>),
    User {
        max: u64,
        rows: Vec<(u64, u64, u32)>,
    },
}

#[derive(Default)]
struct Partition {
    max: (i64, u64),
    rows: BTreeMap<u64, (i64, u64)>,
}

impl Partition {
    /// The rows up to the highest seq, with their writer's epoch.
    fn visible(&self) -> Vec<(u64, u64, u32)> {
        self.rows
            .range(..=self.max.1)
            .map(|(seq, (ts, body))| (*seq, *body, epoch_of(*ts)))
            .collect()
    }
}

#[derive(Default)]
struct Db {
    members: BTreeMap<String, (Beat, bool)>,
    slots: Vec<SlotRow>,
    users: Vec<Partition>,
    ties: usize,
}

impl Db {
    fn new() -> Db {
        Db {
            slots: (0..SLOTS)
                .map(|_| SlotRow {
                    holder: None,
                    epoch: 0,
                })
                .collect(),
            users: (0..USERS).map(|_| Partition::default()).collect(),
            ..Db::default()
        }
    }

    fn lww(ties: &mut usize, cell: &mut (i64, u64), ts: i64, v: u64) {
        if ts > cell.0 {
            *cell = (ts, v);
        } else if ts == cell.0 && v != cell.1 {
            *ties += 1; // two values with one timestamp: the protocol must never do this
        }
    }

    fn apply(&mut self, name: &str, op: &Op) -> Answer {
        match op {
            Op::ReadSelf => Answer::Member(self.members.get(name).copied()),
            Op::Register { expect, next } => {
                let row = self.members.get(name).copied();
                let ok = match (row, expect) {
                    (None, None) => true,
                    (Some((_, false)), _) => true,
                    (Some((b, true)), Some(e)) => b == *e,
                    _ => false,
                };
                if ok {
                    self.members.insert(name.into(), (*next, true));
                }
                Answer::Done(if ok {
                    Outcome::Applied
                } else {
                    Outcome::Refused
                })
            }
            Op::Beat(w) => {
                let ok = matches!(self.members.get(name), Some((b, true)) if *b == w.expect || Some(*b) == w.also);
                if ok {
                    self.members.insert(name.into(), (w.next, true));
                }
                Answer::Done(if ok {
                    Outcome::Applied
                } else {
                    Outcome::Refused
                })
            }
            Op::Kill { name, beat } => {
                let ok = matches!(self.members.get(name), Some((b, true)) if b == beat);
                if ok {
                    self.members.insert(name.clone(), (*beat, false));
                }
                Answer::Done(if ok {
                    Outcome::Applied
                } else {
                    Outcome::Refused
                })
            }
            Op::ReadMembers => Answer::Members(
                self.members
                    .iter()
                    .map(|(n, (b, alive))| (n.clone(), *b, *alive))
                    .collect(),
            ),
            Op::ReadSlots => Answer::Slots(self.slots.clone()),
            Op::Slot(w) => {
                let row = &mut self.slots[w.slot as usize];
                let ok = *row == w.expect;
                if ok {
                    *row = w.next.clone();
                }
                Answer::Done(if ok {
                    Outcome::Applied
                } else {
                    Outcome::Refused
                })
            }
            Op::Load { uid } | Op::Replay { uid, .. } => {
                let p = &self.users[*uid];
                Answer::User {
                    max: p.max.1,
                    rows: p.visible(),
                }
            }
            Op::Shadow { uid, epoch, max } => {
                let p = &mut self.users[*uid];
                Self::lww(&mut self.ties, &mut p.max, shadow(*epoch), *max);
                Answer::Done(Outcome::Applied)
            }
            Op::Write {
                uid,
                epoch,
                rows,
                fenced,
            } => {
                let p = &mut self.users[*uid];
                let e = if *fenced { *epoch } else { 0 };
                for (seq, body) in rows {
                    let cell = p.rows.entry(*seq).or_insert((i64::MIN, 0));
                    Self::lww(&mut self.ties, cell, fence(e, *seq), *body);
                }
                let top = rows.last().map_or(0, |r| r.0);
                Self::lww(&mut self.ties, &mut p.max, fence(e, top), top);
                Answer::Done(Outcome::Applied)
            }
        }
    }
}

/// What the checker sees: every `ok` and everything a client was shown.
#[derive(Default)]
struct Record {
    oks: Vec<(usize, u64, u64, u64)>, // uid, seq, body, real time
    shown: Vec<(usize, u64, u64)>,
    holes: Vec<String>,
    last_fault: u64,
}

enum Phase {
    Loading,
    Shadowing(u64),
    Ready,
}

struct User {
    epoch: u32,
    phase: Phase,
    next: u64,
    queue: UserQueue<(u64, u64)>, // (seq, body) once assigned
    unassigned: Vec<u64>,
    in_flight: Option<Vec<(u64, u64)>>,
}

struct Proc {
    incarnation: u64,
    lease: Lease,
    watch: Watch,
    registered: bool,
    self_watch: Watch,
    rows: Vec<SlotRow>,
    live: Vec<Holder>,
    releasing: Vec<u32>,
    slot_ops: Vec<u32>,
    users: HashMap<usize, User>,
    pending: HashMap<u64, (Op, u64)>, // op id → (op, sent at, local)
}

struct Node {
    name: String,
    drift_ppm: i64,
    paused_until: u64,
    proc: Option<Proc>,
    generation: u64,
}

impl Node {
    fn local(&self, t: u64) -> u64 {
        (t as i128 + t as i128 * self.drift_ppm as i128 / 1_000_000) as u64 / MS
    }
    fn me(&self) -> Holder {
        let p = self.proc.as_ref().unwrap();
        Holder {
            name: self.name.clone(),
            incarnation: p.incarnation,
        }
    }
}

enum Ev {
    Tick(usize, u64),
    Apply {
        node: usize,
        gen: u64,
        id: u64,
        op: Op,
        lost: bool,
    },
    Answer {
        node: usize,
        gen: u64,
        id: u64,
        answer: Option<Answer>,
    },
    Publish {
        node: usize,
        uid: usize,
        body: u64,
    },
    Connect {
        node: usize,
        uid: usize,
    },
    Crash(usize),
    Restart(usize),
    Pause(usize, u64),
}

struct Sim {
    now: u64,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    next_id: u64,
    db: Db,
    nodes: Vec<Node>,
    record: Record,
    flaws: Flaws,
}

/// Rules a run can break on purpose, to show the checker catches each.
#[derive(Clone, Copy, Default)]
struct Flaws {
    ignore_lease: bool,
    no_shadow: bool,
    no_fence: bool,
}

impl Sim {
    fn new(seed: u64, flaws: Flaws) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let nodes = (0..NODES)
            .map(|i| Node {
                name: format!("n{i}"),
                drift_ppm: rng.below(4001) as i64 - 2000,
                paused_until: 0,
                proc: None,
                generation: 0,
            })
            .collect();
        Sim {
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_id: 0,
            db: Db::new(),
            nodes,
            record: Record::default(),
            flaws,
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.next_id += 1;
        self.queue.push(Reverse((t, self.next_id)));
        self.events.insert(self.next_id, ev);
    }

    fn ev_node(ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Connect {
                node: usize::MAX, ..
            } => None,
            Ev::Tick(n, _) | Ev::Publish { node: n, .. } | Ev::Connect { node: n, .. } => Some(*n),
            Ev::Answer { node, .. } => Some(*node),
            _ => None,
        }
    }

    fn run(&mut self, until: u64) {
        while let Some(Reverse((t, id))) = self.queue.pop() {
            if t > until {
                break;
            }
            self.now = t;
            let ev = self.events.remove(&id).unwrap();
            // A paused process does nothing; what reaches it waits until it runs again.
            if let Some(n) = Self::ev_node(&ev) {
                if self.nodes[n].paused_until > t {
                    let later = self.nodes[n].paused_until;
                    self.at(later, ev);
                    continue;
                }
            }
            self.handle(ev);
        }
    }

    fn send(&mut self, n: usize, op: Op) {
        let gen = self.nodes[n].generation;
        self.next_id += 1;
        let id = self.next_id;
        let local = self.nodes[n].local(self.now);
        self.nodes[n]
            .proc
            .as_mut()
            .unwrap()
            .pending
            .insert(id, (op.clone(), local));
        let slow = matches!(op, Op::Write { .. } | Op::Shadow { .. }) && self.rng.chance(4);
        let delay = if slow {
            200 * MS + self.rng.below(2500 * MS)
        } else {
            100 + self.rng.below(3 * MS)
        };
        let lost = self.rng.chance(3);
        self.at(
            self.now + delay,
            Ev::Apply {
                node: n,
                gen,
                id,
                op,
                lost,
            },
        );
        // The sender gives up on an answer after OP_TIMEOUT and treats the outcome as unknown.
        self.at(
            self.now + OP_TIMEOUT,
            Ev::Answer {
                node: n,
                gen,
                id,
                answer: None,
            },
        );
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Apply {
                node,
                gen,
                id,
                op,
                lost,
            } => {
                let name = self.nodes[node].name.clone();
                let answer = self.db.apply(&name, &op);
                if !lost {
                    let d = 100 + self.rng.below(2 * MS);
                    self.at(
                        self.now + d,
                        Ev::Answer {
                            node,
                            gen,
                            id,
                            answer: Some(answer),
                        },
                    );
                }
            }
            Ev::Answer {
                node,
                gen,
                id,
                answer,
            } => {
                if self.nodes[node].generation != gen || self.nodes[node].proc.is_none() {
                    return; // an answer for a process that is gone
                }
                let Some((op, _)) = self.nodes[node].proc.as_mut().unwrap().pending.remove(&id)
                else {
                    return; // answered already (this is the timeout, or a late answer)
                };
                self.on_answer(node, op, answer);
            }
            Ev::Tick(n, gen) => {
                if self.nodes[n].generation == gen && self.nodes[n].proc.is_some() {
                    self.tick(n);
                    let d = timing().beat_every_ms * MS;
                    self.at(self.now + d, Ev::Tick(n, gen));
                }
            }
            Ev::Publish { node, uid, body } => self.publish(node, uid, body),
            Ev::Connect {
                node: usize::MAX,
                uid,
            } => {
                let slot = slot_of(&format!("u{uid}"), SLOTS) as usize;
                let holder = self.db.slots[slot].holder.clone();
                if let Some(h) = holder {
                    let node = self.nodes.iter().position(|n| n.name == h.name).unwrap();
                    self.at(self.now, Ev::Connect { node, uid });
                }
            }
            Ev::Connect { node, uid } => {
                let ready = self.nodes[node]
                    .proc
                    .as_ref()
                    .and_then(|p| p.users.get(&uid))
                    .is_some_and(|u| matches!(u.phase, Phase::Ready));
                if let (Some(epoch), true) = (self.serving(node, uid), ready) {
                    self.send(node, Op::Replay { uid, epoch });
                }
            }
            Ev::Crash(n) => {
                self.nodes[n].proc = None;
                self.nodes[n].generation += 1;
                self.record.last_fault = self.now;
            }
            Ev::Restart(n) => self.start(n),
            Ev::Pause(n, len) => {
                self.nodes[n].paused_until = self.now + len;
                self.record.last_fault = self.now + len;
            }
        }
    }

    fn start(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.generation += 1;
        let incarnation = node.generation;
        node.proc = Some(Proc {
            incarnation,
            lease: Lease::new(&timing(), incarnation),
            watch: Watch::default(),
            registered: false,
            self_watch: Watch::default(),
            rows: Vec::new(),
            live: Vec::new(),
            releasing: Vec::new(),
            slot_ops: Vec::new(),
            users: HashMap::new(),
            pending: HashMap::new(),
        });
        let gen = node.generation;
        self.at(self.now, Ev::Tick(n, gen));
    }

    fn tick(&mut self, n: usize) {
        let local = self.nodes[n].local(self.now);
        let p = self.nodes[n].proc.as_mut().unwrap();
        if !p.registered {
            if !p
                .pending
                .values()
                .any(|(o, _)| matches!(o, Op::ReadSelf | Op::Register { .. }))
            {
                self.send(n, Op::ReadSelf);
            }
            return;
        }
        if p.lease.is_lost() {
            // Killed while it could not beat: this process starts over as a new incarnation.
            self.start(n);
            return;
        }
        if let Some(w) = p.lease.beat(local) {
            self.send(n, Op::Beat(w));
        }
        self.send(n, Op::ReadMembers);
        self.send(n, Op::ReadSlots);
    }

    fn on_answer(&mut self, n: usize, op: Op, answer: Option<Answer>) {
        let local = self.nodes[n].local(self.now);
        match (op, answer) {
            (Op::ReadSelf, Some(Answer::Member(row))) => self.maybe_register(n, row, local),
            (Op::ReadSelf, _) => {}
            (Op::Register { .. }, Some(Answer::Done(Outcome::Applied))) => {
                self.nodes[n].proc.as_mut().unwrap().registered = true;
            }
            (Op::Register { .. }, _) => {} // read again on the next tick
            (Op::Beat(w), a) => {
                let outcome = match a {
                    Some(Answer::Done(o)) => o,
                    _ => Outcome::Unknown,
                };
                self.nodes[n]
                    .proc
                    .as_mut()
                    .unwrap()
                    .lease
                    .on_beat(&w, outcome);
            }
            (Op::Kill { .. }, _) => {}
            (Op::ReadMembers, Some(Answer::Members(rows))) => self.on_members(n, rows, local),
            (Op::ReadSlots, Some(Answer::Slots(rows))) => self.on_slots(n, rows),
            (Op::ReadMembers | Op::ReadSlots, _) => {}
            (Op::Slot(w), a) => {
                let p = self.nodes[n].proc.as_mut().unwrap();
                match a {
                    Some(Answer::Done(_)) => p.slot_ops.retain(|s| *s != w.slot),
                    // A hand-over whose outcome is unknown is asked again: until it is known
                    // the slot stays stopped here.
                    _ => self.send(n, Op::Slot(w)),
                }
            }
            (Op::Load { uid }, Some(Answer::User { max, rows })) => self.on_load(n, uid, max, rows),
            (op @ Op::Load { .. }, None) => self.send(n, op),
            (Op::Replay { uid, epoch }, Some(Answer::User { rows, .. })) => {
                if self.serving(n, uid) == Some(epoch) {
                    let shown = rows.iter().map(|(s, b, _)| (uid, *s, *b));
                    self.record.shown.extend(shown);
                }
            }
            (Op::Replay { .. }, None) => {}
            (Op::Shadow { uid, epoch, .. }, Some(_)) => self.on_shadow(n, uid, epoch),
            (op @ Op::Shadow { .. }, None) => self.send(n, op),
            (
                Op::Write {
                    uid, epoch, rows, ..
                },
                Some(_),
            ) => self.on_written(n, uid, epoch, rows, local),
            // Unknown: the same cells at the same timestamps again, until the outcome is known.
            (op @ Op::Write { .. }, None) => self.send(n, op),
            (op, a) => panic!("unexpected {op:?} → {a:?}"),
        }
    }

    fn maybe_register(&mut self, n: usize, row: Option<(Beat, bool)>, local: u64) {
        let name = self.nodes[n].name.clone();
        let p = self.nodes[n].proc.as_mut().unwrap();
        let next = Beat {
            incarnation: p.incarnation,
            count: 0,
        };
        let expect = match row {
            None | Some((_, false)) => None,
            // An earlier incarnation still looks alive: replace it only once it has been
            // silent for the member timeout (it may be a paused process, not a dead one).
            Some((b, true)) => {
                p.self_watch.observe(&name, b, local);
                if p.self_watch
                    .silent(local, timing().member_timeout_ms)
                    .is_empty()
                {
                    return;
                }
                Some(b)
            }
        };
        self.send(n, Op::Register { expect, next });
    }

    fn on_members(&mut self, n: usize, rows: Vec<(String, Beat, bool)>, local: u64) {
        let name = self.nodes[n].name.clone();
        let p = self.nodes[n].proc.as_mut().unwrap();
        p.live.clear();
        for (m, b, alive) in &rows {
            if !alive {
                p.watch.forget(m);
                continue;
            }
            p.live.push(Holder {
                name: m.clone(),
                incarnation: b.incarnation,
            });
            if *m != name {
                p.watch.observe(m, *b, local);
            }
        }
        let kills = p.watch.silent(local, timing().member_timeout_ms);
        for (m, beat) in kills {
            self.send(n, Op::Kill { name: m, beat });
        }
    }

    fn on_slots(&mut self, n: usize, rows: Vec<SlotRow>) {
        let me = self.nodes[n].me();
        let local = self.nodes[n].local(self.now);
        let p = self.nodes[n].proc.as_mut().unwrap();
        p.rows = rows;
        // Users of slots this process no longer holds at the epoch it loaded them in go.
        let held: Vec<Option<u32>> = p
            .rows
            .iter()
            .map(|r| (r.holder.as_ref() == Some(&me)).then_some(r.epoch))
            .collect();
        p.users
            .retain(|uid, u| held[slot_of(&format!("u{uid}"), SLOTS) as usize] == Some(u.epoch));
        p.releasing.retain(|s| held[*s as usize].is_some());
        if !p.lease.valid_at(local) || !p.live.contains(&me) {
            return;
        }
        for s in to_release(&me, &p.rows, &p.live) {
            if !p.releasing.contains(&s) {
                p.releasing.push(s); // stop serving it now; hand it over on a later tick
            }
        }
        // Hand over only slots whose users have nothing in flight (their answers must not
        // come back after the new holder took over).
        let busy: Vec<u32> = p
            .users
            .iter()
            .filter(|(_, u)| u.in_flight.is_some())
            .map(|(uid, _)| slot_of(&format!("u{uid}"), SLOTS))
            .collect();
        let ready: Vec<u32> = p
            .releasing
            .iter()
            .copied()
            .filter(|s| !busy.contains(s))
            .collect();
        let writes = slot_writes(&me, &p.rows, &p.live, &p.live, &ready);
        let writes: Vec<SlotWrite> = writes
            .into_iter()
            .filter(|w| !p.slot_ops.contains(&w.slot))
            .collect();
        p.slot_ops.extend(writes.iter().map(|w| w.slot));
        for w in writes {
            self.send(n, Op::Slot(w));
        }
    }

    /// The slot and epoch `uid` is served at here now, if any.
    fn serving(&self, n: usize, uid: usize) -> Option<u32> {
        let node = &self.nodes[n];
        let p = node.proc.as_ref()?;
        let slot = slot_of(&format!("u{uid}"), SLOTS);
        let row = p.rows.get(slot as usize)?;
        let me = node.me();
        let ok = row.holder.as_ref() == Some(&me)
            && !p.releasing.contains(&slot)
            && (self.flaws.ignore_lease || p.lease.valid_at(node.local(self.now)));
        ok.then_some(row.epoch)
    }

    fn publish(&mut self, n: usize, uid: usize, body: u64) {
        let Some(epoch) = self.serving(n, uid) else {
            return; // 503 (or not the owner): the publisher retries elsewhere
        };
        let p = self.nodes[n].proc.as_mut().unwrap();
        let fresh = !p.users.contains_key(&uid);
        let u = p.users.entry(uid).or_insert_with(|| User {
            epoch,
            phase: Phase::Loading,
            next: 0,
            queue: UserQueue::default(),
            unassigned: Vec::new(),
            in_flight: None,
        });
        u.unassigned.push(body);
        if fresh {
            self.send(n, Op::Load { uid });
        } else {
            self.pump(n, uid);
        }
    }

    fn on_load(&mut self, n: usize, uid: usize, max: u64, rows: Vec<(u64, u64, u32)>) {
        let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
        if seqs != (1..=max).collect::<Vec<_>>() {
            self.record
                .holes
                .push(format!("u{uid}: max {max}, rows {seqs:?} at {}", self.now));
        }
        let Some(u) = self.nodes[n].proc.as_mut().unwrap().users.get_mut(&uid) else {
            return;
        };
        let epoch = u.epoch;
        u.phase = Phase::Shadowing(max);
        // A replay of these would show them to the user's streams now.
        self.record
            .shown
            .extend(rows.iter().map(|(s, b, _)| (uid, *s, *b)));
        if self.flaws.no_shadow {
            self.on_shadow(n, uid, epoch);
        } else {
            self.send(n, Op::Shadow { uid, epoch, max });
        }
    }

    fn on_shadow(&mut self, n: usize, uid: usize, epoch: u32) {
        let Some(u) = self.nodes[n].proc.as_mut().unwrap().users.get_mut(&uid) else {
            return;
        };
        if let (Phase::Shadowing(max), true) = (&u.phase, u.epoch == epoch) {
            u.next = max + 1;
            u.phase = Phase::Ready;
            self.pump(n, uid);
        }
    }

    fn pump(&mut self, n: usize, uid: usize) {
        let u = self.nodes[n]
            .proc
            .as_mut()
            .unwrap()
            .users
            .get_mut(&uid)
            .unwrap();
        if !matches!(u.phase, Phase::Ready) {
            return;
        }
        let mut batch = None;
        for body in std::mem::take(&mut u.unassigned) {
            let seq = u.next;
            u.next += 1;
            batch = u.queue.push((seq, body)).or(batch);
        }
        if let Some(rows) = batch {
            u.in_flight = Some(rows.clone());
            let epoch = u.epoch;
            let op = self.write_op(uid, epoch, rows);
            self.send(n, op);
        }
    }

    fn write_op(&self, uid: usize, epoch: u32, rows: Vec<(u64, u64)>) -> Op {
        Op::Write {
            uid,
            epoch,
            rows,
            fenced: !self.flaws.no_fence,
        }
    }

    fn on_written(&mut self, n: usize, uid: usize, epoch: u32, rows: Vec<(u64, u64)>, local: u64) {
        let still = self.serving(n, uid) == Some(epoch);
        let p = self.nodes[n].proc.as_mut().unwrap();
        let ok = still && (self.flaws.ignore_lease || p.lease.valid_at(local));
        if ok {
            for (seq, body) in &rows {
                self.record.oks.push((uid, *seq, *body, self.now));
                self.record.shown.push((uid, *seq, *body));
            }
        }
        let Some(u) = p.users.get_mut(&uid) else {
            return;
        };
        if u.epoch != epoch {
            return;
        }
        u.in_flight = None;
        if let Some(next) = u.queue.done() {
            u.in_flight = Some(next.clone());
            let op = self.write_op(uid, epoch, next);
            self.send(n, op);
        }
    }

    /// Lets every write still in flight land, then reads what the database holds.
    fn settle(&mut self) -> Vec<Vec<(u64, u64)>> {
        for n in &mut self.nodes {
            n.proc = None;
            n.generation += 1;
        }
        self.run(u64::MAX);
        let rows = |p: &Partition| p.visible().iter().map(|r| (r.0, r.1)).collect();
        self.db.users.iter().map(rows).collect()
    }
}

/// One run: publishes all along, faults in the first part, a quiet end; returns what failed.
fn run(seed: u64, flaws: Flaws) -> Result<usize, String> {
    let mut sim = Sim::new(seed, flaws);
    for n in 0..NODES {
        let t = sim.rng.below(300 * MS);
        sim.at(t, Ev::Restart(n));
    }
    let end = 24_000 * MS;
    let faults_end = 14_000 * MS;
    let mut body = 0;
    let mut t = 1_000 * MS;
    while t < end {
        body += 1;
        let (node, uid) = (
            sim.rng.below(NODES as u64) as usize,
            sim.rng.below(USERS as u64) as usize,
        );
        sim.at(t, Ev::Publish { node, uid, body });
        if sim.rng.chance(50) {
            // Streams connect to whichever node holds the user then (a 303 took them there).
            let uid = sim.rng.below(USERS as u64) as usize;
            sim.at(
                t + MS / 2,
                Ev::Connect {
                    node: usize::MAX,
                    uid,
                },
            );
        }
        t += 2 * MS + sim.rng.below(8 * MS);
    }
    let mut t = 2_000 * MS;
    while t < faults_end {
        let n = sim.rng.below(NODES as u64) as usize;
        match sim.rng.below(3) {
            0 => {
                let len = 500 * MS + sim.rng.below(2_500 * MS);
                sim.at(t, Ev::Pause(n, len));
            }
            1 => {
                sim.at(t, Ev::Crash(n));
                let back = t + 200 * MS + sim.rng.below(3_000 * MS);
                sim.at(back, Ev::Restart(n));
            }
            _ => {} // a quiet stretch
        }
        t += 1_500 * MS + sim.rng.below(3_000 * MS);
    }
    sim.run(end);
    let stored = sim.settle();
    check(&sim.record, &stored, sim.db.ties, end)
}

fn check(r: &Record, stored: &[Vec<(u64, u64)>], ties: usize, end: u64) -> Result<usize, String> {
    if ties > 0 {
        return Err(format!("{ties} cells written twice with one timestamp"));
    }
    if let Some(h) = r.holes.first() {
        return Err(format!("a load read a hole: {h}"));
    }
    let body_at = |uid: usize, seq: u64| stored[uid].iter().find(|r| r.0 == seq).map(|r| r.1);
    let mut seen = HashMap::new();
    for (uid, seq, body, t) in &r.oks {
        if body_at(*uid, *seq) != Some(*body) {
            return Err(format!(
                "ok u{uid} seq {seq} body {body} at {t} µs lost: {:?}",
                body_at(*uid, *seq)
            ));
        }
        if seen.insert(*body, (*uid, *seq)).is_some() {
            return Err(format!("body {body} acknowledged twice"));
        }
    }
    for (uid, seq, body) in &r.shown {
        if body_at(*uid, *seq) != Some(*body) {
            return Err(format!(
                "u{uid} was shown seq {seq} as {body}, stored {:?}",
                body_at(*uid, *seq)
            ));
        }
    }
    for (uid, rows) in stored.iter().enumerate() {
        let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
        if seqs != (1..=seqs.len() as u64).collect::<Vec<_>>() {
            return Err(format!("u{uid} stored seqs not contiguous: {seqs:?}"));
        }
    }
    // Liveness: once the faults are over, publishes succeed again.
    let quiet_from = r.last_fault + 5 * timing().member_timeout_ms * MS;
    let late = r.oks.iter().filter(|o| o.3 > quiet_from).count();
    if quiet_from + 3_000 * MS < end && late == 0 {
        return Err(format!(
            "no ok after the faults ended (last fault at {} µs)",
            r.last_fault
        ));
    }
    Ok(r.oks.len())
}

#[test]
fn ownership_holds_under_random_faults() {
    let seeds: Vec<u64> = match std::env::var("IPUSH_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("IPUSH_MODEL_SEED is a number")],
        Err(_) => (1..=200).collect(),
    };
    let mut oks = 0;
    for seed in seeds {
        match run(seed, Flaws::default()) {
            Ok(n) => oks += n,
            Err(e) => panic!("seed {seed}: {e} (replay: IPUSH_MODEL_SEED={seed})"),
        }
    }
    assert!(oks > 1000, "the runs acknowledged only {oks} publishes");
}

/// The checker must catch each broken rule in some seed, or the model proves nothing.
#[test]
fn the_checker_catches_each_broken_rule() {
    let flaws = [
        Flaws {
            ignore_lease: true,
            ..Flaws::default()
        },
        Flaws {
            no_shadow: true,
            ..Flaws::default()
        },
        Flaws {
            no_fence: true,
            ..Flaws::default()
        },
    ];
    for f in flaws {
        let caught = (1..=200).find_map(|seed| run(seed, f).err());
        assert!(
            caught.is_some(),
            "no seed exposed lease {} shadow {} fence {}",
            !f.ignore_lease,
            !f.no_shadow,
            !f.no_fence
        );
    }
}
