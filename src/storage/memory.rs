//! `--storage=memory`: one core's users, messages and memberships in plain maps; runs on that core.
//!
//! Nothing survives a restart. Acked and expired messages are dropped, so memory is bounded by
//! what clients have not yet acknowledged. The maps (`Index`) are generic over what is held per
//! message: the body itself here, where its record lives on disk in the embedded store.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

pub use super::seqlog::Held;
use super::seqlog::SeqLog;
use super::{IdemRecord, Storage, StorageError, StoredMsg, UserMeta};
use crate::protocol::MsgBody;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Members = HashSet<Rc<str>, ahash::RandomState>;

/// A uid as an index entry gets it: an `Rc` shared with the shard, or a slice to copy.
pub trait Uid {
    fn as_str(&self) -> &str;
    fn to_rc(&self) -> Rc<str>;
}

impl Uid for Rc<str> {
    fn as_str(&self) -> &str {
        self
    }

    fn to_rc(&self) -> Rc<str> {
        self.clone()
    }
}

impl Uid for &str {
    fn as_str(&self) -> &str {
        self
    }

    fn to_rc(&self) -> Rc<str> {
        Rc::from(*self)
    }
}

/// The memory store's message: its expiry and its body.
#[derive(Debug, Clone)]
pub struct InMemory {
    pub expires_at: u64,
    pub body: Rc<MsgBody>,
}

