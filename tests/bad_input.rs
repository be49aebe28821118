//! Bad input on the client and admin ports: only the offending stream / request fails, with
//! the documented status or final `{"error":...}` chunk, and the server keeps serving others.
mod common;
use common::*;

use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn bad_requests(s: &Server) -> u64 {
    s.stats()["bad_request_number"]
        .as_u64()
        .expect("bad_request_number")
}

/// Publishes `body` to `to` via admin and asserts it is accepted.
fn publish(s: &Server, to: &str, body: &str) {
    let (st, v) = s.post(&format!("/pub?to={to}&from=op"), body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"], "ok", "{v}");
}

/// Asserts `c` next gets a message of type 3 with body `body`.
fn expect_msg(c: &mut Client, body: &str) {
    let v = c
        .recv_non_hb(T)
        .expect("stream ended while waiting for a message");
    assert_eq!(v["y"], 3, "{v}");
    assert_eq!(v["b"], body, "{v}");
    assert_eq!(v["f"], "op", "{v}");
}

/// Asserts the stream ends with exactly the final `{"error":reason}` chunk, then `0\r\n\r\n`.
fn expect_error_end(c: &mut Client, reason: &str) {
    let v = c
        .recv_non_hb(T)
        .unwrap_or_else(|| panic!("stream ended without an error chunk (want {reason:?})"));
    assert_eq!(v, json!({ "error": reason }));
    let (rest, eof) = c.read_rest(T);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "0\r\n\r\n",
        "after the error chunk only the terminating chunk"
    );
    assert!(eof, "connection closed after the terminating chunk");
}

