//! One user's unacked messages in seq order, 16 bytes each (what the index holds per stored
//! message); owned by a core's `Index`, on that core.
//!
//! Seqs are not stored. A user's seqs are given one after another, so a message's seq is the
//! one before it plus one, and a run of seqs that is not held (an expired message between live
//! ones, a failed write, a seq taken by a message that expired before it was stored) is one
//! `Gap` slot. A `(seq, held)` pair per message was 24 bytes; this is 16, the size of what is
//! held (a `Gap` fits in its niche). Both ends are always messages, so the first and last seq
//! are known without a walk.

use std::collections::{vec_deque, VecDeque};

/// What the index holds for one stored message besides its seq.
pub trait Held: Clone {
    /// Unix seconds after which the message is never delivered or listed.
    fn expires_at(&self) -> u64;
}

enum Slot<P> {
    Msg(P),
    /// This many seqs (at least one) not held.
    Gap(u64),
}

impl<P> Slot<P> {
    fn seqs(&self) -> u64 {
        match self {
            Slot::Msg(_) => 1,
            Slot::Gap(n) => *n,
        }
    }
}

pub struct SeqLog<P> {
    /// Seq of the first slot and of the last (both messages); meaningless while empty.
    first: u64,
    last: u64,
    slots: VecDeque<Slot<P>>,
}

impl<P> Default for SeqLog<P> {
    fn default() -> Self {
        SeqLog {
            first: 0,
            last: 0,
            slots: VecDeque::new(),
        }
    }
}

impl<P: Held> SeqLog<P> {
    /// Appends a message whose seq is above every stored one (the caller knows it from the
    /// user's `max_seq`): nothing but the last seq is read, so a large fan-out touches one
    /// cache line per member.
    pub fn push_newest(&mut self, seq: u64, held: &P) {
        if self.slots.is_empty() {
            self.first = seq;
        } else {
            debug_assert!(seq > self.last, "push_newest({seq}) after {}", self.last);
            if seq > self.last + 1 {
                self.push(Slot::Gap(seq - self.last - 1));
            }
        }
        self.push(Slot::Msg(held.clone()));
        self.last = seq;
    }

    /// Stores `held` at `seq`, replacing what is there.
    pub fn insert(&mut self, seq: u64, held: &P) {
        if self.slots.is_empty() || seq > self.last {
            return self.push_newest(seq, held);
        }
        if seq < self.first {
            self.make_room();
            if seq + 1 < self.first {
                self.slots.push_front(Slot::Gap(self.first - seq - 1));
                self.make_room();
            }
            self.slots.push_front(Slot::Msg(held.clone()));
            self.first = seq;
            return;
        }
        let (i, start) = self.locate(seq);
        let n = match self.slots[i] {
            Slot::Msg(_) => {
                self.slots[i] = Slot::Msg(held.clone());
                return;
            }
            Slot::Gap(n) => n,
        };
        // The gap [start, start + n) around seq becomes [gap before] msg [gap after].
        let before = seq - start;
        let after = start + n - 1 - seq;
        self.slots[i] = Slot::Msg(held.clone());
        if after > 0 {
            self.make_room();
            self.slots.insert(i + 1, Slot::Gap(after));
        }
        if before > 0 {
            self.make_room();
            self.slots.insert(i, Slot::Gap(before));
        }
    }

    /// Drops the message at `seq`, if held.
    pub fn remove(&mut self, seq: u64) {
        if self.slots.is_empty() || seq < self.first || seq > self.last {
            return;
        }
        let (i, _) = self.locate(seq);
        if let Slot::Msg(_) = self.slots[i] {
            self.slots[i] = Slot::Gap(1);
            self.merge_gaps();
            self.trim();
        }
    }

    /// Drops every message up to `last_ack`.
    pub fn ack(&mut self, last_ack: u64) {
        while !self.slots.is_empty() && self.first <= last_ack {
            if let Some(slot) = self.slots.pop_front() {
                self.first += slot.seqs();
            }
        }
        // A gap may now lead.
        self.trim();
    }

