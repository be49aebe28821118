//! The one typed enum that crosses cores, and its request/reply payloads; built on any core,
//! consumed on the receiving core's executor.

use std::os::fd::RawFd;

use super::ids::ShardId;
use crate::protocol::ClientMessage;
use crate::stats::{Rates, Snapshot};
use crate::transport::stream::Opening;

/// A client socket accepted on one core, its head already read, moving to the core that owns
/// its uid. Owns the fd: dropping an undelivered `Handoff` closes it.
#[derive(Debug)]
pub struct Handoff {
    fd: RawFd,
    /// What the accepting core learnt from the request: uid, transport, early bytes.
    pub opening: Option<Opening>,
}

impl Handoff {
    pub fn new(fd: RawFd, opening: Opening) -> Self {
        Self {
            fd,
            opening: Some(opening),
        }
    }

    /// Takes the fd out; the caller now owns it.
    pub fn take_fd(&mut self) -> RawFd {
        std::mem::replace(&mut self.fd, -1)
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

/// Work for the core that owns a user (or, for channels, for every core).
#[derive(Debug, Clone)]
pub enum Req {
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
    Disconnect {
        uid: String,
    },
    /// A message a client sent with `POST /send` (one-way transports).
    Client {
        uid: String,
        msg: ClientMessage,
    },
    Stats,
}

#[derive(Debug)]
pub enum Rep {
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
    Err(String),
    /// The owner node could not be reached in time (answered 503).
    Unavailable(String),
}

pub enum ShardMsg {
    Handoff(Handoff),
    /// `id == 0`: fire and forget, no reply.
    Req {
        id: u64,
        from: ShardId,
        req: Req,
    },
    Rep {
        id: u64,
        rep: Rep,
    },
}
