//! This core's channel memberships: subscribe and unsubscribe (stored at once, cache changed
//! at once) and the member cache, loaded from storage the first time a channel is published to.
//! Part of `Shard`; runs on its core's executor.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{Set, Shard, User};
use crate::storage::{Storage, StorageError};

pub(super) enum Channel {
    /// Members are being read from storage; changes made meanwhile are replayed on top.
    Loading {
        changes: Vec<(Rc<str>, bool)>,
        waiters: Vec<Waker>,
        /// The users this core serves changed while it read: the read is done again.
        stale: bool,
    },
    Loaded(Set<Rc<str>>),
}

impl Shard {
    /// Adds `uid` to channel `cid` (stored before it returns).
    pub async fn subscribe(&self, uid: &str, cid: &str) -> Result<(), StorageError> {
        let uid = self.note_membership(uid, cid, true);
        self.store.subscribe(cid, &uid).await
    }

    /// Removes `uid` from channel `cid` (stored before it returns).
    pub async fn unsubscribe(&self, uid: &str, cid: &str) -> Result<(), StorageError> {
        let uid = self.note_membership(uid, cid, false);
        self.store.unsubscribe(cid, &uid).await
    }

    /// Changes the cache at once, so a publish right after sees it.
    fn note_membership(&self, uid: &str, cid: &str, on: bool) -> Rc<str> {
        let uid: Rc<str> = Rc::from(uid);
        match self.channels.borrow_mut().get_mut(cid) {
            Some(Channel::Loaded(set)) => {
                if on {
                    set.insert(uid.clone());
                } else {
                    set.remove(&uid);
                }
            }
            Some(Channel::Loading { changes, .. }) => changes.push((uid.clone(), on)),
            None => {}
        }
        uid
    }

    /// Drops every cached member list: the slots this node serves changed (a dynamic
    /// cluster's new view), so the next publish reads the members it serves now. A read in
    /// flight is done again.
    pub fn forget_channels(&self) {
        self.channels.borrow_mut().retain(|_, c| match c {
            Channel::Loaded(_) => false,
            Channel::Loading { stale, .. } => {
                *stale = true;
                true
            }
        });
    }

    /// Keeps only the users that are members of `cid` now.
    pub(super) fn retain_members(&self, cid: &str, users: &mut Vec<Rc<User>>) {
        if let Some(Channel::Loaded(set)) = self.channels.borrow().get(cid) {
            users.retain(|u| set.contains(&u.uid));
        }
    }

    /// This core's members of `cid`, read from storage on first use and cached after.
    pub(super) async fn channel_members(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        loop {
            match self.channels.borrow_mut().get_mut(cid) {
                Some(Channel::Loaded(set)) => return Ok(set.iter().cloned().collect()),
                Some(Channel::Loading { .. }) => {}
                None => break,
            }
            self.wait_channel(cid).await;
        }
        self.load_channel(cid).await
    }

    /// Waits for another task's load of `cid` to end.
    async fn wait_channel(&self, cid: &str) {
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            if let Some(Channel::Loading { waiters, .. }) = self.channels.borrow_mut().get_mut(cid)
            {
                waiters.push(cx.waker().clone());
                registered = true;
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
    }

    async fn load_channel(&self, cid: &str) -> Result<Vec<Rc<str>>, StorageError> {
        let key: Rc<str> = Rc::from(cid);
        self.channels.borrow_mut().insert(
            key.clone(),
            Channel::Loading {
                changes: Vec::new(),
                waiters: Vec::new(),
                stale: false,
            },
        );
        let loaded = loop {
            let loaded = self.store.channel_members(cid).await;
            match self.channels.borrow_mut().get_mut(cid) {
                Some(Channel::Loading { stale, .. }) if *stale && loaded.is_ok() => *stale = false,
                _ => break loaded,
            }
        };
        let (changes, waiters) = match self.channels.borrow_mut().remove(&key) {
            Some(Channel::Loading {
                changes, waiters, ..
            }) => (changes, waiters),
            _ => (Vec::new(), Vec::new()),
        };
        let res = match loaded {
            Ok(list) => {
                let mut set: Set<Rc<str>> = list.into_iter().collect();
                for (uid, on) in changes {
                    if on {
                        set.insert(uid);
                    } else {
                        set.remove(&uid);
                    }
                }
                let members = set.iter().cloned().collect();
                self.channels.borrow_mut().insert(key, Channel::Loaded(set));
                Ok(members)
            }
            Err(e) => {
                self.bump(&self.stats.storage_error);
                Err(e)
            }
        };
        for w in waiters {
            w.wake();
        }
        res
    }
}
