//! `HEAD` answers carry the head of the `GET` answer (its `Content-Length` included) and no
//! body, on the admin port (kept alive: the responses that follow stay in sync) and on the
//! client port's pages.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads one response head from `sock` (buffering into `buf`), then, unless `head_only`, its
/// `Content-Length` body. Returns (status, head, body).
fn next_response(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> (u16, String, Vec<u8>) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut tmp = [0u8; 65536];
    let mut fill = |buf: &mut Vec<u8>| {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no complete response within 10 s: {buf:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        let n = sock.read(&mut tmp).expect("read");
        assert!(
            n > 0,
            "EOF inside a response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let he = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(buf);
    };
    let head = String::from_utf8_lossy(&buf[..he]).to_string();
    assert!(head.starts_with("HTTP/1.1 "), "out of sync: {head:?}");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = header_value(&head, "content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    buf.drain(..he);
    if head_only {
        return (status, head, Vec::new());
    }
    while buf.len() < len {
        fill(buf);
    }
    let body = buf.drain(..len).collect();
    (status, head, body)
}

fn request(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn head_then_get_then_head_on_one_admin_connection_stay_in_sync() {
    let s = Server::start(&[]);
    let mut sock = TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    let mut buf = Vec::new();
    for path in ["/health", "/"] {
        // One request at a time: a body sent after a HEAD head would show up as the start of
        // the next response.
        sock.write_all(&request("HEAD", path)).unwrap();
        let (st, head1, _) = next_response(&mut sock, &mut buf, true);
        assert_eq!(st, 200, "{head1}");
        assert!(buf.is_empty(), "HEAD {path} sent a body: {buf:?}");
        sock.write_all(&request("GET", path)).unwrap();
        let (st, get_head, body) = next_response(&mut sock, &mut buf, false);
        assert_eq!(st, 200);
        assert!(!body.is_empty());
        sock.write_all(&request("HEAD", path)).unwrap();
        let (st, head2, _) = next_response(&mut sock, &mut buf, true);
        assert_eq!(st, 200);
        let len = |h: &str| header_value(h, "content-length").unwrap();
        if path == "/" {
            // The dashboard is fixed: the HEAD length is the GET body's length exactly.
            assert_eq!(len(&head1), body.len().to_string(), "{head1}");
            assert_eq!(len(&head2), body.len().to_string());
        } else {
            // /health carries the uptime, whose digits may change between requests.
            for h in [&head1, &head2] {
                let n: usize = len(h).parse().unwrap();
                assert!(n.abs_diff(body.len()) <= 2, "{h} vs {get_head}");
            }
        }
        assert_eq!(
            header_value(&head1, "content-type"),
            header_value(&get_head, "content-type")
        );
    }
    // Pipelined: HEAD, GET, HEAD, error HEAD, GET in one write, answered in order.
    let mut all = Vec::new();
    for (m, p) in [
        ("HEAD", "/"),
        ("GET", "/health"),
        ("HEAD", "/"),
        ("HEAD", "/no-such-page"),
        ("GET", "/health"),
    ] {
        all.extend(request(m, p));
    }
    sock.write_all(&all).unwrap();
    let (st, _, _) = next_response(&mut sock, &mut buf, true);
    assert_eq!(st, 200);
    let (st, _, body) = next_response(&mut sock, &mut buf, false);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"status\":\"ok\""));
    let (st, _, _) = next_response(&mut sock, &mut buf, true);
    assert_eq!(st, 200);
    let (st, h404, _) = next_response(&mut sock, &mut buf, true);
    assert_eq!(st, 404, "{h404}");
    let (st, _, body) = next_response(&mut sock, &mut buf, false);
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"status\":\"ok\""));
    assert!(buf.is_empty(), "left over: {buf:?}");
}

#[test]
fn head_on_the_client_port_pages_has_no_body() {
    let s = Server::start(&[]);
    let addr = s.client_addr();
    let (st, get_head, body) = raw_exchange(
        &addr,
        b"GET /demo HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(st, 200, "{get_head}");
    assert!(!body.is_empty());
    for (path, status) in [("/demo", 200), ("/no-such-page", 404)] {
        // The client port closes after a page: read to EOF, nothing may follow the head.
        let mut sock = TcpStream::connect(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.write_all(&request("HEAD", path)).unwrap();
        let mut out = Vec::new();
        let _ = sock.read_to_end(&mut out);
        let he = find(&out, b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8_lossy(&out[..he]).to_string();
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert_eq!(&out[he..], b"", "HEAD {path} carried a body");
        if path == "/demo" {
            assert_eq!(
                header_value(&head, "content-length"),
                Some(body.len().to_string())
            );
        }
    }
}
