//! The dynamic cluster with real processes on the CI's Cassandra (`IPUSH_TEST_SCYLLA`): three
//! `ipush_server`s with `--storage=scylla --node=NAME` and no `--nodes` find each other and
//! share the slots; under continuous publishing to hundreds of users (and with streams
//! connected), one is killed with SIGKILL and its users are served by the others within the
//! failover bound; it comes back and takes its share back. A checker then holds every user to
//! what was acknowledged: each `ok` stored exactly once, seqs contiguous, and no seq a stream
//! showed carrying another body.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{strs, unused_port, wait_until, Client, Server, TestKeyspace};
use serde_json::Value;

const SLOTS: u32 = 64;
const USERS: usize = 200;
const MEMBER_TIMEOUT_MS: u64 = 2000;

/// The tests of this file run one at a time: each is three nodes under load, and their
/// timings (failover, hand-over) are what they measure.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_node(ks: &TestKeyspace, name: &str) -> Server {
    Server::start(&strs(&node_flags(ks, name, unused_port())))
}

fn node_flags(ks: &TestKeyspace, name: &str, bus_port: u16) -> Vec<String> {
    let mut flags = ks.flags();
    flags.extend([
        format!("--node={name}"),
        format!("--bus_port={bus_port}"),
        format!("--member_timeout_ms={MEMBER_TIMEOUT_MS}"),
        format!("--cluster_slots={SLOTS}"),
        "--max_offline_msg_num=100000".into(),
        "--cluster_timeout_ms=1000".into(),
    ]);
    flags
}

fn health(s: &Server) -> Option<Value> {
    let (st, body) = s.try_request("GET", "/health", b"").ok()?;
    (st == 200).then(|| serde_json::from_str::<Value>(&body).ok())?
}

/// Every node in `nodes` sees exactly `names` up, and together they serve every slot once.
fn settled(nodes: &[&Server], names: &[&str]) -> bool {
    let mut served = 0;
    for s in nodes {
        let Some(h) = health(s) else { return false };
        let up: Vec<&str> = h["result"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"] == "up")
            .filter_map(|m| m["name"].as_str())
            .collect();
        if up != names {
            return false;
        }
        served += h["result"]["slots_served"].as_u64().unwrap_or(0);
    }
    served == u64::from(SLOTS)
}

/// What the publisher saw: per user, the bodies answered `ok` and those with no known outcome
/// (no answer, or a 503: counted in `failed` too).
#[derive(Default)]
struct Log {
    ok: HashMap<String, Vec<String>>,
    unknown: HashMap<String, Vec<String>>,
    failed: usize,
    /// Why the first few 503s.
    reasons: Vec<String>,
}

/// Publishes to every user in turn through whichever node in `targets` is first, until `stop`
/// (bodies `TAG:uid-k`, unique per publisher).
fn publisher(
    tag: &'static str,
    targets: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut k = 0usize;
        while !stop.load(Ordering::Acquire) {
            let uid = format!("u{}", k % USERS);
            let body = format!("{tag}:{uid}-{k}");
            k += 1;
            let port = { targets.lock().unwrap().first().copied() };
            let Some(port) = port else { break };
            let r = common::admin_port_exchange(
                port,
                "POST",
                &format!("/pub?to={uid}&from=t"),
                body.as_bytes(),
            );
            let mut l = log.lock().unwrap();
            match r {
                Some((200, _)) => l.ok.entry(uid).or_default().push(body),
                // Not acknowledged, but a node that timed out waiting for another's answer
                // cannot know whether the write landed: in doubt, like no answer at all.
                Some((503, why)) => {
                    l.failed += 1;
                    if l.reasons.len() < 10 {
                        l.reasons.push(format!("{uid}: {why}"));
                    }
                    l.unknown.entry(uid).or_default().push(body);
                }
                _ => l.unknown.entry(uid).or_default().push(body),
            }
        }
    })
}

/// What a watched stream saw: every (seq, body) once (a replay after a move skipped), and how
/// many times it was told to move.
type Watched = (Vec<(u64, String)>, usize);

