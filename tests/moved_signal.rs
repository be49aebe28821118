//! The move signal on every transport, against the real server: `POST /disconnect?uid=U&
//! location=ORIGIN` ends U's stream with `{"error":"moved","location":"ORIGIN/connect?uid=U"}`
//! — chunked: a final chunk then the last chunk; WebSocket: close 1012 with that JSON as the
//! reason (a data frame first when it does not fit a close reason); SSE: `event: moved` then
//! the end — and the client that reconnects gets what was published meanwhile, once.

mod common;
mod docs_support;

use docs_support::{chunk, enc, unhex, vectors, ws_frames, Kind, Server, Stream};
use serde_json::{json, Value};

const ORIGIN: &str = "http://127.0.0.1:9100";

fn moved_json(uid: &str) -> String {
    json!({"error": "moved", "location": format!("{ORIGIN}/connect?uid={}", enc(uid))}).to_string()
}

/// Opens U's stream and waits until it is live: a ttl-0 message published to U arrives (it
/// is then dropped from the buffer).
fn open_live(
    srv: &Server,
    uid: &str,
    kind: Kind,
    codec: Option<&str>,
) -> Stream<std::net::TcpStream> {
    let mut q = format!("uid={}&password=pw", enc(uid));
    if let Some(c) = codec {
        q.push_str(&format!("&codec={c}"));
    }
    let mut st = Stream::open(srv.client_port, &q, kind, "");
    assert!(matches!(st.status, 200 | 101), "{}", st.head);
    srv.admin_ok(
        "POST",
        &format!("/pub?to={}&from=op&ttl=0", enc(uid)),
        b"live?",
    );
    // The probe is the last thing on the stream; its body ends the message in either codec.
    let tail: &[u8] = match (kind, codec) {
        (Kind::Chunked, None) => b"live?\"}\r\n",
        (Kind::Chunked, Some(_)) => b"live?\r\n",
        (Kind::WebSocket, None) => b"live?\"}",
        (Kind::WebSocket, Some(_)) => b"live?",
        (Kind::Sse, _) => b"live?\"}\n\n",
    };
    st.read_until(|b| b.ends_with(tail));
    st.buf.clear();
    st
}

fn move_user(srv: &Server, uid: &str) -> Value {
    move_user_to(srv, uid, ORIGIN)
}

fn move_user_to(srv: &Server, uid: &str, origin: &str) -> Value {
    srv.admin_ok(
        "POST",
        &format!("/disconnect?uid={}&location={}", enc(uid), enc(origin)),
        b"",
    )
}

