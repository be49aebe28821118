//! The client port: accepts, reads the request head (bounded in size and time), authenticates,
//! picks the transport (chunked, WebSocket, SSE) and codec, and starts the stream on the core
//! that owns the uid; also serves `/demo` and `/send`. Runs on every core's executor.

use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::stream::{Codec, Mode, NewStream, Opening, Transport};
use super::{read_body, read_head, ws, HeadRead};
use crate::http::head::{Method, RequestHead, MAX_HEAD_BYTES};
use crate::http::query::query_param;
use crate::http::response::{write_error, write_redirect, write_response};
use crate::protocol::{msgpack, valid_id};
use crate::shard::msg::{Handoff, Rep, Req, ShardMsg};
use crate::shard::Shard;

/// The demo client page (`GET /demo`), plain HTML and JS, no build step.
const DEMO: &str = include_str!("../../web/demo.html");

/// The JS SDK's browser bundle (`GET /ipush.js`), built by `npm run build:web` in sdk/js.
const SDK_JS: &str = include_str!("../../web/ipush.js");

pub async fn client_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(on_client(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays.
                tracing::warn!(error = %e, "accept on client port failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        };
    }
}

async fn respond(mut stream: TcpStream, status: u16, reason: &str) {
    let mut out = Vec::with_capacity(256);
    write_error(&mut out, status, reason, false);
    let _ = stream.write_all(&out).await;
    super::linger_close(&mut stream).await;
}

/// A refusal: (status, reason), counted as a bad request unless it is an auth failure.
type Refusal = (u16, String);

fn bad(shard: &Shard, status: u16, reason: impl Into<String>) -> Refusal {
    shard.bump(&shard.stats.bad_request);
    (status, reason.into())
}

/// The uid, after checking it and its password.
fn authenticate(shard: &Shard, head: &RequestHead) -> Result<String, Refusal> {
    let uid = match query_param(&head.query, "uid") {
        Ok(Some(u)) if valid_id(&u) => u,
        _ => return Err(bad(shard, 400, "invalid uid")),
    };
    let password = match query_param(&head.query, "password") {
        Ok(p) => p.unwrap_or_default(),
        Err(_) => return Err(bad(shard, 400, "invalid password")),
    };
    if let Err(e) = shard.auth.check(&uid, &password) {
        tracing::debug!(%uid, error = %e, "auth failed");
        shard.bump(&shard.stats.auth_fail);
        return Err((401, "auth failed".into()));
    }
    Ok(uid)
}

fn codec(shard: &Shard, head: &RequestHead) -> Result<Codec, Refusal> {
    match query_param(&head.query, "codec") {
        Ok(None) => Ok(Codec::Json),
        Ok(Some(c)) if c == "json" => Ok(Codec::Json),
        Ok(Some(c)) if c == "msgpack" => Ok(Codec::MsgPack),
        _ => Err(bad(shard, 400, "invalid codec (json or msgpack)")),
    }
}

/// The uid of a `/connect` that another node owns.
fn remote_user(shard: &Shard, head: &RequestHead) -> Option<String> {
    if !shard.members.is_cluster() {
        return None;
    }
    let uid = query_param(&head.query, "uid").ok()??;
    (valid_id(&uid) && shard.members.owner(&uid) != shard.members.me()).then_some(uid)
}

/// What a `/connect` asks for: transport, codec and the rest of its opening.
fn opening(shard: &Shard, head: &RequestHead, leftover: Vec<u8>) -> Result<Opening, Refusal> {
    if head.method != Method::Get {
        return Err(bad(shard, 405, "method not allowed"));
    }
    let uid = authenticate(shard, head)?;
    let codec = codec(shard, head)?;
    let (transport, ws_accept, last_event_id) = if head.upgrade_websocket {
        let accept = ws::check_handshake(head).map_err(|(st, r)| bad(shard, st, r))?;
        (Transport::WebSocket, Some(accept), None)
    } else if head.accept_event_stream {
        if codec == Codec::MsgPack {
            return Err(bad(
                shard,
                400,
                "msgpack is not available over server-sent events (a text-only transport)",
            ));
        }
        let last = match head.last_event_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| bad(shard, 400, "invalid Last-Event-ID"))?,
            ),
        };
        (Transport::Sse, None, last)
    } else {
        (Transport::Chunked, None, None)
    };
    Ok(Opening {
        uid,
        leftover,
        mode: Mode { transport, codec },
        ws_accept,
        last_event_id,
    })
}

