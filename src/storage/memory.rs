//! `--storage=memory`: one core's users, messages and memberships in plain maps; runs on that core.
//!
//! Nothing survives a restart. Acked and expired messages are dropped, so memory is bounded by
//! what clients have not yet acknowledged.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use super::{MsgBody, Storage, StorageError, StoredMsg, UserMeta};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;
type Members = HashSet<Rc<str>, ahash::RandomState>;

#[derive(Default)]
struct UserRecord {
    meta: UserMeta,
    msgs: BTreeMap<u64, (u64, Rc<MsgBody>)>,
}

#[derive(Default)]
pub struct MemoryStore {
    users: RefCell<Map<Rc<str>, UserRecord>>,
    channels: RefCell<Map<Rc<str>, Members>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStore {
    async fn load_user(&self, uid: &str) -> Result<UserMeta, StorageError> {
        Ok(self
            .users
            .borrow()
            .get(uid)
            .map(|r| r.meta)
            .unwrap_or_default())
    }

    async fn append(
        &self,
        body: &Rc<MsgBody>,
        expires_at: u64,
        entries: &[(Rc<str>, u64)],
    ) -> Result<(), StorageError> {
        let mut users = self.users.borrow_mut();
        for (uid, seq) in entries {
            let rec = users.entry(uid.clone()).or_default();
            rec.meta.max_seq = rec.meta.max_seq.max(*seq);
            if *seq > rec.meta.last_ack {
                rec.msgs.insert(*seq, (expires_at, body.clone()));
            }
        }
        Ok(())
    }

    async fn set_ack(&self, uid: &str, last_ack: u64) -> Result<(), StorageError> {
        let mut users = self.users.borrow_mut();
        let rec = match users.get_mut(uid) {
            Some(r) => r,
            None => users.entry(Rc::from(uid)).or_default(),
        };
        if last_ack > rec.meta.last_ack {
            rec.meta.last_ack = last_ack;
            rec.msgs = rec.msgs.split_off(&(last_ack + 1));
        }
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
        let users = self.users.borrow();
        let Some(rec) = users.get(uid) else {
            return Ok(Vec::new());
        };
        if upto <= after {
            return Ok(Vec::new());
        }
        let mut out: Vec<StoredMsg> = rec
            .msgs
            .range(after + 1..=upto)
            .rev()
            .filter(|(_, (exp, _))| *exp > now)
            .take(limit)
            .map(|(seq, (exp, body))| StoredMsg {
                seq: *seq,
                expires_at: *exp,
                body: body.clone(),
            })
            .collect();
        out.reverse();
        Ok(out)
    }

    async fn subscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        self.channels
            .borrow_mut()
            .entry(Rc::from(cid))
            .or_default()
            .insert(Rc::from(uid));
        Ok(())
    }

    async fn unsubscribe(&self, cid: &str, uid: &str) -> Result<(), StorageError> {
        let mut channels = self.channels.borrow_mut();
        if let Some(members) = channels.get_mut(cid) {
            members.remove(uid);
            if members.is_empty() {
                channels.remove(cid);
            }
        }
        Ok(())
    }

    async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        Ok(self
            .channels
            .borrow()
            .get(cid)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StorageError> {
        let mut purged = 0;
        for rec in self.users.borrow_mut().values_mut() {
            let before = rec.msgs.len();
            rec.msgs.retain(|_, (exp, _)| *exp > now);
            purged += before - rec.msgs.len();
        }
        Ok(purged)
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
