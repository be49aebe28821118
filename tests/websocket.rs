//! WebSocket on `/connect` (RFC 6455), with a real client (tungstenite) and raw frames.
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn ws_connect(s: &Server, uid: &str, extra: &str) -> Ws {
    let tcp = TcpStream::connect(s.client_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!(
        "ws://{}/connect?uid={uid}&password=pw{extra}",
        s.client_addr()
    );
    let (ws, resp) = tungstenite::client::client(url, tcp).expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Next data message as JSON (skipping pings/pongs).
fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(_) => panic!("binary frame on a JSON stream"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads until the server's close frame; returns its code and the data messages before it.
fn until_close(ws: &mut Ws) -> (Option<u16>, Vec<String>) {
    let mut msgs = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => msgs.push(t.to_string()),
            Ok(Message::Close(c)) => return (c.map(|c| u16::from(c.code)), msgs),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return (None, msgs)
            }
            Err(e) => panic!("error before close: {e}"),
        }
    }
}

/// A masked client frame, built by hand.
fn frame(opcode: u8, fin: bool, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
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
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    t
}

/// Reads raw server frames until a close; returns (close code, text payloads before it).
fn raw_until_close(t: &mut TcpStream) -> (u16, Vec<String>) {
    let mut texts = Vec::new();
    loop {
        let mut h = [0u8; 2];
        t.read_exact(&mut h).unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            t.read_exact(&mut l).unwrap();
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            t.read_exact(&mut l).unwrap();
            len = u64::from_be_bytes(l);
        }
        let mut p = vec![0u8; len as usize];
        t.read_exact(&mut p).unwrap();
        match h[0] & 0x0f {
            0x1 => texts.push(String::from_utf8(p).unwrap()),
            0x8 => return (u16::from_be_bytes([p[0], p[1]]), texts),
            _ => {}
        }
    }
}

