//! Server-Sent Events (with `Last-Event-ID` resume and `POST /send`), MessagePack on every
//! transport that carries bytes, and one channel reaching members on mixed transports.
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rmpv::Value as Mp;
use serde_json::{json, Value};
use tungstenite::Message;

/// An SSE client over a raw socket.
struct Sse {
    rd: BufReader<TcpStream>,
    head: String,
}

impl Sse {
    fn connect(s: &Server, uid: &str, last_event_id: Option<u64>) -> Sse {
        let mut t = TcpStream::connect(s.client_addr()).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let last = last_event_id
            .map(|i| format!("Last-Event-ID: {i}\r\n"))
            .unwrap_or_default();
        write!(
            t,
            "GET /connect?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{last}\r\n"
        )
        .unwrap();
        let mut rd = BufReader::new(t);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            rd.read_line(&mut line).unwrap();
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        Sse { rd, head }
    }

    /// Next event as (id, data JSON).
    fn event(&mut self) -> (Option<u64>, Value) {
        let (mut id, mut data) = (None, None);
        loop {
            let mut line = String::new();
            assert!(self.rd.read_line(&mut line).unwrap() > 0, "stream ended");
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let Some(d) = data {
                    return (id, d);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            }
        }
    }
}

fn send(s: &Server, uid: &str, body: &str) -> (u16, String) {
    let mut t = TcpStream::connect(s.client_addr()).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        t,
        "POST /send?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    t.read_to_end(&mut out).unwrap();
    parse_response(&out)
}

