//! Admin port HTTP details the OpenAPI description (docs/admin-api.yaml) states: a HEAD answer
//! is the GET answer's head with no body, and a 405 says in `Allow` what the endpoint takes.

mod common;
mod docs_support;

use docs_support::{header, Server, LIMIT};
use std::io::{Read, Write};
use std::net::TcpStream;

/// Sends `reqs` on one connection and returns everything read until the server closes (the
/// last request says `Connection: close`).
fn pipeline(port: u16, reqs: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(reqs.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8(out).expect("utf-8")
}

fn content_length(head: &str) -> Option<usize> {
    header(&format!("{head}\r\n"), "content-length").and_then(|v| v.parse().ok())
}

#[test]
fn head_has_no_body_and_keeps_the_connection_in_step() {
    let srv = Server::start(&[]);
    let page = pipeline(
        srv.admin_port,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (page_head, page_body) = page.split_once("\r\n\r\n").expect("GET head");
    assert_eq!(content_length(page_head), Some(page_body.len()));
    for path in ["/health", "/"] {
        // HEAD, then GET on the same connection: the GET's answer must start right after the
        // HEAD's head (a body there would be read as the start of the next response).
        let both = pipeline(
            srv.admin_port,
            &format!(
                "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
        );
        let (head, rest) = both.split_once("\r\n\r\n").expect("HEAD head");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{path}: {head}");
        let len = content_length(head).expect("HEAD keeps the GET's Content-Length");
        if path == "/" {
            assert_eq!(len, page_body.len());
        }
        assert!(
            rest.starts_with("HTTP/1.1 200 OK"),
            "{path}: HEAD sent a body: {:?}",
            &rest[..rest.len().min(80)]
        );
    }
    // HEAD of an endpoint that only takes GET: 405, Allow, no body either
    let r = pipeline(
        srv.admin_port,
        "HEAD /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (head, rest) = r.split_once("\r\n\r\n").expect("head");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(rest, "");
}

#[test]
fn method_not_allowed_lists_the_allowed_methods() {
    let srv = Server::start(&[]);
    for (method, path, allow) in [
        ("GET", "/pub?to=u1&from=f", "POST"),
        ("DELETE", "/sub?uid=u1&cid=c", "GET, POST"),
        ("POST", "/unsub?uid=u1&cid=c", ""),
        ("PUT", "/msg?uid=u1", "GET"),
        ("POST", "/shard?uid=u1", "GET"),
        ("POST", "/stats", "GET"),
        ("TRACE", "/metrics", "GET"),
        ("POST", "/health", "GET, HEAD"),
        ("GET", "/disconnect?uid=u1", "POST"),
        ("PATCH", "/", "GET, HEAD"),
    ] {
        let r = pipeline(
            srv.admin_port,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        );
        let (head, body) = r.split_once("\r\n\r\n").expect("head");
        if allow.is_empty() {
            assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 405"), "{method} {path}: {head}");
        assert_eq!(
            header(&format!("{head}\r\n"), "allow").as_deref(),
            Some(allow),
            "{method} {path}"
        );
        assert_eq!(body, r#"{"error":"method not allowed"}"#);
    }
}
