//! Messages to this core's users: seqs, live delivery, persistence, acks and the offline list.
//! Part of `Shard`; runs on its core's executor.

use std::rc::Rc;

use super::conn::Out;
use super::idem::KeyGuard;
use super::{Shard, User};
use crate::protocol::{codec, MsgBody, MsgType};
use crate::stats::Lat;
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
        // Seq, live delivery and the storage write are issued with no await between them.
        let seq = self.next_seq(&user);
        self.deliver(
            &user,
            Out::Msg {
                body: body.clone(),
                seq: Some(seq),
                at: Some(at),
            },
        );
        let expires = crate::stats::unix_now().saturating_add(ttl);
        let idem = key.map(|k| k.record(seq));
        self.persist(&body, expires, &[(user.uid.clone(), seq)], idem.as_ref())
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
        let mut entries = Vec::with_capacity(users.len());
        for u in &users {
            let seq = self.next_seq(u);
            let item = Out::Msg {
                body: body.clone(),
                seq: Some(seq),
                at: Some(at),
            };
            self.deliver(u, item);
            entries.push((u.uid.clone(), seq));
        }
        let expires = crate::stats::unix_now().saturating_add(ttl);
        let stored = self.persist(&body, expires, &entries, None).await;
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

    async fn persist(
        &self,
        body: &Rc<MsgBody>,
        expires: u64,
        entries: &[(Rc<str>, u64)],
        idem: Option<&IdemRecord>,
    ) -> Result<(), StorageError> {
        let at = self.lat.stamp();
        let res = match idem {
            None => self.store.append(body, expires, entries).await,
            Some(r) => self.store.append_keyed(body, expires, entries, r).await,
        };
        self.lat.since_stamp(Lat::StoreCommit, at);
        match &res {
            Ok(()) => self.add(&self.stats.stored, entries.len() as u64),
            Err(e) => {
                tracing::error!(error = %e, "storing a message failed");
                self.bump(&self.stats.storage_error);
            }
        }
        res
    }

    /// `last_ack = max(last_ack, s)`, never above the highest seq given.
    pub async fn ack(&self, uid: &str, s: u64) -> Result<(), StorageError> {
        let user = self.user(uid).await?;
        let mut meta = user.meta.get();
        let new = s.min(meta.max_seq);
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
        let meta = user.meta.get();
        let (max, now) = (self.cfg.max_offline_msg_num, crate::stats::unix_now());
        let msgs = self
            .store
            .offline(uid, meta.last_ack, meta.max_seq, max, now)
            .await?;
        Ok(msgs
            .iter()
            .map(|m| codec::json_line(uid, &m.body, m.seq))
            .collect())
    }
}
