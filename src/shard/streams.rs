//! The streams of a core's users: attach (with the exact replay seam), replay, detach, the
//! bounded send queue and the flusher's dirty list, disconnects, heartbeats and shutdown.
//! Part of `Shard`; runs on its core's executor.

use std::rc::Rc;

use super::conn::{Conn, Out, Tick};
use super::{Shard, User};
use crate::ids::ConnId;
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("connection limit reached")]
    Limit,
    #[error("server shutting down")]
    Closing,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A stream just registered, and the seq range its offline replay must read: everything above
/// `upto` arrives live.
pub struct Attached {
    pub conn: Rc<Conn>,
    pub after: u64,
    pub upto: u64,
}

impl Shard {
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    pub fn stream_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// The stream of `uid` on this core, if it has one.
    pub fn stream_of(&self, uid: &str) -> Option<Rc<Conn>> {
        self.users.borrow().get(uid).and_then(|u| u.conn())
    }

    /// Registers a new stream for `uid`, replacing an older one.
    pub async fn attach(&self, uid: &str) -> Result<Attached, AttachError> {
        if self.closing.get() {
            return Err(AttachError::Closing);
        }
        let user = self.user(uid).await?;
        // From here to the return, no await: the seam between replay and live is exact.
        let old = user.conn.take();
        if old.is_none() && self.conns.borrow().len() >= self.conn_limit {
            self.bump(&self.stats.limit_refused);
            return Err(AttachError::Limit);
        }
        if let Some(old) = old {
            old.finish(Some("replaced"));
            self.bump(&self.stats.user_reconnect);
        }
        let id = ConnId(self.next_conn.get());
        self.next_conn.set(id.0 + 1);
        let conn = Rc::new(Conn::new(id, user.uid.clone(), self.clock()));
        user.conn.set(Some(conn.clone()));
        self.conns.borrow_mut().insert(id, conn.clone());
        self.bump(&self.stats.user_connect);
        self.stats.user_number.set(self.conns.borrow().len() as u64);
        // Replay reads what is written; what is in flight arrives live once it is.
        Ok(Attached {
            conn,
            after: user.meta.get().last_ack,
            upto: user.durable.get(),
        })
    }

    /// Reads the offline messages `(after, upto]` and lets the stream flow.
    pub async fn replay(&self, conn: &Conn, after: u64, upto: u64) {
        let now = crate::stats::unix_now();
        let msgs = if upto > after {
            let max = self.cfg.max_offline_msg_num;
            match self.store.offline(&conn.uid, after, upto, max, now).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(uid = %conn.uid, error = %e, "offline replay failed");
                    self.bump(&self.stats.storage_error);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        self.add(&self.stats.replayed, msgs.len() as u64);
        let items = msgs
            .into_iter()
            .map(|m| Out::Msg {
                body: m.body,
                seq: Some(m.seq),
                at: None,
            })
            .collect();
        conn.finish_replay(items);
    }

    /// Forgets a stream whose task has ended.
    pub fn detach(&self, conn: &Rc<Conn>) {
        if self.conns.borrow_mut().remove(&conn.id).is_none() {
            return;
        }
        let user = self.users.borrow().get(&conn.uid).cloned();
        if let Some(user) = user {
            let mine = user.conn().is_some_and(|c| c.id == conn.id);
            if mine {
                user.conn.set(None);
                // Its idle period starts now.
                user.touched.set(true);
                self.queue_idle(&user);
            }
        }
        self.bump(&self.stats.user_disconnect);
        self.stats.user_number.set(self.conns.borrow().len() as u64);
    }

    /// Queues `item` to the user's stream if it has one; a full queue closes the stream.
    pub(super) fn deliver(&self, user: &User, item: Out) {
        if let Some(conn) = user.conn() {
            self.push(&conn, item);
        }
    }

    /// Queues `item` to `conn` for the flusher; a full queue closes it (its messages stay
    /// stored).
    pub fn push(&self, conn: &Rc<Conn>, item: Out) {
        if !conn.push(item, self.cfg.send_queue_max) {
            tracing::debug!(uid = %conn.uid, "slow reader: send queue full, closing");
            self.bump(&self.stats.slow_disconnect);
            conn.abort();
            return;
        }
        if !conn.dirty.replace(true) {
            let mut dirty = self.dirty.borrow_mut();
            dirty.push(conn.clone());
            if dirty.len() == 1 {
                if let Some(w) = self.flusher.borrow_mut().take() {
                    w.wake();
                }
            }
        }
    }

    /// The streams to flush now (waits while there are none); `spare` is an empty list whose
    /// allocation is reused for the next batch.
    pub async fn take_dirty(&self, spare: Vec<Rc<Conn>>) -> Vec<Rc<Conn>> {
        let mut spare = Some(spare);
        std::future::poll_fn(|cx| {
            let mut dirty = self.dirty.borrow_mut();
            if dirty.is_empty() {
                *self.flusher.borrow_mut() = Some(cx.waker().clone());
                return std::task::Poll::Pending;
            }
            let batch = std::mem::replace(&mut *dirty, spare.take().unwrap_or_default());
            std::task::Poll::Ready(batch)
        })
        .await
    }

    /// Ends the stream of `uid` with `{"error":"disconnected"}`; false when it has none here.
    pub fn disconnect(&self, uid: &str) -> bool {
        match self.stream_of(uid) {
            Some(c) => {
                c.finish(Some("disconnected"));
                true
            }
            None => false,
        }
    }

    /// Ends the stream of `uid` with the move signal: its client reconnects to `location` (a
    /// `http://HOST:PORT/connect?…` URL) at once. False when it has no stream here.
    pub fn move_stream(&self, uid: &str, location: &str) -> bool {
        match self.stream_of(uid) {
            Some(c) => {
                c.moved(location);
                self.bump(&self.stats.moved);
                true
            }
            None => false,
        }
    }

    /// Ends, with the move signal, every stream of this core whose uid `which` selects (say,
    /// the users of slots that now belong to another node, or all of them on drain); each
    /// client is sent to `location(uid)`. Returns how many streams were told to move.
    pub fn move_streams(
        &self,
        which: impl Fn(&str) -> bool,
        location: impl Fn(&str) -> String,
    ) -> usize {
        let streams: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .values()
            .filter(|c| !c.is_ending() && which(&c.uid))
            .cloned()
            .collect();
        for c in &streams {
            c.moved(&location(&c.uid));
            self.bump(&self.stats.moved);
        }
        streams.len()
    }

    /// Once a second: a heartbeat to each quiet stream; a stream whose final item nobody reads
    /// is given up on.
    pub fn tick_streams(&self) {
        let now = self.clock();
        let hb = self.cfg.heartbeat_interval_s as u32;
        let streams: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for c in streams {
            match c.tick(now, hb) {
                Tick::Nothing => {}
                Tick::Heartbeat => self.push(&c, Out::Heartbeat),
                Tick::Abort => c.abort(),
            }
        }
    }

    /// Stops accepting new streams and ends every stream with its terminating chunk.
    pub fn begin_shutdown(&self) {
        self.closing.set(true);
        for c in self.conns.borrow().values() {
            c.finish(None);
        }
    }

    /// Closes every stream at once, dropping what is queued (the shutdown deadline passed).
    pub fn abort_streams(&self) {
        for c in self.conns.borrow().values() {
            c.abort();
        }
    }
}