/// A stream of `uid` on the node that owns it (asked of `any`), read until it ends without a
/// move signal or the test stops it. On the move signal it reconnects to the location, as a
/// client does (following a 303, waiting out a 503), and drops the replayed seqs it has.
fn watch(any: &Server, uid: &str) -> std::thread::JoinHandle<Watched> {
    let (_, v) = any.get(&format!("/shard?uid={uid}"));
    let mut addr = v["result"].as_str().unwrap().to_string();
    let uid = uid.to_string();
    std::thread::spawn(move || {
        let (mut seen, mut moves) = (Vec::new(), 0);
        let end = Instant::now() + Duration::from_secs(120);
        'connect: while Instant::now() < end {
            let Ok(mut c) = Client::connect(&addr, &uid, "pw") else {
                break;
            };
            match c.status {
                200 => {}
                303 => {
                    match common::header_value(&c.head, "location").and_then(|l| host_of(&l)) {
                        Some(a) => addr = a,
                        None => break,
                    }
                    continue;
                }
                503 => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                _ => break,
            }
            while Instant::now() < end {
                match c.recv_chunk_or_timeout(Duration::from_millis(500)) {
                    Ok(Some(p)) => {
                        let Ok(m) = serde_json::from_slice::<Value>(&p) else {
                            continue;
                        };
                        if m["error"] == "moved" {
                            let Some(a) = m["location"].as_str().and_then(host_of) else {
                                break 'connect;
                            };
                            moves += 1;
                            addr = a;
                            continue 'connect;
                        }
                        if let (Some(s), Some(b)) = (m["s"].as_u64(), m["b"].as_str()) {
                            if seen.last().is_none_or(|(last, _)| s > *last) {
                                seen.push((s, b.to_string()));
                            }
                        }
                    }
                    Ok(None) => break 'connect,
                    Err(()) => {}
                }
            }
        }
        (seen, moves)
    })
}

/// `HOST:PORT` of an `http://HOST:PORT/…` URL.
fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    Some(rest.split('/').next()?.to_string())
}

/// Publishes acknowledged so far.
fn acked(log: &Mutex<Log>) -> usize {
    log.lock().unwrap().ok.values().map(Vec::len).sum()
}

/// Waits (bounded) until `n` more publishes than now are acknowledged.
fn more_acked(log: &Mutex<Log>, n: usize, what: &str) {
    let before = acked(log);
    wait_until(Duration::from_secs(30), what, || acked(log) >= before + n);
}

/// Streams of 24 users spread over the nodes (every 7th uid), found through `any`.
fn watch_some(any: &Server) -> Vec<(String, std::thread::JoinHandle<Watched>)> {
    (0..24)
        .map(|i| format!("u{}", i * 7))
        .map(|u| {
            let h = watch(any, &u);
            (u, h)
        })
        .collect()
}

