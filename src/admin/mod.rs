//! The admin HTTP API (/pub, /sub, /unsub, /msg, /shard, /stats, /metrics, /health,
//! /disconnect): every core accepts on the admin port and routes each request to the core that
//! owns its user. Runs on every core's executor.

pub mod metrics;

use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use serde_json::{json, Value};

use crate::http::head::{Method, RequestHead, MAX_HEAD_BYTES};
use crate::http::query::query_param;
use crate::http::response::write_response;
use crate::protocol::valid_id;
use crate::shard::msg::{Rep, Req};
use crate::shard::{Shard, DEFAULT_TTL};
use crate::storage::Storage;
use crate::transport::{read_head, HeadRead};

/// The live dashboard page (`GET /`), plain HTML and JS, no build step.
const DASHBOARD: &str = include_str!("../../web/dashboard.html");

/// An idle keep-alive admin connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Largest accepted ttl: ten years.
const MAX_TTL: u64 = 10 * 365 * 86_400;

pub async fn admin_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on admin port failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        };
    }
}

/// A response before it is written.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: Value) -> Self {
        Reply {
            status,
            content_type: "text/json; charset=utf-8",
            body: serde_json::to_vec(&v).expect("json values serialize"),
        }
    }

    pub fn ok(result: Value) -> Self {
        Self::json(200, json!({ "result": result }))
    }

    pub fn err(status: u16, reason: impl AsRef<str>) -> Self {
        Self::json(status, json!({ "error": reason.as_ref() }))
    }
}

async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let max_body = shard.cfg.max_message_bytes;
    loop {
        let first = buf.is_empty();
        let limit = if first {
            IDLE
        } else {
            Duration::from_millis(shard.cfg.head_timeout_ms)
        };
        let read = glommio::timer::timeout(limit, async {
            Ok(read_head(&mut stream, &mut buf, MAX_HEAD_BYTES).await)
        })
        .await;
        let (head, mut rest) = match read {
            Ok(HeadRead::Head(h, rest)) => (h, rest),
            Ok(HeadRead::Bad(e)) => {
                shard.bump(&shard.stats.bad_request);
                write_reply(&mut stream, Reply::err(e.status(), e.reason()), false).await;
                crate::transport::linger_close(&mut stream).await;
                return;
            }
            Ok(HeadRead::Closed) | Ok(HeadRead::Io(_)) | Err(_) => return,
        };
        // Pipelined bytes beyond this request's body stay for the next one.
        let len = head.content_length.unwrap_or(0);
        if rest.len() > len {
            buf = rest.split_off(len);
        }
        let body = match crate::transport::read_body(&mut stream, &head, rest, max_body).await {
            Ok(b) => b,
            Err((status, reason)) => {
                shard.bump(&shard.stats.bad_request);
                write_reply(&mut stream, Reply::err(status, reason), false).await;
                crate::transport::linger_close(&mut stream).await;
                return;
            }
        };
        let reply = route(&shard, &head, body).await;
        if !write_reply(&mut stream, reply, head.keep_alive).await || !head.keep_alive {
            return;
        }
    }
}

async fn write_reply(stream: &mut TcpStream, r: Reply, keep_alive: bool) -> bool {
    let mut out = Vec::with_capacity(r.body.len() + 200);
    write_response(&mut out, r.status, r.content_type, &[], &r.body, keep_alive);
    stream.write_all(&out).await.is_ok()
}

/// A query parameter that must be a valid uid or channel id.
fn id_param(head: &RequestHead, key: &str) -> Result<String, Reply> {
    match query_param(&head.query, key) {
        Ok(Some(v)) if valid_id(&v) => Ok(v),
        Ok(Some(_)) => Err(Reply::err(400, format!("invalid {key}"))),
        Ok(None) => Err(Reply::err(400, format!("missing {key}"))),
        Err(_) => Err(Reply::err(400, "invalid query string")),
    }
}

fn opt_param(head: &RequestHead, key: &str) -> Result<Option<String>, Reply> {
    query_param(&head.query, key).map_err(|_| Reply::err(400, "invalid query string"))
}

fn method_is(head: &RequestHead, allowed: &[Method]) -> Result<(), Reply> {
    if allowed.contains(&head.method) {
        Ok(())
    } else {
        Err(Reply::err(405, "method not allowed"))
    }
}

/// The answer of an owner core as a reply.
fn answer(rep: Rep) -> Reply {
    match rep {
        Rep::Err(e) => Reply::err(500, e),
        Rep::Unavailable(e) => Reply::err(503, e),
        Rep::Msgs(list) => Reply::ok(json!(list)),
        _ => Reply::ok(json!("ok")),
    }
}

