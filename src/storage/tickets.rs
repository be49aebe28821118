//! The embedded store's write tickets: which writes are awaited, and the outcome of each, failed
//! ones included. Pure bookkeeping (no I/O), owned by one core's `EmbeddedStore`, on that core.
//!
//! A write gets a ticket when issued; its waiter is registered at once, so an outcome can never
//! be missed, whatever order the writes resolve in (a write issued while the store is failing
//! is refused at once, ahead of earlier ones still in flight). Resolving wakes waiters in issue
//! order, which keeps the shard's delivery in seq order without reordering.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::StorageError;

#[derive(Default)]
pub struct Tickets {
    issued: Cell<u64>,
    /// Awaited tickets not resolved yet, ascending (tickets are registered as they are issued).
    waiting: RefCell<VecDeque<(u64, Option<Waker>)>>,
    /// Awaited tickets whose write failed, with the reason, until their waiter reads it.
    refused: RefCell<Vec<(u64, Rc<str>)>>,
}

impl Tickets {
    /// A new ticket number (nobody waits for it unless `wait` is called).
    pub fn issue(&self) -> u64 {
        let t = self.issued.get() + 1;
        self.issued.set(t);
        t
    }

    /// A new ticket and its waiter, for a write the committer will carry out.
    pub fn issue_awaited(&self) -> Wait<'_> {
        let t = self.issue();
        self.waiting.borrow_mut().push_back((t, None));
        Wait {
            tickets: self,
            ticket: t,
            known: None,
        }
    }

    /// A write whose outcome is known now (written inline, or refused).
    pub fn settled(&self, res: Result<(), StorageError>) -> Wait<'_> {
        Wait {
            tickets: self,
            ticket: 0,
            known: Some(res),
        }
    }

    /// Every ticket up to `upto` is carried out: written, or with `err`, failed.
    pub fn resolve(&self, upto: u64, err: Option<&Rc<str>>) {
        let mut waiting = self.waiting.borrow_mut();
        while let Some(&(t, _)) = waiting.front() {
            if t > upto {
                break;
            }
            let (t, waker) = waiting.pop_front().expect("just seen");
            if let Some(e) = err {
                self.refused.borrow_mut().push((t, e.clone()));
            }
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Whether any awaited write is still unresolved.
    #[cfg(test)]
    fn any_waiting(&self) -> bool {
        !self.waiting.borrow().is_empty()
    }

    fn take_refused(&self, t: u64) -> Option<Rc<str>> {
        let mut refused = self.refused.borrow_mut();
        if refused.is_empty() {
            return None;
        }
        let i = refused.iter().position(|(r, _)| *r == t)?;
        Some(refused.swap_remove(i).1)
    }

    /// Drops a waiter that will not look at its outcome (its future was dropped).
    fn forget(&self, t: u64) {
        let mut waiting = self.waiting.borrow_mut();
        if let Ok(i) = waiting.binary_search_by_key(&t, |(w, _)| *w) {
            waiting.remove(i);
            return;
        }
        drop(waiting);
        self.take_refused(t);
    }
}

/// The outcome of one write: `Ok` once written (and synced with `--fsync=always`), the error
/// if it failed.
pub struct Wait<'a> {
    tickets: &'a Tickets,
    /// 0 once the outcome is known or taken (nothing registered).
    ticket: u64,
    known: Option<Result<(), StorageError>>,
}

impl Wait<'_> {
    /// The ticket waited for (0 when the outcome was known at issue).
    pub fn ticket(&self) -> u64 {
        self.ticket
    }
}

impl Future for Wait<'_> {
    type Output = Result<(), StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(res) = self.known.take() {
            return Poll::Ready(res);
        }
        let (tickets, t) = (self.tickets, self.ticket);
        if t == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = tickets.take_refused(t) {
            self.ticket = 0;
            return Poll::Ready(Err(StorageError::Unavailable(e.to_string())));
        }
        let mut waiting = tickets.waiting.borrow_mut();
        match waiting.binary_search_by_key(&t, |(w, _)| *w) {
            Ok(i) => {
                let slot = &mut waiting[i].1;
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(_) => {
                drop(waiting);
                self.ticket = 0;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.ticket != 0 {
            self.tickets.forget(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(w: &mut Wait<'_>) -> Poll<Result<(), StorageError>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(w).poll(&mut cx)
    }

    #[test]
    fn each_waiter_gets_its_own_outcome_in_any_resolve_order() {
        let t = Tickets::default();
        let mut a = t.issue_awaited();
        let mut b = t.issue_awaited();
        assert!(poll(&mut a).is_pending());
        // A write refused at once, while `a` and `b` are still in flight.
        let mut c = t.settled(Err(StorageError::Unavailable("full".into())));
        assert!(matches!(poll(&mut c), Poll::Ready(Err(_))));
        t.resolve(1, None);
        let e: Rc<str> = Rc::from("disk full");
        t.resolve(2, Some(&e));
        // `b` is polled only after its failure was resolved: it still sees it.
        match poll(&mut b) {
            Poll::Ready(Err(StorageError::Unavailable(m))) => assert_eq!(m, "disk full"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(poll(&mut a), Poll::Ready(Ok(()))));
        let mut d = t.issue_awaited();
        assert!(poll(&mut d).is_pending());
        t.resolve(3, None);
        assert!(matches!(poll(&mut d), Poll::Ready(Ok(()))));
        assert!(!t.any_waiting());
        assert!(t.refused.borrow().is_empty());
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_behind() {
        let t = Tickets::default();
        let a = t.issue_awaited();
        let b = t.issue_awaited();
        drop(a);
        assert!(t.any_waiting());
        let e: Rc<str> = Rc::from("x");
        t.resolve(2, Some(&e));
        drop(b);
        assert!(!t.any_waiting());
        assert!(
            t.refused.borrow().is_empty(),
            "a failed, dropped waiter's entry is freed"
        );
    }
}