/// Every user's stored messages (seq -> body), read from `s`.
fn stored(s: &Server) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut out = BTreeMap::new();
    for i in 0..USERS {
        let uid = format!("u{i}");
        let mut got = None;
        wait_until(Duration::from_secs(20), "reading a user's messages", || {
            let (st, v) = s.get(&format!("/msg?uid={uid}"));
            if st != 200 {
                return false;
            }
            got = Some(
                v["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        let m: Value = serde_json::from_str(l.as_str().unwrap()).unwrap();
                        (
                            m["s"].as_u64().unwrap(),
                            m["b"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            true
        });
        out.insert(uid, got.unwrap());
    }
    out
}

/// The checker: each acknowledged body stored exactly once, nothing stored that was never
/// sent, seqs 1..=n, and no seq a stream showed with a body other than the stored one.
fn check(
    stored: &BTreeMap<String, Vec<(u64, String)>>,
    log: &Log,
    streams: &[(String, Vec<(u64, String)>)],
) {
    for (uid, msgs) in stored {
        let seqs: Vec<u64> = msgs.iter().map(|(s, _)| *s).collect();
        let want: Vec<u64> = (1..=msgs.len() as u64).collect();
        assert_eq!(seqs, want, "{uid}: seqs not contiguous");
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, b) in msgs {
            *count.entry(b.as_str()).or_default() += 1;
        }
        for (b, n) in &count {
            assert_eq!(*n, 1, "{uid}: body {b} stored {n} times");
        }
        let ok = log.ok.get(uid).map(Vec::as_slice).unwrap_or_default();
        for b in ok {
            assert!(
                count.contains_key(b.as_str()),
                "{uid}: acknowledged {b} lost"
            );
        }
        let unknown = log.unknown.get(uid).map(Vec::as_slice).unwrap_or_default();
        for b in count.keys() {
            assert!(
                ok.iter().chain(unknown).any(|x| x == b),
                "{uid}: stored {b}, which was never acknowledged nor in doubt"
            );
        }
    }
    for (uid, seen) in streams {
        let msgs = &stored[uid];
        for (s, b) in seen {
            let at = msgs.get(*s as usize - 1).map(|(_, b)| b.as_str());
            assert_eq!(
                at,
                Some(b.as_str()),
                "{uid}: a stream showed seq {s} as {b}"
            );
        }
    }
}

#[test]
fn members_join_crash_and_come_back_without_losing_an_ok() {
    let _serial = serial();
    let Some(ks) = TestKeyspace::new("dynamic_cluster") else {
        return;
    };
    ks.create();
    let n1 = start_node(&ks, "n1");
    let n2 = start_node(&ks, "n2");
    let n3 = start_node(&ks, "n3");
    wait_until(
        Duration::from_secs(30),
        "three members share the slots",
        || settled(&[&n1, &n2, &n3], &["n1", "n2", "n3"]),
    );
    // Every user joins a channel before any slot moves: the memberships must move with them.
    for i in 0..USERS {
        let (st, v) = n1.get(&format!("/sub?uid=u{i}&cid=room"));
        assert_eq!(st, 200, "subscribing u{i}: {v}");
    }

    // Streams of a few users of each node, then continuous publishing through n1.
    let watchers = watch_some(&n1);
    let targets = Arc::new(Mutex::new(vec![n1.admin_port]));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let pubs = publisher("a", targets.clone(), stop.clone(), log.clone());
    more_acked(&log, 300, "publishing under way");

    // Crash: n3 dies; its users are served again by n1 or n2 within the bound.
    let mut n3 = n3;
    let victims: Vec<String> = (0..USERS)
        .map(|i| format!("u{i}"))
        .filter(|u| {
            let (_, v) = n2.get(&format!("/shard?uid={u}"));
            v["result"].as_str() == Some(n3.client_addr().as_str())
        })
        .collect();
    assert!(!victims.is_empty(), "n3 owns none of the users");
    n3.kill9();
    let t0 = Instant::now();
    let probe = &victims[0];
    wait_until(Duration::from_secs(15), "n3's users served again", || {
        let (st, _) = n2.post(&format!("/pub?to={probe}&from=probe"), "probe");
        if st == 200 {
            log.lock()
                .unwrap()
                .ok
                .entry(probe.clone())
                .or_default()
                .push("probe".into());
        }
        st == 200
    });
    let failover = t0.elapsed();
    eprintln!("dynamic_cluster: kill -9 of n3 -> its users served again after {failover:?}");
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?} (target 5 s with a {MEMBER_TIMEOUT_MS} ms member timeout)"
    );
    wait_until(
        Duration::from_secs(30),
        "two members share the slots",
        || settled(&[&n1, &n2], &["n1", "n2"]),
    );

    // Join: n3 comes back as a new incarnation and takes its share back by hand-over.
    n3.restart(&strs(&node_flags(&ks, "n3", unused_port())));
    wait_until(Duration::from_secs(30), "n3 takes its share back", || {
        settled(&[&n1, &n2, &n3], &["n1", "n2", "n3"])
    });
    more_acked(&log, 300, "publishing goes on");

    // Leave: SIGTERM to n2 hands its slots over first, then it exits 0; publishing through
    // n1 goes on, its users' requests held (at most a second) while their slot moves.
    let failed_before = log.lock().unwrap().failed;
    let mut n2 = n2;
    let t0 = Instant::now();
    let status = n2.stop();
    let left = t0.elapsed();
    assert!(status.success(), "n2 exited with {status} after SIGTERM");
    wait_until(
        Duration::from_secs(30),
        "two members share the slots",
        || settled(&[&n1, &n3], &["n1", "n3"]),
    );
    more_acked(&log, 300, "publishing goes on");
    let failed_leave = log.lock().unwrap().failed - failed_before;
    eprintln!("dynamic_cluster: SIGTERM of n2 -> left in {left:?}, {failed_leave} publishes refused meanwhile");
    assert!(
        failed_leave <= 5,
        "{failed_leave} publishes refused during a planned leave"
    );
    stop.store(true, Ordering::Release);
    pubs.join().unwrap();

    // After a crash, a join and a leave moved most slots, the channel still reaches everyone.
    let (st, v) = n1.post("/pub?channel=room&from=op", "room-final");
    assert_eq!(st, 200, "the channel publish: {v}");
    // The checker holds every member to it: stored exactly once, after its other messages.
    for i in 0..USERS {
        let mut l = log.lock().unwrap();
        l.ok.entry(format!("u{i}"))
            .or_default()
            .push("room-final".into());
    }

    let all = stored(&n1);
    let streams: Vec<(String, Watched)> = {
        // The streams on n1 and n3 run on; end them by stopping the nodes after the read.
        let mut n1 = n1;
        n1.stop();
        n3.stop();
        watchers
            .into_iter()
            .map(|(u, h)| (u, h.join().unwrap()))
            .collect::<Vec<_>>()
    };
    let moves: usize = streams.iter().map(|(_, (_, m))| m).sum();
    let streams: Vec<(String, Vec<(u64, String)>)> =
        streams.into_iter().map(|(u, (s, _))| (u, s)).collect();
    let l = log.lock().unwrap();
    let acked: usize = l.ok.values().map(Vec::len).sum();
    let shown: usize = streams.iter().map(|(_, s)| s.len()).sum();
    eprintln!("dynamic_cluster: the streams were told to move {moves} times and followed");
    assert!(
        moves > 0,
        "no stream was told to move through a join and a leave"
    );
    eprintln!(
        "dynamic_cluster: {acked} acknowledged, {} in doubt, {} refused (503), {shown} shown to streams",
        l.unknown.values().map(Vec::len).sum::<usize>(),
        l.failed
    );
    eprintln!("dynamic_cluster: refusals: {:?}", l.reasons);
    assert!(shown > 0, "no stream showed a message");
    check(&all, &l, &streams);
}

