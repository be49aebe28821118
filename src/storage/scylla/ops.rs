//! What crosses between a core and its bridge thread (owned, `Send`): the reads and writes a
//! core asks for, their answers, and the timeout every driver call runs under. Requests are
//! built on the core and consumed on the bridge thread; answers are made on the bridge thread
//! and delivered on the core.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::fencing::Fences;
use crate::protocol::MsgType;
use crate::storage::{IdemRecord, MsgBody, StorageError, UserMeta};

/// `fut` under `timeout`; its error or the timeout as `scylla: <what>: ...`.
pub(crate) async fn timed<T, E: std::fmt::Display>(
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

/// A reply and its result, on their way back to the core. They cross in batches and the core
/// completes the reply itself, so the waiting task is woken by its own thread (a foreign wake
/// of the core costs a cross-thread queue push and, when the core sleeps, an eventfd write).
pub(super) enum Answer {
    Unit(Reply<()>, Result<(), String>),
    User(Reply<UserMeta>, Result<UserMeta, String>),
    Listing(Reply<Listing>, Result<Listing, String>),
    Members(Reply<Vec<String>>, Result<Vec<String>, String>),
}

impl Answer {
    /// Completes the reply: on the core, this wakes the waiting task locally.
    pub(super) fn deliver(self) {
        // A receiver that is gone (its request was dropped) wants no answer.
        let _ = match self {
            Answer::Unit(r, v) => r.send(v).is_ok(),
            Answer::User(r, v) => r.send(v).is_ok(),
            Answer::Listing(r, v) => r.send(v).is_ok(),
            Answer::Members(r, v) => r.send(v).is_ok(),
        };
    }
}

/// The answer types a reply can carry.
pub(super) trait Answered: Sized {
    fn answer(reply: Reply<Self>, res: Result<Self, String>) -> Answer;
}

impl Answered for () {
    fn answer(reply: Reply<()>, res: Result<(), String>) -> Answer {
        Answer::Unit(reply, res)
    }
}

impl Answered for UserMeta {
    fn answer(reply: Reply<UserMeta>, res: Result<UserMeta, String>) -> Answer {
        Answer::User(reply, res)
    }
}

impl Answered for Listing {
    fn answer(reply: Reply<Listing>, res: Result<Listing, String>) -> Answer {
        Answer::Listing(reply, res)
    }
}

impl Answered for Vec<String> {
    fn answer(reply: Reply<Vec<String>>, res: Result<Vec<String>, String>) -> Answer {
        Answer::Members(reply, res)
    }
}

/// Where the bridge's tasks put their answers: a channel inside the bridge thread, drained by
/// one task that sends them to the core a batch at a time (`bridge::forward`).
#[derive(Clone)]
pub(super) struct Answers(pub(super) mpsc::UnboundedSender<Answer>);

impl Answers {
    pub(super) fn send<T: Answered>(&self, reply: Reply<T>, res: Result<T, String>) {
        if let Err(unsent) = self.0.send(T::answer(reply, res)) {
            // The forwarder has ended (the bridge is stopping): answer straight from here.
            unsent.0.deliver();
        }
    }
}

pub(super) enum Write {
    Append {
        body: BodyData,
        expires_at: u64,
        entries: Vec<(String, u64)>,
        reply: Reply<()>,
    },
    /// `Append` and its idempotency record in one logged batch (one recipient), or one
    /// after the other.
    AppendKeyed {
        body: BodyData,
        expires_at: u64,
        entries: Vec<(String, u64)>,
        idem: IdemRecord,
        reply: Reply<()>,
    },
    Idem {
        idem: IdemRecord,
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
    Idem {
        id: String,
        now: u64,
        reply: Reply<Option<IdemRecord>>,
    },
}

/// Which epoch a user's writes carry, and whether an answer may be an `ok`.
#[derive(Clone)]
pub(crate) enum Fencing {
    /// The static cluster: epoch 0, always held, always within the lease.
    Static,
    Dynamic(Arc<Fences>),
}

impl Fencing {
    /// The epoch at which this member serves `uid` now, if it does.
    pub(super) fn epoch(&self, uid: &str) -> Option<u32> {
        match self {
            Fencing::Static => Some(0),
            Fencing::Dynamic(f) => f.held(f.slot_of(uid)),
        }
    }

    /// May a write at `epoch` whose answer came back now be acknowledged (rule 6)?
    pub(super) fn valid(&self, uid: &str, epoch: u32) -> bool {
        match self {
            Fencing::Static => true,
            Fencing::Dynamic(f) => f.lease_valid() && f.held(f.slot_of(uid)) == Some(epoch),
        }
    }

    /// Is `uid`'s slot still held at `epoch` (a write of it still worth retrying)?
    pub(super) fn holds(&self, uid: &str, epoch: u32) -> bool {
        self.epoch(uid) == Some(epoch)
    }

    pub(super) fn is_static(&self) -> bool {
        matches!(self, Fencing::Static)
    }
}