#[test]
fn handshake_delivery_heartbeat_and_channel() {
    let s = Server::start(&[]);
    let mut a = ws_connect(&s, "wa", "");
    let mut b = ws_connect(&s, "wb", "");
    s.post("/pub?to=wa&from=op", "hello ws");
    assert_eq!(
        next_json(&mut a),
        json!({"y":3,"f":"op","t":"wa","b":"hello ws","s":1})
    );
    a.send(Message::text(r#"{"y":0}"#)).unwrap();
    assert_eq!(next_json(&mut a), json!({"y":0}));
    for ws in [&mut a, &mut b] {
        ws.send(Message::text(r#"{"y":1,"c":"room"}"#)).unwrap();
    }
    wait_until(Duration::from_secs(5), "two subscribes", || {
        s.stats()["recv_type"]["sub"] == 2
    });
    a.send(Message::text(r#"{"y":4,"c":"room","b":"hi all"}"#))
        .unwrap();
    assert_eq!(next_json(&mut b)["b"], "hi all");
    assert_eq!(next_json(&mut a)["c"], "room");
    b.send(Message::text(r#"{"y":3,"t":"wa","b":"direct"}"#))
        .unwrap();
    let m = next_json(&mut a);
    assert_eq!(
        (m["f"].as_str(), m["b"].as_str()),
        (Some("wb"), Some("direct"))
    );
}

#[test]
fn ping_is_answered_with_pong() {
    let s = Server::start(&[]);
    let mut t = raw_ws(&s, "p1");
    t.write_all(&frame(0x9, true, b"are you there", true))
        .unwrap();
    let mut h = [0u8; 2];
    t.read_exact(&mut h).unwrap();
    assert_eq!(h, [0x8a, 13]);
    let mut p = [0u8; 13];
    t.read_exact(&mut p).unwrap();
    assert_eq!(&p, b"are you there");
}

#[test]
fn fragmented_message_within_the_limit_is_accepted() {
    let s = Server::start(&["--max_message_bytes=200000"]);
    let mut rx = ws_connect(&s, "rx", "");
    let mut t = raw_ws(&s, "tx");
    let body = "x".repeat(100_000);
    let msg = format!(r#"{{"y":3,"t":"rx","b":"{body}"}}"#);
    let bytes = msg.as_bytes();
    let (first, rest) = bytes.split_at(40_000);
    let (mid, last) = rest.split_at(40_000);
    t.write_all(&frame(0x1, false, first, true)).unwrap();
    // A control frame may come between fragments.
    t.write_all(&frame(0x9, true, b"", true)).unwrap();
    t.write_all(&frame(0x0, false, mid, true)).unwrap();
    t.write_all(&frame(0x0, true, last, true)).unwrap();
    let m = next_json(&mut rx);
    assert_eq!(m["b"].as_str().map(str::len), Some(100_000));
}

#[test]
fn fragmented_message_over_the_limit_is_closed_1009() {
    let s = Server::start(&["--max_message_bytes=65536"]);
    let mut t = raw_ws(&s, "big");
    let chunk = vec![b'a'; 40_000];
    t.write_all(&frame(0x1, false, &chunk, true)).unwrap();
    t.write_all(&frame(0x0, false, &chunk, true)).unwrap();
    let (code, texts) = raw_until_close(&mut t);
    assert_eq!(code, 1009);
    assert_eq!(texts, vec![r#"{"error":"message too large"}"#.to_string()]);
    // A single frame declaring more than the limit is refused before its payload arrives.
    let mut t = raw_ws(&s, "big2");
    let mut f = frame(0x1, true, &vec![b'a'; 70_000], true);
    f.truncate(14);
    t.write_all(&f).unwrap();
    assert_eq!(raw_until_close(&mut t).0, 1009);
}

#[test]
fn unmasked_frame_is_a_protocol_error() {
    let s = Server::start(&[]);
    let mut t = raw_ws(&s, "nomask");
    t.write_all(&frame(0x1, true, br#"{"y":0}"#, false))
        .unwrap();
    let (code, texts) = raw_until_close(&mut t);
    assert_eq!(code, 1002);
    assert_eq!(texts[0], r#"{"error":"client frames must be masked"}"#);
    assert_eq!(s.get("/health").0, 200);
}

#[test]
fn bad_json_and_bad_utf8_close_with_their_codes() {
    let s = Server::start(&[]);
    let mut a = ws_connect(&s, "j1", "");
    a.send(Message::text("{nope")).unwrap();
    let (code, msgs) = until_close(&mut a);
    assert_eq!(code, Some(1008));
    assert_eq!(msgs, vec![r#"{"error":"invalid json"}"#.to_string()]);
    let mut t = raw_ws(&s, "j2");
    t.write_all(&frame(0x1, true, &[0xff, 0xfe], true)).unwrap();
    assert_eq!(raw_until_close(&mut t).0, 1007);
}

#[test]
fn client_close_is_echoed_and_replacement_is_announced() {
    let s = Server::start(&[]);
    let mut a = ws_connect(&s, "c1", "");
    a.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    let (code, _) = until_close(&mut a);
    assert_eq!(code, Some(1000));
    wait_until(Duration::from_secs(5), "disconnect counted", || {
        s.stats()["user"]["user_number"] == 0
    });
    let mut first = ws_connect(&s, "c2", "");
    let _second = ws_connect(&s, "c2", "");
    let (code, msgs) = until_close(&mut first);
    assert_eq!(code, Some(1000));
    assert_eq!(msgs, vec![r#"{"error":"replaced"}"#.to_string()]);
}

#[test]
fn offline_messages_replay_over_websocket_and_shutdown_closes_1001() {
    let mut s = Server::start(&[]);
    for i in 1..=3 {
        s.post("/pub?to=off&from=op", &format!("m{i}"));
    }
    let mut ws = ws_connect(&s, "off", "");
    for i in 1..=3 {
        assert_eq!(next_json(&mut ws)["s"], i);
    }
    ws.send(Message::text(r#"{"y":5,"s":3}"#)).unwrap();
    wait_until(Duration::from_secs(5), "ack", || {
        s.offline("off").is_empty()
    });
    assert!(s.stop().success());
    let (code, _) = until_close(&mut ws);
    assert_eq!(code, Some(1001));
}

#[test]
fn bad_handshakes_are_refused() {
    let s = Server::start(&[]);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=a&password=b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 426);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=a&password=b HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 400);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 401, "auth happens before the upgrade");
}
