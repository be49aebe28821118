//! The ownership protocol of the dynamic cluster, without I/O: membership leases renewed by
//! conditional heartbeats, the kill of a silent member, slot claims and hand-overs by epoch,
//! and the write timestamps that fence an old owner. Pure; the control task drives it.
//!
//! The database (lightweight transactions, last-write-wins cells) is the only shared state.
//! Why an `ok` can never be lost and no seq is shown with two bodies (`model.rs` checks it
//! under random delays, lost replies, pauses, crashes and clock drift):
//! 1. A member's lease runs `lease_ms` from the send time of its last heartbeat that applied;
//!    a heartbeat is `IF beat = last`, so one that fails tells the member it was killed.
//! 2. Another member kills it only by `IF beat = b`, after seeing `b` unchanged for the member
//!    timeout on its own clock; `lease_ms` is shorter by the clocks' drift, so the kill always
//!    lands after the lease ended.
//! 3. A killed member's slots are claimed `IF holder = X AND epoch = e`, giving epoch `e + 1`;
//!    a live holder hands a slot over the same way, once it stopped serving it and none of its
//!    users' writes is in flight. A restarted member replaces its earlier incarnation's row
//!    only after seeing it silent for the timeout too (it may be paused, not dead).
//! 4. Every write of a slot's data carries the timestamp `fence(epoch, value)`: a newer epoch
//!    wins last-write-wins whatever order the writes reach the database in.
//! 5. A user's highest seq (a static cell of its partition, fenced like the rows) says which
//!    rows exist: rows above it are invisible. A new owner loads a user by reading it (highest
//!    seq `M`) and writing `M` back at `fence(epoch, 0)`: an old owner's write still in flight
//!    then loses to it, and its rows stay above `M`, invisible, until overwritten.
//! 6. An owner answers `ok` (and shows the message to a stream) only when the write's answer
//!    came back within its lease, while it still holds the slot at that epoch.
//! 7. One write in flight per user ([`UserQueue`]): what arrives meanwhile goes into the next
//!    write, one single-partition batch with the user's highest seq; a write whose outcome is
//!    unknown is sent again as it was (same cells, same timestamps: idempotent). So a user's
//!    stored seqs are always 1..=M.

#[cfg(test)]
mod model;

pub use crate::fencing::{epoch_of, fence, shadow, UserQueue, FENCE_BASE, MAX_EPOCH, MAX_FENCED};
pub use ipush_placement::slot_of;
use ipush_placement::Rendezvous;

/// The protocol's clocks, in milliseconds of each member's own monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A member silent this long (on the observer's clock) may be killed.
    pub member_timeout_ms: u64,
    /// How often a member heartbeats; well under the timeout.
    pub beat_every_ms: u64,
    /// The largest rate difference of any member's clock from real time, in parts per million.
    pub max_drift_ppm: u64,
}

impl Timing {
    /// How long a heartbeat's lease runs on the owner's clock: shorter than the timeout on any
    /// observer's clock, whatever both clocks' drift, by one ms more.
    pub fn lease_ms(&self) -> u64 {
        let t = u128::from(self.member_timeout_ms);
        let p = u128::from(self.max_drift_ppm.min(100_000));
        (t * (1_000_000 - p) / (1_000_000 + p)).saturating_sub(1) as u64
    }
}

/// A member's heartbeat cell: which process (incarnation) and how many beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Beat {
    pub incarnation: u64,
    pub count: u64,
}

/// `UPDATE members SET beat = next WHERE name = me IF alive AND beat IN (expect, also)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatWrite {
    pub expect: Beat,
    /// The beat of an earlier write whose outcome was never known: it may have applied.
    pub also: Option<Beat>,
    pub next: Beat,
    pub sent_at: u64,
}

/// What came back from a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The condition failed: the database holds something else.
    Refused,
    /// No answer (timeout, connection lost): it may or may not have applied.
    Unknown,
}

/// This member's lease, renewed by its own heartbeats.
#[derive(Debug, Clone)]
pub struct Lease {
    lease_ms: u64,
    last: Beat,
    maybe: Option<Beat>,
    until: Option<u64>,
    in_flight: bool,
    lost: bool,
}

