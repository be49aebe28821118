//! The database stopping while ipush serves (`--storage=scylla`): the Cassandra / ScyllaDB
//! process of `IPUSH_TEST_SCYLLA` is frozen with SIGSTOP, so every query times out
//! (`--scylla_timeout_ms`); publishes answer 503, `/health` answers 503 naming the storage, and
//! once the process continues (SIGCONT) everything works again without a restart. The pid:
//! `IPUSH_TEST_SCYLLA_PID`, else the pid file of `cql/cassandra/start.sh`. One test in this
//! file on purpose: it freezes the shared database.
mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

/// The database's pid, or None when it is not known (then the test is skipped, or fails
/// under CI=true).
fn database_pid() -> Option<i32> {
    if let Ok(p) = std::env::var("IPUSH_TEST_SCYLLA_PID") {
        return Some(p.trim().parse().expect("IPUSH_TEST_SCYLLA_PID is a pid"));
    }
    let run = std::env::var("IPUSH_CASSANDRA_RUN").unwrap_or_else(|_| {
        let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        format!("{tmp}/ipush-cassandra")
    });
    std::fs::read_to_string(format!("{run}/cassandra.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Continues the frozen process however the test ends.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        // kill() returns before every thread has stopped (one busy in a syscall finishes it
        // first): wait, bounded, until all of them are stopped.
        let stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.flatten().all(|t| {
                        let stat =
                            std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                        state.starts_with('T') || state.starts_with('t')
                    })
                })
                .unwrap_or(false)
        };
        let end = Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(
                Instant::now() < end,
                "{pid} did not stop within 5 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_frozen_database_gives_503_and_unhealthy_then_recovers() {
    let test = "a_frozen_database_gives_503_and_unhealthy_then_recovers";
    let Some(ks) = TestKeyspace::new(test) else {
        return;
    };
    let Some(pid) = database_pid() else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{test}: CI=true but the database pid is unknown (IPUSH_TEST_SCYLLA_PID)"
        );
        // Straight to stderr: libtest hides eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped (no IPUSH_TEST_SCYLLA_PID and no cassandra pid file)"
        );
        return;
    };
    assert_eq!(
        unsafe { libc::kill(pid, 0) },
        0,
        "database pid {pid} not running"
    );
    let mut flags = ks.flags();
    flags.extend([
        "--scylla_init_schema=true".to_string(),
        "--scylla_timeout_ms=1000".to_string(),
    ]);
    let mut s = Server::start(&strs(&flags));
    assert_eq!(
        s.post("/pub?to=steady&from=op", "before"),
        (200, json!({"result":"ok"}))
    );

    let frozen = Frozen::new(pid);
    // A user already loaded (only the write fails) and a new one (its load fails).
    for to in ["steady", "stranger"] {
        let t = Instant::now();
        let (st, v) = s.post(&format!("/pub?to={to}&from=op"), "during");
        assert_eq!(st, 503, "{to}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains("scylla"), "{to}: {v}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{to}: 503 after {:?}",
            t.elapsed()
        );
    }
    let (st, v) = s.get("/health");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["result"]["status"], "storage unavailable", "{v}");
    assert!(
        v["result"]["storage"]
            .as_str()
            .is_some_and(|e| e.contains("health check")),
        "{v}"
    );
    let (st, _) = s.get("/msg?uid=steady");
    assert_eq!(st, 503, "reads fail the same way");
    drop(frozen);

    // Back without a restart of ipush.
    wait_until(Duration::from_secs(60), "healthy again", || {
        s.try_request("GET", "/health", b"")
            .is_ok_and(|(st, _)| st == 200)
    });
    wait_until(Duration::from_secs(30), "publish works again", || {
        s.try_request("POST", "/pub?to=steady&from=op", b"after")
            .is_ok_and(|(st, _)| st == 200)
    });
    let bodies: Vec<String> = s
        .offline("steady")
        .iter()
        .map(|m| m["b"].as_str().unwrap().to_string())
        .collect();
    // The publish answered 503 may or may not have reached the database before it froze.
    assert_eq!(
        bodies.first().map(String::as_str),
        Some("before"),
        "{bodies:?}"
    );
    assert_eq!(
        bodies.last().map(String::as_str),
        Some("after"),
        "{bodies:?}"
    );
    let seqs: Vec<u64> = s
        .offline("steady")
        .iter()
        .map(|m| m["s"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Stopped while a write's outcome is unknown: the close keeps sending it until the
    // database answers (bounded), so nothing of this run lands after it has exited.
    let frozen = Frozen::new(pid);
    let (st, v) = s.post("/pub?to=steady&from=op", "at-close");
    assert_eq!(st, 503, "{v}");
    let server = s.pid() as i32;
    assert_eq!(unsafe { libc::kill(server, libc::SIGTERM) }, 0);
    // Longer than the --scylla_timeout_ms of every other step of a stop, shorter than the
    // close's 10 s for unknown outcomes.
    std::thread::sleep(Duration::from_secs(4));
    let state = std::fs::read_to_string(format!("/proc/{server}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .to_string();
    assert!(
        !state.is_empty() && !state.starts_with('Z'),
        "the server exited with a write of unknown outcome while the database was frozen"
    );
    drop(frozen);
    let t = Instant::now();
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    let _ = writeln!(
        std::io::stderr(),
        "{test}: stopped {:?} after the database came back",
        t.elapsed()
    );
    s.restart(&strs(&flags));
    let listed = s.offline("steady");
    let at_close: Vec<u64> = listed
        .iter()
        .filter(|m| m["b"] == "at-close")
        .map(|m| m["s"].as_u64().unwrap())
        .collect();
    assert_eq!(at_close.len(), 1, "the write settled at close: {listed:?}");
    assert_eq!(
        s.post("/pub?to=steady&from=op", "next"),
        (200, json!({"result":"ok"}))
    );
    let seqs: Vec<u64> = s
        .offline("steady")
        .iter()
        .map(|m| m["s"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&(at_close[0] + 1)), "{seqs:?}");
}
