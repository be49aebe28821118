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
use crate::http::response::{strip_body_for_head, write_response};
use crate::msg::{Answer, Request};
use crate::protocol::valid_id;
use crate::router::Router;
use crate::shard::idem::check_key;
use crate::shard::DEFAULT_TTL;
use crate::transport::{read_head, HeadRead};

/// The live dashboard page (`GET /`), plain HTML and JS, no build step.
const DASHBOARD: &str = include_str!("../../web/dashboard.html");

/// An idle keep-alive admin connection is closed after this.
const IDLE: Duration = Duration::from_secs(60);
/// Largest accepted ttl: ten years.
const MAX_TTL: u64 = 10 * 365 * 86_400;

pub async fn admin_loop(router: Rc<Router>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(router.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on admin port failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        };
    }
}

/// A response before it is written.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers: `Allow` of a 405 (RFC 9110 §15.5.6), `Ipush-Seq` and
    /// `Idempotent-Replayed` of a publish.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    fn json(status: u16, v: Value) -> Self {
        Response {
            status,
            content_type: "text/json; charset=utf-8",
            body: serde_json::to_vec(&v).expect("json values serialize"),
            headers: Vec::new(),
        }
    }

    pub fn ok(result: Value) -> Self {
        Self::json(200, json!({ "result": result }))
    }

    pub fn err(status: u16, reason: impl AsRef<str>) -> Self {
        Self::json(status, json!({ "error": reason.as_ref() }))
    }
}

async fn serve(router: Rc<Router>, mut stream: TcpStream) {
    let shard = router.shard();
    let mut buf = Vec::new();
    let max_body = shard.cfg().max_message_bytes;
    loop {
        let first = buf.is_empty();
        let limit = if first {
            IDLE
        } else {
            Duration::from_millis(shard.cfg().head_timeout_ms)
        };
        let read = glommio::timer::timeout(limit, async {
            Ok(read_head(&mut stream, &mut buf, MAX_HEAD_BYTES).await)
        })
        .await;
        let (head, mut rest) = match read {
            Ok(HeadRead::Head(h, rest)) => (h, rest),
            Ok(HeadRead::Bad(e)) => {
                shard.bump(&shard.stats().bad_request);
                write_reply(
                    &mut stream,
                    Response::err(e.status(), e.reason()),
                    false,
                    false,
                )
                .await;
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
                shard.bump(&shard.stats().bad_request);
                write_reply(&mut stream, Response::err(status, reason), false, false).await;
                crate::transport::linger_close(&mut stream).await;
                return;
            }
        };
        let reply = route(&router, &head, body).await;
        let head_only = head.method == Method::Head;
        if !write_reply(&mut stream, reply, head.keep_alive, head_only).await || !head.keep_alive {
            return;
        }
    }
}

/// Writes `r`; `head_only` (a `HEAD` request) leaves its body out but keeps its length
/// (RFC 9110 §9.3.2).
async fn write_reply(
    stream: &mut TcpStream,
    r: Response,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let mut out = Vec::with_capacity(r.body.len() + 200);
    let extra: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_response(
        &mut out,
        r.status,
        r.content_type,
        &extra,
        &r.body,
        keep_alive,
    );
    if head_only {
        strip_body_for_head(&mut out, 0);
    }
    stream.write_all(&out).await.is_ok()
}

/// A query parameter that must be a valid uid or channel id.
fn id_param(head: &RequestHead, key: &str) -> Result<String, Response> {
    match query_param(&head.query, key) {
        Ok(Some(v)) if valid_id(&v) => Ok(v),
        Ok(Some(_)) => Err(Response::err(400, format!("invalid {key}"))),
        Ok(None) => Err(Response::err(400, format!("missing {key}"))),
        Err(_) => Err(Response::err(400, "invalid query string")),
    }
}

fn opt_param(head: &RequestHead, key: &str) -> Result<Option<String>, Response> {
    query_param(&head.query, key).map_err(|_| Response::err(400, "invalid query string"))
}

fn method_is(head: &RequestHead, allowed: &[Method]) -> Result<(), Response> {
    if allowed.contains(&head.method) {
        Ok(())
    } else {
        let mut r = Response::err(405, "method not allowed");
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        r.headers.push(("Allow", names.join(", ")));
        Err(r)
    }
}

/// The answer of an owner core as a reply.
fn answer(a: Answer) -> Response {
    match a {
        Answer::Err(e) => Response::err(500, e),
        Answer::Unavailable(e) => Response::err(503, e),
        Answer::Refused(status, e) => Response::err(status, e),
        Answer::Msgs(list) => Response::ok(json!(list)),
        _ => Response::ok(json!("ok")),
    }
}

/// A publish's answer: `{"result":"ok"}`, with the seq a unicast message got in `Ipush-Seq`,
/// and `Idempotent-Replayed: true` when it is the first answer of an earlier publish with
/// the same idempotency key (nothing was published this time).
fn publish_answer(a: Answer) -> Response {
    let (a, replayed) = match a {
        Answer::Replayed(first) => (*first, true),
        a => (a, false),
    };
    let seq = match a {
        Answer::Seq(Some(s)) => Some(s),
        _ => None,
    };
    let mut r = answer(a);
    if let Some(s) = seq {
        r.headers.push(("Ipush-Seq", s.to_string()));
    }
    if replayed {
        r.headers.push(("Idempotent-Replayed", "true".into()));
    }
    r
}

