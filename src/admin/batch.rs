//! Many publishes at once: a round of pipelined requests (publishes to users grouped per
//! owner core, everything else one at a time, in order) and `POST /pub/batch` (one message a
//! NDJSON line, one answer a line). Runs on the accepting core's executor.

use std::future::Future;
use std::rc::Rc;

use serde::Deserialize;

use super::conn::{Framing, Req};
use super::{
    answer, count_outcome, method_is, parse_pub, publish_answer, route, target, Publish, Response,
    MAX_TTL,
};
use crate::http::head::{Method, RequestHead};
use crate::msg::{PubItem, Request};
use crate::protocol::valid_id;
use crate::router::Router;
use crate::shard::DEFAULT_TTL;

/// One request (or batch line) of a round, checked.
enum Step<A> {
    /// A publish to a user: runs with the other user publishes next to it, per owner core.
    User(PubItem),
    /// A channel publish, or a publish with an idempotency key: runs alone, after everything
    /// before it (a keyed one goes to the core that decides for its key).
    Alone(Request, Option<String>),
    /// Any other request: runs alone, after everything before it.
    Other(A),
    /// Refused while checking: answered without running.
    Answered(Response),
}

impl<A> Step<A> {
    fn of(p: Publish) -> Self {
        match p {
            Publish::User(item) if item.idempotency_key.is_none() => Step::User(item),
            Publish::User(item) => {
                let (req, key) = item.into_request();
                Step::Alone(req, key)
            }
            Publish::Channel(req, key) => Step::Alone(req, key),
        }
    }
}

/// Serves a round of pipelined requests; the answers are in request order.
pub(super) async fn serve_round(router: &Rc<Router>, reqs: Vec<Req>) -> Vec<(Response, Framing)> {
    let framing: Vec<Framing> = reqs
        .iter()
        .map(|r| Framing {
            keep_alive: r.head.keep_alive,
            head_only: r.head.method == Method::Head,
        })
        .collect();
    let answers = if reqs.len() == 1 {
        let r = reqs.into_iter().next().expect("one request");
        vec![route(router, &r.head, r.body).await]
    } else {
        let steps = reqs.into_iter().map(|r| pipelined(router, r)).collect();
        run_steps(router, steps, |r: Req| async move {
            route(router, &r.head, r.body).await
        })
        .await
    };
    answers.into_iter().zip(framing).collect()
}

/// A pipelined request as a step: `/pub` is checked here (as `route` would) so that
/// publishes to users can be grouped.
fn pipelined(router: &Router, r: Req) -> Step<Req> {
    if r.head.path != "/pub" {
        return Step::Other(r);
    }
    let shard = router.shard();
    shard.bump(&shard.stats().req_pub);
    match parse_pub(&r.head, r.body) {
        Ok(p) => Step::of(p),
        Err(resp) => {
            count_outcome(shard, resp.status);
            Step::Answered(resp)
        }
    }
}

/// Runs the steps: each run of user publishes as one grouped batch, the others alone in
/// order; returns one answer per step, in step order.
async fn run_steps<A, F, Fut>(
    router: &Rc<Router>,
    steps: Vec<Step<A>>,
    mut other: F,
) -> Vec<Response>
where
    F: FnMut(A) -> Fut,
    Fut: Future<Output = Response>,
{
    let mut out: Vec<Option<Response>> = (0..steps.len()).map(|_| None).collect();
    let mut run: Vec<(usize, PubItem)> = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::User(item) => run.push((i, item)),
            Step::Answered(r) => out[i] = Some(r),
            Step::Alone(req, key) => {
                flush(router, &mut run, &mut out).await;
                let r = publish_answer(router.publish(req, key).await);
                count_outcome(router.shard(), r.status);
                out[i] = Some(r);
            }
            Step::Other(a) => {
                flush(router, &mut run, &mut out).await;
                out[i] = Some(other(a).await);
            }
        }
    }
    flush(router, &mut run, &mut out).await;
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Response::err(500, "no answer")))
        .collect()
}

/// Publishes the pending run of user messages (grouped per owner by the router).
async fn flush(router: &Rc<Router>, run: &mut Vec<(usize, PubItem)>, out: &mut [Option<Response>]) {
    if run.is_empty() {
        return;
    }
    let (at, items): (Vec<usize>, Vec<PubItem>) = std::mem::take(run).into_iter().unzip();
    for (i, a) in at.into_iter().zip(router.publish_users(items).await) {
        let r = answer(a);
        count_outcome(router.shard(), r.status);
        out[i] = Some(r);
    }
}

/// `POST /pub/batch`: every line a message as `/pub` takes it; 200 with one answer a line.
pub(super) async fn publish_batch(
    router: &Rc<Router>,
    head: &RequestHead,
    body: &[u8],
) -> Result<Response, Response> {
    method_is(head, &[Method::Post])?;
    let cfg = router.shard().cfg();
    let lines = split_lines(body);
    if lines.is_empty() {
        return Err(Response::err(400, "empty batch"));
    }
    if lines.len() > cfg.max_batch_lines {
        let max = cfg.max_batch_lines;
        return Err(Response::err(413, format!("batch over {max} lines")));
    }
    let steps: Vec<Step<std::convert::Infallible>> = lines
        .iter()
        .map(|l| match parse_line(l, cfg.max_message_bytes) {
            Ok(p) => Step::of(p),
            Err(r) => {
                count_outcome(router.shard(), r.status);
                Step::Answered(r)
            }
        })
        .collect();
    let answers = run_steps(router, steps, |never| async move { match never {} }).await;
    let mut out = Vec::with_capacity(answers.len() * 32);
    for a in &answers {
        answer_line(&mut out, a);
    }
    Ok(Response {
        status: 200,
        content_type: "application/x-ndjson",
        body: out,
        headers: Vec::new(),
    })
}

