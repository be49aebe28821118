//! A client that never reads: its bounded send queue overflows, the server closes it, every
//! published message stays stored, and the next connect replays the newest ones in order.
mod common;
use common::*;

use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn slow_reader_is_disconnected_and_messages_are_kept() {
    let s = Server::start(&["--send_queue_max=16"]);

    // The slow reader: a tiny receive window, and we never read from it.
    let sock = connect_small_rcvbuf(&s.client_addr(), 4096);
    let slow = Client::connect_on(
        sock,
        "GET /connect?uid=slow&password=pw HTTP/1.1\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    )
    .expect("slow connect");
    assert_eq!(slow.status, 200);

    // A normal reader on the same server, read on its own thread.
    let mut fast = s.connect("fast");
    assert_eq!(fast.status, 200);
    const FAST_N: usize = 50;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < FAST_N {
            let v = fast
                .recv_non_hb(Duration::from_secs(60))
                .expect("fast stream ended");
            assert_eq!(v["y"], 3, "{v}");
            got.push(v["b"].as_str().unwrap().to_string());
        }
        (fast, got)
    });

    let body = "x".repeat(4000);
    const N: u64 = 2000;
    for i in 1..=N {
        let (st, v) = s.post("/pub?to=slow&from=op", &format!("{i}:{body}"));
        assert_eq!(st, 200, "publish {i}: {v}");
        assert_eq!(v["result"], "ok", "publish {i}: {v}");
        if i % (N / FAST_N as u64) == 0 {
            let (st, v) = s.post("/pub?to=fast&from=op", &format!("f{i}"));
            assert_eq!(st, 200, "{v}");
        }
    }

    wait_until(
        Duration::from_secs(20),
        "slow reader to be disconnected",
        || metric_sum(&s, "ipush_slow_disconnect") > 0.0,
    );
    wait_until(T, "only the fast user to remain online", || {
        s.stats()["user"]["user_number"] == 1
    });

    // Everything stays stored: the newest 100 (max_offline_msg_num default), ending at seq N.
    let off = s.offline("slow");
    assert_eq!(off.len(), 100, "offline list size");
    let seqs: Vec<u64> = off.iter().map(|m| m["s"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (N - 99..=N).collect();
    assert_eq!(seqs, want);
    for m in &off {
        let b = m["b"].as_str().unwrap();
        assert_eq!(b, format!("{}:{body}", m["s"]), "body matches seq");
    }

    // A fresh connect replays them in ascending seq ending at N.
    drop(slow);
    let mut again = s.connect("slow");
    assert_eq!(again.status, 200);
    for want_s in N - 99..=N {
        let v = again.recv_non_hb(T).expect("replay ended early");
        assert_eq!(v["y"], 3, "{v}");
        assert_eq!(v["s"], want_s, "replay order");
        assert_eq!(v["t"], "slow");
    }
    // Then nothing else pending; the stream is live.
    again.send(r#"{"y":0}"#);
    assert_eq!(again.recv(), json!({"y":0}));

    // The other client kept receiving normally, in order.
    let (_fast, got) = reader.join().expect("fast reader");
    let want: Vec<String> = (1..=FAST_N)
        .map(|k| format!("f{}", k as u64 * (N / FAST_N as u64)))
        .collect();
    assert_eq!(got, want);
}

/// A reader that stops reading while megabytes are published to it: the socket fills, the
/// rest waits on the server (in the stream's unsent bytes and its queue), and once the client
/// reads again it gets every message once, in seq order, nothing cut or doubled at the seams
/// between partial writes.
#[test]
fn a_paused_reader_gets_everything_in_order_when_it_reads_again() {
    let s = Server::start(&["--send_queue_max=100000"]);
    let sock = connect_small_rcvbuf(&s.client_addr(), 4096);
    let mut c = Client::connect_on(
        sock,
        "GET /connect?uid=pauser&password=pw HTTP/1.1\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    )
    .expect("connect");
    assert_eq!(c.status, 200);
    let body = "y".repeat(3000);
    const N: u64 = 1500;
    for i in 1..=N {
        let (st, v) = s.post("/pub?to=pauser&from=op", &format!("{i}:{body}"));
        assert_eq!((st, &v["result"]), (200, &json!("ok")), "publish {i}: {v}");
    }
    for want in 1..=N {
        let v = c.recv_non_hb(T).expect("stream ended early");
        assert_eq!(v["s"], want, "seq order");
        assert_eq!(v["b"], format!("{want}:{body}"), "body of seq {want}");
    }
    assert_eq!(metric_sum(&s, "ipush_slow_disconnect"), 0.0);
    assert!(
        metric_sum(&s, "ipush_send_blocked") > 0.0,
        "the socket filled up, so the unsent-bytes path ran"
    );
    // Messages queued while the socket was full left in shared writes.
    assert!(metric_sum(&s, "ipush_send_writes") < metric_sum(&s, "ipush_send_number"));
}
