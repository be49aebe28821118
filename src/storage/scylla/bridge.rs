//! The bridge between a core and the driver: what crosses it (owned, `Send`), the bridge
//! thread (a current-thread tokio runtime, one `Session`) and its loop, which keeps the
//! ordering promised in the module doc of `storage::scylla`. Runs on the bridge thread.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::queries::{check, connect, read, write, Ctx};
use super::ScyllaParams;
use crate::protocol::MsgType;
use crate::storage::{MsgBody, StorageError, UserMeta};

/// `fut` under `timeout`; its error or the timeout as `scylla: <what>: ...`.
pub(super) async fn timed<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("scylla: {what}: {e}")),
        Err(_) => Err(format!(
            "scylla: {what}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

// ---- what crosses the bridge (owned, `Send`) -------------------------------------------------

/// A message body as it crosses to the bridge thread and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BodyData {
    pub(super) kind: i8,
    pub(super) sender: String,
    pub(super) channel: Option<String>,
    pub(super) body: String,
}

impl BodyData {
    pub(super) fn of(b: &MsgBody) -> Self {
        BodyData {
            kind: b.kind as u8 as i8,
            sender: b.from.to_string(),
            channel: b.channel.as_deref().map(str::to_string),
            body: b.body.to_string(),
        }
    }

    pub(super) fn into_msg_body(self) -> Result<MsgBody, StorageError> {
        let kind = u8::try_from(self.kind)
            .ok()
            .and_then(MsgType::from_u8)
            .ok_or_else(|| {
                StorageError::Corrupt(format!("scylla: unknown message kind {}", self.kind))
            })?;
        Ok(MsgBody {
            kind,
            from: self.sender.into(),
            channel: self.channel.map(Into::into),
            body: self.body.into(),
        })
    }
}

/// `offline`'s answer: `(seq, expires_at, index into bodies)`, ascending, and the bodies
/// (each once, however many rows refer to it).
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) rows: Vec<(u64, u64, usize)>,
    pub(super) bodies: Vec<BodyData>,
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, String>>;

pub(super) enum Write {
    Append {
        body: BodyData,
        expires_at: u64,
        entries: Vec<(String, u64)>,
        reply: Reply<()>,
    },
    Ack {
        uid: String,
        last_ack: u64,
        reply: Reply<()>,
    },
    Member {
        cid: String,
        uid: String,
        on: bool,
        reply: Reply<()>,
    },
}

pub(super) enum Read {
    User {
        uid: String,
        reply: Reply<UserMeta>,
    },
    Offline {
        uid: String,
        after: u64,
        upto: u64,
        limit: usize,
        now: u64,
        reply: Reply<Listing>,
    },
    Members {
        cid: String,
        reply: Reply<Vec<String>>,
    },
}

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
