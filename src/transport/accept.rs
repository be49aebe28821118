//! The client port: accepts, reads the request head (bounded in size and time), authenticates,
//! and starts the stream on the core that owns the uid; runs on every core's executor.

use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::stream::NewStream;
use super::{read_head, HeadRead};
use crate::http::head::{Method, MAX_HEAD_BYTES};
use crate::http::query::query_param;
use crate::http::response::{write_error, write_response};
use crate::protocol::valid_id;
use crate::shard::msg::{Handoff, ShardMsg};
use crate::shard::Shard;

/// The demo client page (`GET /demo`), plain HTML and JS, no build step.
const DEMO: &str = include_str!("../../web/demo.html");

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
    if head.path == "/demo" && matches!(head.method, Method::Get | Method::Head) {
        shard.bump(&shard.stats.req_demo);
        let mut out = Vec::with_capacity(DEMO.len() + 200);
        write_response(&mut out, 200, "text/html; charset=utf-8", &[], DEMO.as_bytes(), false);
        let _ = stream.write_all(&out).await;
        super::linger_close(&mut stream).await;
        return;
    }
    if head.path != "/connect" {
        shard.bump(&shard.stats.req_other);
        return respond(stream, 404, "not found").await;
    }
    shard.bump(&shard.stats.req_connect);
    if head.method != Method::Get {
        shard.bump(&shard.stats.bad_request);
        return respond(stream, 405, "method not allowed").await;
    }
    if head.upgrade_websocket {
        return respond(stream, 501, "websocket transport not available yet").await;
    }
    let uid = match query_param(&head.query, "uid") {
        Ok(Some(u)) if valid_id(&u) => u,
        _ => {
            shard.bump(&shard.stats.bad_request);
            return respond(stream, 400, "invalid uid").await;
        }
    };
    let password = match query_param(&head.query, "password") {
        Ok(p) => p.unwrap_or_default(),
        Err(_) => {
            shard.bump(&shard.stats.bad_request);
            return respond(stream, 400, "invalid password").await;
        }
    };
    if let Err(e) = shard.auth.check(&uid, &password) {
        tracing::debug!(%uid, error = %e, "auth failed");
        shard.bump(&shard.stats.auth_fail);
        return respond(stream, 401, "auth failed").await;
    }
    let owner = shard.owner(&uid);
    if owner == shard.id {
        let new = Box::new(NewStream {
            stream,
            uid,
            leftover,
        });
        glommio::spawn_local(super::stream::run(shard, new)).detach();
        return;
    }
    // Hand the socket to its owner: a duplicate fd crosses, this core's copy closes.
    // SAFETY: dup of a valid fd we own; the result is owned by the Handoff.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        shard.bump(&shard.stats.error);
        return respond(stream, 503, "server busy").await;
    }
    drop(stream);
    shard.bump(&shard.stats.handoff);
    shard
        .send_to(owner, ShardMsg::Handoff(Handoff::new(fd, uid, leftover)))
        .await;
}

/// Starts a stream handed over by another core.
pub fn adopt(shard: Rc<Shard>, mut h: Handoff) {
    let fd = h.take_fd();
    // SAFETY: the Handoff owned this fd and gave it up to us.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let new = Box::new(NewStream {
        stream,
        uid: std::mem::take(&mut h.uid),
        leftover: std::mem::take(&mut h.leftover),
    });
    glommio::spawn_local(super::stream::run(shard, new)).detach();
}
