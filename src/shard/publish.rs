//! Messages to this core's users: seqs, live delivery, persistence, acks and the offline list.
//! Part of `Shard`; runs on its core's executor.
//!
//! A seq is given when a message is issued, but shown (delivered live, replayed, listed) only
//! once its write is settled: `settle` releases each user's seqs in order, so a client never
//! sees a message that a failed write leaves unstored, and a seq it saw is never given again.

use std::rc::Rc;

use super::conn::Out;
use super::idem::KeyGuard;
use super::{Shard, User};
use crate::protocol::{codec, MsgBody, MsgType};
use crate::stats::{Lat, Stamp};
use crate::storage::{IdemRecord, Storage, StorageError};

impl Shard {
    /// A message to one user of this core: next seq, persisted (unless ttl is 0), delivered
    /// live when the user has a stream.
    pub async fn publish_user(
        &self,
        to: &str,
        from: &str,
        body: &str,
        ttl: u64,
    ) -> Result<Option<u64>, StorageError> {
        self.publish_user_with(to, from, body, ttl, None).await
    }

    /// `publish_user` whose idempotency key (claimed by `idem_begin`) is stored in the same
    /// write as the message, so a restart finds both or neither.
    pub async fn publish_user_keyed(
        &self,
        to: &str,
        from: &str,
        body: &str,
        ttl: u64,
        key: &KeyGuard,
    ) -> Result<Option<u64>, StorageError> {
        self.publish_user_with(to, from, body, ttl, Some(key)).await
    }

    async fn publish_user_with(
        &self,
        to: &str,
        from: &str,
        body: &str,
        ttl: u64,
        key: Option<&KeyGuard>,
    ) -> Result<Option<u64>, StorageError> {
        let at = self.lat.stamp();
        let user = self.user(to).await?;
        let body = Rc::new(MsgBody {
            kind: MsgType::User,
            from: from.into(),
            channel: None,
            body: body.into(),
        });
        if ttl == 0 {
            self.deliver(
                &user,
                Out::Msg {
                    body,
                    seq: None,
                    at: Some(at),
                },
            );
            if let Some(k) = key {
                self.idem_put(&k.record(0)).await?;
            }
            return Ok(None);
        }
        let seq = self.next_seq(&user);
        let entries = [(user.uid.clone(), seq)];
        let expires = crate::stats::unix_now().saturating_add(ttl);
        let idem = key.map(|k| k.record(seq));
        let users = std::slice::from_ref(&user);
        self.persist(&body, expires, users, &entries, idem.as_ref(), at)
            .await
            .inspect_err(|_| user.unsynced.set(true))?;
        self.lat.since_stamp(Lat::PubDurable, at);
        Ok(Some(seq))
    }

    /// This core's part of a channel message: every local member gets its own seq.
    pub async fn publish_channel(
        &self,
        channel: &str,
        from: &str,
        body: &str,
        ttl: u64,
    ) -> Result<u64, StorageError> {
        let at = self.lat.stamp();
        let users = self.member_users(channel).await?;
        if users.is_empty() {
            return Ok(0);
        }
        let body = Rc::new(MsgBody {
            kind: MsgType::Channel,
            from: from.into(),
            channel: Some(channel.into()),
            body: body.into(),
        });
        if ttl == 0 {
            for u in &users {
                let item = Out::Msg {
                    body: body.clone(),
                    seq: None,
                    at: Some(at),
                };
                self.deliver(u, item);
            }
            return Ok(users.len() as u64);
        }
        let entries: Vec<(Rc<str>, u64)> = users
            .iter()
            .map(|u| (u.uid.clone(), self.next_seq(u)))
            .collect();
        let expires = crate::stats::unix_now().saturating_add(ttl);
        let stored = self
            .persist(&body, expires, &users, &entries, None, at)
            .await;
        if stored.is_err() {
            users.iter().for_each(|u| u.unsynced.set(true));
        }
        stored?;
        self.lat.since_stamp(Lat::PubDurable, at);
        Ok(entries.len() as u64)
    }

