//! The shared vectors in `sdk/vectors/` against the server: (a) the crate's own encoders and
//! decoders produce and read exactly the vectors' bytes; (b) a real server on free ports sends
//! exactly those bytes on the chunked stream, WebSocket and SSE, and accepts the client ones.

mod common;
mod docs_support;

use std::collections::BTreeMap;

use docs_support::{
    chunk, chunks, enc, exchange, header, hex, unhex, vectors, ws_client_frame, ws_frames, Kind,
    Server, Stream,
};
use ipush::http::{encode_chunk, parse_chunk, write_error, write_redirect, Chunk, LAST_CHUNK};
use ipush::protocol::{self, msgpack, ClientMessage, MsgType};
use ipush::transport::ws;
use serde_json::{json, Value};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

fn opt_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// The server's JSON encoding of a message value, by the crate's encoders.
fn encode_json(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let seq = v.get("s").and_then(Value::as_u64);
    match (v.get("y").and_then(Value::as_u64), v.get("error")) {
        (Some(0), _) => out.extend_from_slice(protocol::HEARTBEAT),
        (Some(3), _) => protocol::encode_user_msg(&mut out, s(v, "f"), s(v, "t"), s(v, "b"), seq),
        (Some(4), _) => {
            protocol::encode_channel_msg(&mut out, s(v, "f"), s(v, "t"), s(v, "c"), s(v, "b"), seq)
        }
        (None, Some(e)) if v.as_object().is_some_and(|o| o.len() == 1) => {
            protocol::encode_json_error(&mut out, e.as_str().expect("error is a string"))
        }
        _ => return None,
    }
    Some(out)
}

/// The server's MessagePack encoding of a message value, by the crate's encoders.
fn encode_msgpack(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let seq = v.get("s").and_then(Value::as_u64);
    match (v.get("y").and_then(Value::as_u64), v.get("error")) {
        (Some(0), _) => msgpack::encode_heartbeat(&mut out),
        (Some(3), _) => msgpack::encode_user_msg(&mut out, s(v, "f"), s(v, "t"), s(v, "b"), seq),
        (Some(4), _) => {
            msgpack::encode_channel_msg(&mut out, s(v, "f"), s(v, "t"), s(v, "c"), s(v, "b"), seq)
        }
        (None, Some(e)) if v.as_object().is_some_and(|o| o.len() == 1) => {
            msgpack::encode_error(&mut out, e.as_str().expect("error is a string"))
        }
        _ => return None,
    }
    Some(out)
}

/// A MessagePack value (as the protocol uses them) as JSON.
fn mp_to_json(v: &rmpv::Value) -> Value {
    match v {
        rmpv::Value::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.as_str().expect("string key").to_owned(), mp_to_json(v)))
                .collect(),
        ),
        rmpv::Value::String(s) => json!(s.as_str().expect("utf-8 string")),
        rmpv::Value::Integer(i) => json!(i.as_u64().expect("non-negative integer")),
        other => panic!("unexpected msgpack value {other:?}"),
    }
}

fn mp_decode(b: &[u8]) -> Value {
    let mut rd = b;
    let v = rmpv::decode::read_value(&mut rd).expect("one msgpack value");
    assert!(rd.is_empty(), "bytes after the msgpack value");
    mp_to_json(&v)
}

fn decoded_value(m: &ClientMessage) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("y".into(), json!(m.y.expect("type") as u8));
    for (k, f) in [
        ("f", &m.f),
        ("t", &m.t),
        ("c", &m.c),
        ("u", &m.u),
        ("b", &m.b),
    ] {
        if let Some(x) = f {
            o.insert(k.into(), json!(x));
        }
    }
    if let Some(x) = m.s {
        o.insert("s".into(), json!(x));
    }
    Value::Object(o)
}

/// Compares as JSON objects (key order is checked on the bytes, not here).
fn same_value(a: &Value, b: &Value) -> bool {
    a == b
}

fn messages() -> Vec<Value> {
    vectors("messages.json")["messages"]
        .as_array()
        .expect("messages")
        .clone()
}

// ---------------------------------------------------------------- (a) the crate's codecs

#[test]
fn message_encoders_produce_the_vectors_and_decoders_read_them() {
    let all = messages();
    assert!(all.len() >= 20, "vectors look truncated");
    for m in &all {
        let name = s(m, "name");
        let value = &m["value"];
        let json_bytes = s(m, "json_text").as_bytes().to_vec();
        let mp_bytes = unhex(s(m, "msgpack_hex"));
        // Both encodings are the same message.
        let as_json: Value = serde_json::from_slice(&json_bytes).expect(name);
        assert_eq!(&as_json, value, "{name}: json_text is not value");
        assert_eq!(
            &mp_decode(&mp_bytes),
            value,
            "{name}: msgpack_hex is not value"
        );
        if s(m, "direction") == "server_to_client" {
            let j = encode_json(value).expect(name);
            assert_eq!(
                String::from_utf8_lossy(&j),
                String::from_utf8_lossy(&json_bytes),
                "{name}: JSON encoder"
            );
            let p = encode_msgpack(value).expect(name);
            assert_eq!(hex(&p), hex(&mp_bytes), "{name}: MessagePack encoder");
        }
        // The server's decoders read both (what it sends parses as a client message too).
        let dj = protocol::decode_client_message(&json_bytes)
            .unwrap_or_else(|e| panic!("{name}: JSON decode: {e}"));
        let dm = msgpack::decode_client_message(&mp_bytes)
            .unwrap_or_else(|e| panic!("{name}: msgpack decode: {e}"));
        assert_eq!(dj, dm, "{name}: both codecs decode alike");
        assert!(
            same_value(&decoded_value(&dj), value),
            "{name}: decoded {:?}",
            dj
        );
    }
    for (name, ty) in [
        ("heartbeat", MsgType::Heartbeat),
        ("client_subscribe", MsgType::Subscribe),
        ("client_unsubscribe", MsgType::Unsubscribe),
        ("user_message", MsgType::User),
        ("channel_message", MsgType::Channel),
        ("client_ack", MsgType::Ack),
    ] {
        let m = all
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no vector {name}"));
        let d = protocol::decode_client_message(s(m, "json_text").as_bytes()).expect(name);
        assert_eq!(d.y, Some(ty), "{name}");
    }
}

