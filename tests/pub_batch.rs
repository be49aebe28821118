//! `POST /pub/batch` and pipelined admin requests against a real server: answers in order,
//! bad lines and bad requests answered alone, channel lines, limits, bodies and requests split
//! across many TCP writes, users on both cores, and every acknowledged line kept over kill -9.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// POSTs `body` to /pub/batch; the status and, for a 200, its answer lines as JSON.
fn batch(s: &Server, body: &str) -> (u16, Vec<Value>) {
    let (st, b) = s
        .try_request("POST", "/pub/batch", body.as_bytes())
        .expect("batch request");
    (st, answer_lines(st, &b))
}

fn answer_lines(st: u16, body: &str) -> Vec<Value> {
    if st != 200 {
        return vec![serde_json::from_str(body).unwrap_or(Value::String(body.into()))];
    }
    assert!(body.is_empty() || body.ends_with('\n'), "{body:?}");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}")))
        .collect()
}

fn ok() -> Value {
    json!({"result":"ok","status":200})
}

fn err(status: u16, reason: &str) -> Value {
    json!({"error": reason, "status": status})
}

/// Bodies of `uid`'s stored messages, in seq order, checking the seqs count up from 1.
fn stored(s: &Server, uid: &str) -> Vec<String> {
    let msgs = s.offline(uid);
    for (k, m) in msgs.iter().enumerate() {
        assert_eq!(m["s"], k as u64 + 1, "{uid}: {msgs:?}");
    }
    msgs.iter()
        .map(|m| m["b"].as_str().unwrap().to_string())
        .collect()
}

fn line(to: &str, b: &str) -> String {
    format!("{}\n", json!({"to": to, "from": "op", "b": b}))
}