impl Lease {
    /// A process that has just registered `Beat { incarnation, count: 0 }`; it holds no lease
    /// until its first heartbeat applies.
    pub fn new(timing: &Timing, incarnation: u64) -> Lease {
        Lease {
            lease_ms: timing.lease_ms(),
            last: Beat {
                incarnation,
                count: 0,
            },
            maybe: None,
            until: None,
            in_flight: false,
            lost: false,
        }
    }

    /// The next heartbeat to send now, unless one is in flight or the lease is lost for good.
    pub fn beat(&mut self, now: u64) -> Option<BeatWrite> {
        if self.lost || self.in_flight {
            return None;
        }
        self.in_flight = true;
        let top = self.maybe.unwrap_or(self.last);
        Some(BeatWrite {
            expect: self.last,
            also: self.maybe,
            next: Beat {
                count: top.count + 1,
                ..top
            },
            sent_at: now,
        })
    }

    pub fn on_beat(&mut self, w: &BeatWrite, outcome: Outcome) {
        self.in_flight = false;
        match outcome {
            Outcome::Applied => {
                self.last = w.next;
                self.maybe = None;
                self.until = Some(w.sent_at + self.lease_ms);
            }
            // Killed: this incarnation never holds anything again.
            Outcome::Refused => self.lost = true,
            Outcome::Unknown => self.maybe = Some(w.next),
        }
    }

    /// May an answer that came back at `t` be acknowledged?
    pub fn valid_at(&self, t: u64) -> bool {
        !self.lost && self.until.is_some_and(|u| t < u)
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// When the lease ends (the holder's clock), if it holds one.
    pub fn until(&self) -> Option<u64> {
        self.until.filter(|_| !self.lost)
    }

    pub fn incarnation(&self) -> u64 {
        self.last.incarnation
    }
}

/// One member's watch over the others' heartbeats, fed by fresh reads of the members table.
#[derive(Debug, Clone, Default)]
pub struct Watch {
    seen: Vec<(String, Beat, u64)>,
}

impl Watch {
    /// `member` had `beat` in a read that answered at `now` (never earlier than the write).
    pub fn observe(&mut self, member: &str, beat: Beat, now: u64) {
        match self.seen.iter_mut().find(|s| s.0 == member) {
            Some(s) if s.1 == beat => {}
            Some(s) => *s = (s.0.clone(), beat, now),
            None => self.seen.push((member.to_string(), beat, now)),
        }
    }

    pub fn forget(&mut self, member: &str) {
        self.seen.retain(|s| s.0 != member);
    }

    /// Members whose beat has not changed for `timeout_ms`: kill each `IF beat = b`.
    pub fn silent(&self, now: u64, timeout_ms: u64) -> Vec<(String, Beat)> {
        self.seen
            .iter()
            .filter(|s| now.saturating_sub(s.2) >= timeout_ms)
            .map(|s| (s.0.clone(), s.1))
            .collect()
    }
}

/// Which process holds a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub name: String,
    pub incarnation: u64,
}

/// A slot's row: its holder and epoch; changed only `IF holder = … AND epoch = …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRow {
    pub holder: Option<Holder>,
    pub epoch: u32,
}

/// A conditional change of one slot's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotWrite {
    pub slot: u32,
    pub expect: SlotRow,
    pub next: SlotRow,
}

/// The member a slot belongs with among the live ones (rendezvous over names, so a join or a
/// leave moves about 1/N of the slots).
pub fn desired(slot: u32, live: &[Holder]) -> Option<&Holder> {
    Placer::new(live).owner(slot)
}

/// [`desired`] for many slots: the hash state is built once per member set.
pub struct Placer<'a> {
    live: &'a [Holder],
    ring: Rendezvous,
}

impl<'a> Placer<'a> {
    pub fn new(live: &'a [Holder]) -> Self {
        let names: Vec<&str> = live.iter().map(|h| h.name.as_str()).collect();
        Placer {
            live,
            ring: Rendezvous::new(&names),
        }
    }