#[test]
fn chunked_streams_frame_and_parse_like_the_server() {
    let v = vectors("chunked.json");
    for st in v["streams"].as_array().expect("streams") {
        let name = s(st, "name");
        let bytes = unhex(s(st, "bytes_hex"));
        if let Some(t) = st["bytes_text"].as_str() {
            assert_eq!(t.as_bytes(), &bytes[..], "{name}: bytes_text");
        }
        let msgpack = st["codec"] == "msgpack";
        // parse with the server's chunk parser
        let mut pos = 0;
        let mut payloads = Vec::new();
        loop {
            match parse_chunk(&bytes[pos..], 1 << 24).expect(name) {
                Some((Chunk::Data(p), used)) => {
                    payloads.push(p.to_vec());
                    pos += used;
                }
                Some((Chunk::End, used)) => {
                    pos += used;
                    break;
                }
                None => panic!("{name}: stream does not end"),
            }
        }
        assert_eq!(pos, bytes.len(), "{name}: bytes after the last chunk");
        let want = st["messages"].as_array().expect("messages");
        assert_eq!(payloads.len(), want.len(), "{name}");
        let mut again = Vec::new();
        for (p, w) in payloads.iter().zip(want) {
            let got = if msgpack {
                mp_decode(p)
            } else {
                serde_json::from_slice(p).expect(name)
            };
            assert_eq!(&got, w, "{name}");
            // the payload is what the crate's encoder writes for that value
            let encoded = if msgpack {
                encode_msgpack(w)
            } else {
                encode_json(w)
            };
            if let Some(e) = encoded {
                assert_eq!(hex(&e), hex(p), "{name}: encoder");
            } else {
                assert!(w.get("location").is_some(), "{name}: no encoder for {w}");
            }
            encode_chunk(&mut again, p);
        }
        again.extend_from_slice(LAST_CHUNK);
        assert_eq!(hex(&again), hex(&bytes), "{name}: encode_chunk");
        let last = want.last().and_then(|m| m.get("error"));
        match s(st, "end") {
            "clean" => assert!(st["error"].is_null() && last.is_none(), "{name}"),
            "error" => assert_eq!(last, Some(&st["error"]), "{name}"),
            other => panic!("{name}: end {other}"),
        }
    }
    for bad in v["malformed"].as_array().expect("malformed") {
        let name = s(bad, "name");
        let bytes = unhex(s(bad, "bytes_hex"));
        let rejected = match parse_chunk(&bytes, 1 << 20) {
            Err(_) => true,
            // incomplete: the input ends inside a chunk (EOF there is an error)
            Ok(None) => true,
            Ok(Some((Chunk::Data(p), _))) => protocol::decode_client_message(p).is_err(),
            Ok(Some((Chunk::End, _))) => false,
        };
        assert!(rejected, "{name}: the server's parser accepts it");
    }
}

fn frames() -> Vec<Value> {
    vectors("websocket.json")["frames"]
        .as_array()
        .expect("frames")
        .clone()
}

fn opcode_of(n: u64) -> tungstenite::protocol::frame::coding::OpCode {
    tungstenite::protocol::frame::coding::OpCode::from(n as u8)
}

