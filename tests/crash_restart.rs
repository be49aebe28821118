//! `kill -9` then an immediate restart on the same ports: the new process waits out the
//! listeners the kernel still holds for the dead one (bounded bind retry), starts, serves, and
//! finds every acknowledged message of the embedded store.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[test]
fn kill9_then_immediate_restart_on_the_same_ports_repeatedly() {
    let mut s = Server::start(&["--storage=embedded"]);
    let (client_port, admin_port) = (s.client_port, s.admin_port);
    let mut published: Vec<String> = Vec::new();
    for round in 0..5 {
        for k in 0..3 {
            let body = format!("r{round}-m{k}");
            let (st, v) = s.post("/pub?to=crashy&from=op", &body);
            assert_eq!((st, v), (200, json!({"result":"ok"})), "{body}");
            published.push(body);
        }
        // A live stream at the kill: its socket is among what the kernel tears down late.
        let c = s.connect("streamer");
        assert_eq!(c.status, 200);
        // SIGKILL and reap without polling: the restart follows as soon as the old process is
        // gone, which is when the kernel may still hold its listeners.
        let mut old = s.child.take().expect("running");
        old.kill().expect("SIGKILL");
        old.wait().expect("reap");
        drop(c);
        s.restart_same_ports(&["--storage=embedded"], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("restart {round} on the same ports failed: {e}"));
        assert_eq!((s.client_port, s.admin_port), (client_port, admin_port));
        // It serves: a stream and the admin API.
        let mut c = s.connect("crashy");
        assert_eq!(c.status, 200, "{}", c.head);
        let mut got = Vec::new();
        while got.len() < published.len() {
            let m = c
                .recv_non_hb(Duration::from_secs(10))
                .expect("stream ended");
            got.push(m["b"].as_str().expect("body").to_string());
        }
        // Every acknowledged publish, oldest first (the offline limit is 100).
        assert_eq!(got, published, "round {round}");
        drop(c);
        let seqs: Vec<u64> = s
            .offline("crashy")
            .iter()
            .map(|m| m["s"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=published.len() as u64).collect::<Vec<_>>());
    }
    s.stop();
}
