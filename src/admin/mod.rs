//! The admin HTTP API (/pub, /sub, /unsub, /msg, /shard, /stats, /metrics, /health,
//! /disconnect, which also sends the move signal): every core accepts on the admin port and routes each request to the core that
//! owns its user. Runs on every core's executor.

mod batch;
mod conn;
pub mod metrics;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use serde_json::{json, Value};

use crate::http::head::{Method, RequestHead};
use crate::http::query::query_param;
use crate::http::response::{strip_body_for_head, write_response};
use crate::msg::{Answer, PubItem, Request};
use crate::protocol::valid_id;
use crate::router::Router;
use crate::shard::idem::check_key;
use crate::shard::{Shard, DEFAULT_TTL};
use crate::stats::Counters;

/// The live dashboard page (`GET /`), plain HTML and JS, no build step.
const DASHBOARD: &str = include_str!("../../web/dashboard.html");

/// Largest accepted ttl: ten years.
const MAX_TTL: u64 = 10 * 365 * 86_400;

pub async fn admin_loop(router: Rc<Router>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                // A round's answers go out as soon as they are ready: with Nagle, the answers
                // of a second round of pipelined requests waited for the client's delayed ACK
                // of the first (40 ms; a pipelining client with nothing else to send).
                let _ = stream.set_nodelay(true);
                glommio::spawn_local(conn::serve(router.clone(), stream)).detach();
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
        // A 503 is always temporary here (a node, the database or a slot in motion): say when
        // to try again.
        let headers = if status == 503 {
            vec![("Retry-After", "1".to_string())]
        } else {
            Vec::new()
        };
        Response {
            status,
            content_type: "text/json; charset=utf-8",
            body: serde_json::to_vec(&v).expect("json values serialize"),
            headers,
        }
    }

    pub fn ok(result: Value) -> Self {
        Self::json(200, json!({ "result": result }))
    }

    pub fn err(status: u16, reason: impl AsRef<str>) -> Self {
        Self::json(status, json!({ "error": reason.as_ref() }))
    }
}

/// Appends `r` to `out`; `head_only` (a `HEAD` request) leaves its body out but keeps its
/// length (RFC 9110 §9.3.2).
fn encode_reply(out: &mut Vec<u8>, r: &Response, keep_alive: bool, head_only: bool) {
    let at = out.len();
    let extra: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_response(out, r.status, r.content_type, &extra, &r.body, keep_alive);
    if head_only {
        strip_body_for_head(out, at);
    }
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

/// The `/stats` request counter of `path`.
fn request_counter<'a>(stats: &'a Counters, path: &str) -> &'a Cell<u64> {
    match path {
        "/pub" | "/pub/batch" => &stats.req_pub,
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
    }
}

/// Counts a failed answer (404s are not errors of the server or of a request's input).
fn count_outcome(shard: &Shard, status: u16) {
    if status >= 400 && status != 404 {
        let stats = shard.stats();
        shard.bump(if status >= 500 {
            &stats.error
        } else {
            &stats.bad_request
        });
    }
}

async fn route(router: &Rc<Router>, head: &RequestHead, body: Vec<u8>) -> Response {
    let shard = router.shard();
    shard.bump(request_counter(shard.stats(), &head.path));
    let res = match head.path.as_str() {
        "/pub" => publish(router, head, body).await,
        "/pub/batch" => batch::publish_batch(router, head, &body).await,
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
        "/drain" => drain(router, head),
        "/" => method_is(head, &[Method::Get, Method::Head]).map(|_| Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.as_bytes().to_vec(),
            headers: Vec::new(),
        }),
        _ => Err(Response::err(404, "not found")),
    };
    let reply = res.unwrap_or_else(|r| r);
    count_outcome(shard, reply.status);
    reply
}

/// `/drain`: a member of the dynamic cluster leaves it (as on SIGTERM), answered at once.
fn drain(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Post])?;
    if !router.request_leave() {
        return Err(Response::err(
            409,
            "drain needs the dynamic cluster (--storage=scylla --node=NAME, no --nodes)",
        ));
    }
    Ok(Response::json(202, json!({ "result": "leaving" })))
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
    if let Some(slots) = view.slots() {
        let members: Vec<Value> = view
            .members()
            .map(|(_, spec, state)| {
                json!({
                    "name": spec.name,
                    "state": state.as_str(),
                    "client": spec.client_addr(),
                })
            })
            .collect();
        v["members"] = json!(members);
        v["slots"] = json!(slots);
        v["slots_served"] = json!(view.served_slots());
    }
    match storage {
        Ok(()) => Response::ok(v),
        Err(e) => {
            v["storage"] = json!(e);
            Response::json(503, json!({ "result": v, "error": e }))
        }
    }
}

/// A `/pub` request checked: a message for one user (batchable unless it carries an
/// idempotency key) or for a channel (with its key, if any).
enum Publish {
    User(PubItem),
    Channel(Request, Option<String>),
}

/// Checks a `/pub` request's method, parameters and body.
fn parse_pub(head: &RequestHead, body: Vec<u8>) -> Result<Publish, Response> {
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
    target(to, channel, from, body, ttl, key)
}

/// The message for `to` or for `channel` (exactly one given, a valid id), as `/pub` and each
/// `/pub/batch` line check it.
fn target(
    to: Option<String>,
    channel: Option<String>,
    from: String,
    body: String,
    ttl: u64,
    idempotency_key: Option<String>,
) -> Result<Publish, Response> {
    if let Some(Err(why)) = idempotency_key.as_deref().map(check_key) {
        return Err(Response::err(400, why));
    }
    match (to, channel) {
        (Some(_), Some(_)) => Err(Response::err(400, "give either to or channel, not both")),
        (None, None) => Err(Response::err(400, "missing to or channel")),
        (Some(to), None) if valid_id(&to) => Ok(Publish::User(PubItem {
            to,
            from,
            body,
            ttl,
            idempotency_key,
        })),
        (Some(_), None) => Err(Response::err(400, "invalid to")),
        (None, Some(channel)) if valid_id(&channel) => Ok(Publish::Channel(
            Request::PubChannel {
                channel,
                from,
                body,
                ttl,
            },
            idempotency_key,
        )),
        (None, Some(_)) => Err(Response::err(400, "invalid channel")),
    }
}

async fn publish(
    router: &Rc<Router>,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<Response, Response> {
    let (req, key) = match parse_pub(head, body)? {
        Publish::User(item) => item.into_request(),
        Publish::Channel(req, key) => (req, key),
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

/// `POST /disconnect?uid=U[&location=ORIGIN]`: ends U's stream with `{"error":"disconnected"}`,
/// or, with `location`, with the move signal sending its client to `ORIGIN/connect?uid=U` (an
/// operator moving users off a node; the cluster does the same through `Shard::move_streams`).
async fn disconnect(router: &Rc<Router>, head: &RequestHead) -> Result<Response, Response> {
    method_is(head, &[Method::Post])?;
    let uid = id_param(head, "uid")?;
    let location = match opt_param(head, "location")? {
        None => None,
        Some(origin) => Some(
            crate::protocol::move_location(&origin, &uid).ok_or_else(|| {
                Response::err(
                    400,
                    "invalid location (an origin: http://HOST:PORT or https://HOST:PORT)",
                )
            })?,
        ),
    };
    let key = uid.clone();
    match router
        .call_user(&key, Request::Disconnect { uid, location })
        .await
    {
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