async fn on_client(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let limit = Duration::from_millis(shard.cfg.head_timeout_ms);
    let read = glommio::timer::timeout(limit, async {
        Ok(read_head(&mut stream, &mut buf, MAX_HEAD_BYTES).await)
    })
    .await;
    drop(buf);
    let (head, leftover) = match read {
        Ok(HeadRead::Head(h, rest)) => (h, rest),
        Ok(HeadRead::Bad(e)) => {
            shard.bump(&shard.stats.bad_request);
            return respond(stream, e.status(), e.reason()).await;
        }
        Ok(HeadRead::Closed) | Ok(HeadRead::Io(_)) => return,
        Err(_) => {
            // Half-sent head: give up on it; nothing else waited for it.
            shard.bump(&shard.stats.bad_request);
            return respond(stream, 408, "request timeout").await;
        }
    };
    match head.path.as_str() {
        "/connect" => {
            shard.bump(&shard.stats.req_connect);
            if let Some(uid) = remote_user(&shard, &head) {
                // Another node serves this user: send the client there, same query.
                let node = shard.members.owner(&uid);
                let location = format!(
                    "http://{}/connect?{}",
                    shard.members.node(node).client_addr(),
                    head.query
                );
                shard.bump(&shard.stats.redirect);
                let mut out = Vec::with_capacity(256);
                write_redirect(&mut out, &location);
                let _ = stream.write_all(&out).await;
                return super::linger_close(&mut stream).await;
            }
            match opening(&shard, &head, leftover) {
                Ok(o) => start(shard, stream, o).await,
                Err((status, reason)) => respond(stream, status, &reason).await,
            }
        }
        "/send" => {
            shard.bump(&shard.stats.req_send);
            send(shard, stream, head, leftover).await
        }
        "/demo" if matches!(head.method, Method::Get | Method::Head) => {
            shard.bump(&shard.stats.req_demo);
            let mut out = Vec::with_capacity(DEMO.len() + 200);
            write_response(
                &mut out,
                200,
                "text/html; charset=utf-8",
                &[],
                DEMO.as_bytes(),
                false,
            );
            let _ = stream.write_all(&out).await;
            super::linger_close(&mut stream).await;
        }
        "/ipush.js" if matches!(head.method, Method::Get | Method::Head) => {
            shard.bump(&shard.stats.req_demo);
            let mut out = Vec::with_capacity(SDK_JS.len() + 200);
            write_response(
                &mut out,
                200,
                "text/javascript; charset=utf-8",
                &[],
                SDK_JS.as_bytes(),
                false,
            );
            let _ = stream.write_all(&out).await;
            super::linger_close(&mut stream).await;
        }
        _ => {
            shard.bump(&shard.stats.req_other);
            respond(stream, 404, "not found").await
        }
    }
}

/// Starts the stream here, or hands the socket to the uid's owner core.
async fn start(shard: Rc<Shard>, stream: TcpStream, opening: Opening) {
    let owner = shard.owner(&opening.uid);
    if owner == shard.id {
        let new = Box::new(NewStream { stream, opening });
        glommio::spawn_local(super::stream::run(shard, new)).detach();
        return;
    }
    // A duplicate fd crosses to the owner; this core's copy closes.
    // SAFETY: dup of a valid fd we own; the result is owned by the Handoff.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        shard.bump(&shard.stats.error);
        return respond(stream, 503, "server busy").await;
    }
    drop(stream);
    shard.bump(&shard.stats.handoff);
    shard
        .send_to(owner, ShardMsg::Handoff(Handoff::new(fd, opening)))
        .await;
}

/// Starts a stream handed over by another core.
pub fn adopt(shard: Rc<Shard>, mut h: Handoff) {
    let fd = h.take_fd();
    // SAFETY: the Handoff owned this fd and gave it up to us.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let Some(opening) = h.opening.take() else {
        return;
    };
    let new = Box::new(NewStream { stream, opening });
    glommio::spawn_local(super::stream::run(shard, new)).detach();
}

/// `POST /send?uid=U&password=P[&codec=msgpack]`: one client message in the body, for clients
/// whose stream is one-way (SSE). Acted on by the uid's core like a message on a stream.
async fn send(shard: Rc<Shard>, mut stream: TcpStream, head: RequestHead, leftover: Vec<u8>) {
    let res: Result<(), Refusal> = async {
        if head.method != Method::Post {
            return Err(bad(&shard, 405, "method not allowed"));
        }
        let uid = authenticate(&shard, &head)?;
        let codec = codec(&shard, &head)?;
        let body = read_body(&mut stream, &head, leftover, shard.cfg.max_message_bytes)
            .await
            .map_err(|(st, r)| bad(&shard, st, r))?;
        shard.bump(&shard.stats.recv_number);
        let b = &shard.stats.recv_bytes;
        b.set(b.get() + body.len() as u64);
        let msg = match codec {
            Codec::Json => crate::protocol::decode_client_message(&body),
            Codec::MsgPack => msgpack::decode_client_message(&body),
        }
        .map_err(|e| bad(&shard, 400, e.to_string()))?;
        let key = uid.clone();
        match shard.call_user(&key, Req::Client { uid, msg }).await {
            Rep::Err(e) => Err((500, e)),
            Rep::Unavailable(e) => Err((503, e)),
            _ => Ok(()),
        }
    }
    .await;
    match res {
        Ok(()) => {
            let mut out = Vec::with_capacity(200);
            write_response(
                &mut out,
                200,
                "text/json; charset=utf-8",
                &[],
                br#"{"result":"ok"}"#,
                false,
            );
            let _ = stream.write_all(&out).await;
            super::linger_close(&mut stream).await;
        }
        Err((status, reason)) => respond(stream, status, &reason).await,
    }
}
