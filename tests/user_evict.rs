//! Idle users leave their core's memory (`--user_idle_s`): after thousands of distinct uids
//! connect and leave, the resident-users gauge falls back to zero, and a returning user gets its
//! exact seq, last ack, stored messages and channel memberships back from the store, on every
//! backend. (The RSS per departed uid is measured by perf/user-evict.sh, not here.)
mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Connections each churn thread holds open at once (4 threads: at most 1,000 open).
const BATCH: usize = 250;
const THREADS: usize = 4;

fn resident(s: &Server) -> f64 {
    metric_sum(s, "ipush_users_resident")
}

/// `n` distinct uids connect (their stream starts: head and replay) and leave, `THREADS`
/// threads with at most `BATCH` streams open each.
fn churn(s: &Server, tag: &str, n: usize) {
    let addr = s.client_addr();
    let per = n.div_ceil(THREADS);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (addr, tag) = (addr.clone(), tag.to_string());
            std::thread::spawn(move || {
                let uids: Vec<usize> = (t * per..((t + 1) * per).min(n)).collect();
                for chunk in uids.chunks(BATCH) {
                    let open: Vec<Client> = chunk
                        .iter()
                        .map(|i| Client::connect(&addr, &format!("{tag}{i}"), "pw").unwrap())
                        .collect();
                    assert!(open.iter().all(|c| c.status == 200));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("churn thread");
    }
}

/// The whole behaviour on one backend: state set up, `n` uids churned, every user evicted,
/// then the returning users' state checked to the seq.
fn evict_and_return(extra: &[&str], n: usize) {
    let mut flags = vec!["--user_idle_s=1"];
    flags.extend_from_slice(extra);
    let s = Server::start(&flags);
    // back-a: five messages, read on a stream, acked up to 3, member of chan-e.
    for i in 1..=5 {
        ok(&s, "/pub?to=back-a&from=op", &format!("a{i}"));
    }
    ok(&s, "/sub?uid=back-a&cid=chan-e", "");
    let mut c = s.connect("back-a");
    let seqs: Vec<u64> = (0..5).map(|_| c.recv()["s"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    c.send(r#"{"y":5,"s":3}"#);
    assert!(barrier(&mut c).is_empty());
    drop(c);
    // back-b: two messages, never connected.
    ok(&s, "/pub?to=back-b&from=op", "b1");
    ok(&s, "/pub?to=back-b&from=op", "b2");
    churn(&s, "churn-", n);
    // Every user leaves memory: back-a, back-b and all the churned ones.
    wait_until(Duration::from_secs(120), "resident users back to 0", || {
        resident(&s) == 0.0
    });
    let evicted = metric_sum(&s, "ipush_users_evicted");
    assert!(evicted >= (n + 2) as f64, "evicted {evicted} of {}", n + 2);

    // They come back exactly: last_ack 3 (only 4 and 5 listed), next seq 6, membership kept.
    assert_eq!(listed(&s, "back-a"), [(4, "a4".into()), (5, "a5".into())]);
    assert_eq!(listed(&s, "back-b"), [(1, "b1".into()), (2, "b2".into())]);
    ok(&s, "/pub?to=back-b&from=op", "b3");
    assert_eq!(listed(&s, "back-b").last().unwrap().0, 3);
    ok(&s, "/pub?to=back-a&from=op", "a6");
    let mut c = s.connect("back-a");
    let replay: Vec<(u64, Value)> = (0..3)
        .map(|_| {
            let m = c.recv();
            (m["s"].as_u64().unwrap(), m["b"].clone())
        })
        .collect();
    assert_eq!(
        replay,
        [(4, json!("a4")), (5, json!("a5")), (6, json!("a6"))]
    );
    let (st, v) = s.post("/pub?channel=chan-e&from=op", "e1");
    assert_eq!(st, 200, "{v}");
    let m = c.recv();
    assert_eq!(
        (m["c"].clone(), m["s"].clone()),
        (json!("chan-e"), json!(7))
    );
    assert!(resident(&s) >= 1.0, "a streaming user is resident");
}

#[test]
fn memory_backend_20000_uids_connect_leave_and_come_back() {
    evict_and_return(&[], 20_000);
}

#[test]
fn embedded_backend_users_come_back_from_the_log() {
    evict_and_return(&["--storage=embedded"], 2_000);
}

#[test]
fn scylla_backend_users_come_back_from_the_database() {
    let Some(ks) = TestKeyspace::new("scylla_backend_users_come_back_from_the_database") else {
        return;
    };
    ks.create();
    evict_and_return(&strs(&ks.flags()), 500);
}

#[test]
fn zero_keeps_every_user() {
    let s = Server::start(&["--user_idle_s=0"]);
    churn(&s, "keep-", 200);
    // Every stream has ended once the open-stream gauge is 0; nothing is evicted after that.
    wait_until(Duration::from_secs(30), "streams closed", || {
        metric_sum(&s, "ipush_user_number") == 0.0
    });
    let tick_end = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < tick_end {
        assert_eq!(resident(&s), 200.0);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(metric_sum(&s, "ipush_users_evicted"), 0.0);
}