/// Sends `bad` on one stream while a bystander stays connected; checks the error ending, that
/// the bystander still gets a message, and that bad_request_number went up.
fn bad_stream_case(extra: &[&str], bad: &[u8], reason: &str) {
    let s = Server::start(extra);
    let mut watcher = s.connect("watcher");
    assert_eq!(watcher.status, 200);
    let before = bad_requests(&s);

    let mut bad_c = s.connect("baduser");
    assert_eq!(bad_c.status, 200);
    bad_c.send_raw(bad);
    expect_error_end(&mut bad_c, reason);

    publish(&s, "watcher", "still-here");
    expect_msg(&mut watcher, "still-here");
    // The watcher's stream is still fully usable in both directions.
    watcher.send(r#"{"y":0}"#);
    assert_eq!(watcher.recv(), json!({"y":0}));

    wait_until(T, "bad_request_number to increase", || {
        bad_requests(&s) > before
    });
    // A new stream for the same uid is accepted afterwards.
    let mut again = s.connect("baduser");
    assert_eq!(again.status, 200);
    again.send(r#"{"y":0}"#);
    assert_eq!(again.recv(), json!({"y":0}));
}

#[test]
fn bad_chunk_size_ends_only_that_stream() {
    bad_stream_case(&[], b"zz\r\n", "bad chunk size");
}

#[test]
fn invalid_json_ends_only_that_stream() {
    bad_stream_case(&[], b"5\r\n{nope\r\n", "invalid json");
}

#[test]
fn message_too_large_ends_only_that_stream() {
    bad_stream_case(
        &["--max_message_bytes=1024"],
        b"800\r\n",
        "message too large",
    );
}

#[test]
fn unknown_type_ends_only_that_stream() {
    bad_stream_case(&[], b"7\r\n{\"y\":9}\r\n", "unknown type");
}

#[test]
fn subscribe_without_channel_ends_only_that_stream() {
    bad_stream_case(&[], b"7\r\n{\"y\":1}\r\n", "missing c");
}

#[test]
fn all_bad_kinds_on_one_server_count_each() {
    let s = Server::start(&["--max_message_bytes=1024"]);
    let mut watcher = s.connect("watcher");
    let before = bad_requests(&s);
    let cases: [(&[u8], &str); 5] = [
        (b"zz\r\n", "bad chunk size"),
        (b"5\r\n{nope\r\n", "invalid json"),
        (b"800\r\n", "message too large"),
        (b"7\r\n{\"y\":9}\r\n", "unknown type"),
        (b"7\r\n{\"y\":1}\r\n", "missing c"),
    ];
    for (i, (bad, reason)) in cases.iter().enumerate() {
        let mut c = s.connect(&format!("bad{i}"));
        assert_eq!(c.status, 200);
        c.send_raw(bad);
        expect_error_end(&mut c, reason);
        let body = format!("after-{i}");
        publish(&s, "watcher", &body);
        expect_msg(&mut watcher, &body);
    }
    wait_until(T, "bad_request_number to grow by 5", || {
        bad_requests(&s) >= before + 5
    });
}

#[test]
fn huge_request_header_gets_431_and_server_still_serves() {
    let s = Server::start(&[]);
    let big = "a".repeat(200 * 1024);
    let req =
        format!("GET /connect?uid=big&password=pw HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let (st, head, _) = raw_exchange(&s.client_addr(), req.as_bytes(), T);
    assert_eq!(st, 431, "{head}");

    let mut c = s.connect("after431");
    assert_eq!(c.status, 200);
    publish(&s, "after431", "ok-after-431");
    expect_msg(&mut c, "ok-after-431");
}

#[test]
fn half_sent_head_does_not_block_others() {
    let s = Server::start(&[]);
    // Default head timeout is long: hold several half-sent heads open.
    let mut halves: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut h = TcpStream::connect(s.client_addr()).unwrap();
            h.write_all(b"GET /connect?uid=a&pass").unwrap();
            h
        })
        .collect();
    for i in 0..4 {
        let uid = format!("meanwhile{i}");
        let mut c = s.connect(&uid);
        assert_eq!(c.status, 200);
        publish(&s, &uid, "hello");
        expect_msg(&mut c, "hello");
    }
    // The half-sent connections got nothing yet (still waiting for the rest of their head).
    for h in &mut halves {
        h.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        match std::io::Read::read(h, &mut b) {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            Ok(n) => panic!("half-sent head got {n} bytes early"),
        }
    }
}

#[test]
fn half_sent_head_times_out_with_408() {
    let s = Server::start(&["--head_timeout_ms=500"]);
    let mut h = TcpStream::connect(s.client_addr()).unwrap();
    h.write_all(b"GET /connect?uid=a&pass").unwrap();
    let t0 = Instant::now();

    // Others are served while it hangs.
    let mut c = s.connect("other");
    assert_eq!(c.status, 200);
    publish(&s, "other", "x");
    expect_msg(&mut c, "x");

    let (st, head, _) = read_response(&mut h, T);
    assert_eq!(st, 408, "{head}");
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "408 came too early: {:?}",
        t0.elapsed()
    );
    // And the connection is closed.
    h.set_read_timeout(Some(T)).unwrap();
    let mut b = [0u8; 64];
    let n = std::io::Read::read(&mut h, &mut b).unwrap_or(0);
    assert_eq!(n, 0, "connection closed after 408");
}

/// With TCP_DEFER_ACCEPT (`--defer_accept_s`, default 1) a client that connects and sends
/// nothing is accepted about a second late, then timed out like any half-sent head; with it
/// off, right away.
#[test]
fn silent_client_still_times_out_with_408() {
    for (defer, earliest) in [("1", 1300), ("0", 300)] {
        let s = Server::start(&[
            "--head_timeout_ms=300",
            &format!("--defer_accept_s={defer}"),
        ]);
        let mut h = TcpStream::connect(s.client_addr()).unwrap();
        let t0 = Instant::now();
        let (st, head, _) = read_response(&mut h, T);
        assert_eq!(st, 408, "defer {defer}: {head}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(earliest - 100),
            "defer {defer}: 408 after {took:?}"
        );
        let c = s.connect("after-silent");
        assert_eq!(c.status, 200, "defer {defer}");
    }
}

fn client_req(s: &Server, req: &str) -> (u16, String, Value) {
    let (st, head, body) = raw_exchange(&s.client_addr(), req.as_bytes(), T);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (st, head, v)
}