#[test]
fn sse_stream_delivers_events_with_seq_ids() {
    let s = Server::start(&[]);
    let mut e = Sse::connect(&s, "s1", None);
    assert!(e.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", e.head);
    assert!(e.head.contains("Content-Type: text/event-stream\r\n"));
    s.post("/pub?to=s1&from=op", "first");
    s.post("/pub?to=s1&from=op", "second");
    assert_eq!(
        e.event(),
        (Some(1), json!({"y":3,"f":"op","t":"s1","b":"first","s":1}))
    );
    assert_eq!(e.event().0, Some(2));
}

#[test]
fn last_event_id_resumes_after_it_and_counts_as_ack() {
    let s = Server::start(&[]);
    for i in 1..=4 {
        s.post("/pub?to=r1&from=op", &format!("m{i}"));
    }
    let mut e = Sse::connect(&s, "r1", Some(2));
    assert_eq!(e.event().0, Some(3));
    assert_eq!(e.event().0, Some(4));
    // Messages up to the Last-Event-ID are acked: /msg no longer lists them.
    let listed: Vec<u64> = s
        .offline("r1")
        .iter()
        .map(|m| m["s"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [3, 4]);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=r1&password=pw HTTP/1.1\r\nAccept: text/event-stream\r\nLast-Event-ID: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 400);
}

#[test]
fn send_endpoint_acts_for_one_way_clients() {
    let s = Server::start(&[]);
    let mut e = Sse::connect(&s, "sa", None);
    let mut ws = {
        let tcp = TcpStream::connect(s.client_addr()).unwrap();
        let url = format!("ws://{}/connect?uid=wb&password=pw", s.client_addr());
        tungstenite::client::client(url, tcp).unwrap().0
    };
    assert_eq!(
        send(&s, "sa", r#"{"y":1,"c":"mix"}"#),
        (200, r#"{"result":"ok"}"#.into())
    );
    ws.send(Message::text(r#"{"y":1,"c":"mix"}"#)).unwrap();
    wait_until(Duration::from_secs(5), "two subscribes", || {
        s.stats()["recv_type"]["sub"] == 2
    });
    assert_eq!(send(&s, "sa", r#"{"y":4,"c":"mix","b":"from sse"}"#).0, 200);
    let got = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(
        (got["f"].as_str(), got["b"].as_str()),
        (Some("sa"), Some("from sse"))
    );
    let (id, m) = e.event();
    assert_eq!((id, m["b"].as_str()), (Some(1), Some("from sse")));
    assert_eq!(send(&s, "sa", r#"{"y":5,"s":1}"#).0, 200);
    wait_until(Duration::from_secs(5), "ack via /send", || {
        s.offline("sa").is_empty()
    });
    assert_eq!(send(&s, "sa", "{nope").0, 400);
    assert_eq!(send(&s, "", r#"{"y":0}"#).0, 400);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /send?uid=a&password=b HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 405);
}

fn mp_map(v: &Mp) -> std::collections::BTreeMap<String, Mp> {
    v.as_map()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn mp(pairs: &[(&str, Mp)]) -> Vec<u8> {
    let v = Mp::Map(
        pairs
            .iter()
            .map(|(k, v)| (Mp::from(*k), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &v).unwrap();
    out
}

#[test]
fn msgpack_on_the_chunked_stream() {
    let s = Server::start(&[]);
    let mut c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=m1&password=pw&codec=msgpack HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 200);
    let hb = mp(&[("y", Mp::from(0))]);
    let mut frame = format!("{:x}\r\n", hb.len()).into_bytes();
    frame.extend_from_slice(&hb);
    frame.extend_from_slice(b"\r\n");
    c.send_raw(&frame);
    let p = c.recv_chunk(Duration::from_secs(10)).unwrap();
    assert_eq!(p, hb, "the heartbeat answer is MessagePack too");
    s.post("/pub?to=m1&from=op", "packed");
    let p = c.recv_chunk(Duration::from_secs(10)).unwrap();
    let m = mp_map(&rmpv::decode::read_value(&mut &p[..]).unwrap());
    assert_eq!(m["y"].as_u64(), Some(3));
    assert_eq!(m["b"].as_str(), Some("packed"));
    assert_eq!(m["t"].as_str(), Some("m1"));
    assert_eq!(m["s"].as_u64(), Some(1));
    // JSON on a MessagePack stream is bad input for that stream only.
    c.send(r#"{"y":0}"#);
    let p = c.recv_chunk(Duration::from_secs(10)).unwrap();
    let m = mp_map(&rmpv::decode::read_value(&mut &p[..]).unwrap());
    assert_eq!(m["error"].as_str(), Some("invalid msgpack"));
}

#[test]
fn msgpack_over_websocket_and_mixed_transports_on_one_channel() {
    let s = Server::start(&[]);
    let tcp = TcpStream::connect(s.client_addr()).unwrap();
    let url = format!(
        "ws://{}/connect?uid=wm&password=pw&codec=msgpack",
        s.client_addr()
    );
    let (mut ws, _) = tungstenite::client::client(url, tcp).unwrap();
    let mut chunked = s.connect("cj");
    let mut sse = Sse::connect(&s, "se", None);
    ws.send(Message::binary(mp(&[
        ("y", Mp::from(1)),
        ("c", Mp::from("mixed")),
    ])))
    .unwrap();
    chunked.send(r#"{"y":1,"c":"mixed"}"#);
    assert_eq!(send(&s, "se", r#"{"y":1,"c":"mixed"}"#).0, 200);
    wait_until(Duration::from_secs(5), "three subscribes", || {
        s.stats()["recv_type"]["sub"] == 3
    });
    ws.send(Message::binary(mp(&[
        ("y", Mp::from(4)),
        ("c", Mp::from("mixed")),
        ("b", Mp::from("to all")),
    ])))
    .unwrap();
    let got = loop {
        if let Message::Binary(b) = ws.read().unwrap() {
            break mp_map(&rmpv::decode::read_value(&mut &b[..]).unwrap());
        }
    };
    assert_eq!(got["b"].as_str(), Some("to all"));
    assert_eq!(got["f"].as_str(), Some("wm"));
    let m = chunked.recv();
    assert_eq!(
        (m["c"].as_str(), m["b"].as_str()),
        (Some("mixed"), Some("to all"))
    );
    assert_eq!(sse.event().1["b"], "to all");
    // SSE is text only: MessagePack there is refused, not base64-encoded.
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=x&password=pw&codec=msgpack HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 400);
    let c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=x&password=pw&codec=xml HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 400);
}
