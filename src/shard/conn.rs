//! One client stream's shared state: its bounded send queue, socket and close flags; owned by
//! the user's core, written by publishers on that core, drained by the core's flusher (straight
//! to the socket) and by the stream's own task when the socket is full.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

use crate::ids::ConnId;
use crate::protocol::close::{GOING_AWAY, NORMAL};
use crate::protocol::{Mode, MsgBody};
use crate::stats::Stamp;

/// Something queued for a stream, encoded for its transport only when written.
#[derive(Debug, Clone)]
pub enum Out {
    Msg {
        body: Rc<MsgBody>,
        seq: Option<u64>,
        /// When it was published, for the publish-to-written histogram (None: replayed).
        at: Option<Stamp>,
    },
    Heartbeat,
    /// A WebSocket pong answering a ping, with its payload.
    Pong(Box<[u8]>),
    /// A final `{"error":reason}` message, then the end of the stream (a WebSocket closes with
    /// the code).
    Error(Rc<str>, u16),
    /// The end of the stream without a message: the terminating chunk, or a WebSocket close
    /// with the code.
    End(u16),
    /// The move signal with the location the client reconnects to, then the end of the stream
    /// (chunked: a final chunk; WebSocket: close 1012 with the JSON as reason; SSE: an
    /// `event: moved`).
    Moved(Rc<str>),
}

impl Out {
    pub fn is_final(&self) -> bool {
        matches!(self, Out::Error(..) | Out::End(_) | Out::Moved(_))
    }
}

/// What housekeeping does to a stream this second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    Heartbeat,
    Abort,
}

pub struct Conn {
    pub id: ConnId,
    pub uid: Rc<str>,
    queue: RefCell<VecDeque<Out>>,
    /// The stream task's waker (a `Cell`: 8 bytes less per stream than a `RefCell`).
    waker: Cell<Option<Waker>>,
    /// Offline replay still running: live messages wait in the queue behind it.
    replaying: Cell<bool>,
    /// A final item is queued: accept nothing more.
    ending: Cell<bool>,
    /// Close at once, dropping what is queued (slow reader, shutdown deadline).
    abort: Cell<bool>,
    /// Seconds (shard clock) of the last write, for heartbeats.
    last_send: Cell<u32>,
    /// Housekeeping ticks seen while ending: a final chunk nobody reads is given up on.
    ending_ticks: Cell<u8>,
    /// In the core's list of streams to flush.
    pub dirty: Cell<bool>,
    /// The final item is encoded: nothing more is written after `unsent`.
    pub final_encoded: Cell<bool>,
    /// The stream's socket while its task owns it (-1 before and after), for direct writes.
    fd: Cell<RawFd>,
    pub mode: Cell<Mode>,
    /// Encoded bytes the socket did not take; only the stream task writes them, when the
    /// socket is writable again. None almost always.
    pub unsent: RefCell<Option<Box<Vec<u8>>>>,
}

impl Conn {
    pub fn new(id: ConnId, uid: Rc<str>, now: u32) -> Self {
        Conn {
            id,
            uid,
            queue: RefCell::new(VecDeque::new()),
            waker: Cell::new(None),
            replaying: Cell::new(true),
            ending: Cell::new(false),
            abort: Cell::new(false),
            last_send: Cell::new(now),
            ending_ticks: Cell::new(0),
            dirty: Cell::new(false),
            final_encoded: Cell::new(false),
            fd: Cell::new(-1),
            mode: Cell::new(Mode::default()),
            unsent: RefCell::new(None),
        }
    }

    /// The socket to write to, or None when the stream does not stream (yet or any more).
    pub fn fd(&self) -> Option<RawFd> {
        let fd = self.fd.get();
        (fd >= 0).then_some(fd)
    }

    /// Set once the response head is written; cleared before the socket is closed, so a
    /// write never reaches a descriptor number the kernel has handed to someone else.
    pub fn set_fd(&self, fd: Option<RawFd>) {
        self.fd.set(fd.unwrap_or(-1));
    }

    /// Queues `item`; false when the queue already holds `max` items (the caller closes the
    /// stream as a slow reader). Final items are always accepted. Messages do not wake the
    /// stream's task: the core's flusher writes them (see `Shard::push`).
    pub fn push(&self, item: Out, max: usize) -> bool {
        if self.ending.get() || self.abort.get() {
            return true;
        }
        let mut q = self.queue.borrow_mut();
        if !item.is_final() && q.len() >= max {
            return false;
        }
        if item.is_final() {
            self.ending.set(true);
        }
        q.push_back(item);
        true
    }

    /// Queues a final item and wakes the stream's task, which writes it and closes.
    fn push_final(&self, item: Out) {
        self.push(item, usize::MAX);
        self.wake();
    }

    /// Ends the stream after what is queued, with `{"error":reason}` (a normal close) or, with
    /// None, the terminating chunk (the server is going away).
    pub fn finish(&self, reason: Option<&str>) {
        let item = match reason {
            Some(r) => Out::Error(Rc::from(r), NORMAL),
            None => Out::End(GOING_AWAY),
        };
        self.push_final(item);
    }