#[test]
fn websocket_frames_encode_and_parse_like_the_server() {
    let v = vectors("websocket.json");
    for f in v["frames"].as_array().expect("frames") {
        let name = s(f, "name");
        let raw = unhex(s(f, "hex"));
        let payload = unhex(s(f, "payload_hex"));
        let op = f["opcode"].as_u64().expect("opcode");
        if let Some(t) = f["payload_text"].as_str() {
            assert_eq!(t.as_bytes(), &payload[..], "{name}");
        }
        if op == 8 {
            let code = f["close_code"].as_u64().expect("close code") as u16;
            assert_eq!(&payload[..2], &code.to_be_bytes(), "{name}");
            assert_eq!(
                &payload[2..],
                f["close_reason"].as_str().expect("reason").as_bytes(),
                "{name}"
            );
        } else {
            assert!(f["close_code"].is_null(), "{name}");
        }
        if s(f, "direction") == "server_to_client" {
            assert_eq!(
                (f["fin"].as_bool(), f["masked"].as_bool()),
                (Some(true), Some(false)),
                "{name}"
            );
            let mut out = Vec::new();
            if op == 8 {
                ws::encode_close(
                    &mut out,
                    f["close_code"].as_u64().expect("code") as u16,
                    s(f, "close_reason"),
                );
            } else {
                ws::encode_frame(&mut out, opcode_of(op), &payload);
            }
            assert_eq!(hex(&out), hex(&raw), "{name}: server frame encoder");
            // data frames carry the crate's message encodings
            if op == 1 {
                let val: Value = serde_json::from_slice(&payload).expect(name);
                if let Some(e) = encode_json(&val) {
                    assert_eq!(e, payload, "{name}");
                }
            } else if op == 2 {
                let e = encode_msgpack(&mp_decode(&payload)).expect(name);
                assert_eq!(e, payload, "{name}");
            }
        } else {
            assert_eq!(f["masked"].as_bool(), Some(true), "{name}");
            let mut buf = raw.clone();
            let fr = ws::parse_frame(&mut buf, 1 << 20)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"))
                .unwrap_or_else(|| panic!("{name}: incomplete"));
            assert_eq!(fr.end, raw.len(), "{name}");
            assert_eq!(u8::from(fr.opcode) as u64, op, "{name}");
            assert_eq!(Some(fr.fin), f["fin"].as_bool(), "{name}");
            assert_eq!(
                &buf[fr.start..fr.end],
                &payload[..],
                "{name}: unmasked payload"
            );
            assert_eq!(
                &raw[fr.start - 4..fr.start],
                &unhex(s(f, "mask_hex"))[..],
                "{name}"
            );
        }
    }
    // client frames the server refuses, and its answer
    for r in v["rejected_by_server"]
        .as_array()
        .expect("rejected_by_server")
    {
        let name = s(r, "name");
        let code = r["close_code"].as_u64().expect("code") as u16;
        let reason = s(r, "reason");
        let mut buf = unhex(s(r, "hex"));
        match ws::parse_frame(&mut buf, 262_144) {
            Err(e) => assert_eq!(e.code, code, "{name}"),
            Ok(Some(fr)) => {
                let p = &buf[fr.start..fr.end];
                let data_error = std::str::from_utf8(p).is_err()
                    || protocol::decode_client_message(p).is_err()
                    || fr.opcode == opcode_of(0);
                assert!(data_error, "{name}: the server's parser accepts it");
            }
            Ok(None) => panic!("{name}: incomplete"),
        }
        let mut answer = Vec::new();
        let mut text = Vec::new();
        protocol::encode_json_error(&mut text, reason);
        ws::encode_frame(&mut answer, ws::TEXT, &text);
        ws::encode_close(&mut answer, code, reason);
        assert_eq!(hex(&answer), s(r, "response_hex"), "{name}: answer");
    }
    assert!(!v["malformed"].as_array().expect("malformed").is_empty());
}

/// Parses an SSE text the way EventSource does (the subset: id, event, data lines).
fn sse_events(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut ev = json!({"id": null, "event": null});
        let mut data: Vec<&str> = Vec::new();
        for line in block.split('\n') {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            match k {
                "data" => data.push(v),
                "id" | "event" => ev[k] = json!(v),
                _ => {}
            }
        }
        ev["data"] = json!(data.join("\n"));
        out.push(ev);
    }
    out
}

#[test]
fn sse_streams_follow_the_server_encoding() {
    // The SSE framing is private to src/transport/stream.rs (frame_message): this checks the
    // rule it implements (id: seq, data: the JSON encoder's bytes, blank line).
    let v = vectors("sse.json");
    for st in v["streams"].as_array().expect("streams") {
        let name = s(st, "name");
        let text = s(st, "text");
        let events = st["events"].as_array().expect("events");
        assert_eq!(&sse_events(text), events, "{name}");
        let mut rebuilt = String::new();
        for e in events {
            let data: Value = serde_json::from_str(s(e, "data")).expect(name);
            if let Some(enc) = encode_json(&data) {
                assert_eq!(enc, s(e, "data").as_bytes(), "{name}");
            }
            assert_eq!(
                e["id"].as_str().map(str::to_owned),
                data.get("s").map(|x| x.to_string()),
                "{name}: id is the seq"
            );
            if let Some(ev) = e["event"].as_str() {
                rebuilt.push_str(&format!("event: {ev}\n"));
            }
            if let Some(id) = e["id"].as_str() {
                rebuilt.push_str(&format!("id: {id}\n"));
            }
            rebuilt.push_str(&format!("data: {}\n\n", s(e, "data")));
        }
        assert_eq!(rebuilt, text, "{name}");
    }
}

#[test]
fn error_vectors_match_the_response_writers() {
    let v = vectors("errors.json");
    for e in v["http"].as_array().expect("http") {
        let name = s(e, "name");
        let status = e["status"].as_u64().expect("status") as u16;
        let body = s(e, "body_text");
        let mut out = Vec::new();
        match status {
            303 => write_redirect(&mut out, s(e, "location"), &[]),
            200 => continue,
            _ => {
                let reason: Value = serde_json::from_str(body).expect(name);
                write_error(&mut out, status, s(&reason, "error"), false);
            }
        }
        let text = String::from_utf8(out).expect("ascii");
        let (head, b) = text.split_once("\r\n\r\n").expect("head");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {head}"
        );
        assert_eq!(b, body, "{name}");
    }
    for e in v["stream"].as_array().expect("stream") {
        let name = s(e, "name");
        let val: Value = serde_json::from_str(s(e, "json_text")).expect(name);
        assert_eq!(mp_decode(&unhex(s(e, "msgpack_hex"))), val, "{name}");
        if let Some(j) = encode_json(&val) {
            assert_eq!(j, s(e, "json_text").as_bytes(), "{name}");
            assert_eq!(hex(&encode_msgpack(&val).expect(name)), s(e, "msgpack_hex"));
        } else {
            assert_eq!(val["error"], "moved", "{name}");
            assert!(s(&val, "location").starts_with("http://"), "{name}");
        }
    }
}