    pub fn owner(&self, slot: u32) -> Option<&'a Holder> {
        if self.live.is_empty() {
            return None;
        }
        Some(&self.live[self.ring.owner(&format!("slot-{slot}"))])
    }
}

/// What `me` should write to the slot table now. `alive`: the members whose rows say alive
/// (this incarnation each); `placement`: those of them slots may go to (the alive ones not
/// leaving; `me` among them unless it leaves); `releasing`: slots `me` has stopped serving.
/// - a slot no alive member holds, that belongs with `me`: claim it;
/// - a slot `me` holds that belongs with another member: hand it over — only once it is in
///   `releasing` (the caller stops serving it first, then asks again).
///
/// A leaving member's slots are still held (it is alive): nobody claims them; it hands them
/// over one by one as it drains.
pub fn slot_writes(
    me: &Holder,
    rows: &[SlotRow],
    alive: &[Holder],
    placement: &[Holder],
    releasing: &[u32],
) -> Vec<SlotWrite> {
    let mut out = Vec::new();
    let placer = Placer::new(placement);
    for (slot, row) in rows.iter().enumerate() {
        let slot = slot as u32;
        let Some(want) = placer.owner(slot) else {
            continue;
        };
        if row.epoch >= MAX_EPOCH {
            continue;
        }
        let held_by_live = row.holder.as_ref().is_some_and(|h| alive.contains(h));
        let next = SlotRow {
            holder: Some(want.clone()),
            epoch: row.epoch + 1,
        };
        let mine = row.holder.as_ref() == Some(me);
        if (!held_by_live && want == me) || (mine && want != me && releasing.contains(&slot)) {
            out.push(SlotWrite {
                slot,
                expect: row.clone(),
                next,
            });
        }
    }
    out
}

