//! The bridge between a core and the driver: what crosses it (owned, `Send`), the bridge
//! thread (a current-thread tokio runtime, one `Session`) and its loop, which keeps the
//! ordering promised in the module doc of `storage::scylla`. Runs on the bridge thread.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::ops::{Read, Reply, Write};
use super::queries::{check, connect, read, write, Ctx};
use super::ScyllaParams;

pub(super) enum Req {
    Write(Write),
    Read(Read),
    /// Answered once every earlier write has completed.
    Flush(Reply<()>),
    /// A quick read at once (not after earlier writes): does the database answer?
    Check(Reply<()>),
    /// Answered once everything earlier has completed; then the bridge thread ends.
    Close(Reply<()>),
}

pub(super) fn bridge_thread(
    params: ScyllaParams,
    rx: mpsc::UnboundedReceiver<Req>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("scylla: cannot start a tokio runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        match connect(&params).await {
            Ok(ctx) => {
                if ready.send(Ok(())).is_ok() {
                    serve(Arc::new(ctx), rx).await;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

/// Microsecond write timestamps for membership changes that increase in issue order.
#[derive(Debug, Default)]
pub(super) struct Clock {
    last: i64,
}

impl Clock {
    pub(super) fn next(&mut self, now_micros: i64) -> i64 {
        self.last = now_micros.max(self.last + 1);
        self.last
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The bridge's loop: takes requests in issue order (see the module doc for the ordering).
async fn serve(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Req>) {
    let mut writes: JoinSet<()> = JoinSet::new();
    let mut reads: JoinSet<()> = JoinSet::new();
    let mut clock = Clock::default();
    while let Some(req) = rx.recv().await {
        while writes.try_join_next().is_some() {}
        while reads.try_join_next().is_some() {}
        match req {
            Req::Write(w) => {
                let ts = clock.next(now_micros());
                writes.spawn(write(ctx.clone(), w, ts));
            }
            Req::Read(r) => {
                while writes.join_next().await.is_some() {}
                reads.spawn(read(ctx.clone(), r));
            }
            Req::Check(reply) => {
                reads.spawn(check(ctx.clone(), reply));
            }
            Req::Flush(reply) => {
                while writes.join_next().await.is_some() {}
                let _ = reply.send(Ok(()));
            }
            Req::Close(reply) => {
                while writes.join_next().await.is_some() {}
                while reads.join_next().await.is_some() {}
                let _ = reply.send(Ok(()));
                return;
            }
        }
    }
    // The store was dropped without close: finish what was started.
    while writes.join_next().await.is_some() {}
    while reads.join_next().await.is_some() {}
}