// ---------------------------------------------------------------- (b) a real server

const BIG: &str = "--max_message_bytes=262144";

/// The vector's bytes for a message value with its seq replaced by `seq`.
fn with_seq(v: &Value, seq: Option<u64>) -> Value {
    let mut v = v.clone();
    let o = v.as_object_mut().expect("object");
    match seq {
        Some(s) => {
            o.insert("s".into(), json!(s));
        }
        None => {
            o.remove("s");
        }
    }
    v
}

/// Reads and drops the next `n` messages of a stream.
fn skip_messages(st: &mut Stream<std::net::TcpStream>, kind: Kind, n: usize) {
    for _ in 0..n {
        let used = match kind {
            Kind::Chunked => {
                st.read_until(|b| !chunks(b).0.is_empty());
                let p = chunks(&st.buf).0.remove(0);
                chunk(&p).len()
            }
            Kind::WebSocket => {
                st.read_until(|b| !ws_frames(b).0.is_empty());
                ws_frames(&st.buf).0.remove(0).2.len()
            }
            Kind::Sse => {
                st.read_until(|b| docs_support::find(b, b"\n\n").is_some());
                docs_support::find(&st.buf, b"\n\n").expect("event") + 2
            }
        };
        st.buf.drain(..used);
    }
}

/// The MessagePack uint encoding, written by the test (smallest form).
fn mp_uint(n: u64) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0xcc, n as u8],
        0x100..=0xffff => [&[0xcd][..], &(n as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[0xce][..], &(n as u32).to_be_bytes()].concat(),
        _ => [&[0xcf][..], &n.to_be_bytes()].concat(),
    }
}

/// A vector's JSON bytes with its trailing `"s":old` set to `new`.
fn reseq_json(bytes: &[u8], old: Option<u64>, new: Option<u64>) -> Vec<u8> {
    let (Some(old), Some(new)) = (old, new) else {
        assert_eq!(old, new, "a seq where the vector has none");
        return bytes.to_vec();
    };
    let tail = format!(",\"s\":{old}}}");
    let text = std::str::from_utf8(bytes).expect("utf-8");
    let head = text
        .strip_suffix(&tail)
        .expect("the vector ends with its seq");
    format!("{head},\"s\":{new}}}").into_bytes()
}

/// A vector's MessagePack bytes with its trailing `s` set to `new`.
fn reseq_msgpack(bytes: &[u8], old: Option<u64>, new: Option<u64>) -> Vec<u8> {
    let (Some(old), Some(new)) = (old, new) else {
        assert_eq!(old, new, "a seq where the vector has none");
        return bytes.to_vec();
    };
    let tail = [&[0xa1, b's'][..], &mp_uint(old)].concat();
    let head = bytes
        .strip_suffix(&tail[..])
        .expect("the vector ends with its seq");
    [head, &[0xa1, b's'], &mp_uint(new)].concat()
}

/// Publishes a server_to_client message value through the admin API.
fn publish(srv: &Server, v: &Value, ttl: Option<u64>) {
    let ttl = ttl.map(|t| format!("&ttl={t}")).unwrap_or_default();
    let body = s(v, "b").as_bytes();
    let path = match v.get("c").and_then(Value::as_str) {
        Some(c) => format!("/pub?channel={}&from={}{ttl}", enc(c), enc(s(v, "f"))),
        None => format!("/pub?to={}&from={}{ttl}", enc(s(v, "t")), enc(s(v, "f"))),
    };
    srv.admin_ok("POST", &path, body);
}

fn query(uid: &str, codec: Option<&str>) -> String {
    match codec {
        Some(c) => format!("uid={}&password=pw&codec={c}", enc(uid)),
        None => format!("uid={}&password=pw", enc(uid)),
    }
}