/// Slots `me` holds that belong with another member of `placement` (all of them when `me`
/// leaves): stop serving them, then hand over.
pub fn to_release(me: &Holder, rows: &[SlotRow], live: &[Holder]) -> Vec<u32> {
    let placer = Placer::new(live);
    rows.iter()
        .enumerate()
        .filter(|(slot, row)| {
            row.holder.as_ref() == Some(me) && placer.owner(*slot as u32).is_some_and(|w| w != me)
        })
        .map(|(slot, _)| slot as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            member_timeout_ms: 3000,
            beat_every_ms: 300,
            max_drift_ppm: 1000,
        }
    }

    #[test]
    fn fences_order_epoch_first_and_beat_real_clocks() {
        assert!(fence(2, 0) > fence(1, MAX_FENCED));
        assert!(fence(1, 5) > fence(1, 4));
        assert!(shadow(3) > fence(2, 1_000_000) && shadow(3) < fence(3, 1));
        let now_us = 1_800_000_000_000_000i64; // 2027 in µs
        assert!(fence(0, 0) > now_us * 1000);
        assert!(fence(MAX_EPOCH, MAX_FENCED) > 0, "no overflow");
        assert_eq!(epoch_of(fence(7, 99)), 7);
        assert_eq!(epoch_of(fence(MAX_EPOCH, MAX_FENCED)), MAX_EPOCH);
    }

    #[test]
    fn lease_is_shorter_than_any_observers_timeout() {
        let t = timing();
        let l = t.lease_ms() as f64;
        // The owner's clock fast, the observer's slow, both at the bound.
        assert!(l * (1.0 + 0.001) < 3000.0 * (1.0 - 0.001), "lease {l}");
        assert!(l > 2900.0);
    }

    #[test]
    fn a_lease_runs_from_the_send_and_ends_on_refusal() {
        let mut l = Lease::new(&timing(), 7);
        assert!(!l.valid_at(0), "no lease before the first beat");
        let w = l.beat(100).unwrap();
        assert!(l.beat(150).is_none(), "one beat in flight");
        l.on_beat(&w, Outcome::Applied);
        assert!(l.valid_at(100 + timing().lease_ms() - 1));
        assert!(!l.valid_at(100 + timing().lease_ms()));
        let w2 = l.beat(400).unwrap();
        l.on_beat(&w2, Outcome::Unknown);
        let w3 = l.beat(700).unwrap();
        assert_eq!(w3.expect.count, 1);
        assert_eq!(w3.also.map(|b| b.count), Some(2));
        assert_eq!(w3.next.count, 3);
        l.on_beat(&w3, Outcome::Refused);
        assert!(l.is_lost() && !l.valid_at(701) && l.beat(800).is_none());
    }

    #[test]
    fn a_watch_reports_only_unchanged_beats() {
        let mut w = Watch::default();
        let b = |count| Beat {
            incarnation: 1,
            count,
        };
        w.observe("n2", b(1), 0);
        w.observe("n2", b(1), 2000);
        assert!(w.silent(2999, 3000).is_empty());
        assert_eq!(w.silent(3000, 3000), vec![("n2".to_string(), b(1))]);
        w.observe("n2", b(2), 3100);
        assert!(w.silent(6000, 3000).is_empty());
    }

    fn h(name: &str) -> Holder {
        Holder {
            name: name.into(),
            incarnation: 1,
        }
    }

    #[test]
    fn claims_take_orphans_and_hand_overs_wait_for_release() {
        let live = vec![h("a"), h("b")];
        let rows: Vec<SlotRow> = (0..32)
            .map(|_| SlotRow {
                holder: None,
                epoch: 0,
            })
            .collect();
        let a = slot_writes(&live[0], &rows, &live, &live, &[]);
        let b = slot_writes(&live[1], &rows, &live, &live, &[]);
        assert_eq!(
            a.len() + b.len(),
            32,
            "every orphan claimed by exactly one member"
        );
        assert!(a.len() > 8 && b.len() > 8);
        // All held by a: b's slots are released by a only once a stopped serving them.
        let rows: Vec<SlotRow> = (0..32)
            .map(|_| SlotRow {
                holder: Some(h("a")),
                epoch: 4,
            })
            .collect();
        assert!(slot_writes(&live[1], &rows, &live, &live, &[]).is_empty());
        let release = to_release(&live[0], &rows, &live);
        assert_eq!(release.len(), b.len());
        assert!(slot_writes(&live[0], &rows, &live, &live, &[]).is_empty());
        let writes = slot_writes(&live[0], &rows, &live, &live, &release);
        assert_eq!(writes.len(), release.len());
        assert!(writes
            .iter()
            .all(|w| w.next.epoch == 5 && w.next.holder == Some(h("b"))));
        // A dead holder's slots go to the live members it belonged with.
        let alone = vec![h("b")];
        assert_eq!(slot_writes(&alone[0], &rows, &alone, &alone, &[]).len(), 32);
    }

    #[test]
    fn a_leaving_member_hands_everything_over_and_nobody_claims_it_first() {
        let alive = vec![h("a"), h("b")];
        let placement = vec![h("b")];
        let rows: Vec<SlotRow> = (0..32)
            .map(|_| SlotRow {
                holder: Some(h("a")),
                epoch: 2,
            })
            .collect();
        // a is alive while it drains: b claims nothing behind its back.
        assert!(slot_writes(&alive[1], &rows, &alive, &placement, &[]).is_empty());
        let release = to_release(&alive[0], &rows, &placement);
        assert_eq!(release.len(), 32);
        assert!(slot_writes(&alive[0], &rows, &alive, &placement, &[]).is_empty());
        let writes = slot_writes(&alive[0], &rows, &alive, &placement, &release[..5]);
        assert_eq!(writes.len(), 5);
        assert!(writes
            .iter()
            .all(|w| w.next.epoch == 3 && w.next.holder == Some(h("b"))));
    }

    #[test]
    fn a_user_has_one_write_in_flight() {
        let mut q = UserQueue::default();
        assert_eq!(q.push(1), Some(vec![1]));
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), None);
        assert_eq!(q.done(), Some(vec![2, 3]));
        assert_eq!(q.done(), None);
        assert!(q.is_idle());
    }
}