#[test]
fn client_port_http_errors() {
    let s = Server::start(&[]);
    let (st, head, v) = client_req(&s, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(st, 404, "{head}");
    assert!(v["error"].is_string(), "404 body is a JSON error: {v}");

    let (st, head, _) = client_req(
        &s,
        "POST /connect?uid=a&password=x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(st, 405, "{head}");

    let (st, head, v) = client_req(
        &s,
        "GET /connect?uid=&password=x HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(st, 400, "{head}");
    assert_eq!(v, json!({"error":"invalid uid"}));

    let (st, head, v) = client_req(&s, "GET /connect?uid=a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(st, 401, "{head}");
    assert_eq!(v, json!({"error":"auth failed"}));

    // Still serving.
    let mut c = s.connect("fine");
    assert_eq!(c.status, 200);
    c.send(r#"{"y":0}"#);
    assert_eq!(c.recv(), json!({"y":0}));
}

#[test]
fn admin_http_errors() {
    let s = Server::start(&["--max_message_bytes=1024"]);
    let (st, v) = s.get("/nope");
    assert_eq!(st, 404, "{v}");
    assert!(v["error"].is_string(), "{v}");

    let (st, v) = s.get("/pub?to=a&from=op");
    assert_eq!(st, 405, "{v}");

    let (st, v) = s.post("/pub?to=a", "hi");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].is_string(), "{v}");

    let (st, v) = s.post("/pub?to=a&from=op&ttl=abc", "hi");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].is_string(), "{v}");

    let (st, v) = admin_raw(&s, "POST", "/pub?to=a&from=op", &[0xff, 0xfe, b'a', 0xc3]);
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].is_string(), "{v}");

    // None of the rejected publishes was stored.
    assert!(s.offline("a").is_empty());
    // And a good one still works.
    publish(&s, "a", "good");
    let msgs = s.offline("a");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["b"], "good");
}

#[test]
fn pipelined_chunks_in_one_write() {
    let s = Server::start(&[]);
    let mut c = s.connect("pipe");
    let one = "7\r\n{\"y\":0}\r\n";
    c.send_raw(one.repeat(5).as_bytes());
    for _ in 0..5 {
        assert_eq!(c.recv(), json!({"y":0}));
    }
    // The stream is still healthy.
    publish(&s, "pipe", "p");
    expect_msg(&mut c, "p");
}

#[test]
fn chunk_split_into_single_bytes() {
    let s = Server::start(&[]);
    let mut c = s.connect("drip");
    c.sock.set_nodelay(true).unwrap();
    let frame = b"7\r\n{\"y\":0}\r\n7\r\n{\"y\":0}\r\n";
    for b in frame {
        c.send_raw(&[*b]);
        c.sock.flush().unwrap();
        // Pacing only (so each byte is its own segment); no check depends on it.
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.recv(), json!({"y":0}));
    assert_eq!(c.recv(), json!({"y":0}));
    publish(&s, "drip", "d");
    expect_msg(&mut c, "d");
}

#[test]
fn admin_body_over_limit_with_expect_continue_gets_413() {
    let s = Server::start(&["--max_message_bytes=1024"]);
    // With Expect: 100-continue the body is never sent, so the reply cannot be lost.
    let (st, head, body) = raw_exchange(
        &format!("127.0.0.1:{}", s.admin_port),
        b"POST /pub?to=a&from=op HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\
          Expect: 100-continue\r\n\r\n",
        T,
    );
    assert_eq!(st, 413, "{head}");
    let v: Value = serde_json::from_slice(&body).expect("413 body is JSON");
    assert!(v["error"].is_string(), "{v}");
    assert!(s.offline("a").is_empty());
    assert_eq!(s.get("/health").0, 200);
}

#[test]
fn admin_body_over_limit_gets_413() {
    let s = Server::start(&["--max_message_bytes=1024"]);
    // The ordinary way (curl -d @file): head and body sent without waiting for an answer.
    let r = s.try_request("POST", "/pub?to=a&from=op", "x".repeat(2048).as_bytes());
    let (st, body) = r.unwrap_or_else(|e| panic!("413 reply lost: {e}"));
    assert_eq!(st, 413, "{body}");
    let v: Value = serde_json::from_str(&body).expect("413 body is JSON");
    assert!(v["error"].is_string(), "{v}");
    assert!(s.offline("a").is_empty());
}
