//! One admin connection: reads requests, takes every complete (pipelined) request already in
//! the buffer, serves them together and writes their answers in request order in one write.
//! Runs on the accepting core's executor.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{batch, encode_reply, Response};
use crate::http::head::{parse_head, RequestHead, MAX_HEAD_BYTES};
use crate::http::response::CONTINUE_100;
use crate::router::Router;
use crate::shard::Shard;

/// An idle keep-alive admin connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Wait for each part of a request body (as before pipelining: `transport::read_body`).
const BODY_WAIT: Duration = Duration::from_secs(60);
/// Requests served in one round at most: bounds a round's memory and its answers' delay.
const MAX_ROUND: usize = 1024;
/// Bytes asked of one read (more when a long body is due, up to `MAX_READ`).
const READ: usize = 16 << 10;
const MAX_READ: usize = 1 << 20;

/// A complete request taken out of the buffer.
pub(super) struct Req {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// What the front of the buffer holds.
enum Next {
    Complete(Req, usize),
    /// Not complete yet: `Some(head)` once the head is, with the bytes still missing.
    Partial(Option<(RequestHead, usize)>),
    /// A head or body that cannot be served: answer this, then close.
    Bad(Response),
}

pub(super) async fn serve(router: Rc<Router>, mut stream: TcpStream) {
    let shard = router.shard().clone();
    let mut buf: Vec<u8> = Vec::new();
    // `100 Continue` already sent for the partial request at the front of `buf`.
    let mut continued = false;
    loop {
        let (reqs, stop) = take_requests(&shard, &mut buf);
        if !reqs.is_empty() {
            continued = false;
        }
        if reqs.is_empty() && stop.is_none() {
            match more(&shard, &mut stream, &mut buf, &mut continued).await {
                Ok(()) => continue,
                Err(Some(r)) => return close_with(&mut stream, Vec::new(), r).await,
                Err(None) => return,
            }
        }
        let replies = batch::serve_round(&router, reqs).await;
        let last_open = replies.last().is_none_or(|r| r.1.keep_alive);
        if let Some(r) = stop {
            return close_with(&mut stream, replies, r).await;
        }
        if !write_replies(&mut stream, &replies).await || !last_open {
            return;
        }
        if buf.is_empty() && buf.capacity() > 4 * READ {
            buf = Vec::new(); // a long body was read: do not keep its buffer while idle
        }
    }
}

/// Takes the complete requests at the front of `buf` (at most `MAX_ROUND`, none after one
/// that closes the connection), and the answer that ends the connection if a bad one follows.
fn take_requests(shard: &Shard, buf: &mut Vec<u8>) -> (Vec<Req>, Option<Response>) {
    let mut reqs = Vec::new();
    let mut used = 0;
    let mut stop = None;
    while reqs.len() < MAX_ROUND {
        match next_request(shard, &buf[used..]) {
            Next::Complete(req, n) => {
                used += n;
                let closes = !req.head.keep_alive;
                reqs.push(req);
                if closes {
                    break;
                }
            }
            Next::Partial(_) => break,
            Next::Bad(r) => {
                shard.bump(&shard.stats().bad_request);
                stop = Some(r);
                break;
            }
        }
    }
    buf.drain(..used);
    (reqs, stop)
}

/// The request at the front of `b`, refusing chunked bodies (411) and bodies over the
/// path's limit (413).
fn next_request(shard: &Shard, b: &[u8]) -> Next {
    if b.is_empty() {
        return Next::Partial(None);
    }
    let (head, n) = match parse_head(b, MAX_HEAD_BYTES) {
        Ok(Some(h)) => h,
        Ok(None) => return Next::Partial(None),
        Err(e) => return Next::Bad(Response::err(e.status(), e.reason())),
    };
    if head.chunked {
        return Next::Bad(Response::err(
            411,
            "chunked request bodies are not supported: send Content-Length",
        ));
    }
    let cfg = shard.cfg();
    let max = if head.path == "/pub/batch" {
        cfg.max_batch_bytes
    } else {
        cfg.max_message_bytes
    };
    let len = head.content_length.unwrap_or(0);
    if len > max {
        return Next::Bad(Response::err(413, format!("body over {max} bytes")));
    }
    if b.len() - n < len {
        let missing = len - (b.len() - n);
        return Next::Partial(Some((head, missing)));
    }
    let body = b[n..n + len].to_vec();
    Next::Complete(Req { head, body }, n + len)
}

/// Reads more of the request at the front of `buf` (answering `Expect: 100-continue` once).
/// `Err(Some(r))`: answer `r` and close; `Err(None)`: close (idle, gone, head too slow).
async fn more(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    continued: &mut bool,
) -> Result<(), Option<Response>> {
    let (wait, want, in_body) = match next_request(shard, buf) {
        Next::Partial(Some((head, missing))) => {
            if head.expect_continue && !*continued {
                *continued = true;
                if stream.write_all(CONTINUE_100).await.is_err() {
                    return Err(None);
                }
            }
            (BODY_WAIT, missing.clamp(READ, MAX_READ), true)
        }
        _ if buf.is_empty() => (IDLE, READ, false),
        _ => (
            Duration::from_millis(shard.cfg().head_timeout_ms),
            READ,
            false,
        ),
    };
    let len = buf.len();
    buf.resize(len + want, 0);
    let got = glommio::timer::timeout(wait, async { Ok(stream.read(&mut buf[len..]).await) }).await;
    match got {
        Ok(Ok(n)) if n > 0 => {
            buf.truncate(len + n);
            Ok(())
        }
        _ => {
            buf.truncate(len);
            let lost = in_body.then(|| Response::err(400, "body not received"));
            if lost.is_some() {
                shard.bump(&shard.stats().bad_request);
            }
            Err(lost)
        }
    }
}

/// A served request's answer, with how to frame it.
pub(super) struct Framing {
    pub keep_alive: bool,
    pub head_only: bool,
}

/// Writes every answer in one buffer, one write.
async fn write_replies(stream: &mut TcpStream, replies: &[(Response, Framing)]) -> bool {
    if replies.is_empty() {
        return true;
    }
    let mut out = Vec::with_capacity(replies.iter().map(|r| r.0.body.len() + 200).sum());
    for (r, f) in replies {
        encode_reply(&mut out, r, f.keep_alive, f.head_only);
    }
    stream.write_all(&out).await.is_ok()
}

/// Writes the answers served so far and the final error in one write, then closes, reading
/// (and dropping) what the peer still sends so the error is not lost to a reset.
async fn close_with(stream: &mut TcpStream, mut replies: Vec<(Response, Framing)>, last: Response) {
    let f = Framing {
        keep_alive: false,
        head_only: false,
    };
    replies.push((last, f));
    write_replies(stream, &replies).await;
    crate::transport::linger_close(stream).await;
}