async fn route(shard: &Rc<Shard>, head: &RequestHead, body: Vec<u8>) -> Reply {
    let stats = &shard.stats;
    let counter = match head.path.as_str() {
        "/pub" => &stats.req_pub,
        "/sub" => &stats.req_sub,
        "/unsub" => &stats.req_unsub,
        "/msg" => &stats.req_msg,
        "/shard" => &stats.req_shard,
        "/stats" => &stats.req_stats,
        "/metrics" => &stats.req_metrics,
        "/health" => &stats.req_health,
        "/disconnect" => &stats.req_disconnect,
        "/" => &stats.req_dashboard,
        _ => &stats.req_other,
    };
    shard.bump(counter);
    let res = match head.path.as_str() {
        "/pub" => publish(shard, head, body).await,
        "/sub" | "/unsub" => subscription(shard, head).await,
        "/msg" => offline(shard, head).await,
        "/shard" => where_is(shard, head),
        "/stats" => stats_reply(shard, head).await,
        "/metrics" => metrics_reply(shard, head).await,
        "/health" => match method_is(head, &[Method::Get, Method::Head]) {
            Err(r) => Err(r),
            Ok(()) => Ok(health(shard).await),
        },
        "/disconnect" => disconnect(shard, head).await,
        "/" => method_is(head, &[Method::Get, Method::Head]).map(|_| Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.as_bytes().to_vec(),
        }),
        _ => Err(Reply::err(404, "not found")),
    };
    let reply = res.unwrap_or_else(|r| r);
    if reply.status >= 400 && reply.status != 404 {
        shard.bump(if reply.status >= 500 {
            &stats.error
        } else {
            &stats.bad_request
        });
    }
    reply
}

/// `/health`: 200 with `status: ok` while this core's storage answers, else 503 with
/// `status: storage unavailable` and the error (same body otherwise).
async fn health(shard: &Rc<Shard>) -> Reply {
    let mut peers = serde_json::Map::new();
    if let Some(bus) = shard.bus() {
        for n in shard.members.peers() {
            let state = if bus.state.is_up(n) { "up" } else { "down" };
            peers.insert(shard.node_name(n).to_string(), json!(state));
        }
    }
    let storage = shard.store.check().await;
    let mut v = json!({
        "status": if storage.is_ok() { "ok" } else { "storage unavailable" },
        "cores": shard.cores,
        "uptime_s": shard.uptime_secs(),
        "node": shard.node_name(shard.members.me()),
        "peers": peers,
    });
    match storage {
        Ok(()) => Reply::ok(v),
        Err(e) => {
            v["storage"] = json!(e.to_string());
            Reply::json(503, json!({ "result": v, "error": e.to_string() }))
        }
    }
}

async fn publish(shard: &Rc<Shard>, head: &RequestHead, body: Vec<u8>) -> Result<Reply, Reply> {
    method_is(head, &[Method::Post])?;
    let from = id_param(head, "from")?;
    let ttl = match opt_param(head, "ttl")? {
        None => DEFAULT_TTL,
        Some(t) => match t.parse::<u64>() {
            Ok(t) if t <= MAX_TTL => t,
            _ => return Err(Reply::err(400, "invalid ttl")),
        },
    };
    let body = String::from_utf8(body).map_err(|_| Reply::err(400, "body must be UTF-8"))?;
    let to = opt_param(head, "to")?;
    let channel = opt_param(head, "channel")?;
    match (to, channel) {
        (Some(_), Some(_)) => Err(Reply::err(400, "give either to or channel, not both")),
        (None, None) => Err(Reply::err(400, "missing to or channel")),
        (Some(to), None) => {
            if !valid_id(&to) {
                return Err(Reply::err(400, "invalid to"));
            }
            let key = to.clone();
            let req = Req::PubUser {
                to,
                from,
                body,
                ttl,
            };
            Ok(answer(shard.call_user(&key, req).await))
        }
        (None, Some(channel)) => {
            if !valid_id(&channel) {
                return Err(Reply::err(400, "invalid channel"));
            }
            let req = Req::PubChannel {
                channel,
                from,
                body,
                ttl,
            };
            // Every core of every node delivers to its own members; answer once all have
            // stored theirs.
            Ok(answer(shard.publish_channel_cluster(req).await))
        }
    }
}

async fn subscription(shard: &Rc<Shard>, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Get, Method::Post])?;
    let uid = id_param(head, "uid")?;
    let cid = id_param(head, "cid")?;
    let key = uid.clone();
    let req = if head.path == "/sub" {
        Req::Sub { uid, cid }
    } else {
        Req::Unsub { uid, cid }
    };
    Ok(answer(shard.call_user(&key, req).await))
}

async fn offline(shard: &Rc<Shard>, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Get])?;
    let uid = id_param(head, "uid")?;
    let key = uid.clone();
    Ok(answer(shard.call_user(&key, Req::Msg { uid }).await))
}

fn where_is(shard: &Shard, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Get])?;
    let uid = id_param(head, "uid")?;
    let node = shard.members.owner(&uid);
    let addr = if shard.members.is_cluster() {
        shard.members.node(node).client_addr()
    } else {
        shard.cfg.advertise_addr()
    };
    Ok(Reply::ok(json!(addr)))
}

async fn disconnect(shard: &Rc<Shard>, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Post])?;
    let uid = id_param(head, "uid")?;
    let key = uid.clone();
    match shard.call_user(&key, Req::Disconnect { uid }).await {
        Rep::Found(true) => Ok(Reply::ok(json!("ok"))),
        Rep::Found(false) => Err(Reply::err(404, "user not connected")),
        other => Ok(answer(other)),
    }
}

async fn stats_reply(shard: &Rc<Shard>, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Get])?;
    let (per_core, rates) = shard.gather_stats().await;
    Ok(Reply::ok(metrics::stats_json(shard, &per_core, &rates)))
}

async fn metrics_reply(shard: &Rc<Shard>, head: &RequestHead) -> Result<Reply, Reply> {
    method_is(head, &[Method::Get])?;
    let (per_core, rates) = shard.gather_stats().await;
    Ok(Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: metrics::prometheus(&per_core, &rates, &metrics::bus_lines(shard)).into_bytes(),
    })
}
