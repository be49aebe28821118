//! One-shot signals between threads: "serve now" from the main thread to the cores once every
//! store is open, and "stop" from the signal thread to the cores and the bus threads. Set from
//! any thread; awaited on a core's executor without polling.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// A flag that is set once and wakes one waiting task per slot (a core, or an extra waiter).
pub struct Signal {
    set: AtomicBool,
    waiters: Vec<AtomicWaker>,
}

impl Signal {
    pub fn new(slots: usize) -> Self {
        Signal {
            set: AtomicBool::new(false),
            waiters: (0..slots).map(|_| AtomicWaker::new()).collect(),
        }
    }

    /// Sets the flag and wakes every waiter; later calls do nothing more.
    pub fn fire(&self) {
        if !self.set.swap(true, Ordering::SeqCst) {
            for w in &self.waiters {
                w.wake();
            }
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Returns once the flag is set; one task per `slot` at a time.
    pub async fn wait(&self, slot: usize) {
        poll_fn(|cx| {
            if self.is_set() {
                return Poll::Ready(());
            }
            self.waiters[slot].register(cx.waker());
            // Set between the check and the registration: seen now.
            if self.is_set() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wakes_a_waiter_on_another_thread() {
        let s = Arc::new(Signal::new(1));
        let s2 = s.clone();
        let t = std::thread::spawn(move || futures_lite::future::block_on(s2.wait(0)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!s.is_set());
        s.fire();
        t.join().unwrap();
        assert!(s.is_set());
        // Already set: returns at once.
        futures_lite::future::block_on(s.wait(0));
    }
}
