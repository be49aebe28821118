//! Idle users leave memory: a user with no stream, no task holding it and no use for
//! `--user_idle_s` is dropped from this core's map, and `Shard::user` reads its seq and last
//! ack back from the store on next use (its messages and channel memberships never left the
//! store). Part of `Shard`; runs on its core's executor, from housekeeping, in slices.
//!
//! Candidates wait in a FIFO of `(queued at, Weak<User>)` (16 bytes each, no scan of the whole
//! map): a user is queued when it is loaded and when its stream ends, at most once. An entry
//! due (`--user_idle_s` old) is looked at once: evicted, put back for another period (used
//! meanwhile, or busy), or forgotten (it streams again; its detach queues it anew). So a user
//! leaves between one and two idle periods after its last use.

use std::rc::Rc;

use super::{Shard, User};

/// Queue entries looked at between two yields to the executor (~50 µs of work).
const SLICE: usize = 1024;

/// Above this many users the map keeps its capacity: shrinking rehashes every entry at once.
const SHRINK_MAX_LEN: usize = 1 << 20;

/// What the sweep does with a due user.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Evict,
    /// Look again one idle period later.
    Keep,
    /// Out of the queue until its stream ends.
    Forget,
}

/// `user` as the sweep holds it: one reference from the map, one from the sweep.
fn verdict(user: &Rc<User>) -> Verdict {
    if user.streams() {
        return Verdict::Forget;
    }
    // A task holds it: a load, publish, ack or /msg is in flight (its write would be lost
    // to a reload that ran before the write landed).
    let busy = Rc::strong_count(user) > 2 || !user.loaded.get();
    if busy || user.unsynced.get() || user.touched.replace(false) {
        return Verdict::Keep;
    }
    Verdict::Evict
}

impl Shard {
    /// Puts `user` in the idle queue unless it is there already (or eviction is off).
    pub(super) fn queue_idle(&self, user: &Rc<User>) {
        if self.cfg.user_idle_s == 0 || user.queued.replace(true) {
            return;
        }
        self.idle
            .borrow_mut()
            .push_back((self.clock(), Rc::downgrade(user)));
    }

    /// The users `gone` picks (their slot left this node) leave memory at once and their
    /// streams get the move signal to `location(uid)`: whoever serves the slot next loads
    /// them from the store, so nothing this core holds may outlive its ownership. How many
    /// left.
    pub fn release_users(
        &self,
        gone: impl Fn(&str) -> bool,
        location: impl Fn(&str) -> String,
    ) -> usize {
        let out: Vec<Rc<User>> = {
            let mut users = self.users.borrow_mut();
            let uids: Vec<Rc<str>> = users.keys().filter(|u| gone(u)).cloned().collect();
            uids.iter().filter_map(|u| users.remove(u)).collect()
        };
        if out.is_empty() {
            return 0;
        }
        let mut held = self.held.borrow_mut();
        for user in &out {
            held.remove(&user.uid);
            // Straight to its stream: the user is out of the map already.
            if let Some(conn) = user.conn() {
                conn.moved(&location(&user.uid));
                self.bump(&self.stats.moved);
            }
        }
        drop(held);
        self.count_resident();
        out.len()
    }

    /// Users resident on this core now.
    pub fn resident_users(&self) -> usize {
        self.users.borrow().len()
    }

    pub(super) fn count_resident(&self) {
        let n = self.users.borrow().len() as u64;
        self.stats.users_resident.set(n);
    }

    /// Evicts the users idle for `--user_idle_s`, `SLICE` queue entries at a time with a
    /// yield between slices; the number evicted.
    pub async fn sweep_idle_users(&self) -> usize {
        let idle_s = self.cfg.user_idle_s.min(u64::from(u32::MAX)) as u32;
        if idle_s == 0 {
            return 0;
        }
        let now = self.clock();
        let mut evicted = 0;
        loop {
            let (n, more) = self.sweep_slice(now, idle_s);
            evicted += n;
            if !more {
                break;
            }
            glommio::yield_if_needed().await;
        }
        if evicted > 0 {
            self.add(&self.stats.users_evicted, evicted as u64);
            self.count_resident();
            self.shrink_after_sweep();
        }
        evicted
    }

    /// Looks at up to `SLICE` due entries: (evicted, whether due entries may remain).
    fn sweep_slice(&self, now: u32, idle_s: u32) -> (usize, bool) {
        let mut evicted = 0;
        for _ in 0..SLICE {
            let entry = {
                let mut q = self.idle.borrow_mut();
                match q.front() {
                    Some((at, _)) if now.saturating_sub(*at) >= idle_s => q.pop_front(),
                    _ => None,
                }
            };
            let Some((_, weak)) = entry else {
                return (evicted, false);
            };
            let Some(user) = weak.upgrade() else {
                continue;
            };
            match verdict(&user) {
                Verdict::Evict => {
                    self.users.borrow_mut().remove(&user.uid);
                    evicted += 1;
                }
                Verdict::Keep => self.idle.borrow_mut().push_back((now, weak)),
                Verdict::Forget => user.queued.set(false),
            }
        }
        (evicted, true)
    }

    /// Gives memory back once the map or the queue has fallen to a quarter of its capacity
    /// (the map's buckets are ~25 bytes a slot whether used or not).
    fn shrink_after_sweep(&self) {
        let mut users = self.users.borrow_mut();
        if users.len() <= SHRINK_MAX_LEN && users.len() * 4 < users.capacity() {
            let len = users.len();
            users.shrink_to(len * 2);
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= SHRINK_MAX_LEN && idle.len() * 4 < idle.capacity() {
            let len = idle.len();
            idle.shrink_to(len * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;
    use crate::shard::conn::Conn;
    use std::cell::Cell;

    fn user() -> Rc<User> {
        Rc::new(User {
            uid: Rc::from("u"),
            meta: Cell::default(),
            loaded: Cell::new(true),
            touched: Cell::new(false),
            queued: Cell::new(true),
            unsynced: Cell::new(false),
            durable: Cell::new(0),
            conn: Cell::default(),
        })
    }

    #[test]
    fn only_an_idle_unused_user_is_evicted() {
        let map_ref = user();
        let sweep_ref = map_ref.clone();
        assert_eq!(verdict(&sweep_ref), Verdict::Evict);

        map_ref.touched.set(true);
        assert_eq!(verdict(&sweep_ref), Verdict::Keep, "used this period");
        assert_eq!(verdict(&sweep_ref), Verdict::Evict, "not used the next one");

        let in_flight = sweep_ref.clone();
        assert_eq!(verdict(&sweep_ref), Verdict::Keep, "a task holds it");
        drop(in_flight);

        map_ref.loaded.set(false);
        assert_eq!(verdict(&sweep_ref), Verdict::Keep, "still loading");
        map_ref.loaded.set(true);

        map_ref.unsynced.set(true);
        assert_eq!(verdict(&sweep_ref), Verdict::Keep, "memory ahead of store");
        map_ref.unsynced.set(false);

        map_ref
            .conn
            .set(Some(Rc::new(Conn::new(ConnId(1), Rc::from("u"), 0))));
        assert_eq!(verdict(&sweep_ref), Verdict::Forget, "streaming");
    }
}