async fn route(router: &Rc<Router>, head: &RequestHead, body: Vec<u8>) -> Response {
    let shard = router.shard();
    let stats = shard.stats();
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
        "/pub" => publish(router, head, body).await,
        "/sub" | "/unsub" => subscription(router, head).await,
        "/msg" => offline(router, head).await,
        "/shard" => where_is(router, head),
        "/stats" => stats_reply(router, head).await,
        "/metrics" => metrics_reply(router, head).await,
        "/health" => match method_is(head, &[Method::Get, Method::Head]) {
            Err(r) => Err(r),
            Ok(()) => Ok(health(router).await),
        },
        "/disconnect" => disconnect(router, head).await,
        "/" => method_is(head, &[Method::Get, Method::Head]).map(|_| Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.as_bytes().to_vec(),
            headers: Vec::new(),
        }),
        _ => Err(Response::err(404, "not found")),
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

/// `/health`: this node and the state of every peer on the bus; 200 with `status: ok` while
/// every core's store answers and takes writes, else 503 with `status: storage unavailable`
/// and the first failing core's error (load balancers take the node out meanwhile).
async fn health(router: &Rc<Router>) -> Response {
    let view = router.view();
    let mut peers = serde_json::Map::new();
    if let Some(bus) = router.bus() {
        for n in view.peers() {
            let state = if bus.state.is_up(n) { "up" } else { "down" };
            peers.insert(view.node(n).name.clone(), json!(state));
        }
    }
    let storage = router.check_stores().await;
    let mut v = json!({
        "status": if storage.is_ok() { "ok" } else { "storage unavailable" },
        "cores": router.cores(),
        "uptime_s": router.shard().uptime_secs(),
        "node": view.me_name(),
        "peers": peers,
    });
    match storage {
        Ok(()) => Response::ok(v),
        Err(e) => {
            v["storage"] = json!(e);
            Response::json(503, json!({ "result": v, "error": e }))
        }
    }
}

async fn publish(
    router: &Rc<Router>,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<Response, Response> {
    method_is(head, &[Method::Post])?;
    let from = id_param(head, "from")?;
    let ttl = match opt_param(head, "ttl")? {
        None => DEFAULT_TTL,
        Some(t) => match t.parse::<u64>() {
            Ok(t) if t <= MAX_TTL => t,
            _ => return Err(Response::err(400, "invalid ttl")),
        },
    };
    let body = String::from_utf8(body).map_err(|_| Response::err(400, "body must be UTF-8"))?;
    let to = opt_param(head, "to")?;
    let channel = opt_param(head, "channel")?;
    let key = opt_param(head, "idempotency_key")?;
    if let Some(Err(why)) = key.as_deref().map(check_key) {
        return Err(Response::err(400, why));
    }
    let req = match (to, channel) {
        (Some(_), Some(_)) => {
            return Err(Response::err(400, "give either to or channel, not both"))
        }
        (None, None) => return Err(Response::err(400, "missing to or channel")),
        (Some(to), None) if !valid_id(&to) => return Err(Response::err(400, "invalid to")),
        (None, Some(c)) if !valid_id(&c) => return Err(Response::err(400, "invalid channel")),
        (Some(to), None) => Request::PubUser {
            to,
            from,
            body,
            ttl,
        },
        (None, Some(channel)) => Request::PubChannel {
            channel,
            from,
            body,
            ttl,
        },
    };
    // A channel message: every core of every node delivers to its own members, answered once
    // all have stored theirs.
    Ok(publish_answer(router.publish(req, key).await))
}

async fn subscription(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Get, Method::Post])?;
    let uid = id_param(head, "uid")?;
    let cid = id_param(head, "cid")?;
    let key = uid.clone();
    let req = if head.path == "/sub" {
        Request::Sub { uid, cid }
    } else {
        Request::Unsub { uid, cid }
    };
    Ok(answer(router.call_user(&key, req).await))
}

async fn offline(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Get])?;
    let uid = id_param(head, "uid")?;
    let key = uid.clone();
    Ok(answer(router.call_user(&key, Request::Msg { uid }).await))
}

fn where_is(router: &Router, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Get])?;
    let uid = id_param(head, "uid")?;
    let view = router.view();
    let addr = if view.is_cluster() {
        view.node(view.locate(&uid).node).client_addr()
    } else {
        router.shard().cfg().advertise_addr()
    };
    Ok(Response::ok(json!(addr)))
}

async fn disconnect(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Post])?;
    let uid = id_param(head, "uid")?;
    let key = uid.clone();
    match router.call_user(&key, Request::Disconnect { uid }).await {
        Answer::Found(true) => Ok(Response::ok(json!("ok"))),
        Answer::Found(false) => Err(Response::err(404, "user not connected")),
        other => Ok(answer(other)),
    }
}

async fn stats_reply(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Get])?;
    let (per_core, rates) = router.gather_stats().await;
    Ok(Response::ok(metrics::stats_json(
        router.shard(),
        &per_core,
        &rates,
    )))
}

async fn metrics_reply(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Get])?;
    let (per_core, rates) = router.gather_stats().await;
    let mut extra = metrics::latency_lines(&router.gather_latency().await);
    extra.push_str(&metrics::bus_lines(router));
    Ok(Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: metrics::prometheus(&per_core, &rates, &extra).into_bytes(),
        headers: Vec::new(),
    })
}