    /// Ends the stream with the move signal: the client reconnects to `location` at once.
    pub fn moved(&self, location: &str) {
        self.push_final(Out::Moved(Rc::from(location)));
    }

    /// Ends the stream for bad input: `{"error":reason}`, then a WebSocket closes with `code`.
    pub fn fail(&self, reason: &str, code: u16) {
        self.push_final(Out::Error(Rc::from(reason), code));
    }

    /// Ends the stream without a message (a WebSocket answers the client's close with `code`).
    pub fn end(&self, code: u16) {
        self.push_final(Out::End(code));
    }

    pub fn abort(&self) {
        self.abort.set(true);
        self.queue.borrow_mut().clear();
        self.wake();
    }

    pub fn is_aborted(&self) -> bool {
        self.abort.get()
    }

    pub fn is_ending(&self) -> bool {
        self.ending.get()
    }

    pub fn is_replaying(&self) -> bool {
        self.replaying.get()
    }

    /// Puts replayed messages in front of the live ones queued meanwhile and lets it flow.
    pub fn finish_replay(&self, replay: Vec<Out>) {
        {
            let mut q = self.queue.borrow_mut();
            for item in replay.into_iter().rev() {
                q.push_front(item);
            }
        }
        self.replaying.set(false);
        self.wake();
    }

    pub fn pop(&self) -> Option<Out> {
        let mut q = self.queue.borrow_mut();
        let item = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            // An idle stream holds no queue allocation.
            *q = VecDeque::new();
        }
        item
    }

    pub fn queue_len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn set_waker(&self, w: &Waker) {
        let old = self.waker.take();
        match old {
            Some(old) if old.will_wake(w) => self.waker.set(Some(old)),
            _ => self.waker.set(Some(w.clone())),
        }
    }

    pub fn clear_waker(&self) {
        self.waker.take();
    }

    /// Wakes the stream's task (to write what the flusher could not, or to close).
    pub fn wake(&self) {
        let w = self.waker.take();
        if let Some(w) = &w {
            w.wake_by_ref();
        }
        self.waker.set(w);
    }

    /// Records a write at `now` (shard clock seconds): no heartbeat is due until it is quiet.
    pub fn sent_at(&self, now: u32) {
        self.last_send.set(now);
    }

    /// What once-a-second housekeeping owes this stream at `now`, given the heartbeat
    /// interval: a heartbeat when it has been quiet, an abort when its final item has waited
    /// five ticks for a reader that does not read.
    pub fn tick(&self, now: u32, heartbeat: u32) -> Tick {
        if self.is_ending() {
            let ticks = self.ending_ticks.get() + 1;
            self.ending_ticks.set(ticks);
            return if ticks >= 5 {
                Tick::Abort
            } else {
                Tick::Nothing
            };
        }
        let quiet = now.saturating_sub(self.last_send.get());
        if quiet >= heartbeat && !self.is_replaying() && self.queue_len() == 0 {
            self.last_send.set(now);
            return Tick::Heartbeat;
        }
        Tick::Nothing
    }

    /// Bytes wait for the socket to become writable.
    pub fn has_unsent(&self) -> bool {
        self.unsent.borrow().is_some()
    }

    /// Keeps bytes the socket did not take, after any already kept.
    pub fn keep_unsent(&self, bytes: &[u8]) {
        self.unsent
            .borrow_mut()
            .get_or_insert_with(Box::default)
            .extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Out {
        Out::Heartbeat
    }

    #[test]
    fn bounded_queue_and_final_items() {
        let c = Conn::new(ConnId(1), Rc::from("u"), 0);
        assert!(c.push(msg(), 2));
        assert!(c.push(msg(), 2));
        assert!(!c.push(msg(), 2), "third item overflows a queue of 2");
        c.finish(Some("replaced"));
        assert!(c.is_ending());
        assert_eq!(c.queue_len(), 3);
        assert!(c.push(msg(), 2), "after a final item, pushes are ignored");
        assert_eq!(c.queue_len(), 3);
    }

    #[test]
    fn housekeeping_ticks() {
        let c = Conn::new(ConnId(1), Rc::from("u"), 0);
        assert_eq!(c.tick(5, 30), Tick::Nothing, "replaying: no heartbeat yet");
        c.finish_replay(Vec::new());
        c.pop();
        assert_eq!(c.tick(29, 30), Tick::Nothing);
        assert_eq!(c.tick(30, 30), Tick::Heartbeat);
        assert_eq!(
            c.tick(31, 30),
            Tick::Nothing,
            "the heartbeat counts as a write"
        );
        c.finish(None);
        for _ in 0..4 {
            assert_eq!(c.tick(100, 30), Tick::Nothing);
        }
        assert_eq!(
            c.tick(100, 30),
            Tick::Abort,
            "a final item unread for 5 ticks"
        );
    }

    #[test]
    fn replay_goes_first() {
        let c = Conn::new(ConnId(1), Rc::from("u"), 0);
        c.end(NORMAL);
        c.finish_replay(vec![Out::Heartbeat]);
        assert!(matches!(c.pop(), Some(Out::Heartbeat)));
        assert!(matches!(c.pop(), Some(Out::End(NORMAL))));
        assert!(c.pop().is_none());
    }
}
