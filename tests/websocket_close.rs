//! Client close frames on a real WebSocket stream (RFC 6455 §5.5.1, §7.4): a valid close is
//! echoed with its code; a code that may not be sent, a 1-byte body or a reason that is not
//! UTF-8 is answered with 1002 (protocol error) or 1007 (invalid data), then the server closes.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A raw socket after a successful handshake.
fn raw_ws(s: &Server, uid: &str) -> TcpStream {
    let mut t = TcpStream::connect(s.client_addr()).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        t,
        "GET /connect?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    t
}

/// The payload of the server's close frame (skipping data frames), then checks the server
/// closes the connection after it.
fn server_close(t: &mut TcpStream) -> Vec<u8> {
    loop {
        let mut h = [0u8; 2];
        t.read_exact(&mut h).expect("a frame before EOF");
        assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
        let len = usize::from(h[1] & 0x7f);
        assert!(len < 126, "no long frames expected here");
        let mut p = vec![0u8; len];
        t.read_exact(&mut p).unwrap();
        if h[0] & 0x0f == 0x8 {
            let mut rest = Vec::new();
            let _ = t.read_to_end(&mut rest);
            assert!(rest.is_empty(), "bytes after the close frame: {rest:?}");
            return p;
        }
    }
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

#[test]
fn bad_close_frames_get_1002_or_1007() {
    let s = Server::start(&[]);
    let mut cases: Vec<(String, Vec<u8>, u16)> = Vec::new();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        cases.push((format!("code {code}"), close_payload(code, b""), 1002));
    }
    cases.push(("1-byte body".into(), vec![0x03], 1002));
    cases.push((
        "non-UTF-8 reason".into(),
        close_payload(1000, b"bad \xff\xfe"),
        1007,
    ));
    cases.push((
        "truncated UTF-8 reason".into(),
        close_payload(1001, "caf\u{e9}".as_bytes()[..4].as_ref()),
        1007,
    ));
    for (i, (what, payload, want)) in cases.iter().enumerate() {
        let mut t = raw_ws(&s, &format!("cl{i}"));
        t.write_all(&frame(0x8, payload)).unwrap();
        let p = server_close(&mut t);
        assert!(p.len() >= 2, "{what}: close without a code");
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), *want, "{what}");
        assert!(
            std::str::from_utf8(&p[2..]).is_ok(),
            "{what}: our reason is UTF-8"
        );
    }
}

#[test]
fn valid_close_frames_are_echoed_with_their_code() {
    let s = Server::start(&[]);
    for (i, (code, reason)) in [
        (1000u16, &b""[..]),
        (1001, b"going"),
        (1003, b""),
        (1011, b"x"),
        (3000, "r\u{e9}sum\u{e9}".as_bytes()),
        (4999, b"app"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = raw_ws(&s, &format!("ok{i}"));
        t.write_all(&frame(0x8, &close_payload(code, reason)))
            .unwrap();
        let p = server_close(&mut t);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), code, "echo of {code}");
    }
    // An empty close is answered with 1000.
    let mut t = raw_ws(&s, "empty");
    t.write_all(&frame(0x8, b"")).unwrap();
    let p = server_close(&mut t);
    assert_eq!(u16::from_be_bytes([p[0], p[1]]), 1000);
}