/// A paused member (SIGSTOP for longer than the member timeout) is declared down and its slots
/// claimed; requests that queued up on it meanwhile are served the moment it runs again, with
/// its stale view of who holds what. Fencing must keep every one of them from being answered
/// `ok` unless it is durable and from putting a second body under a seq; it then rejoins.
#[test]
fn a_paused_member_comes_back_without_corrupting_anyone() {
    let _serial = serial();
    let Some(ks) = TestKeyspace::new("dynamic_cluster_pause") else {
        return;
    };
    ks.create();
    let n1 = start_node(&ks, "n1");
    let n2 = start_node(&ks, "n2");
    let n3 = start_node(&ks, "n3");
    wait_until(
        Duration::from_secs(30),
        "three members share the slots",
        || settled(&[&n1, &n2, &n3], &["n1", "n2", "n3"]),
    );
    let watchers = watch_some(&n1);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    // One publisher through n1, one through n3 itself: its requests wait in the kernel while
    // it is stopped and reach its cores, stale view and all, at SIGCONT.
    let through_n1 = Arc::new(Mutex::new(vec![n1.admin_port]));
    let through_n3 = Arc::new(Mutex::new(vec![n3.admin_port]));
    let p1 = publisher("a", through_n1, stop.clone(), log.clone());
    // Several at once, so that several requests are waiting on n3 when it runs again.
    let p3: Vec<_> = ["b", "c", "d", "e", "f", "g"]
        .into_iter()
        .map(|tag| publisher(tag, through_n3.clone(), stop.clone(), log.clone()))
        .collect();
    more_acked(&log, 300, "publishing under way");

    unsafe { libc::kill(n3.pid() as i32, libc::SIGSTOP) };
    let t0 = Instant::now();
    wait_until(Duration::from_secs(20), "n3's slots claimed", || {
        settled(&[&n1, &n2], &["n1", "n2"])
    });
    eprintln!(
        "dynamic_cluster: n3 paused -> its slots claimed after {:?}",
        t0.elapsed()
    );
    more_acked(&log, 200, "publishing goes on");
    unsafe { libc::kill(n3.pid() as i32, libc::SIGCONT) };
    wait_until(
        Duration::from_secs(30),
        "n3 rejoins and takes its share back",
        || settled(&[&n1, &n2, &n3], &["n1", "n2", "n3"]),
    );
    more_acked(&log, 300, "publishing goes on");
    stop.store(true, Ordering::Release);
    p1.join().unwrap();
    for p in p3 {
        p.join().unwrap();
    }

    let all = stored(&n1);
    let (mut n1, mut n2, mut n3) = (n1, n2, n3);
    n1.stop();
    n2.stop();
    n3.stop();
    let streams: Vec<(String, Vec<(u64, String)>)> = watchers
        .into_iter()
        .map(|(u, h)| (u, h.join().unwrap().0))
        .collect();
    let l = log.lock().unwrap();
    eprintln!(
        "dynamic_cluster: pause: {} acknowledged, {} in doubt, {} refused; refusals {:?}",
        l.ok.values().map(Vec::len).sum::<usize>(),
        l.unknown.values().map(Vec::len).sum::<usize>(),
        l.failed,
        l.reasons
    );
    check(&all, &l, &streams);
}

