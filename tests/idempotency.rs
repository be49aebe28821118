//! `POST /pub?...&idempotency_key=K` on the real server: a repeat within the window answers the
//! first answer (same `Ipush-Seq`, `Idempotent-Replayed: true`) and publishes nothing, also
//! while the first is in flight, after `kill -9` and a restart (embedded and scylla), and for
//! channels; after the window the key publishes again; bad keys get 400, a key reused with
//! another request 422.
mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What a publish answered.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    status: u16,
    body: Value,
    seq: Option<u64>,
    replayed: bool,
}

fn publish(s: &Server, path: &str, body: &str) -> Published {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let addr = format!("127.0.0.1:{}", s.admin_port);
    let (status, head, raw) = raw_exchange(&addr, req.as_bytes(), Duration::from_secs(20));
    Published {
        status,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        seq: header_value(&head, "ipush-seq").map(|v| v.parse().expect("Ipush-Seq")),
        replayed: header_value(&head, "idempotent-replayed").as_deref() == Some("true"),
    }
}

fn first(seq: u64) -> Published {
    Published {
        status: 200,
        body: json!({"result":"ok"}),
        seq: Some(seq),
        replayed: false,
    }
}

fn replay(seq: Option<u64>) -> Published {
    Published {
        status: 200,
        body: json!({"result":"ok"}),
        seq,
        replayed: true,
    }
}

fn msgs(v: &[(u64, &str)]) -> Vec<(u64, String)> {
    v.iter().map(|(s, b)| (*s, b.to_string())).collect()
}

/// The stream's next non-heartbeat message as (seq, body).
fn next(c: &mut Client) -> (u64, String) {
    let m = c
        .recv_non_hb(Duration::from_secs(10))
        .expect("a message within 10 s");
    (m["s"].as_u64().unwrap(), m["b"].as_str().unwrap().into())
}

#[test]
fn a_repeat_answers_the_first_answer_and_publishes_nothing() {
    let s = Server::start(&[]);
    let mut c = s.connect("iu1");
    let path = "/pub?to=iu1&from=op&idempotency_key=order-1";
    assert_eq!(publish(&s, path, "hi"), first(1));
    assert_eq!(publish(&s, path, "hi"), replay(Some(1)));
    assert_eq!(publish(&s, path, "hi"), replay(Some(1)));
    // A publish without a key after the repeats: the stream's next message after seq 1 is
    // it, so the repeats delivered nothing in between.
    assert_eq!(publish(&s, "/pub?to=iu1&from=op", "plain"), first(2));
    assert_eq!(next(&mut c), (1, "hi".into()));
    assert_eq!(next(&mut c), (2, "plain".into()));
    assert_eq!(listed(&s, "iu1"), msgs(&[(1, "hi"), (2, "plain")]));

    // The same key to another user is another key.
    let other = "/pub?to=iu2&from=op&idempotency_key=order-1";
    assert_eq!(publish(&s, other, "hi"), first(1));
    // The same key with another body, from or ttl: 422, nothing published.
    for p in [
        path.to_string(),
        path.replace("from=op", "from=op2"),
        format!("{path}&ttl=60"),
    ] {
        let body = if p == path { "changed" } else { "hi" };
        let got = publish(&s, &p, body);
        assert_eq!(got.status, 422, "{p}: {got:?}");
        let why = got.body["error"].as_str().unwrap();
        assert!(why.contains("idempotency_key already used"), "{why}");
    }
    assert_eq!(listed(&s, "iu1").len(), 2);
    let stats = metric_sum(&s, "ipush_idem_replayed");
    assert_eq!(stats, 2.0);
    assert_eq!(metric_sum(&s, "ipush_idem_refused"), 3.0);
}

#[test]
fn concurrent_repeats_publish_once() {
    let s = Server::start(&[]);
    let path = "/pub?to=ic1&from=op&idempotency_key=burst";
    let answers: Vec<Published> = std::thread::scope(|sc| {
        let tasks: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| publish(&s, path, "once")))
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|a| !a.replayed).count(),
        1,
        "{answers:?}"
    );
    for a in &answers {
        assert_eq!((a.status, a.seq), (200, Some(1)), "{a:?}");
    }
    assert_eq!(listed(&s, "ic1"), msgs(&[(1, "once")]));
}

#[test]
fn bad_keys_get_400_and_publish_nothing() {
    let s = Server::start(&[]);
    let long = "k".repeat(129);
    for key in ["", "a%20b", "a/b", "%C3%A4", "a%0Ab", long.as_str()] {
        for dest in ["to=ib1", "channel=ibch"] {
            let p = format!("/pub?{dest}&from=op&idempotency_key={key}");
            let got = publish(&s, &p, "x");
            assert_eq!(got.status, 400, "{p}: {got:?}");
            let why = got.body["error"].as_str().unwrap();
            assert!(why.starts_with("invalid idempotency_key"), "{p}: {why}");
        }
    }
    assert!(listed(&s, "ib1").is_empty());
    // The longest key is fine.
    let p = format!("/pub?to=ib1&from=op&idempotency_key={}", "k".repeat(128));
    assert_eq!(publish(&s, &p, "x"), first(1));
}