    /// The loaded users of this core's members of `channel`.
    async fn member_users(&self, channel: &str) -> Result<Vec<Rc<User>>, StorageError> {
        let members = self.channel_members(channel).await?;
        let mut users = Vec::with_capacity(members.len());
        let mut awaited = false;
        for uid in &members {
            match self.loaded_user(uid) {
                Some(u) => users.push(u),
                None => {
                    awaited = true;
                    users.push(self.user(uid).await?);
                }
            }
        }
        if awaited {
            // Membership may have changed while users loaded: deliver to who is a member now.
            self.retain_members(channel, &mut users);
        }
        Ok(users)
    }

    fn next_seq(&self, user: &User) -> u64 {
        let mut meta = user.meta.get();
        meta.max_seq += 1;
        user.meta.set(meta);
        meta.max_seq
    }

    /// Stores `body` for `entries` (`users[i]` has seq `entries[i].1`), then settles the
    /// seqs: delivered live if written, skipped if not.
    async fn persist(
        &self,
        body: &Rc<MsgBody>,
        expires: u64,
        users: &[Rc<User>],
        entries: &[(Rc<str>, u64)],
        idem: Option<&IdemRecord>,
        at: Stamp,
    ) -> Result<(), StorageError> {
        let flight = InFlight {
            shard: self,
            users,
            entries,
            body: Some(body),
            at,
        };
        let t0 = self.lat.stamp();
        let res = match idem {
            None => self.store.append(body, expires, entries).await,
            Some(r) => self.store.append_keyed(body, expires, entries, r).await,
        };
        self.lat.since_stamp(Lat::StoreCommit, t0);
        match &res {
            Ok(()) => self.add(&self.stats.stored, entries.len() as u64),
            Err(e) => {
                tracing::error!(error = %e, "storing a message failed");
                self.bump(&self.stats.storage_error);
            }
        }
        flight.land(res.is_ok());
        res
    }

    /// `user`'s `seq` is settled: `body` if it was written, None if not. Released to the
    /// stream at once when it is the user's next seq; otherwise it waits in `held` for the
    /// earlier ones (a backend that completes writes out of order).
    fn settle(&self, user: &User, seq: u64, body: Option<(&Rc<MsgBody>, Stamp)>) {
        if seq != user.durable.get() + 1 {
            let mut held = self.held.borrow_mut();
            let q = held.entry(user.uid.clone()).or_default();
            q.insert(seq, body.map(|(b, at)| (b.clone(), at)));
            return;
        }
        self.release(user, seq, body);
        if self.held.borrow().is_empty() {
            return;
        }
        let mut held = self.held.borrow_mut();
        let Some(q) = held.get_mut(&user.uid) else {
            return;
        };
        while let Some(e) = q
            .first_entry()
            .filter(|e| *e.key() == user.durable.get() + 1)
        {
            let (seq, body) = e.remove_entry();
            self.release(user, seq, body.as_ref().map(|(b, at)| (b, *at)));
        }
        if q.is_empty() {
            held.remove(&user.uid);
        }
    }

    fn release(&self, user: &User, seq: u64, body: Option<(&Rc<MsgBody>, Stamp)>) {
        if let Some((body, at)) = body {
            let item = Out::Msg {
                body: body.clone(),
                seq: Some(seq),
                at: Some(at),
            };
            self.deliver(user, item);
        }
        user.durable.set(seq);
    }

    /// `last_ack = max(last_ack, s)`, never above the highest seq given.
    pub async fn ack(&self, uid: &str, s: u64) -> Result<(), StorageError> {
        let user = self.user(uid).await?;
        let mut meta = user.meta.get();
        // Nothing above what was shown can have been seen.
        let new = s.min(user.durable.get());
        if new <= meta.last_ack {
            return Ok(());
        }
        meta.last_ack = new;
        user.meta.set(meta);
        self.store
            .set_ack(uid, new)
            .await
            .inspect_err(|_| user.unsynced.set(true))
    }

