//! What crosses between a core and its bridge thread (owned, `Send`): the reads and writes a
//! core asks for, their answers, and the timeout every driver call runs under. Pure types;
//! built on the core, consumed on the bridge thread.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::protocol::MsgType;
use crate::storage::{IdemRecord, MsgBody, StorageError, UserMeta};

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
