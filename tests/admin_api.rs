//! The admin API of the seed document and beyond, on a real server.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn pub_to_user_and_offline_listing() {
    let s = Server::start(&[]);
    let (st, v) = s.post("/pub?to=user001&from=op", "payload one");
    assert_eq!((st, v), (200, json!({"result":"ok"})));
    s.post("/pub?to=user001&from=op&ttl=3600", "payload two");
    let msgs = s.offline("user001");
    assert_eq!(
        msgs,
        vec![
            json!({"y":3,"f":"op","t":"user001","b":"payload one","s":1}),
            json!({"y":3,"f":"op","t":"user001","b":"payload two","s":2}),
        ]
    );
    assert_eq!(s.stats()["request"]["Pub"], 2);
}

#[test]
fn pub_to_channel_gives_each_member_its_own_seq() {
    let s = Server::start(&[]);
    s.post("/pub?to=user2&from=op", "earlier");
    for u in ["user1", "user2", "user3"] {
        let (st, v) = s.get(&format!("/sub?uid={u}&cid=channel1"));
        assert_eq!((st, v), (200, json!({"result":"ok"})));
    }
    let (st, _) = s.post(
        "/pub?channel=channel1&from=webservice",
        "this is a channel message",
    );
    assert_eq!(st, 200);
    assert_eq!(
        s.offline("user1"),
        vec![
            json!({"y":4,"f":"webservice","t":"user1","c":"channel1","b":"this is a channel message","s":1})
        ]
    );
    assert_eq!(s.offline("user2")[1]["s"], 2);
    let (st, _) = s.get("/unsub?uid=user3&cid=channel1");
    assert_eq!(st, 200);
    s.post("/pub?channel=channel1&from=webservice", "second");
    assert_eq!(s.offline("user3").len(), 1);
    assert_eq!(s.offline("user1").len(), 2);
    // A live member gets it on its stream.
    let mut c = s.connect("user1");
    assert_eq!(c.recv()["s"], 1);
    assert_eq!(c.recv()["s"], 2);
    s.post("/pub?channel=channel1&from=webservice", "live");
    let m = c.recv();
    assert_eq!(
        (m["s"].as_u64(), m["c"].as_str()),
        (Some(3), Some("channel1"))
    );
}

#[test]
fn ttl_expiry_and_ttl_zero() {
    let s = Server::start(&[]);
    // Expiry has one-second granularity: ttl=3 lives at least two seconds.
    s.post("/pub?to=u1&from=op&ttl=3", "short lived");
    s.post("/pub?to=u1&from=op", "kept");
    assert_eq!(s.offline("u1").len(), 2);
    wait_until(
        Duration::from_secs(10),
        "the ttl=3 message to expire",
        || s.offline("u1").len() == 1,
    );
    assert_eq!(s.offline("u1")[0]["b"], "kept");
    // ttl=0: no seq, not stored, delivered only when online.
    s.post("/pub?to=u2&from=op&ttl=0", "gone");
    assert!(s.offline("u2").is_empty());
    let mut c = s.connect("u2");
    s.post("/pub?to=u2&from=op&ttl=0", "now");
    let m = c.recv();
    assert_eq!(m, json!({"y":3,"f":"op","t":"u2","b":"now"}));
    s.post("/pub?to=u2&from=op", "stored");
    assert_eq!(c.recv()["s"], 1, "ttl=0 messages take no seq");
}

#[test]
fn shard_answers_the_client_address() {
    let s = Server::start(&[]);
    let (st, v) = s.get("/shard?uid=user1");
    assert_eq!(st, 200);
    assert_eq!(v, json!({"result": format!("127.0.0.1:{}", s.client_port)}));
    let (st, v) = s.get("/shard");
    assert_eq!((st, v), (400, json!({"error":"missing uid"})));
}