    /// Drops the messages expired at `now`; how many.
    pub fn retain_unexpired(&mut self, now: u64) -> usize {
        let mut dropped = 0;
        for slot in self.slots.iter_mut() {
            if matches!(slot, Slot::Msg(p) if p.expires_at() <= now) {
                *slot = Slot::Gap(1);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.merge_gaps();
            self.trim();
        }
        dropped
    }

    /// The messages, ascending by seq (`rev()` for newest first).
    pub fn iter(&self) -> Iter<'_, P> {
        Iter {
            slots: self.slots.iter(),
            front: self.first,
            back: self.last,
        }
    }

    /// Each held message, to change what is held (not its seq).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut P)) {
        for slot in self.slots.iter_mut() {
            if let Slot::Msg(p) = slot {
                f(p);
            }
        }
    }

    /// The slot holding `seq` (`first <= seq <= last`) and the seq it starts at, found from
    /// the newest end (inserts and removals land near it).
    fn locate(&self, seq: u64) -> (usize, u64) {
        let mut end = self.last;
        for (i, slot) in self.slots.iter().enumerate().rev() {
            let start = end + 1 - slot.seqs();
            if start <= seq {
                return (i, start);
            }
            end = start - 1;
        }
        (0, self.first)
    }

    /// Joins neighbouring gaps into one, in place.
    fn merge_gaps(&mut self) {
        let s = self.slots.make_contiguous();
        let mut w: usize = 0;
        for r in 0..s.len() {
            if let (Slot::Gap(n), Some(Slot::Gap(m))) = (&s[r], w.checked_sub(1).map(|p| &s[p])) {
                let joined = n + m;
                s[w - 1] = Slot::Gap(joined);
                continue;
            }
            s.swap(w, r);
            w += 1;
        }
        self.slots.truncate(w);
    }

    /// Takes gaps off both ends (after `merge_gaps`, at most one each).
    fn trim(&mut self) {
        if let Some(Slot::Gap(n)) = self.slots.front() {
            self.first += n;
            self.slots.pop_front();
        }
        if let Some(Slot::Gap(n)) = self.slots.back() {
            self.last -= n;
            self.slots.pop_back();
        }
        self.shrink_if_empty();
    }

    fn push(&mut self, slot: Slot<P>) {
        self.make_room();
        self.slots.push_back(slot);
    }

    /// A small deque grows by two slots at a time up to 12, not by doubling: the index is
    /// most of the store's memory, most users hold a few messages, and a doubled deque is
    /// a third empty on average. Bigger ones take the sizes doubling from 4 gives (16, 32,
    /// ...): steps of a quarter all the way cost a 10,000-member fan-out to offline members
    /// 10-20% in copies and fresh pages (store-bench).
    fn make_room(&mut self) {
        let len = self.slots.len();
        if len == self.slots.capacity() {
            let cap = if len < 12 {
                len + 2
            } else {
                (len + 1).next_power_of_two()
            };
            self.slots.reserve_exact(cap - len);
        }
    }

    /// An all-acked user holds no allocation.
    fn shrink_if_empty(&mut self) {
        if self.slots.is_empty() {
            self.slots = VecDeque::new();
        }
    }
}

/// Bytes per stored message of a `SeqLog<P>` (the stores assert it is what `P` is).
#[cfg(test)]
pub(super) fn slot_size<P>() -> usize {
    std::mem::size_of::<Slot<P>>()
}

/// `(seq, held)` of each message of a `SeqLog`, from either end.
pub struct Iter<'a, P> {
    slots: vec_deque::Iter<'a, Slot<P>>,
    /// Seq of the next slot from the front; seq the next slot from the back ends at.
    front: u64,
    back: u64,
}

impl<'a, P> Iterator for Iter<'a, P> {
    type Item = (u64, &'a P);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.slots.next()? {
                Slot::Msg(p) => {
                    self.front += 1;
                    return Some((self.front - 1, p));
                }
                Slot::Gap(n) => self.front += n,
            }
        }
    }
}

