//! One client stream's shared state: its bounded send queue and close flags; owned by the
//! user's core, written by publishers on that core and drained by the stream's own task.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use super::ids::ConnId;
use crate::storage::MsgBody;

/// Something queued for a stream, encoded for its transport only when written.
#[derive(Debug, Clone)]
pub enum Out {
    Msg {
        body: Rc<MsgBody>,
        seq: Option<u64>,
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
}

/// WebSocket close codes used by final items (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;

impl Out {
    pub fn is_final(&self) -> bool {
        matches!(self, Out::Error(..) | Out::End(_))
    }
}

pub struct Conn {
    pub id: ConnId,
    pub uid: Rc<str>,
    queue: RefCell<VecDeque<Out>>,
    waker: RefCell<Option<Waker>>,
    /// Offline replay still running: live messages wait in the queue behind it.
    replaying: Cell<bool>,
    /// A final item is queued: accept nothing more.
    ending: Cell<bool>,
    /// Close at once, dropping what is queued (slow reader, shutdown deadline).
    abort: Cell<bool>,
    /// Seconds (shard clock) of the last write, for heartbeats.
    pub last_send: Cell<u32>,
    /// Housekeeping ticks seen while ending: a final chunk nobody reads is given up on.
    pub ending_ticks: Cell<u8>,
}

impl Conn {
    pub fn new(id: ConnId, uid: Rc<str>, now: u32) -> Self {
        Conn {
            id,
            uid,
            queue: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            replaying: Cell::new(true),
            ending: Cell::new(false),
            abort: Cell::new(false),
            last_send: Cell::new(now),
            ending_ticks: Cell::new(0),
        }
    }

    /// Queues `item`; false when the queue already holds `max` items (the caller closes the
    /// stream as a slow reader). Final items are always accepted.
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
        drop(q);
        self.wake();
        true
    }

    /// Ends the stream after what is queued, with `{"error":reason}` (a normal close) or, with
    /// None, the terminating chunk (the server is going away).
    pub fn finish(&self, reason: Option<&str>) {
        let item = match reason {
            Some(r) => Out::Error(Rc::from(r), CLOSE_NORMAL),
            None => Out::End(CLOSE_GOING_AWAY),
        };
        self.push(item, usize::MAX);
    }

    /// Ends the stream for bad input: `{"error":reason}`, then a WebSocket closes with `code`.
    pub fn fail(&self, reason: &str, code: u16) {
        self.push(Out::Error(Rc::from(reason), code), usize::MAX);
    }

    /// Ends the stream without a message (a WebSocket answers the client's close with `code`).
    pub fn end(&self, code: u16) {
        self.push(Out::End(code), usize::MAX);
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
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(old) if old.will_wake(w) => {}
            _ => *slot = Some(w.clone()),
        }
    }

    pub fn clear_waker(&self) {
        self.waker.borrow_mut().take();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
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
    fn replay_goes_first() {
        let c = Conn::new(ConnId(1), Rc::from("u"), 0);
        c.end(CLOSE_NORMAL);
        c.finish_replay(vec![Out::Heartbeat]);
        assert!(matches!(c.pop(), Some(Out::Heartbeat)));
        assert!(matches!(c.pop(), Some(Out::End(CLOSE_NORMAL))));
        assert!(c.pop().is_none());
    }
}