#[test]
fn answers_follow_the_lines_and_a_bad_line_answers_alone() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/sub?uid=bm&cid=bch").0, 200);
    let mut live = s.connect("ba");
    let body = [
        line("ba", "one"),
        line("", "x"),
        line("bb", "two"),
        "{not json\n".to_string(),
        "{\"channel\":\"bch\",\"from\":\"op\",\"b\":\"to all\",\"ttl\":60}\r\n".to_string(),
        line("ba", "three"),
        "{\"to\":\"ba\",\"from\":\"op\"}\n".to_string(),
        "{\"to\":\"ba\",\"from\":\"op\",\"b\":\"x\",\"ttl\":\"1\"}\n".to_string(),
        "{\"to\":\"ba\",\"channel\":\"bch\",\"from\":\"op\",\"b\":\"x\"}\n".to_string(),
        "{\"to\":\"ba\",\"from\":\"op\",\"b\":\"x\",\"idempotency_key\":\"no spaces\"}\n"
            .to_string(),
        "{\"to\":\"ba\",\"from\":\"op\",\"b\":\"four\",\"idempotency_key\":\"k:1\"}".to_string(),
    ]
    .concat();
    let (st, lines) = batch(&s, &body);
    assert_eq!(st, 200);
    assert_eq!(lines.len(), 11, "{lines:?}");
    for k in [0, 2, 4, 5, 10] {
        assert_eq!(lines[k], ok(), "line {k}");
    }
    assert_eq!(lines[1], err(400, "invalid to"));
    assert!(lines[3]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid line: "));
    assert_eq!(lines[3]["status"], 400);
    assert_eq!(lines[6], err(400, "missing b"));
    assert!(lines[7]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid line: "));
    assert_eq!(lines[8], err(400, "give either to or channel, not both"));
    assert!(lines[9]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid idempotency_key"));
    assert_eq!(lines[9]["status"], 400);
    assert_eq!(stored(&s, "ba"), ["one", "three", "four"]);
    assert_eq!(stored(&s, "bb"), ["two"]);
    assert_eq!(stored(&s, "bm"), ["to all"]);
    for (seq, b) in [(1, "one"), (2, "three"), (3, "four")] {
        let m = live.recv();
        assert_eq!(
            (m["s"].as_u64(), m["b"].as_str()),
            (Some(seq), Some(b)),
            "{m}"
        );
    }
    assert_eq!(
        s.stats()["bad_request_number"],
        6,
        "each refused line counts"
    );
    // A keyed line sent again (a retried batch) answers the first answer, publishes nothing.
    let again = "{\"to\":\"ba\",\"from\":\"op\",\"b\":\"four\",\"idempotency_key\":\"k:1\"}\n";
    let (st, lines) = batch(&s, &format!("{again}{}", line("ba", "five")));
    assert_eq!((st, lines.len()), (200, 2), "{lines:?}");
    assert_eq!(lines[0], ok());
    assert_eq!(stored(&s, "ba"), ["one", "three", "four", "five"]);
}

#[test]
fn limits_refuse_the_whole_batch_and_a_long_body_refuses_its_line() {
    let s = Server::start(&[
        "--max_batch_lines=3",
        "--max_batch_bytes=2048",
        "--max_message_bytes=64",
    ]);
    let four: String = (0..4).map(|k| line("lim", &format!("m{k}"))).collect();
    assert_eq!(
        batch(&s, &four),
        (413, vec![json!({"error":"batch over 3 lines"})])
    );
    let big = line("lim", &"x".repeat(2100));
    assert_eq!(
        batch(&s, &big),
        (413, vec![json!({"error":"body over 2048 bytes"})])
    );
    assert_eq!(batch(&s, ""), (400, vec![json!({"error":"empty batch"})]));
    assert!(
        stored(&s, "lim").is_empty(),
        "a refused batch publishes nothing"
    );
    let mixed = [
        line("lim", "a"),
        line("lim", &"y".repeat(65)),
        line("lim", "b"),
    ]
    .concat();
    let (st, lines) = batch(&s, &mixed);
    assert_eq!(st, 200);
    assert_eq!(lines, [ok(), err(413, "body over 64 bytes"), ok()]);
    assert_eq!(stored(&s, "lim"), ["a", "b"]);
    let (st, head, _) = raw_exchange(
        &format!("127.0.0.1:{}", s.admin_port),
        b"GET /pub/batch HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        WAIT,
    );
    assert_eq!(st, 405);
    assert_eq!(header_value(&head, "allow").as_deref(), Some("POST"));
}

#[test]
fn a_batch_to_users_on_both_cores_keeps_each_users_order() {
    let s = Server::start(&[]);
    let users: Vec<String> = (0..20).map(|u| format!("cu{u}")).collect();
    let body: String = (0..200)
        .map(|k| line(&users[k % 20], &format!("m{}", k / 20)))
        .collect();
    let (st, lines) = batch(&s, &body);
    assert_eq!(st, 200);
    assert!(lines.iter().all(|l| *l == ok()), "{lines:?}");
    let want: Vec<String> = (0..10).map(|k| format!("m{k}")).collect();
    for u in &users {
        assert_eq!(stored(&s, u), want, "{u}");
    }
    // Both cores took part: each stored some of the 200 messages.
    let (_, metrics) = s.try_request("GET", "/metrics", b"").unwrap();
    let per_core: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("ipush_stored{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(per_core.len(), 2, "{metrics}");
    assert!(per_core.iter().all(|&n| n > 0.0), "{per_core:?}");
    assert_eq!(per_core.iter().sum::<f64>(), 200.0);
}

#[test]
fn a_body_arriving_in_small_writes_is_served_whole() {
    let s = Server::start(&[]);
    let body: String = (0..30)
        .map(|k| line(&format!("fr{}", k % 3), &format!("f{k}")))
        .collect();
    let req = format!(
        "POST /pub/batch HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.set_nodelay(true).unwrap();
    write_in_pieces(&mut sock, req.as_bytes(), 7);
    let answers = read_responses(&mut sock, 1);
    assert_eq!(answers[0].0, 200);
    let lines = answer_lines(200, &answers[0].2);
    assert_eq!(lines.len(), 30);
    assert!(lines.iter().all(|l| *l == ok()));
    for u in 0..3 {
        let want: Vec<String> = (0..30)
            .filter(|k| k % 3 == u)
            .map(|k| format!("f{k}"))
            .collect();
        assert_eq!(stored(&s, &format!("fr{u}")), want);
    }
}

#[test]
fn every_acknowledged_line_is_there_after_kill_9() {
    let mut s = Server::start(&["--storage=embedded"]);
    let mut want: Vec<Vec<String>> = vec![Vec::new(); 30];
    let mut body = String::new();
    for k in 0..300 {
        if k % 50 == 7 {
            body.push_str("{\"to\":\"bad user\",\"from\":\"op\",\"b\":\"x\"}\n");
            continue;
        }
        let b = format!("d{k}");
        body.push_str(&line(&format!("dk{}", k % 30), &b));
        want[k % 30].push(b);
    }
    let (st, lines) = batch(&s, &body);
    assert_eq!(st, 200);
    assert_eq!(lines.len(), 300);
    assert_eq!(lines.iter().filter(|l| **l == ok()).count(), 294);
    s.kill9();
    s.restart(&["--storage=embedded"]);
    for (u, w) in want.iter().enumerate() {
        assert_eq!(&stored(&s, &format!("dk{u}")), w, "dk{u}");
    }
}

// ---- pipelining ----

fn pub_req(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn get_req(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Writes `bytes` in pieces of `n` bytes, each its own segment (TCP_NODELAY, a short pause).
fn write_in_pieces(sock: &mut TcpStream, bytes: &[u8], n: usize) {
    for piece in bytes.chunks(n) {
        sock.write_all(piece).unwrap();
        sock.flush().unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// Reads `n` responses (each with Content-Length, or HEAD-style with none expected when the
/// head says `Content-Length` of a HEAD request: the caller marks those by 0 body bytes).
fn read_responses(sock: &mut TcpStream, n: usize) -> Vec<(u16, String, String)> {
    read_responses_heads(sock, n, &[])
}

/// As `read_responses`; the answers at the indexes in `head_only` carry no body.
fn read_responses_heads(
    sock: &mut TcpStream,
    n: usize,
    head_only: &[usize],
) -> Vec<(u16, String, String)> {
    let end = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut tmp = [0u8; 65536];
    while out.len() < n {
        if let Some(he) = find(&buf, b"\r\n\r\n").map(|i| i + 4) {
            let head = String::from_utf8_lossy(&buf[..he]).to_string();
            let cl: usize = if head_only.contains(&out.len()) {
                0
            } else {
                header_value(&head, "content-length").map_or(0, |v| v.parse().unwrap())
            };
            if buf.len() >= he + cl {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[he..he + cl]).to_string();
                out.push((status, head, body));
                buf.drain(..he + cl);
                continue;
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} answers: {out:?}",
            out.len()
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.read(&mut tmp) {
            Ok(0) => panic!("closed after {} of {n} answers: {out:?}", out.len()),
            Ok(k) => buf.extend_from_slice(&tmp[..k]),
            Err(e) => panic!("read: {e} after {} of {n} answers", out.len()),
        }
    }
    out
}

/// The connection is closed by the server within the wait (nothing more to read).
fn closed(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut tmp = [0u8; 1024];
    matches!(sock.read(&mut tmp), Ok(0) | Err(_))
}

#[test]
fn pipelined_requests_are_answered_in_order_and_bad_ones_alone() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/sub?uid=pm&cid=pch").0, 200);
    let mut reqs = Vec::new();
    let mut want: Vec<(u16, Value)> = Vec::new();
    for k in 0..40 {
        reqs.push(pub_req(
            &format!("/pub?to=pu{}&from=op", k % 4),
            &format!("p{k}"),
        ));
        want.push((200, json!({"result":"ok"})));
        if k % 10 == 3 {
            reqs.push(pub_req("/pub?to=&from=op", "x"));
            want.push((400, json!({"error":"invalid to"})));
            reqs.push(pub_req("/pub?to=pu0&from=op&ttl=x", "x"));
            want.push((400, json!({"error":"invalid ttl"})));
            reqs.push(get_req("GET", "/pub?to=pu0&from=op"));
            want.push((405, json!({"error":"method not allowed"})));
            reqs.push(get_req("GET", "/nowhere"));
            want.push((404, json!({"error":"not found"})));
        }
    }
    // A read after the publishes before it sees them; a channel publish in the middle.
    reqs.push(get_req("GET", "/msg?uid=pu1"));
    want.push((200, Value::Null));
    reqs.push(pub_req("/pub?channel=pch&from=op", "all"));
    want.push((200, json!({"result":"ok"})));
    reqs.push(get_req("HEAD", "/health"));
    want.push((200, Value::Null));
    reqs.push(pub_req("/pub/batch", &line("pu2", "batched")));
    want.push((200, Value::Null));
    reqs.push(pub_req("/pub?to=pu3&from=op", "last"));
    want.push((200, json!({"result":"ok"})));
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.write_all(reqs.concat().as_bytes()).unwrap();
    let head_at = want.len() - 3;
    let got = read_responses_heads(&mut sock, want.len(), &[head_at]);
    for (k, ((st, _, body), (wst, wbody))) in got.iter().zip(&want).enumerate() {
        assert_eq!(st, wst, "answer {k}: {body}");
        if !wbody.is_null() {
            assert_eq!(
                &serde_json::from_str::<Value>(body).unwrap(),
                wbody,
                "answer {k}"
            );
        }
    }
    let listed: Value = serde_json::from_str(&got[head_at - 2].2).unwrap();
    assert_eq!(listed["result"].as_array().unwrap().len(), 10, "{listed}");
    assert_eq!(answer_lines(200, &got[head_at + 1].2), [ok()]);
    let p1: Vec<String> = (0..40)
        .filter(|k| k % 4 == 1)
        .map(|k| format!("p{k}"))
        .collect();
    assert_eq!(stored(&s, "pu1"), p1);
    let mut p2: Vec<String> = (0..40)
        .filter(|k| k % 4 == 2)
        .map(|k| format!("p{k}"))
        .collect();
    p2.push("batched".into());
    assert_eq!(stored(&s, "pu2"), p2);
    assert_eq!(stored(&s, "pm"), ["all"]);
    // The connection is still open and serves the next request.
    sock.write_all(get_req("GET", "/shard?uid=pu0").as_bytes())
        .unwrap();
    assert_eq!(read_responses(&mut sock, 1)[0].0, 200);
}

#[test]
fn a_pipelined_request_split_across_writes_is_answered_in_order() {
    let s = Server::start(&[]);
    let reqs: String = (0..12)
        .map(|k| pub_req(&format!("/pub?to=sp{}&from=op", k % 2), &format!("s{k}")))
        .collect();
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.set_nodelay(true).unwrap();
    // 13 bytes a write: heads and bodies cut everywhere, several requests per read too.
    write_in_pieces(&mut sock, reqs.as_bytes(), 13);
    let got = read_responses(&mut sock, 12);
    assert!(
        got.iter()
            .all(|r| r.0 == 200 && r.2 == r#"{"result":"ok"}"#),
        "{got:?}"
    );
    let even: Vec<String> = (0..12)
        .filter(|k| k % 2 == 0)
        .map(|k| format!("s{k}"))
        .collect();
    assert_eq!(stored(&s, "sp0"), even);
}

#[test]
fn a_malformed_head_in_a_pipeline_answers_after_the_others_and_closes() {
    let s = Server::start(&[]);
    let reqs = [
        pub_req("/pub?to=mh&from=op", "a"),
        pub_req("/pub?to=mh&from=op", "b"),
        "BAD\r\n\r\n".to_string(),
        pub_req("/pub?to=mh&from=op", "never"),
    ]
    .concat();
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.write_all(reqs.as_bytes()).unwrap();
    let got = read_responses(&mut sock, 3);
    assert_eq!([got[0].0, got[1].0, got[2].0], [200, 200, 400]);
    assert!(closed(&mut sock));
    assert_eq!(stored(&s, "mh"), ["a", "b"]);
    // `Connection: close` ends the pipeline after its own answer.
    let reqs = [
        pub_req("/pub?to=mc&from=op", "a")
            .replace("Host: t\r\n", "Host: t\r\nConnection: close\r\n"),
        pub_req("/pub?to=mc&from=op", "after close"),
    ]
    .concat();
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.write_all(reqs.as_bytes()).unwrap();
    assert_eq!(read_responses(&mut sock, 1)[0].0, 200);
    assert!(closed(&mut sock));
    assert_eq!(stored(&s, "mc"), ["a"]);
}
