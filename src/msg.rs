//! The typed vocabulary that crosses cores (over bounded channels) and nodes (over the bus):
//! requests for the core that owns a user, their answers, and sockets handed to their owner
//! core. Built on any core, consumed on the receiving core's executor.

use std::os::fd::RawFd;

use crate::ids::ShardId;
use crate::protocol::{ClientMessage, Mode};
use crate::stats::{LatencySnapshot, Rates, Snapshot};

/// An accepted, authenticated `/connect` whose stream has not started yet; `Send`, so it can
/// travel to the owner core with its socket.
#[derive(Debug)]
pub struct Opening {
    /// When its head was read (the start of the connect-to-streaming span; an `Instant`, as
    /// it may be read on another core).
    pub at: std::time::Instant,
    pub uid: String,
    /// Bytes the client sent after its request head.
    pub leftover: Vec<u8>,
    pub mode: Mode,
    /// `Sec-WebSocket-Accept` of an accepted handshake.
    pub ws_accept: Option<String>,
    /// SSE `Last-Event-ID`: replay after it, and count it as an ack.
    pub last_event_id: Option<u64>,
    /// `Access-Control-Allow-Origin` of the stream head (`--client_allow_origin`), if any.
    pub allow_origin: Option<String>,
}

/// A client socket accepted on one core, its head already read, moving to the core that owns
/// its uid. Owns the fd: dropping an undelivered `Handoff` closes it.
#[derive(Debug)]
pub struct Handoff {
    fd: RawFd,
    /// Always Some until `into_parts`.
    opening: Option<Opening>,
}

impl Handoff {
    pub fn new(fd: RawFd, opening: Opening) -> Self {
        Self {
            fd,
            opening: Some(opening),
        }
    }

    /// Takes the fd and the opening out; the caller now owns the fd.
    pub fn into_parts(mut self) -> (RawFd, Opening) {
        let fd = std::mem::replace(&mut self.fd, -1);
        let opening = self.opening.take().expect("a handoff is taken apart once");
        (fd, opening)
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the fd is owned by this Handoff and was never handed out.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// One message of a batch of unicast publishes (pipelined `/pub?to=` requests or the lines of
/// `/pub/batch`) for one owner core or node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubItem {
    pub to: String,
    pub from: String,
    pub body: String,
    pub ttl: u64,
    /// Checked by `check_key`. An item with a key never goes into a `Request::PubBatch`: it is
    /// published alone through `Router::publish`, to the core that decides for its key (the
    /// bus decoder refuses a batch item that has one).
    pub idempotency_key: Option<String>,
}

impl PubItem {
    /// The `PubUser` request of this item, and its key.
    pub fn into_request(self) -> (Request, Option<String>) {
        let req = Request::PubUser {
            to: self.to,
            from: self.from,
            body: self.body,
            ttl: self.ttl,
        };
        (req, self.idempotency_key)
    }
}

/// Work for the core that owns a user (or, for channels, for every core).
#[derive(Debug, Clone)]
pub enum Request {
    PubUser {
        to: String,
        from: String,
        body: String,
        ttl: u64,
    },
    PubChannel {
        channel: String,
        from: String,
        body: String,
        ttl: u64,
    },
    /// A `PubUser` or `PubChannel` with an idempotency key, for the core that decides for
    /// its destination (the owner of the uid, or of the channel id).
    Keyed {
        key: String,
        req: Box<Request>,
    },
    Sub {
        uid: String,
        cid: String,
    },
    Unsub {
        uid: String,
        cid: String,
    },
    Msg {
        uid: String,
    },
    /// Ends `uid`'s stream: with `{"error":"disconnected"}`, or with the move signal to
    /// `location` (a full `http://HOST:PORT/connect?…` URL) when one is given.
    Disconnect {
        uid: String,
        location: Option<String>,
    },
    /// Unicast publishes for users of one core (or node), answered item by item in order
    /// (`Answer::Batch`); each user's messages get their seqs in item order.
    PubBatch(Vec<PubItem>),
    /// A message a client sent with `POST /send` (one-way transports).
    Client {
        uid: String,
        msg: ClientMessage,
    },
    Stats,
    /// A core's latency histograms (apart from `Stats`: they are ~80 KiB a core, and the
    /// once-a-second sampler needs only the counters).
    Latency,
    /// Whether this core's store takes writes now (for `/health`); per node, like `Stats`.
    Health,
}

impl Request {
    /// The user whose core must act on this request; None for node-wide work.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Request::PubUser { to: uid, .. }
            | Request::Sub { uid, .. }
            | Request::Unsub { uid, .. }
            | Request::Msg { uid }
            | Request::Disconnect { uid, .. }
            | Request::Client { uid, .. } => Some(uid),
            Request::PubBatch(items) => items.first().map(|i| i.to.as_str()),
            Request::Keyed { req, .. } => req.destination(),
            Request::PubChannel { .. } | Request::Stats | Request::Latency | Request::Health => {
                None
            }
        }
    }
}

impl Request {
    /// The uid or channel id a publish goes to (whose owner core decides its idempotency key).
    pub fn destination(&self) -> Option<&str> {
        match self {
            Request::PubUser { to, .. } => Some(to),
            Request::PubChannel { channel, .. } => Some(channel),
            Request::Keyed { req, .. } => req.destination(),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum Answer {
    Ok,
    /// Seq given to a unicast message (None for ttl=0).
    Seq(Option<u64>),
    /// Members delivered to by one core's part of a channel publish.
    Count(u64),
    /// Offline messages, each one JSON text followed by "\n".
    Msgs(Vec<String>),
    /// Whether a stream was found (for /disconnect).
    Found(bool),
    Stats(Box<(ShardId, Snapshot, Option<Rates>)>),
    Latency(Box<LatencySnapshot>),
    Err(String),
    /// The owner node could not be reached in time (answered 503).
    Unavailable(String),
    /// The first answer of a publish with the same idempotency key (a `Seq` or a `Count`).
    Replayed(Box<Answer>),
    /// Refused with this 4xx status and reason (a bad, reused or unplaceable idempotency key).
    Refused(u16, String),
    /// One answer per item of a `Request::PubBatch`, in item order.
    Batch(Vec<Answer>),
}

pub enum CoreMsg {
    Handoff(Handoff),
    /// `id == 0`: fire and forget, no answer.
    Request {
        id: u64,
        from: ShardId,
        req: Request,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
}
