//! Which slots this member serves now, at which epoch, and whether its lease runs: what the
//! scylla store checks before it fences a write and before it answers `ok` (rules 4–6 of
//! `ownership`). Set by the control side, read lock-free by every core and bridge thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::control::LeaseClock;
use super::ownership::MAX_EPOCH;

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
    use std::time::Duration;

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
