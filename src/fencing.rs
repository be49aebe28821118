//! Fencing's primitives, below the storage that obeys them and the cluster that decides them:
//! fenced write timestamps (epoch, then a growing value), one write in flight per user, this
//! member's lease clock, and the per-slot epochs it serves. Pure or lock-free; read by every
//! core and bridge thread, set by the dynamic cluster's control thread. The rules themselves
//! are `cluster::ownership`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fenced timestamps sit above any real microsecond clock (2^61 µs is ~73,000 years), so a
/// cell written without a fence can never beat one written with it.
pub const FENCE_BASE: i64 = 1 << 61;
const EPOCH_SHIFT: u32 = 42;
/// Highest epoch a slot can reach (2^18 - 1 hand-overs).
pub const MAX_EPOCH: u32 = (1 << 18) - 1;
/// Highest value (seq, last_ack) a fenced timestamp can order.
pub const MAX_FENCED: u64 = (1 << EPOCH_SHIFT) - 1;

/// The write timestamp of a cell whose value only grows within an epoch (a message row by its
/// seq, the highest seq, `last_ack`): epoch first, then the value.
pub fn fence(epoch: u32, value: u64) -> i64 {
    debug_assert!(epoch <= MAX_EPOCH && value <= MAX_FENCED);
    FENCE_BASE | (i64::from(epoch.min(MAX_EPOCH)) << EPOCH_SHIFT) | value.min(MAX_FENCED) as i64
}

/// The timestamp of a new owner's shadow (the highest seq it read, written back): above every
/// older epoch's writes, below all of its own.
pub fn shadow(epoch: u32) -> i64 {
    fence(epoch, 0)
}

/// The epoch a fenced timestamp was written in.
pub fn epoch_of(ts: i64) -> u32 {
    ((ts & !FENCE_BASE) >> EPOCH_SHIFT) as u32
}

/// The value (seq, `last_ack`) a fenced timestamp orders within its epoch.
pub fn value_of(ts: i64) -> u64 {
    (ts as u64) & MAX_FENCED
}

/// One user's writes: at most one in flight, what arrives meanwhile waits for the next.
#[derive(Debug)]
pub struct UserQueue<T> {
    in_flight: bool,
    waiting: Vec<T>,
}

impl<T> Default for UserQueue<T> {
    fn default() -> Self {
        UserQueue {
            in_flight: false,
            waiting: Vec::new(),
        }
    }
}

impl<T> UserQueue<T> {
    /// Queues `item`; returns the batch to write now when nothing is in flight.
    pub fn push(&mut self, item: T) -> Option<Vec<T>> {
        self.waiting.push(item);
        self.next()
    }

    /// The write in flight is settled (its outcome known); returns the next batch, if any.
    pub fn done(&mut self) -> Option<Vec<T>> {
        self.in_flight = false;
        self.next()
    }

    pub fn is_idle(&self) -> bool {
        !self.in_flight && self.waiting.is_empty()
    }

    fn next(&mut self) -> Option<Vec<T>> {
        if self.in_flight || self.waiting.is_empty() {
            return None;
        }
        self.in_flight = true;
        Some(std::mem::take(&mut self.waiting))
    }
}

/// Until when this member's lease runs, readable from any thread without a lock: a core checks
/// it before it answers `ok` (rule 6 of `cluster::ownership`).
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    until_ms: AtomicU64,
}

impl Default for LeaseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseClock {
    /// A clock with no lease yet (the control loop extends it with each heartbeat).
    pub fn new() -> Self {
        LeaseClock {
            base: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    /// The lease runs for `d` from now (zero: it has ended). For a member driven by hand
    /// (tests, tools); the control loop sets it from its heartbeats.
    pub fn hold_for(&self, d: Duration) {
        let until = if d.is_zero() {
            0
        } else {
            self.now_ms() + d.as_millis() as u64
        };
        self.until_ms.store(until, Ordering::Release);
    }

    /// Milliseconds of this clock (its own monotonic base).
    pub(crate) fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// The lease runs until `until` on this clock (0: it has ended).
    #[cfg(feature = "scylla")]
    pub(crate) fn set_until(&self, until: u64) {
        self.until_ms.store(until, Ordering::Release);
    }

    pub fn valid_now(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::Acquire)
    }
}

/// One cell per slot: 0 when this member does not serve it, else the epoch + 1.
#[derive(Debug)]
pub struct Fences {
    slots: Box<[AtomicU64]>,
    lease: Arc<LeaseClock>,
}

impl Fences {
    /// `slots` slots (the keyspace's count), none served yet; `lease` is the control loop's.
    pub fn new(slots: u32, lease: Arc<LeaseClock>) -> Fences {
        Fences {
            slots: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            lease,
        }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slot of `uid` (`ipush_placement::slot_of` over this keyspace's count).
    pub fn slot_of(&self, uid: &str) -> u32 {
        ipush_placement::slot_of(uid, self.slot_count())
    }

    /// This member serves `slot` at `epoch` from now on (`Some`), or no longer (`None`). The
    /// control side calls it from the `View` it publishes (`View::serving`); a slot out of
    /// range or an epoch above `MAX_EPOCH` is ignored (the keyspace's count never changes).
    pub fn set(&self, slot: u32, epoch: Option<u32>) {
        let Some(cell) = self.slots.get(slot as usize) else {
            return;
        };
        match epoch {
            Some(e) if e > MAX_EPOCH => {}
            Some(e) => cell.store(u64::from(e) + 1, Ordering::Release),
            None => cell.store(0, Ordering::Release),
        }
    }

    /// The epoch at which this member serves `slot` now, if it does.
    pub fn held(&self, slot: u32) -> Option<u32> {
        let v = self.slots.get(slot as usize)?.load(Ordering::Acquire);
        (v != 0).then(|| (v - 1) as u32)
    }

    /// Whether this member's lease runs now: an answer that comes back later is not an `ok`.
    pub fn lease_valid(&self) -> bool {
        self.lease.valid_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_held_at_their_epoch_until_released() {
        let lease = Arc::new(LeaseClock::new());
        let f = Fences::new(8, lease.clone());
        assert_eq!(f.slot_count(), 8);
        assert_eq!(f.held(3), None);
        f.set(3, Some(0));
        f.set(4, Some(7));
        assert_eq!((f.held(3), f.held(4)), (Some(0), Some(7)));
        f.set(3, None);
        assert_eq!(f.held(3), None);
        f.set(99, Some(1));
        assert_eq!(f.held(99), None, "out of range");
        f.set(4, Some(MAX_EPOCH + 1));
        assert_eq!(f.held(4), Some(7), "an impossible epoch changes nothing");
        assert!(f.slot_of("alice") < 8);
        assert!(!f.lease_valid(), "no lease before the first beat");
        lease.hold_for(Duration::from_secs(60));
        assert!(f.lease_valid());
        lease.hold_for(Duration::ZERO);
        assert!(!f.lease_valid());
    }
}