/// `/disconnect?uid=U&location=…` with `method`: (status, body).
fn try_move(srv: &Server, method: &str, uid: &str, origin: &str) -> (u16, String) {
    let path = format!("/disconnect?uid={}&location={}", enc(uid), enc(origin));
    let (status, _, body) = srv.admin(method, &path, b"").expect("admin");
    (status, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn chunked_ends_with_a_moved_chunk_in_its_codec() {
    let srv = Server::start(&[]);
    let mut st = open_live(&srv, "mover01", Kind::Chunked, None);
    assert_eq!(move_user(&srv, "mover01"), json!({"result": "ok"}));
    let rest = st.take_to_eof();
    let mut want = chunk(moved_json("mover01").as_bytes());
    want.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(&want)
    );

    // The vector's bytes, byte for byte, when the location is the vector's.
    let v = vectors("chunked.json");
    let streams = v["streams"].as_array().expect("streams");
    for (name, codec) in [("moved", None), ("moved_msgpack", Some("msgpack"))] {
        let vec = streams.iter().find(|s| s["name"] == name).expect(name);
        let loc = vec["messages"][0]["location"].as_str().expect("location");
        let (origin, q) = loc
            .split_once("/connect?uid=")
            .expect("vector location form");
        let uid = q.to_string();
        let mut st = open_live(&srv, &uid, Kind::Chunked, codec);
        move_user_to(&srv, &uid, origin);
        let rest = st.take_to_eof();
        assert_eq!(
            docs_support::hex(&rest),
            vec["bytes_hex"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn websocket_closes_1012_with_the_json_as_reason() {
    let srv = Server::start(&[]);
    let mut st = open_live(&srv, "mover02", Kind::WebSocket, None);
    move_user(&srv, "mover02");
    let rest = st.take_to_eof();
    let (frames, used) = ws_frames(&rest);
    assert_eq!(used, rest.len(), "whole frames only");
    assert_eq!(frames.len(), 1, "only the close frame: {frames:?}");
    let (op, payload, _) = &frames[0];
    assert_eq!(*op, 8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012);
    assert_eq!(
        std::str::from_utf8(&payload[2..]).unwrap(),
        moved_json("mover02")
    );

    // The vector's close frame when the location is the vector's.
    let v = vectors("websocket.json");
    let frame = v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .find(|f| f["name"] == "close_1012_moved")
        .expect("close_1012_moved");
    let reason: Value = serde_json::from_str(frame["close_reason"].as_str().unwrap()).unwrap();
    let loc = reason["location"].as_str().unwrap();
    let (origin, uid) = loc
        .split_once("/connect?uid=")
        .expect("vector location form");
    let mut st = open_live(&srv, uid, Kind::WebSocket, Some("msgpack"));
    move_user_to(&srv, uid, origin);
    let rest = st.take_to_eof();
    assert_eq!(
        rest,
        unhex(frame["hex"].as_str().unwrap()),
        "the vector's bytes"
    );
}

#[test]
fn websocket_sends_a_long_move_signal_as_a_message_first() {
    let srv = Server::start(&["--storage=memory"]);
    // 100 bytes of uid make the JSON longer than a close reason's 123 bytes.
    let uid = format!("long{}", "u".repeat(96));
    for codec in [None, Some("msgpack")] {
        let mut st = open_live(&srv, &uid, Kind::WebSocket, codec);
        move_user(&srv, &uid);
        let rest = st.take_to_eof();
        let (frames, _) = ws_frames(&rest);
        assert_eq!(frames.len(), 2, "{frames:?}");
        let data: Value = match codec {
            None => {
                assert_eq!(frames[0].0, 1, "text");
                serde_json::from_slice(&frames[0].1).unwrap()
            }
            Some(_) => {
                assert_eq!(frames[0].0, 2, "binary");
                let v = rmpv::decode::read_value(&mut &frames[0].1[..]).unwrap();
                let m = v.as_map().expect("a map");
                json!({
                    "error": m[0].1.as_str(),
                    "location": m[1].1.as_str(),
                })
            }
        };
        assert_eq!(
            data,
            serde_json::from_str::<Value>(&moved_json(&uid)).unwrap()
        );
        assert_eq!(frames[1].0, 8);
        assert_eq!(frames[1].1, [&1012u16.to_be_bytes()[..], b"moved"].concat());
    }
}

#[test]
fn sse_ends_with_a_moved_event() {
    let srv = Server::start(&[]);
    let mut st = open_live(&srv, "mover03", Kind::Sse, None);
    move_user(&srv, "mover03");
    let rest = st.take_to_eof();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("event: moved\ndata: {}\n\n", moved_json("mover03"))
    );
    let v = vectors("sse.json");
    let vec = v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == "moved")
        .expect("moved");
    let data: Value = serde_json::from_str(vec["events"][0]["data"].as_str().unwrap()).unwrap();
    let (origin, uid) = data["location"]
        .as_str()
        .unwrap()
        .split_once("/connect?uid=")
        .expect("vector location form");
    let mut st = open_live(&srv, uid, Kind::Sse, None);
    move_user_to(&srv, uid, origin);
    assert_eq!(
        String::from_utf8_lossy(&st.take_to_eof()),
        vec["text"].as_str().unwrap()
    );
}

#[test]
fn bad_moves_change_nothing_and_the_client_resumes_once() {
    let srv = Server::start(&[]);
    let mut st = open_live(&srv, "mover04", Kind::Chunked, None);
    for bad in [
        "10.0.0.2:9000",
        "ftp://h:1",
        "http://h:1/connect",
        "http://h:1?x",
    ] {
        let (status, body) = try_move(&srv, "POST", "mover04", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("invalid location"), "{body}");
    }
    assert_eq!(
        try_move(&srv, "POST", "nobody", ORIGIN).0,
        404,
        "no stream to move"
    );
    assert_eq!(try_move(&srv, "GET", "mover04", ORIGIN).0, 405);

    // The stream is untouched: a message still arrives on it.
    srv.admin_ok("POST", "/pub?to=mover04&from=op", b"first");
    st.read_until(|b| docs_support::find(b, b"first").is_some());
    let seen = String::from_utf8_lossy(&st.buf).to_string();
    assert!(seen.contains(r#""b":"first","s":1"#), "{seen}");
    move_user(&srv, "mover04");
    let rest = st.take_to_eof();
    assert!(String::from_utf8_lossy(&rest).contains(&moved_json("mover04")));

    // Published while it moves; the client acked nothing, so both come once, in order.
    srv.admin_ok("POST", "/pub?to=mover04&from=op", b"second");
    let mut again = Stream::open(
        srv.client_port,
        "uid=mover04&password=pw",
        Kind::Chunked,
        "",
    );
    again.read_until(|b| docs_support::find(b, b"second").is_some());
    let text = String::from_utf8_lossy(&again.buf).to_string();
    assert_eq!(text.matches(r#""b":"first""#).count(), 1, "{text}");
    assert_eq!(text.matches(r#""b":"second""#).count(), 1, "{text}");
    assert!(text.find("first") < text.find("second"), "{text}");
    assert!(common::find(text.as_bytes(), b"moved").is_none());
}

#[test]
fn a_move_is_routed_to_the_node_that_holds_the_stream() {
    let (a, b) = Server::pair(&[]);
    let b_addr = format!("127.0.0.1:{}", b.client_port);
    let uid = (0..200)
        .map(|i| format!("far{i}"))
        .find(|u| a.shard_of(u) == b_addr)
        .expect("a uid of node n2");
    let mut st = open_live(&b, &uid, Kind::Chunked, None);
    // Asked on node n1: it goes over the bus to n2, which ends the stream.
    move_user(&a, &uid);
    let rest = st.take_to_eof();
    let mut want = chunk(moved_json(&uid).as_bytes());
    want.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(rest, want);
    let metrics = b.admin_ok("GET", "/stats", b"");
    assert!(metrics.is_object());
    let (_, _, text) = b.admin("GET", "/metrics", b"").expect("metrics");
    let text = String::from_utf8_lossy(&text);
    let moved: f64 = text
        .lines()
        .filter(|l| l.starts_with("ipush_moved{") || l.starts_with("ipush_moved "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(moved, 1.0, "{text}");
}
