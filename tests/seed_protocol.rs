//! The seed document's client protocol, example by example, over a real chunked stream.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn connect_answers_the_seed_headers() {
    let s = Server::start(&[]);
    let c = s.connect("user001");
    assert_eq!(c.status, 200);
    assert!(c.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", c.head);
    for h in [
        "Connection: keep-alive\r\n",
        "Content-Type: text/html; charset=utf-8\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Date: ",
    ] {
        assert!(c.head.contains(h), "missing {h:?} in {}", c.head);
    }
}

#[test]
fn heartbeat_is_answered() {
    let s = Server::start(&[]);
    let mut c = s.connect("user001");
    // The seed's literal frame: "a\r\n{"y":0}\r\n" is 7 bytes of payload; send it well-formed.
    c.send_raw(b"7\r\n{\"y\":0}\r\n");
    assert_eq!(c.recv(), json!({"y":0}));
    assert_eq!(s.stats()["recv_type"]["hb"], 1);
}

#[test]
fn user_message_between_clients_with_spoofed_from_overwritten() {
    let s = Server::start(&[]);
    let mut a = s.connect("user001");
    let mut b = s.connect("user002");
    a.send(r#"{"y": 3, "f": "user001", "t": "user002", "b": "this is a message body"}"#);
    assert_eq!(
        b.recv(),
        json!({"y":3,"f":"user001","t":"user002","b":"this is a message body","s":1})
    );
    // A lie about `f` is never trusted: the server writes the stream's own uid.
    a.send(r#"{"y":3,"f":"admin","t":"user002","b":"spoof"}"#);
    let m = b.recv();
    assert_eq!(m["f"], "user001");
    assert_eq!(m["s"], 2);
    assert_eq!(s.stats()["recv_type"]["msg"], 2);
}

#[test]
fn subscribe_channel_message_and_unsubscribe() {
    let s = Server::start(&[]);
    let mut a = s.connect("user001");
    let mut b = s.connect("user002");
    a.send(r#"{"y": 1, "f": "user001", "c": "channel001"}"#);
    b.send(r#"{"y": 1, "f": "user002", "c": "channel001"}"#);
    // Subscribes are stored at once; wait until both are counted.
    wait_until(Duration::from_secs(5), "two subscribes", || {
        s.stats()["recv_type"]["sub"] == 2
    });
    a.send(r#"{"y": 4, "f": "user001", "c": "channel001", "b": "this is a message body"}"#);
    // The sender is a member: it gets the message too, with its own seq.
    for (c, uid) in [(&mut a, "user001"), (&mut b, "user002")] {
        assert_eq!(
            c.recv(),
            json!({"y":4,"f":"user001","t":uid,"c":"channel001","b":"this is a message body","s":1})
        );
    }
    b.send(r#"{"y": 2, "f": "user002", "c": "channel001"}"#);
    wait_until(Duration::from_secs(5), "unsubscribe", || {
        s.stats()["recv_type"]["unsub"] == 1
    });
    a.send(r#"{"y":4,"c":"channel001","b":"second"}"#);
    assert_eq!(a.recv()["b"], "second");
    // b is no longer a member: its next message is the direct one below, not "second".
    let (st, _) = s.post("/pub?to=user002&from=op", "direct");
    assert_eq!(st, 200);
    let m = b.recv();
    assert_eq!(
        (m["b"].as_str(), m["s"].as_u64()),
        (Some("direct"), Some(2))
    );
    assert_eq!(s.stats()["recv_type"]["cmsg"], 2);
}

#[test]
fn ack_moves_last_ack_and_offline_list() {
    let s = Server::start(&[]);
    let mut a = s.connect("user001");
    for i in 1..=3 {
        s.post("/pub?to=user001&from=op", &format!("m{i}"));
    }
    for i in 1..=3 {
        assert_eq!(a.recv()["s"], i);
    }
    assert_eq!(s.offline("user001").len(), 3);
    a.send(r#"{"y": 5, "f": "user001", "s": 2}"#);
    wait_until(Duration::from_secs(5), "ack applied", || {
        s.offline("user001").len() == 1
    });
    assert_eq!(s.offline("user001")[0]["s"], 3);
    // last_ack = max(last_ack, s): an older ack changes nothing.
    a.send(r#"{"y":5,"s":1}"#);
    a.send(r#"{"y":0}"#);
    assert_eq!(a.recv(), json!({"y":0}));
    assert_eq!(s.offline("user001").len(), 1);
    assert_eq!(s.stats()["recv_type"]["ack"], 2);
}

#[test]
fn offline_messages_are_replayed_on_connect() {
    let s = Server::start(&["--max_offline_msg_num=3"]);
    for i in 1..=5 {
        let (st, v) = s.post("/pub?to=user78&from=webservice", &format!("m{i}"));
        assert_eq!((st, v), (200, json!({"result":"ok"})));
    }
    let mut c = s.connect("user78");
    // The newest 3, ascending, then live ones with no gap.
    for i in 3..=5 {
        let m = c.recv();
        assert_eq!(
            (m["s"].as_u64(), m["b"].as_str()),
            (Some(i), Some(&*format!("m{i}")))
        );
    }
    s.post("/pub?to=user78&from=webservice", "live");
    assert_eq!(c.recv()["s"], 6);
}

#[test]
fn second_connect_replaces_the_first() {
    let s = Server::start(&[]);
    let mut first = s.connect("user001");
    let mut second = s.connect("user001");
    let p = first
        .recv_chunk(Duration::from_secs(10))
        .expect("final chunk");
    assert_eq!(p, br#"{"error":"replaced"}"#);
    assert!(first.ends_within(Duration::from_secs(5)));
    s.post("/pub?to=user001&from=op", "to the new one");
    assert_eq!(second.recv()["b"], "to the new one");
    let st = s.stats();
    assert_eq!(st["user"]["reconnect"], 1);
    assert_eq!(st["user"]["user_number"], 1);
}

#[test]
fn server_heartbeat_after_silence() {
    let s = Server::start(&["--heartbeat_interval_s=1"]);
    let mut c = s.connect("user001");
    let p = c.recv_chunk(Duration::from_secs(5)).expect("heartbeat");
    assert_eq!(p, br#"{"y":0}"#);
}

#[test]
fn early_chunks_sent_with_the_request_head_are_read() {
    let s = Server::start(&[]);
    let mut c = Client::connect_raw(
        &s.client_addr(),
        "GET /connect?uid=u1&password=p HTTP/1.1\r\n\r\n7\r\n{\"y\":0}\r\n",
    )
    .unwrap();
    assert_eq!(c.status, 200);
    assert_eq!(c.recv(), json!({"y":0}));
}

#[test]
fn many_users_across_cores() {
    // Users hash to both cores; connections land on either and are handed over.
    let s = Server::start(&[]);
    let mut clients: Vec<_> = (0..40).map(|i| (i, s.connect(&format!("u{i}")))).collect();
    for (i, _) in &clients {
        let (st, _) = s.post(&format!("/pub?to=u{i}&from=op"), &format!("hi {i}"));
        assert_eq!(st, 200);
    }
    for (i, c) in clients.iter_mut() {
        let m = c.recv();
        assert_eq!(m["b"], format!("hi {i}"));
        assert_eq!(m["t"], format!("u{i}"));
    }
    assert_eq!(s.stats()["user"]["user_number"], 40);
}