impl<P> DoubleEndedIterator for Iter<'_, P> {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            match self.slots.next_back()? {
                Slot::Msg(p) => {
                    // Wrapping: past the first message of a log starting at seq 0.
                    self.back = self.back.wrapping_sub(1);
                    return Some((self.back.wrapping_add(1), p));
                }
                Slot::Gap(n) => self.back = self.back.wrapping_sub(*n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, PartialEq)]
    struct Exp(u64);

    impl Held for Exp {
        fn expires_at(&self) -> u64 {
            self.0
        }
    }

    fn seqs(l: &SeqLog<Exp>) -> Vec<u64> {
        l.iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn keeps_order_whatever_the_insert_order() {
        let mut log = SeqLog::default();
        for seq in [5, 1, 3, 7, 3, 6] {
            log.insert(seq, &Exp(seq * 10));
        }
        assert_eq!(seqs(&log), [1, 3, 5, 6, 7]);
        assert_eq!(
            log.iter().rev().map(|(s, _)| s).collect::<Vec<_>>(),
            [7, 6, 5, 3, 1]
        );
        log.ack(5);
        assert_eq!(seqs(&log), [6, 7]);
        assert_eq!(log.retain_unexpired(65), 1);
        assert_eq!(seqs(&log), [7]);
        log.ack(7);
        assert!(log.slots.is_empty());
        assert_eq!(
            log.slots.capacity(),
            0,
            "an all-acked user holds no allocation"
        );
    }

    #[test]
    fn a_run_of_expired_messages_is_one_gap() {
        let mut log = SeqLog::default();
        log.push_newest(1, &Exp(1000));
        for seq in 2..=1001 {
            log.push_newest(seq, &Exp(10));
        }
        log.push_newest(1002, &Exp(1000));
        assert_eq!(log.retain_unexpired(10), 1000);
        assert_eq!(seqs(&log), [1, 1002]);
        assert_eq!(log.slots.len(), 3, "message, one gap, message");
        log.remove(1);
        assert_eq!(seqs(&log), [1002]);
        assert_eq!(log.slots.len(), 1);
    }

    /// Random operations against a map of seq -> held: the same messages, in the same
    /// order, from both ends, with both ends always messages.
    #[test]
    fn matches_a_map_under_random_operations() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..300 {
            let mut log = SeqLog::default();
            let mut model: BTreeMap<u64, Exp> = BTreeMap::new();
            let mut max = 0u64;
            for _ in 0..200 {
                match next(10) {
                    0..=3 => {
                        max += 1 + next(3);
                        let h = Exp(next(50));
                        log.push_newest(max, &h);
                        model.insert(max, h);
                    }
                    4 => {
                        let seq = 1 + next(max + 3);
                        let h = Exp(next(50));
                        log.insert(seq, &h);
                        model.insert(seq, h);
                        max = max.max(seq);
                    }
                    5 => {
                        let seq = 1 + next(max + 1);
                        log.remove(seq);
                        model.remove(&seq);
                    }
                    6 => {
                        let upto = next(max + 1);
                        log.ack(upto);
                        model.retain(|s, _| *s > upto);
                    }
                    7 => {
                        let now = next(50);
                        let n = log.retain_unexpired(now);
                        let before = model.len();
                        model.retain(|_, h| h.0 > now);
                        assert_eq!(n, before - model.len());
                    }
                    _ => {
                        let mut i = 0;
                        log.for_each_mut(|h| {
                            h.0 += 1;
                            i += 1;
                        });
                        model.values_mut().for_each(|h| h.0 += 1);
                        assert_eq!(i, model.len());
                    }
                }
                let fwd: Vec<(u64, Exp)> = log.iter().map(|(s, h)| (s, h.clone())).collect();
                let want: Vec<(u64, Exp)> = model.iter().map(|(s, h)| (*s, h.clone())).collect();
                assert_eq!(fwd, want);
                let mut back: Vec<u64> = log.iter().rev().map(|(s, _)| s).collect();
                back.reverse();
                assert_eq!(back, model.keys().copied().collect::<Vec<_>>());
                assert!(!matches!(log.slots.front(), Some(Slot::Gap(_))));
                assert!(!matches!(log.slots.back(), Some(Slot::Gap(_))));
                if let (Some(f), Some(l)) = (model.keys().next(), model.keys().last()) {
                    assert_eq!((log.first, log.last), (*f, *l));
                }
            }
        }
    }
}