    /// Offline messages of `uid` as JSON lines, for `/msg`.
    pub async fn offline_lines(&self, uid: &str) -> Result<Vec<String>, StorageError> {
        let user = self.user(uid).await?;
        let (after, upto) = (user.meta.get().last_ack, user.durable.get());
        let (max, now) = (self.cfg.max_offline_msg_num, crate::stats::unix_now());
        let msgs = self.store.offline(uid, after, upto, max, now).await?;
        Ok(msgs
            .iter()
            .map(|m| codec::json_line(uid, &m.body, m.seq))
            .collect())
    }
}

/// The seqs of one write in flight. `land` settles them; dropped before that (the publish was
/// cancelled mid-write), they settle as failed, so the user's later seqs are not held back
/// forever (if the write did land, the message is replayed at the next connect).
struct InFlight<'a> {
    shard: &'a Shard,
    users: &'a [Rc<User>],
    entries: &'a [(Rc<str>, u64)],
    body: Option<&'a Rc<MsgBody>>,
    /// When the publish reached this core (for the publish-to-written histogram).
    at: Stamp,
}

impl InFlight<'_> {
    fn land(mut self, written: bool) {
        let body = self.body.take().filter(|_| written);
        self.settle_all(body);
    }

    fn settle_all(&self, body: Option<&Rc<MsgBody>>) {
        for (u, (_, seq)) in self.users.iter().zip(self.entries) {
            self.shard.settle(u, *seq, body.map(|b| (b, self.at)));
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.body.take().is_some() {
            self.settle_all(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ids::ShardId;
    use crate::storage::{memory::MemoryStore, Store};
    use std::sync::Arc;

    fn msg(b: &str) -> Rc<MsgBody> {
        Rc::new(MsgBody {
            kind: MsgType::User,
            from: "op".into(),
            channel: None,
            body: b.into(),
        })
    }

    fn shown(conn: &super::super::conn::Conn) -> Vec<(u64, String)> {
        std::iter::from_fn(|| conn.pop())
            .filter_map(|o| match o {
                Out::Msg { body, seq, .. } => Some((seq?, body.body.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Writes that settle out of order (scylla's can) reach the stream in seq order; a failed
    /// one is skipped, never shown; a stream attached meanwhile replays only what is settled.
    #[test]
    fn seqs_reach_the_stream_in_order_once_settled_and_failed_ones_never() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let store = Store::Memory(MemoryStore::new());
                let shard = Shard::new(ShardId(0), 1, Arc::new(Config::default()), store, 0);
                let user = shard.user("u").await.unwrap();
                let first = shard.attach("u").await.unwrap();
                first.conn.finish_replay(Vec::new());
                let seqs: Vec<u64> = (0..3).map(|_| shard.next_seq(&user)).collect();
                assert_eq!(seqs, [1, 2, 3]);
                let at = shard.lat.stamp();
                shard.settle(&user, 3, Some((&msg("three"), at)));
                shard.settle(&user, 2, None);
                assert!(shown(&first.conn).is_empty(), "held behind seq 1");
                let again = shard.attach("u").await.unwrap();
                assert_eq!(
                    (again.after, again.upto),
                    (0, 0),
                    "nothing settled to replay"
                );
                again.conn.finish_replay(Vec::new());
                shard.settle(&user, 1, Some((&msg("one"), at)));
                assert_eq!(
                    shown(&again.conn),
                    [(1, "one".to_string()), (3, "three".to_string())]
                );
                assert_eq!(user.durable.get(), 3);
                assert!(shard.held.borrow().is_empty());
                // An ack cannot reach past what was shown.
                shard.next_seq(&user);
                shard.ack("u", 9).await.unwrap();
                assert_eq!(user.meta.get().last_ack, 3);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