impl Held for InMemory {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// `(seq, what is held)` of one stored message.
pub type SeqMsg<P> = (u64, P);

struct UserRecord<P> {
    meta: UserMeta,
    msgs: SeqLog<P>,
}

impl<P> Default for UserRecord<P> {
    fn default() -> Self {
        UserRecord {
            meta: UserMeta::default(),
            msgs: SeqLog::default(),
        }
    }
}

/// One core's users, their unacked messages (`P` each) and memberships.
pub struct Index<P> {
    users: RefCell<Map<Rc<str>, UserRecord<P>>>,
    channels: RefCell<Map<Rc<str>, Members>>,
    /// Boxed: `Store`'s variants stay of similar size.
    idem: RefCell<Box<IdemIndex>>,
}

/// Idempotency records by id, and their ids in insertion order (which is expiry order while
/// the window stays the same) so expiry pops from the front instead of scanning.
#[derive(Default)]
struct IdemIndex {
    by_id: Map<Rc<str>, (u64, u64, u64)>,
    order: VecDeque<(u64, Rc<str>)>,
}

impl IdemIndex {
    fn expire(&mut self, now: u64) {
        while let Some((exp, id)) = self.order.front() {
            // A window made shorter by a restart can leave a later expiry behind an earlier
            // one: it goes when it reaches the front; lookups check expiry themselves.
            if *exp > now {
                break;
            }
            if self.by_id.get(id).is_some_and(|r| r.2 <= now) {
                self.by_id.remove(id);
            }
            self.order.pop_front();
        }
        if self.order.is_empty() && self.order.capacity() > 1024 {
            // A burst's big tables are not kept for the quiet that follows.
            *self = IdemIndex::default();
        }
    }
}

/// The memory store: the index holding every body.
pub type MemoryStore = Index<InMemory>;

impl<P> Default for Index<P> {
    fn default() -> Self {
        Index {
            users: RefCell::default(),
            channels: RefCell::default(),
            idem: RefCell::default(),
        }
    }
}

impl<P: Held> Index<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The synchronous operations behind the trait (the embedded store's index uses them
    /// directly, during replay too).
    pub fn meta(&self, uid: &str) -> UserMeta {
        self.users
            .borrow()
            .get(uid)
            .map(|r| r.meta)
            .unwrap_or_default()
    }

    /// Stores `held` for each entry; entries expired at `now` only move `max_seq`. The uids
    /// are the shard's `Rc`s when publishing and slices of the file at start-up, where only a
    /// new user's uid is allocated (not one per replayed message).
    pub fn apply_append<U: Uid>(&self, held: &P, entries: &[(U, u64)], now: u64) {
        let expires_at = held.expires_at();
        let mut users = self.users.borrow_mut();
        for (uid, seq) in entries {
            let rec = match users.get_mut(uid.as_str()) {
                Some(r) => r,
                None => users.entry(uid.to_rc()).or_default(),
            };
            // Every stored seq is <= max_seq.
            let newest = *seq > rec.meta.max_seq;
            rec.meta.max_seq = rec.meta.max_seq.max(*seq);
            if *seq > rec.meta.last_ack && expires_at > now {
                if newest {
                    rec.msgs.push_newest(*seq, held);
                } else {
                    rec.msgs.insert(*seq, held);
                }
            }
        }
    }

    /// Takes back messages whose write failed; their seqs stay given (`max_seq` is kept).
    pub fn unapply_append(&self, entries: &[(Rc<str>, u64)]) {
        let mut users = self.users.borrow_mut();
        for (uid, seq) in entries {
            if let Some(rec) = users.get_mut(uid) {
                rec.msgs.remove(*seq);
            }
        }
    }

    pub fn apply_ack(&self, uid: &str, last_ack: u64) {
        let mut users = self.users.borrow_mut();
        let rec = match users.get_mut(uid) {
            Some(r) => r,
            None => users.entry(Rc::from(uid)).or_default(),
        };
        if last_ack > rec.meta.last_ack {
            rec.meta.last_ack = last_ack;
            rec.meta.max_seq = rec.meta.max_seq.max(last_ack);
            rec.msgs.ack(last_ack);
        }
    }

    /// Raises a user's counters to at least `meta` (snapshots carry them for users whose
    /// messages are all gone, so seqs never restart).
    pub fn apply_meta(&self, uid: &str, meta: UserMeta) {
        let mut users = self.users.borrow_mut();
        let rec = users.entry(Rc::from(uid)).or_default();
        rec.meta.max_seq = rec.meta.max_seq.max(meta.max_seq);
        drop(users);
        self.apply_ack(uid, meta.last_ack);
    }

    pub fn apply_sub(&self, cid: &str, uid: &str, on: bool) {
        let mut channels = self.channels.borrow_mut();
        if on {
            channels
                .entry(Rc::from(cid))
                .or_default()
                .insert(Rc::from(uid));
        } else if let Some(members) = channels.get_mut(cid) {
            members.remove(uid);
            if members.is_empty() {
                channels.remove(cid);
            }
        }
    }

    /// The newest `limit` unexpired messages with `after < seq <= upto`, ascending.
    pub fn list(&self, uid: &str, after: u64, upto: u64, limit: usize, now: u64) -> Vec<SeqMsg<P>> {
        let users = self.users.borrow();
        let Some(rec) = users.get(uid) else {
            return Vec::new();
        };
        if upto <= after {
            return Vec::new();
        }
        let mut out: Vec<SeqMsg<P>> = rec
            .msgs
            .iter()
            .rev()
            .skip_while(|(seq, _)| *seq > upto)
            .take_while(|(seq, _)| *seq > after)
            .filter(|(_, held)| held.expires_at() > now)
            .take(limit)
            .map(|(seq, held)| (seq, held.clone()))
            .collect();
        out.reverse();
        out
    }

    pub fn members(&self, cid: &str) -> Vec<Rc<str>> {
        self.channels
            .borrow()
            .get(cid)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records `r` (replacing an older record of its id) unless it has expired at `now`.
    pub fn apply_idem(&self, r: &IdemRecord, now: u64) {
        if r.expires_at <= now {
            return;
        }
        let mut idem = self.idem.borrow_mut();
        idem.expire(now);
        let id: Rc<str> = Rc::from(r.id.as_str());
        idem.by_id
            .insert(id.clone(), (r.fingerprint, r.answer, r.expires_at));
        idem.order.push_back((r.expires_at, id));
    }

    /// Takes back a key whose write failed: only answers that were given are remembered.
    pub fn unapply_idem(&self, id: &str) {
        self.idem.borrow_mut().by_id.remove(id);
    }

    pub fn idem(&self, id: &str, now: u64) -> Option<IdemRecord> {
        let idem = self.idem.borrow();
        let &(fingerprint, answer, expires_at) = idem.by_id.get(id)?;
        (expires_at > now).then(|| IdemRecord {
            id: id.to_string(),
            fingerprint,
            answer,
            expires_at,
        })
    }

    /// Unexpired idempotency records held (expired ones are dropped first).
    pub fn idem_len(&self, now: u64) -> usize {
        let mut idem = self.idem.borrow_mut();
        idem.expire(now);
        idem.by_id.len()
    }

    /// Every unexpired idempotency record (for snapshots).
    pub fn idem_list(&self, now: u64) -> Vec<IdemRecord> {
        let idem = self.idem.borrow();
        idem.by_id
            .iter()
            .filter(|(_, r)| r.2 > now)
            .map(|(id, &(fingerprint, answer, expires_at))| IdemRecord {
                id: id.to_string(),
                fingerprint,
                answer,
                expires_at,
            })
            .collect()
    }

    pub fn purge(&self, now: u64) -> usize {
        self.idem.borrow_mut().expire(now);
        let mut purged = 0;
        for rec in self.users.borrow_mut().values_mut() {
            purged += rec.msgs.retain_unexpired(now);
        }
        purged
    }

    /// Every user with any state (for snapshots).
    pub fn uids(&self) -> Vec<Rc<str>> {
        self.users.borrow().keys().cloned().collect()
    }

    /// Calls `f` with a user's counters and unacked messages in seq order, in place (a
    /// snapshot visits every stored message: no copies); nothing for an unknown user.
    pub fn visit_user(
        &self,
        uid: &str,
        f: impl FnOnce(UserMeta, &mut dyn Iterator<Item = (u64, &P)>),
    ) {
        if let Some(rec) = self.users.borrow().get(uid) {
            f(rec.meta, &mut rec.msgs.iter());
        }
    }

    /// Calls `f` on each of a user's unacked messages, to change what is held (the embedded
    /// store moves them to a new file after a compaction); not their seqs.
    pub fn update_user(&self, uid: &str, f: impl FnMut(&mut P)) {
        if let Some(rec) = self.users.borrow_mut().get_mut(uid) {
            rec.msgs.for_each_mut(f);
        }
    }

    /// Every channel with its members (for snapshots).
    pub fn channel_list(&self) -> Vec<(Rc<str>, Vec<Rc<str>>)> {
        self.channels
            .borrow()
            .iter()
            .map(|(c, m)| (c.clone(), m.iter().cloned().collect()))
            .collect()
    }
}

impl MemoryStore {
    fn held(body: &Rc<MsgBody>, expires_at: u64) -> InMemory {
        InMemory {
            expires_at,
            body: body.clone(),
        }
    }
}

impl Storage for MemoryStore {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError> {
        Ok(self.meta(uid))
    }

    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        self.apply_append(&Self::held(body, expires_at), entries, 0);
        Ok(())
    }

    async fn append_keyed(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
        idem: &IdemRecord,
    ) -> Result<(), StorageError> {
        self.apply_append(&Self::held(body, expires_at), entries, 0);
        self.apply_idem(idem, crate::stats::unix_now());
        Ok(())
    }

    async fn put_idem(&self, idem: &IdemRecord) -> Result<(), StorageError> {
        self.apply_idem(idem, crate::stats::unix_now());
        Ok(())
    }

    async fn idem_get(&self, id: &str, now: u64) -> Result<Option<IdemRecord>, StorageError> {
        Ok(self.idem(id, now))
    }

    fn idem_held(&self, now: u64) -> usize {
        self.idem_len(now)
    }

    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError> {
        self.apply_ack(uid, last_ack);
        Ok(())
    }

    async fn offline(
        &self,
        uid: &str,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
    ) -> Result<Vec<StoredMsg>, StorageError> {
        Ok(self
            .list(uid, after, upto, limit, now)
            .into_iter()
            .map(|(seq, m)| StoredMsg {
                seq,
                expires_at: m.expires_at,
                body: m.body,
            })
            .collect())
    }

    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        self.apply_sub(cid, uid, true);
        Ok(())
    }

    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        self.apply_sub(cid, uid, false);
        Ok(())
    }

    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        Ok(self.members(cid))
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StorageError> {
        Ok(self.purge(now))
    }

    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgType;
    use futures_lite::future::block_on;

    fn body(b: &str) -> Rc<MsgBody> {
        Rc::new(MsgBody {
            kind: MsgType::User,
            from: "op".into(),
            channel: None,
            body: b.into(),
        })
    }

    #[test]
    fn append_ack_offline() {
        let s = MemoryStore::new();
        block_on(async {
            let u: Rc<str> = Rc::from("u1");
            for seq in 1..=5 {
                s.append(&body(&seq.to_string()), 100, &[(u.clone(), seq)])
                    .await
                    .unwrap();
            }
            assert_eq!(s.load_user("u1").await.unwrap().max_seq, 5);
            let all = s.offline("u1", 0, 5, 10, 50).await.unwrap();
            assert_eq!(
                all.iter().map(|m| m.seq).collect::<Vec<_>>(),
                [1, 2, 3, 4, 5]
            );
            let newest = s.offline("u1", 0, 5, 2, 50).await.unwrap();
            assert_eq!(newest.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
            s.set_ack("u1", 3).await.unwrap();
            s.set_ack("u1", 2).await.unwrap();
            let meta = s.load_user("u1").await.unwrap();
            assert_eq!((meta.max_seq, meta.last_ack), (5, 3));
            let rest = s.offline("u1", 3, 5, 10, 50).await.unwrap();
            assert_eq!(rest.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 5]);
            // expired messages are never listed, and purge drops them
            assert!(s.offline("u1", 3, 5, 10, 100).await.unwrap().is_empty());
            assert_eq!(s.purge_expired(100).await.unwrap(), 2);
        });
    }

    #[test]
    fn a_stored_message_costs_the_index_16_bytes() {
        assert_eq!(super::super::seqlog::slot_size::<InMemory>(), 16);
    }

    fn rec(id: &str, answer: u64, expires_at: u64) -> IdemRecord {
        IdemRecord {
            id: id.into(),
            fingerprint: 7,
            answer,
            expires_at,
        }
    }

    #[test]
    fn idempotency_records_expire_in_order_and_are_replaced_by_id() {
        let s = MemoryStore::new();
        s.apply_idem(&rec("u:a k1", 1, 110), 100);
        s.apply_idem(&rec("u:a k2", 2, 120), 100);
        s.apply_idem(&rec("u:a old", 3, 90), 100);
        assert_eq!(s.idem_len(100), 2, "an expired record is not kept");
        assert_eq!(s.idem("u:a k1", 105).map(|r| r.answer), Some(1));
        assert_eq!(s.idem("u:a k1", 110), None, "expired at its expiry");
        assert_eq!(s.idem_len(110), 1);
        // The id used again after expiry: the new record stands, the old queue entry goes.
        s.apply_idem(&rec("u:a k1", 9, 130), 111);
        assert_eq!(s.idem_len(121), 1);
        assert_eq!(s.idem("u:a k1", 121).map(|r| r.answer), Some(9));
        assert_eq!(s.idem_list(121), [rec("u:a k1", 9, 130)]);
        s.purge(130);
        assert_eq!(s.idem_len(130), 0);
    }

    #[test]
    fn memberships() {
        let s = MemoryStore::new();
        block_on(async {
            s.subscribe("c", "a").await.unwrap();
            s.subscribe("c", "b").await.unwrap();
            s.subscribe("c", "a").await.unwrap();
            let mut m = s.channel_members("c").await.unwrap();
            m.sort();
            assert_eq!(m, vec![Rc::from("a"), Rc::from("b")]);
            s.unsubscribe("c", "a").await.unwrap();
            assert_eq!(s.channel_members("c").await.unwrap(), vec![Rc::from("b")]);
            s.unsubscribe("c", "b").await.unwrap();
            assert!(s.channel_members("c").await.unwrap().is_empty());
        });
    }
}