/// The lines of an NDJSON body: split at `\n`, a trailing `\r` dropped, no line after a
/// final newline.
fn split_lines(body: &[u8]) -> Vec<&[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// One `/pub/batch` line as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    to: Option<String>,
    channel: Option<String>,
    from: Option<String>,
    ttl: Option<serde_json::Number>,
    b: Option<String>,
    idempotency_key: Option<String>,
}

/// Checks one line with `/pub`'s rules (and its errors).
fn parse_line(line: &[u8], max_body: usize) -> Result<Publish, Response> {
    let l: Line = serde_json::from_slice(line)
        .map_err(|e| Response::err(400, format!("invalid line: {e}")))?;
    let from = match l.from {
        None => return Err(Response::err(400, "missing from")),
        Some(f) if !valid_id(&f) => return Err(Response::err(400, "invalid from")),
        Some(f) => f,
    };
    let ttl = match l.ttl {
        None => DEFAULT_TTL,
        Some(t) => match t.as_u64() {
            Some(t) if t <= MAX_TTL => t,
            _ => return Err(Response::err(400, "invalid ttl")),
        },
    };
    let b = l.b.ok_or_else(|| Response::err(400, "missing b"))?;
    if b.len() > max_body {
        return Err(Response::err(413, format!("body over {max_body} bytes")));
    }
    target(l.to, l.channel, from, b, ttl, l.idempotency_key)
}

/// `r`'s JSON object with the status it would have had as a `/pub` answer, and a newline.
fn answer_line(out: &mut Vec<u8>, r: &Response) {
    let obj = r.body.strip_suffix(b"}").unwrap_or(&r.body);
    out.extend_from_slice(obj);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD_KEY: &str = "invalid idempotency_key: 1 to 128 characters of A-Z a-z 0-9 - _ . : ~";

    fn err(line: &str) -> (u16, String) {
        match parse_line(line.as_bytes(), 10) {
            Ok(_) => panic!("{line} accepted"),
            Err(r) => (r.status, String::from_utf8(r.body).unwrap()),
        }
    }

    #[test]
    fn lines_split_at_newlines() {
        assert!(split_lines(b"").is_empty());
        assert!(split_lines(b"\n").is_empty());
        assert_eq!(split_lines(b"\n\n"), [&b""[..], b""]);
        assert_eq!(split_lines(b"a\r\nb\n"), [&b"a"[..], b"b"]);
        assert_eq!(split_lines(b"a\n\nb"), [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn lines_are_checked_as_pub_checks_its_parameters() {
        let ok = parse_line(
            br#"{"to":"u1","from":"op","b":"hi","ttl":5,"idempotency_key":"a:1"}"#,
            10,
        );
        match ok {
            Ok(Publish::User(i)) => {
                assert_eq!((i.to.as_str(), i.body.as_str(), i.ttl), ("u1", "hi", 5));
                assert_eq!(i.idempotency_key.as_deref(), Some("a:1"));
            }
            _ => panic!("a good line refused"),
        }
        match parse_line(br#"{"channel":"c","from":"op","b":""}"#, 10) {
            Ok(Publish::Channel(Request::PubChannel { ttl, .. }, None)) => {
                assert_eq!(ttl, DEFAULT_TTL)
            }
            _ => panic!("a channel line refused"),
        }
        let cases = [
            (r#"{"to":"u","b":"x"}"#, 400, "missing from"),
            (r#"{"to":"u","from":"a b","b":"x"}"#, 400, "invalid from"),
            (
                r#"{"to":"u","from":"o","b":"x","ttl":-1}"#,
                400,
                "invalid ttl",
            ),
            (
                r#"{"to":"u","from":"o","b":"x","ttl":315360001}"#,
                400,
                "invalid ttl",
            ),
            (r#"{"to":"u","from":"o"}"#, 400, "missing b"),
            (
                r#"{"to":"u","from":"o","b":"12345678901"}"#,
                413,
                "body over 10 bytes",
            ),
            (r#"{"from":"o","b":"x"}"#, 400, "missing to or channel"),
            (
                r#"{"to":"u","channel":"c","from":"o","b":"x"}"#,
                400,
                "give either to or channel, not both",
            ),
            (r#"{"to":"","from":"o","b":"x"}"#, 400, "invalid to"),
            (
                r#"{"channel":"a\tb","from":"o","b":"x"}"#,
                400,
                "invalid channel",
            ),
            (
                r#"{"to":"u","from":"o","b":"x","idempotency_key":""}"#,
                400,
                BAD_KEY,
            ),
            (
                r#"{"to":"u","from":"o","b":"x","idempotency_key":"a/b"}"#,
                400,
                BAD_KEY,
            ),
        ];
        for (line, status, reason) in cases {
            assert_eq!(
                err(line),
                (status, format!("{{\"error\":\"{reason}\"}}")),
                "{line}"
            );
        }
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"to":"u","from":"o","b":"x","body":"y"}"#,
            r#"{"to":5}"#,
        ] {
            let (status, body) = err(bad);
            assert!(
                status == 400 && body.starts_with("{\"error\":\"invalid line: "),
                "{bad}: {body}"
            );
        }
    }

    #[test]
    fn answer_lines_carry_the_status() {
        let mut out = Vec::new();
        answer_line(&mut out, &Response::ok(serde_json::json!("ok")));
        answer_line(&mut out, &Response::err(503, "node n2 unavailable"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"result\":\"ok\",\"status\":200}\n{\"error\":\"node n2 unavailable\",\"status\":503}\n"
        );
    }
}