/// iptables rules that drop TCP packets, removed again when dropped (the test's own, by a
/// comment naming this process).
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Cuts the member running as `uid` with bus port `its_bus` off from the bus ports
    /// `others` (both ways; nothing else, so the database stays reachable).
    fn bus(uid: u32, its_bus: u16, others: &[u16]) -> Cut {
        let tag = format!("ipush-test-{}", std::process::id());
        let ports: Vec<String> = others.iter().map(u16::to_string).collect();
        let rules = vec![
            // Every dial to its listener (only its peers dial it).
            format!("-p tcp --dport {its_bus}"),
            // Its dials to theirs.
            format!(
                "-p tcp -m owner --uid-owner {uid} -m multiport --dports {}",
                ports.join(",")
            ),
        ]
        .into_iter()
        .map(|r| {
            let mut v: Vec<String> = r.split(' ').map(str::to_string).collect();
            v.extend(["-m", "comment", "--comment", &tag, "-j", "DROP"].map(String::from));
            v
        })
        .collect::<Vec<_>>();
        for r in &rules {
            iptables("-A", r);
        }
        Cut { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            iptables("-D", r);
        }
    }
}

fn iptables(op: &str, rule: &[String]) {
    let st = std::process::Command::new("iptables")
        .arg(op)
        .arg("OUTPUT")
        .args(rule)
        .status()
        .expect("run iptables");
    assert!(st.success(), "iptables {op} OUTPUT {rule:?} failed");
}