#[test]
fn stats_has_the_seed_keys_and_counts() {
    let s = Server::start(&[]);
    let mut c = s.connect("user001");
    c.send(r#"{"y":0}"#);
    c.recv();
    let st = s.stats();
    for key in [
        "auth_fail_number",
        "bad_request_number",
        "error_number",
        "redirect_number",
        "server_start_datetime",
        "server_start_timestamp",
    ] {
        assert!(st.get(key).is_some(), "missing {key}");
    }
    for key in ["ack", "cmsg", "hb", "msg", "sub", "unsub"] {
        assert!(
            st["recv_type"].get(key).is_some(),
            "missing recv_type.{key}"
        );
    }
    for dir in ["recv", "send"] {
        for what in ["bytes", "number"] {
            for k in [
                format!("avg_{dir}_{what}_per_second"),
                format!("max_{dir}_{what}_per_second"),
                format!("total_{dir}_{what}"),
            ] {
                assert!(st["throughput"].get(&k).is_some(), "missing throughput.{k}");
            }
        }
    }
    for key in [
        "connect",
        "disconnect",
        "max_user_growth_per_second",
        "max_user_number",
        "max_user_reduce_per_second",
        "reconnect",
        "user_number",
    ] {
        assert!(st["user"].get(key).is_some(), "missing user.{key}");
    }
    assert_eq!(st["request"]["Connect"], 1);
    assert_eq!(st["user"]["connect"], 1);
    assert_eq!(st["user"]["user_number"], 1);
    assert_eq!(st["throughput"]["total_recv_number"], 1);
    assert_eq!(st["throughput"]["total_recv_bytes"], 7);
    assert_eq!(st["throughput"]["total_send_number"], 1);
    let dt = st["server_start_datetime"].as_str().unwrap();
    assert_eq!(dt.len(), "2015/04/16 17:21:57".len(), "{dt}");
    // Per-second maxima are sampled once a second.
    wait_until(Duration::from_secs(5), "max_user_number sampled", || {
        s.stats()["user"]["max_user_number"] == 1
    });
    drop(c);
    wait_until(Duration::from_secs(5), "disconnect counted", || {
        let st = s.stats();
        st["user"]["disconnect"] == 1 && st["user"]["user_number"] == 0
    });
}

#[test]
fn metrics_health_and_disconnect() {
    let s = Server::start(&[]);
    let mut c = s.connect("user001");
    let (st, body) = s.try_request("GET", "/metrics", b"").unwrap();
    assert_eq!(st, 200);
    assert!(body.contains("ipush_user_number{shard=\"0\"}"), "{body}");
    assert!(body.contains("ipush_user_number{shard=\"1\"}"), "{body}");
    let (st, v) = s.get("/health");
    assert_eq!((st, v["result"]["cores"].as_u64()), (200, Some(2)));
    let (st, v) = s.post("/disconnect?uid=user001", "");
    assert_eq!((st, v), (200, json!({"result":"ok"})));
    let p = c.recv_chunk(Duration::from_secs(5)).expect("final chunk");
    assert_eq!(p, br#"{"error":"disconnected"}"#);
    assert!(c.ends_within(Duration::from_secs(5)));
    let (st, v) = s.post("/disconnect?uid=nobody", "");
    assert_eq!((st, v), (404, json!({"error":"user not connected"})));
}

#[test]
fn keep_alive_and_expect_continue() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.admin_port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = "x".repeat(2000);
    // Two requests on one connection; the first asks for 100-continue like curl does.
    let req = format!(
        "POST /pub?to=u1&from=op HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    sock.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    sock.write_all(body.as_bytes()).unwrap();
    let mut got = Vec::new();
    if n > 25 {
        got.extend_from_slice(&buf[25..n]);
    }
    while !String::from_utf8_lossy(&got).contains("{\"result\":\"ok\"}") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    sock.write_all(b"GET /msg?uid=u1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest).unwrap();
    let (st, b) = parse_response(&rest);
    assert_eq!(st, 200);
    assert!(b.contains(&body));
}