#[test]
fn channel_publishes_are_deduplicated_too() {
    let s = Server::start(&[]);
    let members = ["icm1", "icm2", "icm3"];
    for m in members {
        assert_eq!(s.get(&format!("/sub?uid={m}&cid=ich")).0, 200);
    }
    let path = "/pub?channel=ich&from=op&idempotency_key=news-7";
    let no_seq = |replayed| Published {
        status: 200,
        body: json!({"result":"ok"}),
        seq: None,
        replayed,
    };
    assert_eq!(publish(&s, path, "news"), no_seq(false));
    assert_eq!(publish(&s, path, "news"), no_seq(true));
    assert_eq!(publish(&s, path, "other").status, 422);
    // Another key, and the same key to a user: both publish.
    let again = "/pub?channel=ich&from=op&idempotency_key=news-8";
    assert_eq!(publish(&s, again, "more"), no_seq(false));
    let user = "/pub?to=icm1&from=op&idempotency_key=news-7";
    assert_eq!(publish(&s, user, "direct"), first(3));
    assert_eq!(
        listed(&s, "icm1"),
        msgs(&[(1, "news"), (2, "more"), (3, "direct")])
    );
    for m in &members[1..] {
        assert_eq!(listed(&s, m), msgs(&[(1, "news"), (2, "more")]), "{m}");
    }
}

/// Publishes a keyed unicast, a keyed ttl=0 message and a keyed channel message, kills the
/// server with SIGKILL, restarts it, and checks every repeat answers the first answer.
fn survives_kill9(s: &mut Server, flags: &[&str]) {
    assert_eq!(s.get("/sub?uid=ik2&cid=ikch").0, 200);
    let unicast = "/pub?to=ik1&from=op&idempotency_key=k-1";
    let live = "/pub?to=ik1&from=op&ttl=0&idempotency_key=k-0";
    let channel = "/pub?channel=ikch&from=op&idempotency_key=k-c";
    assert_eq!(publish(s, unicast, "kept"), first(1));
    assert_eq!(publish(s, "/pub?to=ik1&from=op", "plain"), first(2));
    let ttl0 = publish(s, live, "live");
    assert_eq!((ttl0.status, ttl0.seq, ttl0.replayed), (200, None, false));
    assert_eq!(publish(s, channel, "chan").status, 200);
    s.kill9();
    s.restart(flags);
    assert_eq!(publish(s, unicast, "kept"), replay(Some(1)));
    assert_eq!(publish(s, live, "live"), replay(None));
    let again = publish(s, channel, "chan");
    assert!(again.replayed && again.status == 200, "{again:?}");
    assert_eq!(listed(s, "ik1"), msgs(&[(1, "kept"), (2, "plain")]));
    assert_eq!(listed(s, "ik2"), msgs(&[(1, "chan")]));
    // A new key still publishes, with the next seq.
    let next_key = "/pub?to=ik1&from=op&idempotency_key=k-2";
    assert_eq!(publish(s, next_key, "new"), first(3));
}

#[test]
fn a_repeat_after_kill9_and_restart_answers_the_same_seq() {
    let flags = ["--storage=embedded"];
    let mut s = Server::start(&flags);
    survives_kill9(&mut s, &flags);
}

#[test]
fn after_the_window_the_key_publishes_again() {
    // Window 3 s: expiry is in whole seconds, so the key lives at least 2 s.
    let s = Server::start(&["--idempotency_window_s=3"]);
    let path = "/pub?to=iw1&from=op&idempotency_key=w";
    let started = Instant::now();
    assert_eq!(publish(&s, path, "one"), first(1));
    let repeat = publish(&s, path, "one");
    if started.elapsed() < Duration::from_secs(2) {
        assert_eq!(repeat, replay(Some(1)));
    }
    // Repeats are answered from the first until the window ends; then the key publishes.
    let mut last = repeat;
    wait_until(Duration::from_secs(20), "the key's window to end", || {
        last = publish(&s, path, "one");
        !last.replayed
    });
    assert_eq!(last, first(2));
    assert_eq!(listed(&s, "iw1"), msgs(&[(1, "one"), (2, "one")]));
}

#[test]
fn a_full_key_table_answers_429() {
    // One core, two keys at most: a third key waits for the first ones to expire.
    let s = Server::start(&["--cores=1", "--idempotency_max_keys=2"]);
    for (k, seq) in [("a", 1), ("b", 2)] {
        let p = format!("/pub?to=if1&from=op&idempotency_key={k}");
        assert_eq!(publish(&s, &p, "x"), first(seq));
    }
    let got = publish(&s, "/pub?to=if1&from=op&idempotency_key=c", "x");
    assert_eq!(got.status, 429, "{got:?}");
    assert!(got.body["error"]
        .as_str()
        .unwrap()
        .contains("--idempotency_max_keys"));
    // Known keys still answer, and publishes without a key still go through.
    assert_eq!(
        publish(&s, "/pub?to=if1&from=op&idempotency_key=a", "x"),
        replay(Some(1))
    );
    assert_eq!(publish(&s, "/pub?to=if1&from=op", "x"), first(3));
    assert_eq!(listed(&s, "if1").len(), 3);
}

#[test]
fn scylla_repeat_after_kill9_and_restart_answers_the_same_seq() {
    let Some(ks) = TestKeyspace::new("scylla_repeat_after_kill9_and_restart_answers_the_same_seq")
    else {
        return;
    };
    // A keyspace of the schema before idempotency keys: --scylla_init_schema adds the table.
    ks.create();
    ks.run(&[format!("DROP TABLE {}.idempotency", ks.name)]);
    let mut flags = ks.flags();
    flags.push("--scylla_init_schema=true".into());
    let flags = strs(&flags);
    let mut s = Server::start(&flags);
    survives_kill9(&mut s, &flags);
}