/// Whether this test can cut links: root with iptables. Else "skipped" (a failure in CI).
fn can_cut(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let have = std::process::Command::new("iptables")
        .args(["-L", "OUTPUT", "-n"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root && have {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{test}: CI=true but this needs root and iptables (.ci/reliab.sh packages installs it)"
    );
    eprintln!("{test}: skipped (needs root and iptables)");
    false
}

/// A member cut off from its peers but not from the database keeps its slots (ownership is
/// the database's word, and its heartbeats still land): its users are served through it, the
/// others answer 503 for them meanwhile, nothing moves, and all is whole after the heal.
#[test]
fn a_member_cut_off_from_its_peers_keeps_its_slots_and_loses_nothing() {
    let _serial = serial();
    const TEST: &str = "dynamic_cluster_partition";
    const UID: u32 = 4242;
    let Some(ks) = TestKeyspace::new(TEST) else {
        return;
    };
    if !can_cut(TEST) {
        return;
    }
    ks.create();
    let (b1, b2, b3) = (unused_port(), unused_port(), unused_port());
    let n1 = Server::start(&strs(&node_flags(&ks, "n1", b1)));
    let n2 = Server::start(&strs(&node_flags(&ks, "n2", b2)));
    let n3 = Server::start_as(Some(UID), &strs(&node_flags(&ks, "n3", b3)));
    wait_until(
        Duration::from_secs(30),
        "three members share the slots",
        || settled(&[&n1, &n2, &n3], &["n1", "n2", "n3"]),
    );
    let slots_of = |s: &Server| health(s).unwrap()["result"]["slots_served"].clone();
    let before = [slots_of(&n1), slots_of(&n2), slots_of(&n3)];
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let p1 = publisher(
        "a",
        Arc::new(Mutex::new(vec![n1.admin_port])),
        stop.clone(),
        log.clone(),
    );
    let p3 = publisher(
        "b",
        Arc::new(Mutex::new(vec![n3.admin_port])),
        stop.clone(),
        log.clone(),
    );
    more_acked(&log, 300, "publishing under way");

    let victim = (0..USERS)
        .map(|i| format!("u{i}"))
        .find(|u| {
            let (_, v) = n1.get(&format!("/shard?uid={u}"));
            v["result"].as_str() == Some(n3.client_addr().as_str())
        })
        .expect("n3 owns a user");
    let cut = Cut::bus(UID, b3, &[b1, b2]);
    wait_until(
        Duration::from_secs(20),
        "n1 sees n3 down on the bus",
        || health(&n1).is_some_and(|h| h["result"]["peers"]["n3"] == "down"),
    );
    let (st, _) = n1.post(&format!("/pub?to={victim}&from=t"), "cut");
    assert_eq!(
        st, 503,
        "a publish for n3's user through n1 while the bus is cut"
    );
    let (st, _) = n3.post(&format!("/pub?to={victim}&from=t"), "through n3");
    assert_eq!(st, 200, "n3 still serves its own users");
    log.lock()
        .unwrap()
        .ok
        .entry(victim.clone())
        .or_default()
        .push("through n3".into());
    log.lock()
        .unwrap()
        .unknown
        .entry(victim.clone())
        .or_default()
        .push("cut".into());
    // Longer than the member timeout: nothing moves, the database still hears n3.
    std::thread::sleep(Duration::from_millis(2 * MEMBER_TIMEOUT_MS));
    assert_eq!(
        [slots_of(&n1), slots_of(&n2), slots_of(&n3)],
        before,
        "slots moved while only the bus was cut"
    );
    drop(cut);
    wait_until(
        Duration::from_secs(20),
        "n3's users served through n1 again",
        || {
            let (st, _) = n1.post(&format!("/pub?to={victim}&from=t"), "healed");
            let mut l = log.lock().unwrap();
            if st == 200 {
                l.ok.entry(victim.clone())
                    .or_default()
                    .push("healed".into());
            } else {
                l.unknown
                    .entry(victim.clone())
                    .or_default()
                    .push("healed".into());
            }
            st == 200
        },
    );
    more_acked(&log, 200, "publishing goes on");
    stop.store(true, Ordering::Release);
    p1.join().unwrap();
    p3.join().unwrap();
    let all = stored(&n1);
    let l = log.lock().unwrap();
    eprintln!(
        "dynamic_cluster: partition: {} acknowledged, {} in doubt, {} refused",
        l.ok.values().map(Vec::len).sum::<usize>(),
        l.unknown.values().map(Vec::len).sum::<usize>(),
        l.failed
    );
    check(&all, &l, &[]);
}