fn sse_block(json: &[u8], seq: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(s) = seq {
        out.extend_from_slice(format!("id: {s}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// The WebSocket frame of a server payload (header written by the test, not the server).
fn ws_server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n < 65536 {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

#[test]
fn live_server_sends_the_message_vectors_on_every_transport() {
    let srv = Server::start(&[BIG]);
    let all = messages();
    // Captured messages: published in vector order to one offline user, they get the seqs the
    // vectors hold, and every transport's replay must be byte for byte the vectors.
    let stored: Vec<&Value> = all
        .iter()
        .filter(|m| {
            m["direction"] == "server_to_client"
                && m["value"].get("s").is_some()
                && m["value"]["t"] == "user001"
                && m["value"]["s"].as_u64().is_some_and(|s| s < 100)
        })
        .collect();
    assert!(stored.len() >= 8, "too few captured vectors");
    let mut subscribed = BTreeMap::new();
    for (i, m) in stored.iter().enumerate() {
        let v = &m["value"];
        assert_eq!(
            v["s"].as_u64(),
            Some(i as u64 + 1),
            "vectors' seqs run 1, 2, .."
        );
        if let Some(c) = v.get("c").and_then(Value::as_str) {
            if subscribed.insert(c.to_string(), ()).is_none() {
                srv.admin_ok("GET", &format!("/sub?uid=user001&cid={}", enc(c)), b"");
            }
        }
        publish(&srv, v, None);
    }
    let json_of = |m: &Value| s(m, "json_text").as_bytes().to_vec();
    let mp_of = |m: &Value| unhex(s(m, "msgpack_hex"));
    let ws_vectors = frames();
    // Live messages stored on one transport are replayed (unacked) on the next ones.
    let mut live_stored = 0;
    for (kind, codec) in [
        (Kind::Chunked, None),
        (Kind::Chunked, Some("msgpack")),
        (Kind::WebSocket, None),
        (Kind::WebSocket, Some("msgpack")),
        (Kind::Sse, None),
    ] {
        let what = format!("{kind:?} {codec:?}");
        let mut st = Stream::open(srv.client_port, &query("user001", codec), kind, "");
        assert!(st.status == 200 || st.status == 101, "{what}: {}", st.head);
        for m in &stored {
            let payload = if codec.is_some() {
                mp_of(m)
            } else {
                json_of(m)
            };
            let want = match kind {
                Kind::Chunked => chunk(&payload),
                Kind::WebSocket => ws_server_frame(if codec.is_some() { 2 } else { 1 }, &payload),
                Kind::Sse => sse_block(&payload, m["value"]["s"].as_u64()),
            };
            let got = st.take(want.len());
            assert!(got == want, "{what} {}: got {:?}", s(m, "name"), hex(&got));
            if kind == Kind::WebSocket {
                // the frame vectors with this payload are these bytes
                for f in ws_vectors.iter().filter(|f| {
                    f["direction"] == "server_to_client" && unhex(s(f, "payload_hex")) == payload
                }) {
                    assert_eq!(hex(&got), s(f, "hex"), "{}", s(f, "name"));
                }
            }
        }
        skip_messages(&mut st, kind, live_stored);
        // Live: the vectors that need another seq (or none) are sent with the seq this
        // user has reached; messages without s are published with ttl 0.
        for m in all.iter().filter(|m| {
            m["direction"] == "server_to_client"
                && m["value"].get("y").and_then(Value::as_u64).unwrap_or(0) >= 3
                && !stored.iter().any(|x| x["name"] == m["name"])
        }) {
            let mut v = m["value"].clone();
            let uid = s(&v, "t").to_owned();
            if uid != "user001" {
                continue; // another recipient: checked below
            }
            let ttl = if v.get("s").is_none() { Some(0) } else { None };
            live_stored += usize::from(ttl.is_none());
            publish(&srv, &v, ttl);
            // the seq it got, from the frame; then the vector's bytes with that seq
            let peek = match kind {
                Kind::Chunked => {
                    st.read_until(|b| !chunks(b).0.is_empty());
                    chunks(&st.buf).0.remove(0)
                }
                Kind::WebSocket => {
                    st.read_until(|b| !ws_frames(b).0.is_empty());
                    ws_frames(&st.buf).0.remove(0).1
                }
                Kind::Sse => {
                    st.read_until(|b| docs_support::find(b, b"\n\n").is_some());
                    let end = docs_support::find(&st.buf, b"\n\n").expect("event");
                    let block = String::from_utf8(st.buf[..end].to_vec()).expect("utf-8");
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("data")
                        .as_bytes()
                        .to_vec()
                }
            };
            let got_value = if codec.is_some() {
                mp_decode(&peek)
            } else {
                serde_json::from_slice(&peek).expect("json")
            };
            let real_seq = got_value.get("s").and_then(Value::as_u64);
            assert_eq!(real_seq.is_some(), ttl.is_none(), "{what} {}", s(m, "name"));
            v = with_seq(&v, real_seq);
            assert_eq!(got_value, v, "{what} {}", s(m, "name"));
            let vec_seq = m["value"].get("s").and_then(Value::as_u64);
            let payload = if codec.is_some() {
                reseq_msgpack(&mp_of(m), vec_seq, real_seq)
            } else {
                reseq_json(&json_of(m), vec_seq, real_seq)
            };
            let want = match kind {
                Kind::Chunked => chunk(&payload),
                Kind::WebSocket => ws_server_frame(if codec.is_some() { 2 } else { 1 }, &payload),
                Kind::Sse => sse_block(&payload, real_seq),
            };
            let got = st.take(want.len());
            assert!(got == want, "{what} {}: got {}", s(m, "name"), hex(&got));
        }
        // the heartbeat answer (SSE is one-way: nothing to answer)
        let hb = all.iter().find(|m| m["name"] == "heartbeat").expect("hb");
        let hbp = if codec.is_some() {
            mp_of(hb)
        } else {
            json_of(hb)
        };
        match kind {
            Kind::Chunked => {
                st.send(&chunk(&hbp));
                assert_eq!(st.take(hbp.len() + 5), chunk(&hbp), "{what}");
            }
            Kind::WebSocket => {
                st.send(&ws_client_frame(if codec.is_some() { 2 } else { 1 }, &hbp));
                let want = ws_server_frame(if codec.is_some() { 2 } else { 1 }, &hbp);
                assert_eq!(st.take(want.len()), want, "{what}");
            }
            Kind::Sse => {}
        }
    }
    // ttl-0 vectors to another recipient: exact bytes, live.
    for m in all.iter().filter(|m| {
        m["direction"] == "server_to_client"
            && m["value"].get("s").is_none()
            && m["value"].get("t").is_some_and(|t| t != "user001")
    }) {
        let v = &m["value"];
        for codec in [None, Some("msgpack")] {
            let mut st = Stream::open(srv.client_port, &query(s(v, "t"), codec), Kind::Chunked, "");
            publish(&srv, v, Some(0));
            let payload = if codec.is_some() {
                mp_of(m)
            } else {
                json_of(m)
            };
            assert_eq!(
                st.take(payload.len() + 6),
                chunk(&payload),
                "{}",
                s(m, "name")
            );
        }
    }
}

#[test]
fn live_server_accepts_the_client_vectors() {
    let srv = Server::start(&[BIG]);
    let all = messages();
    let client: Vec<&Value> = all
        .iter()
        .filter(|m| m["direction"] == "client_to_server")
        .collect();
    assert!(client.len() >= 6);
    for (codec, kind) in [
        (None, Kind::Chunked),
        (Some("msgpack"), Kind::Chunked),
        (None, Kind::WebSocket),
        (Some("msgpack"), Kind::WebSocket),
    ] {
        let uid = "user001";
        let mut st = Stream::open(srv.client_port, &query(uid, codec), kind, "");
        let hb = if codec.is_some() {
            vec![0x81, 0xa1, b'y', 0x00]
        } else {
            br#"{"y":0}"#.to_vec()
        };
        for m in &client {
            let name = s(m, "name");
            let p = if codec.is_some() {
                unhex(s(m, "msgpack_hex"))
            } else {
                s(m, "json_text").as_bytes().to_vec()
            };
            let is_hb = m["value"]["y"] == 0;
            let (frame, answer) = match kind {
                Kind::WebSocket => {
                    let op = if codec.is_some() { 2 } else { 1 };
                    let mut f = ws_client_frame(op, &p);
                    f.extend(ws_client_frame(op, &hb));
                    (f, ws_server_frame(op, &hb))
                }
                _ => {
                    let mut f = chunk(&p);
                    f.extend(chunk(&hb));
                    (f, chunk(&hb))
                }
            };
            st.send(&frame);
            // accepted: only the heartbeat answer(s) come back, the stream stays open
            let n = if is_hb { 2 } else { 1 };
            let got = st.take(answer.len() * n);
            assert_eq!(
                hex(&got),
                hex(&answer.repeat(n)),
                "{codec:?} {kind:?} {name}"
            );
        }
    }
    // the user messages reached user002 with the authenticated uid as f
    let msgs = srv.admin_ok("GET", "/msg?uid=user002", b"");
    let list = msgs["result"].as_array().expect("list");
    let bodies: Vec<Value> = list
        .iter()
        .map(|x| serde_json::from_str(x.as_str().expect("str")).expect("json"))
        .collect();
    for m in client.iter().filter(|m| m["value"]["y"] == 3) {
        let b = &m["value"]["b"];
        assert_eq!(
            bodies
                .iter()
                .filter(|x| &x["b"] == b && x["f"] == "user001")
                .count(),
            4,
            "{} delivered once per codec and transport",
            s(m, "name")
        );
    }
}

/// Drives one chunked or SSE stream vector: what the messages are tells what to do.
fn replay_stream(srv: &Server, kind: Kind, codec: Option<&str>, msgs: &[Value]) -> Vec<u8> {
    let uid = msgs
        .iter()
        .find_map(|m| opt_str(m, "t"))
        .expect("a message with t");
    // offline messages first (those with a seq), in order
    let mut subs = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.get("s").is_some()) {
        if let Some(c) = opt_str(m, "c") {
            if subs.insert(c.clone(), ()).is_none() {
                srv.admin_ok(
                    "GET",
                    &format!("/sub?uid={}&cid={}", enc(&uid), enc(&c)),
                    b"",
                );
            }
        }
        publish(srv, m, None);
    }
    let mut st = Stream::open(srv.client_port, &query(&uid, codec), kind, "");
    let mut seen = 0;
    let count_done = |b: &[u8], n: usize| match kind {
        Kind::Sse => b.windows(2).filter(|w| w == b"\n\n").count() >= n,
        _ => chunks(b).0.len() >= n,
    };
    let mut other = None;
    for m in msgs {
        if m.get("s").is_some() {
            seen += 1;
            continue;
        }
        st.read_until(|b| count_done(b, seen));
        if m.get("y") == Some(&json!(0)) {
            let hb = if codec.is_some() {
                vec![0x81, 0xa1, b'y', 0x00]
            } else {
                br#"{"y":0}"#.to_vec()
            };
            st.send(&chunk(&hb));
        } else if m.get("y").is_some() {
            publish(srv, m, Some(0));
        } else if m["error"] == "replaced" {
            let extra = if kind == Kind::Sse {
                "Last-Event-ID: 0\r\n"
            } else {
                ""
            };
            other = Some(Stream::open(
                srv.client_port,
                &query(&uid, codec),
                kind,
                extra,
            ));
        }
        seen += 1;
    }
    let out = st.take_to_eof();
    drop(other);
    out
}

#[test]
fn live_server_sends_the_stream_vectors() {
    let srv = Server::start(&[BIG]);
    let chunked = vectors("chunked.json");
    let errors = vectors("errors.json");
    for st in chunked["streams"].as_array().expect("streams") {
        let name = s(st, "name");
        let codec = (st["codec"] == "msgpack").then_some("msgpack");
        let msgs = st["messages"].as_array().expect("messages");
        let want = unhex(s(st, "bytes_hex"));
        let got = if name.starts_with("messages_") {
            replay_stream(&srv, Kind::Chunked, codec, msgs)
        } else if name.starts_with("bad_input_") {
            let reason = msgs[0]["error"].as_str().expect("reason");
            let e = errors["stream"]
                .as_array()
                .expect("stream")
                .iter()
                .find(|e| e["json_text"] == format!(r#"{{"error":"{reason}"}}"#))
                .expect("errors.json entry");
            let mut c = Stream::open(srv.client_port, &query("user020", codec), Kind::Chunked, "");
            c.send(&unhex(s(e, "client_sent_hex")));
            c.take_to_eof()
        } else {
            // moved (dynamic cluster) and shutdown streams: checked below / not emitted here
            continue;
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{name}"
        );
        assert_eq!(hex(&got), hex(&want), "{name}");
    }
    // every bad-input stream error, as the server's final chunk
    for e in errors["stream"].as_array().expect("stream") {
        let Some(sent) = e.get("client_sent_hex").and_then(Value::as_str) else {
            continue;
        };
        let name = s(e, "name");
        let ws_only = s(e, "meaning").starts_with("WebSocket");
        if ws_only {
            continue;
        }
        let codec = (name == "invalid_msgpack").then_some("msgpack");
        let mut c = Stream::open(srv.client_port, &query("user021", codec), Kind::Chunked, "");
        c.send(&unhex(sent));
        let payload = if codec.is_some() {
            unhex(s(e, "msgpack_hex"))
        } else {
            s(e, "json_text").as_bytes().to_vec()
        };
        let mut want = chunk(&payload);
        want.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(hex(&c.take_to_eof()), hex(&want), "{name}");
    }
    // SSE streams
    for st in vectors("sse.json")["streams"].as_array().expect("streams") {
        let name = s(st, "name");
        let text = s(st, "text");
        let values: Vec<Value> = st["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| serde_json::from_str(s(e, "data")).expect("data"))
            .collect();
        let got = if name == "messages_then_replaced" {
            replay_stream(&srv, Kind::Sse, None, &values)
        } else if let Some(id) = st["request_headers"]["Last-Event-ID"].as_str() {
            // resumed: the messages before the id were published too
            let uid = opt_str(&values[0], "t").expect("t");
            let first = values[0]["s"].as_u64().expect("seq");
            let id: u64 = id.parse().expect("id");
            assert_eq!(first, id + 1, "{name}");
            for seq in 1..first {
                srv.admin_ok(
                    "POST",
                    &format!("/pub?to={}&from=user002", enc(&uid)),
                    format!("before {seq}").as_bytes(),
                );
            }
            for m in values.iter().filter(|m| m.get("s").is_some()) {
                publish(&srv, m, None);
            }
            let mut e = Stream::open(
                srv.client_port,
                &query(&uid, None),
                Kind::Sse,
                &format!("Last-Event-ID: {id}\r\n"),
            );
            let stored = values.iter().filter(|m| m.get("s").is_some()).count();
            e.read_until(|b| b.windows(2).filter(|w| w == b"\n\n").count() >= stored);
            for m in values
                .iter()
                .filter(|m| m.get("s").is_none() && m.get("y").is_some())
            {
                publish(&srv, m, Some(0));
            }
            let n = values.len() - 1;
            e.read_until(|b| b.windows(2).filter(|w| w == b"\n\n").count() >= n);
            let _other = Stream::open(srv.client_port, &query(&uid, None), Kind::Sse, "");
            e.take_to_eof()
        } else {
            continue;
        };
        assert_eq!(String::from_utf8_lossy(&got), text, "{name}");
    }
}

#[test]
fn live_server_sends_the_websocket_vectors() {
    let srv = Server::start(&[BIG]);
    let v = vectors("websocket.json");
    let frame = |name: &str| -> Vec<u8> {
        let f = v["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no frame {name}"));
        unhex(s(f, "hex"))
    };
    let client = |name: &str| -> Vec<u8> {
        let f = v["frames"]
            .as_array()
            .expect("frames")
            .iter()
            .find(|f| f["name"] == name && f["direction"] == "client_to_server")
            .unwrap_or_else(|| panic!("no client frame {name}"));
        unhex(s(f, "hex"))
    };
    let q = query("user030", None);
    let mut w = Stream::open(srv.client_port, &q, Kind::WebSocket, "");
    assert_eq!(w.status, 101, "{}", w.head);
    assert_eq!(
        header(&w.head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 example key"
    );
    w.send(&client("text_heartbeat"));
    let want = frame("text_heartbeat");
    assert_eq!(hex(&w.take(want.len())), hex(&want), "heartbeat");
    w.send(&client("pong"));
    w.send(&client("ping"));
    let want = frame("pong_answering_ping");
    assert_eq!(hex(&w.take(want.len())), hex(&want), "pong");
    w.send(&client("text_subscribe"));
    w.send(&client("text_fragment_start"));
    w.send(&client("continuation_final"));
    let want = frame("text_heartbeat");
    assert_eq!(hex(&w.take(want.len())), hex(&want), "fragmented heartbeat");
    w.send(&client("close_1000"));
    assert_eq!(
        hex(&w.take_to_eof()),
        hex(&frame("close_1000_echo")),
        "close echo"
    );
    // the subscribe frame subscribed user030 to channel001
    srv.admin_ok("POST", "/pub?channel=channel001&from=op", b"x");
    let off = srv.admin_ok("GET", "/msg?uid=user030", b"");
    assert_eq!(off["result"].as_array().map(Vec::len), Some(1), "{off}");

    let mut m = Stream::open(
        srv.client_port,
        &query("user031", Some("msgpack")),
        Kind::WebSocket,
        "",
    );
    m.send(&client("binary_msgpack_heartbeat"));
    let want = frame("binary_msgpack_heartbeat");
    assert_eq!(hex(&m.take(want.len())), hex(&want), "msgpack heartbeat");

    let mut a = Stream::open(
        srv.client_port,
        &query("user032", None),
        Kind::WebSocket,
        "",
    );
    let _b = Stream::open(
        srv.client_port,
        &query("user032", None),
        Kind::WebSocket,
        "",
    );
    let mut want = frame("text_error_replaced");
    want.extend(frame("close_1000_replaced"));
    assert_eq!(hex(&a.take_to_eof()), hex(&want), "replaced");

    for r in v["rejected_by_server"].as_array().expect("rejected") {
        let mut c = Stream::open(
            srv.client_port,
            &query("user033", None),
            Kind::WebSocket,
            "",
        );
        c.send(&unhex(s(r, "hex")));
        assert_eq!(
            hex(&c.take_to_eof()),
            s(r, "response_hex"),
            "{}",
            s(r, "name")
        );
    }
}

#[test]
fn live_server_heartbeats_and_shutdown_end_streams_as_the_vectors_say() {
    let mut srv = Server::start(&["--heartbeat_interval_s=1"]);
    let chunked = vectors("chunked.json");
    let cv = chunked["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == "server_heartbeats_then_shutdown")
        .expect("vector")
        .clone();
    let sv = vectors("sse.json")["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == "server_heartbeats_then_shutdown")
        .expect("vector")
        .clone();
    let wv = frames();
    let wframe = |n: &str| unhex(s(wv.iter().find(|f| f["name"] == n).expect(n), "hex"));
    let mut c = Stream::open(srv.client_port, &query("user050", None), Kind::Chunked, "");
    let mut w = Stream::open(
        srv.client_port,
        &query("user051", None),
        Kind::WebSocket,
        "",
    );
    let mut e = Stream::open(srv.client_port, &query("user052", None), Kind::Sse, "");
    c.read_until(|b| !chunks(b).0.is_empty());
    w.read_until(|b| !ws_frames(b).0.is_empty());
    e.read_until(|b| docs_support::find(b, b"\n\n").is_some());
    srv.terminate();
    // k >= 1 heartbeats (how many depends on timing), then the stream's end
    let strip = |got: Vec<u8>, unit: &[u8], end: &[u8]| -> usize {
        assert!(got.ends_with(end), "{:?}", String::from_utf8_lossy(&got));
        let body = &got[..got.len() - end.len()];
        assert!(
            !body.is_empty() && body.len().is_multiple_of(unit.len()),
            "{body:?}"
        );
        assert!(body.chunks(unit.len()).all(|u| u == unit), "{body:?}");
        body.len() / unit.len()
    };
    let want = unhex(s(&cv, "bytes_hex"));
    let hb_chunk = b"7\r\n{\"y\":0}\r\n";
    assert!(want.starts_with(hb_chunk));
    strip(c.take_to_eof(), hb_chunk, &want[hb_chunk.len()..]);
    strip(
        w.take_to_eof(),
        &wframe("text_heartbeat"),
        &wframe("close_1001_shutdown"),
    );
    let stext = s(&sv, "text").as_bytes().to_vec();
    strip(e.take_to_eof(), &stext, b"");
}

#[test]
fn live_server_answers_the_http_error_vectors() {
    let srv = Server::start(&[BIG]);
    let v = vectors("errors.json");
    for e in v["http"].as_array().expect("http") {
        let name = s(e, "name");
        if name == "connection_limit" || name == "redirect_to_owner_node" {
            continue; // servers of their own, below
        }
        let req =
            s(e, "request").replace("127.0.0.1:9000", &format!("127.0.0.1:{}", srv.client_port));
        let (status, _, body) = exchange(srv.client_port, req.as_bytes()).expect(name);
        assert_eq!(
            status as u64,
            e["status"].as_u64().expect("status"),
            "{name}"
        );
        assert_eq!(String::from_utf8_lossy(&body), s(e, "body_text"), "{name}");
    }

    let limit = v["http"]
        .as_array()
        .expect("http")
        .iter()
        .find(|e| e["name"] == "connection_limit")
        .expect("connection_limit");
    let small = Server::start(&["--max_connections=2"]);
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..20 {
        let st = Stream::open(
            small.client_port,
            &query(&format!("user{:03}", 70 + i), None),
            Kind::Chunked,
            "",
        );
        if st.status == 200 {
            held.push(st);
        } else {
            refused = Some(st);
            break;
        }
    }
    let mut r = refused.expect("a connect refused by the limit");
    assert_eq!(r.status as u64, limit["status"].as_u64().expect("status"));
    assert_eq!(
        String::from_utf8_lossy(&r.take_to_eof()),
        s(limit, "body_text")
    );
    drop(held);

    let redirect = v["http"]
        .as_array()
        .expect("http")
        .iter()
        .find(|e| e["name"] == "redirect_to_owner_node")
        .expect("redirect");
    let (n1, n2) = Server::pair(&[]);
    let req =
        s(redirect, "request").replace("127.0.0.1:9000", &format!("127.0.0.1:{}", n1.client_port));
    let (status, head, body) = exchange(n1.client_port, req.as_bytes()).expect("redirect");
    assert_eq!(status, 303, "{head}");
    assert!(body.is_empty());
    assert_eq!(header(&head, "content-length").as_deref(), Some("0"));
    assert_eq!(
        header(&head, "location").map(|l| l.replace(&n2.client_port.to_string(), "9100")),
        opt_str(redirect, "location"),
        "{head}"
    );
}
