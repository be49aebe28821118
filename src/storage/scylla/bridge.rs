//! The bridge between a core and the driver: what crosses it (owned, `Send`), the bridge
//! thread (a current-thread tokio runtime, one `Session`), its loop, which keeps the ordering
//! promised in the module doc of `storage::scylla`, and the forwarder that sends answers back
//! to the core in batches. Runs on the bridge thread.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::ops::{Answer, Answers, Read, Reply, Write};
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

/// Answers per batch sent to the core (more wait for the next batch).
const ANSWER_BATCH: usize = 1024;

/// The bridge thread: `rx` brings the core's requests a batch at a time, `to_core` takes the
/// answers back the same way; `ready` says whether the session connected.
pub(super) fn bridge_thread(
    params: ScyllaParams,
    rx: mpsc::UnboundedReceiver<Vec<Req>>,
    to_core: mpsc::UnboundedSender<Vec<Answer>>,
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
                    let (tx, answers) = mpsc::unbounded_channel();
                    let forwarder = tokio::spawn(forward(answers, to_core));
                    serve(Arc::new(ctx), rx, Answers(tx)).await;
                    // Every task that held an `Answers` has ended: the forwarder drains the
                    // last answers (the close's among them), then ends.
                    let _ = forwarder.await;
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

/// Sends the answers to the core, as many at a time as have come in since the last send: the
/// tasks that complete in one turn of this runtime answer with one wake of the core.
async fn forward(
    mut answers: mpsc::UnboundedReceiver<Answer>,
    to_core: mpsc::UnboundedSender<Vec<Answer>>,
) {
    let mut batch = Vec::new();
    while answers.recv_many(&mut batch, ANSWER_BATCH).await > 0 {
        // A core that is gone (its store dropped) wants no answers.
        let _ = to_core.send(std::mem::take(&mut batch));
    }
}

/// The bridge's loop: takes requests in issue order, a batch at a time (see the module doc
/// for the ordering).
async fn serve(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Vec<Req>>, out: Answers) {
    let mut writes: JoinSet<()> = JoinSet::new();
    let mut reads: JoinSet<()> = JoinSet::new();
    let mut clock = Clock::default();
    while let Some(batch) = rx.recv().await {
        while writes.try_join_next().is_some() {}
        while reads.try_join_next().is_some() {}
        for req in batch {
            match req {
                Req::Write(w) => {
                    let ts = clock.next(now_micros());
                    writes.spawn(write(ctx.clone(), w, ts, out.clone()));
                }
                Req::Read(r) => {
                    while writes.join_next().await.is_some() {}
                    reads.spawn(read(ctx.clone(), r, out.clone()));
                }
                Req::Check(reply) => {
                    reads.spawn(check(ctx.clone(), reply, out.clone()));
                }
                Req::Flush(reply) => {
                    while writes.join_next().await.is_some() {}
                    out.send(reply, Ok(()));
                }
                Req::Close(reply) => {
                    while writes.join_next().await.is_some() {}
                    while reads.join_next().await.is_some() {}
                    out.send(reply, Ok(()));
                    return;
                }
            }
        }
    }
    // The store was dropped without close: finish what was started.
    while writes.join_next().await.is_some() {}
    while reads.join_next().await.is_some() {}
}
