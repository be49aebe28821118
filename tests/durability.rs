//! The embedded store's durability contract on the real server: what a publish answered
//! `{"result":"ok"}` (and what an acknowledged ack or subscribe stored) survives `kill -9`, a
//! graceful stop, and `--fsync=always`; seq counters, acks and memberships continue; a data dir
//! written with another `--cores` is refused.
mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EMBEDDED: &str = "--storage=embedded";

struct Scenario {
    /// uid → the full `/msg` listing before the stop.
    before: BTreeMap<String, Vec<Value>>,
    /// uid → highest seq given before the stop.
    max_seq: BTreeMap<String, u64>,
    /// Kept open until the server goes away (a live stream at the kill).
    _clients: Vec<Client>,
}

const UNICAST: [&str; 6] = ["du1", "du2", "du3", "du4", "du5", "du6"];
const MEMBERS: [&str; 3] = ["dm1", "dm2", "dm3"];

/// Publishes `n` messages to each unicast user, builds channel `dch` (dm1, dm2 by `/sub`, dm3
/// by its own stream), publishes 2 channel messages, lets `allacked` ack everything and `du1`
/// ack all but its last message.
fn scenario(s: &Server, n: u64) -> Scenario {
    let mut max_seq = BTreeMap::new();
    for u in UNICAST {
        for k in 1..=n {
            ok(s, &format!("/pub?to={u}&from=op"), &format!("{u}-m{k}"));
        }
        max_seq.insert(u.to_string(), n);
    }
    // dm1 has a unicast message before the channel ones.
    ok(s, "/pub?to=dm1&from=op", "dm1-pre");
    ok(s, "/sub?uid=dm1&cid=dch", "");
    ok(s, "/sub?uid=dm2&cid=dch", "");
    let mut c3 = s.connect("dm3");
    c3.send(r#"{"y":1,"c":"dch"}"#);
    assert!(barrier(&mut c3).is_empty());
    for k in 1..=2 {
        ok(s, "/pub?channel=dch&from=svc", &format!("dch-{k}"));
    }
    max_seq.insert("dm1".into(), 3);
    max_seq.insert("dm2".into(), 2);
    max_seq.insert("dm3".into(), 2);
    // dm3 is online: it gets both live (and does not ack).
    for k in 1..=2u64 {
        let m = c3.recv();
        assert_eq!(
            (m["s"].as_u64(), m["b"].as_str(), m["c"].as_str()),
            (Some(k), Some(&*format!("dch-{k}")), Some("dch"))
        );
    }

    // A user that acks everything it has, then goes away.
    ok(s, "/pub?to=allacked&from=op", "a1");
    ok(s, "/pub?to=allacked&from=op", "a2");
    max_seq.insert("allacked".into(), 2);
    {
        let mut a = s.connect("allacked");
        assert_eq!(a.recv()["s"], 1);
        assert_eq!(a.recv()["s"], 2);
        a.send(r#"{"y":5,"s":2}"#);
        assert!(barrier(&mut a).is_empty());
    }

    // du1 connects, gets its offline messages in order, acks all but the last one.
    let mut c1 = s.connect("du1");
    for k in 1..=n {
        let m = c1.recv();
        assert_eq!(
            (m["s"].as_u64(), m["b"].as_str()),
            (Some(k), Some(&*format!("du1-m{k}")))
        );
    }
    c1.send(&format!(r#"{{"y":5,"s":{}}}"#, n - 1));
    assert!(barrier(&mut c1).is_empty());

    let mut before = BTreeMap::new();
    for u in UNICAST
        .iter()
        .chain(MEMBERS.iter())
        .chain(["allacked"].iter())
    {
        before.insert(u.to_string(), s.offline(u));
    }
    // Sanity of what we are about to check.
    assert_eq!(listed(s, "du1"), vec![(n, format!("du1-m{n}"))]);
    assert!(before["allacked"].is_empty());
    assert_eq!(
        listed(s, "dm1"),
        vec![
            (1, "dm1-pre".into()),
            (2, "dch-1".into()),
            (3, "dch-2".into())
        ]
    );
    Scenario {
        before,
        max_seq,
        _clients: vec![c1, c3],
    }
}

/// After the restart: same listings, acked ones gone, memberships and counters continue, a
/// reconnecting client gets its offline messages in order.
fn verify(s: &Server, sc: &Scenario, n: u64) {
    for (u, msgs) in &sc.before {
        assert_eq!(&s.offline(u), msgs, "offline messages of {u} after restart");
    }
    // du1's acked messages stay acked.
    assert!(listed(s, "du1").iter().all(|(seq, _)| *seq == n));

    // Subscriptions survived: the next channel message reaches all three with their next seq.
    ok(s, "/pub?channel=dch&from=svc", "dch-after");
    for u in MEMBERS {
        let l = listed(s, u);
        let want = sc.max_seq[u] + 1;
        assert_eq!(
            l.last(),
            Some(&(want, "dch-after".to_string())),
            "{u} after restart: {l:?}"
        );
        assert_eq!(l.len() as u64, want, "{u} keeps every earlier message");
    }

    // Seq counters continue, also for a user with nothing left unacked.
    ok(s, "/pub?to=allacked&from=op", "a3");
    assert_eq!(listed(s, "allacked"), vec![(3, "a3".to_string())]);
    ok(s, "/pub?to=du1&from=op", "du1-after");
    assert_eq!(
        listed(s, "du1"),
        vec![(n, format!("du1-m{n}")), (n + 1, "du1-after".to_string())]
    );

    // A reconnecting client gets its offline messages in order, then live ones.
    let mut c = s.connect("du2");
    for k in 1..=n {
        let m = c.recv();
        assert_eq!(
            m,
            json!({"y":3,"f":"op","t":"du2","b":format!("du2-m{k}"),"s":k})
        );
    }
    ok(s, "/pub?to=du2&from=op", "live");
    let m = c.recv();
    assert_eq!(
        (m["s"].as_u64(), m["b"].as_str()),
        (Some(n + 1), Some("live"))
    );
    // dm3 reconnects: its two channel messages and the new one, in order.
    let mut c3 = s.connect("dm3");
    for (k, b) in [(1, "dch-1"), (2, "dch-2"), (3, "dch-after")] {
        let m = c3.recv();
        assert_eq!((m["s"].as_u64(), m["b"].as_str()), (Some(k), Some(b)));
    }
}

#[test]
fn kill9_keeps_every_acknowledged_message_seq_ack_and_subscription() {
    kill9_keeps_everything(&[EMBEDDED]);
}

/// The same against Cassandra / ScyllaDB (IPUSH_TEST_SCYLLA), in a keyspace of its own that
/// the server creates (--scylla_init_schema=true).
#[test]
fn scylla_kill9_keeps_every_acknowledged_message_seq_ack_and_subscription() {
    let Some(ks) = TestKeyspace::new("scylla_kill9_keeps_everything") else {
        return;
    };
    let mut flags = ks.flags();
    flags.push("--scylla_init_schema=true".into());
    kill9_keeps_everything(&strs(&flags));
}

fn kill9_keeps_everything(flags: &[&str]) {
    let mut s = Server::start(flags);
    let sc = scenario(&s, 5);
    let st = s.kill9();
    assert!(!st.success(), "SIGKILL, not a clean exit: {st:?}");
    s.restart(flags);
    verify(&s, &sc, 5);
    // And once more (recovery of a store that was itself recovered and written to).
    s.kill9();
    s.restart(flags);
    assert_eq!(listed(&s, "allacked"), vec![(3, "a3".to_string())]);
    assert_eq!(listed(&s, "du2").len(), 6);
    ok(&s, "/pub?to=du3&from=op", "x");
    assert_eq!(listed(&s, "du3").last().unwrap().0, 6);
}

/// `conf/default.conf` says `--data_dir=data`: a relative directory must work from the first
/// write on (glommio opens paths without a base directory) and after a restart.
#[test]
fn a_relative_data_dir_is_written_and_recovered() {
    let flags = [EMBEDDED, "--data_dir=rel-data"];
    let mut s = Server::start(&flags);
    for i in 1..=3 {
        ok(&s, "/pub?to=rel1&from=op", &format!("r{i}"));
    }
    assert_eq!(listed(&s, "rel1").len(), 3);
    assert!(
        s.dir.join("rel-data").is_dir(),
        "the store is under the server's directory"
    );
    s.kill9();
    s.restart(&flags);
    let got = listed(&s, "rel1");
    assert_eq!(
        got,
        vec![
            (1, "r1".to_string()),
            (2, "r2".to_string()),
            (3, "r3".to_string())
        ]
    );
    ok(&s, "/pub?to=rel1&from=op", "r4");
    assert_eq!(listed(&s, "rel1").last().unwrap().0, 4);
}

#[test]
fn kill9_with_fsync_always() {
    let mut s = Server::start(&[EMBEDDED, "--fsync=always"]);
    let sc = scenario(&s, 2);
    s.kill9();
    s.restart(&[EMBEDDED, "--fsync=always"]);
    verify(&s, &sc, 2);
}

#[test]
fn graceful_stop_then_restart_keeps_everything() {
    let mut s = Server::start(&[EMBEDDED]);
    let sc = scenario(&s, 3);
    let st = s.stop();
    assert!(st.success(), "graceful stop exit status {st:?}");
    s.restart(&[EMBEDDED]);
    verify(&s, &sc, 3);
}

/// Publishers keep going while the server is killed: every publish that was answered ok is
/// there afterwards with its seq, in order (the one in flight at the kill may or may not be).
#[test]
fn kill9_while_publishing_loses_no_acknowledged_message() {
    kill9_while_publishing(&[EMBEDDED, "--max_offline_msg_num=100000"]);
}

#[test]
fn scylla_kill9_while_publishing_loses_no_acknowledged_message() {
    let Some(ks) = TestKeyspace::new("scylla_kill9_while_publishing") else {
        return;
    };
    ks.create();
    let mut flags = ks.flags();
    flags.push("--max_offline_msg_num=100000".into());
    kill9_while_publishing(&strs(&flags));
}

fn kill9_while_publishing(flags: &[&str]) {
    let mut s = Server::start(flags);
    let admin = s.admin_port;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let uid = format!("hot{w}");
                while !stop.load(Ordering::Relaxed) && acked.len() < 2000 {
                    let body = format!("{uid}-{}", acked.len() + 1);
                    match publish_raw(admin, &uid, &body) {
                        Some(true) => acked.push(body),
                        Some(false) => panic!("publish refused while running"),
                        None => break, // the server went away
                    }
                }
                (uid, acked)
            })
        })
        .collect();
    // Kill once enough has been answered (bounded: at most 20 s of publishing).
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && s.stats()["request"]["Pub"].as_u64().unwrap_or(0) < 400 {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(String, Vec<String>)> =
        writers.into_iter().map(|h| h.join().unwrap()).collect();
    s.restart(flags);
    let mut total = 0;
    for (uid, acked) in results {
        let l = listed(&s, &uid);
        assert!(
            l.len() == acked.len() || l.len() == acked.len() + 1,
            "{uid}: {} answered ok, {} stored",
            acked.len(),
            l.len()
        );
        for (i, b) in acked.iter().enumerate() {
            assert_eq!(l[i], (i as u64 + 1, b.clone()), "{uid}");
        }
        total += acked.len();
        // The counter continues after whatever is stored.
        ok(&s, &format!("/pub?to={uid}&from=op"), "next");
        assert_eq!(listed(&s, &uid).last().unwrap().0, l.len() as u64 + 1);
    }
    assert!(total > 0, "nothing was published before the kill");
    eprintln!("{total} publishes answered ok before the kill, all found");
}

/// One `/pub` on its own connection: Some(true) on ok, Some(false) on another answer, None
/// when the connection fails (server killed).
fn publish_raw(admin_port: u16, uid: &str, body: &str) -> Option<bool> {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", admin_port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /pub?to={uid}&from=op HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    sock.read_to_end(&mut out).ok()?;
    if out.is_empty() {
        return None;
    }
    let (st, b) = parse_response(&out);
    Some(st == 200 && b.contains(r#""result":"ok""#))
}

#[test]
fn restart_with_other_cores_is_refused() {
    let mut s = Server::start(&[EMBEDDED, "--cores=1"]);
    ok(&s, "/pub?to=u1&from=op", "kept");
    s.stop();
    let before = dir_contents(&s.data_dir());
    let f = s.start_expect_failure(&[EMBEDDED, "--cores=2"], Duration::from_secs(30));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("--cores"),
        "the refusal names --cores: {}",
        f.stderr
    );
    assert!(f.stderr.contains("cores=1"), "{}", f.stderr);
    assert_eq!(
        dir_contents(&s.data_dir()),
        before,
        "a refused start changes nothing"
    );
    s.restart(&[EMBEDDED, "--cores=1"]);
    assert_eq!(listed(&s, "u1"), vec![(1, "kept".to_string())]);
}

/// Without `ipush.meta` (say, only the core directories were copied), the segment headers still
/// catch the other core count, and the refusal tells what to do.
#[test]
fn other_cores_without_meta_file_is_refused_by_segment_headers() {
    let mut s = Server::start(&[EMBEDDED, "--cores=1"]);
    ok(&s, "/pub?to=u1&from=op", "kept");
    s.stop();
    std::fs::remove_file(s.data_dir().join("ipush.meta")).unwrap();
    let f = s.start_expect_failure(&[EMBEDDED, "--cores=2"], Duration::from_secs(30));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("--cores=1"),
        "the refusal names --cores=1: {}",
        f.stderr
    );
}

/// BUG (src/server.rs `check_data_dir`): the failed `--cores=2` start above writes
/// `ipush.meta` = `cores=2` before the core stores refuse, so the advised `--cores=1` is then
/// refused by that file, and the refusal changed the data dir. Run with `--ignored`.
#[test]

fn after_a_refused_cores_start_the_advised_cores_works() {
    let mut s = Server::start(&[EMBEDDED, "--cores=1"]);
    ok(&s, "/pub?to=u1&from=op", "kept");
    s.stop();
    std::fs::remove_file(s.data_dir().join("ipush.meta")).unwrap();
    let before = dir_contents(&s.data_dir());
    let f = s.start_expect_failure(&[EMBEDDED, "--cores=2"], Duration::from_secs(30));
    assert!(!f.status.success());
    assert_eq!(
        dir_contents(&s.data_dir()).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "a refused start changes nothing"
    );
    s.restart(&[EMBEDDED, "--cores=1"]);
    assert_eq!(listed(&s, "u1"), vec![(1, "kept".to_string())]);
}
