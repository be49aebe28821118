//! Runs each `loadtest` message scenario briefly (hundreds of streams, hundreds of
//! messages) against a real `ipush_server` and checks the report's counts.
//!
//! `loadtest` is another package of the workspace, so its binary is not a
//! `CARGO_BIN_EXE_*` here: the test uses `target/{debug,release}/loadtest` when it is
//! newer than the loadtest sources, and otherwise builds it into `target/loadtest-it`
//! (a separate target dir: the outer `cargo test` may hold the lock of its own).

mod common;

use common::Server;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                newest = newest.max(m);
            }
        }
    }
    newest
}

fn loadtest_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = newest_source(&root.join("loadtest/src"))
        .max(newest_source(&root.join("loadtest")).min(SystemTime::now()));
    // target/<profile>/deps/<this test> -> target/
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    for profile in ["debug", "release"] {
        let bin = target.join(profile).join("loadtest");
        if let Ok(m) = std::fs::metadata(&bin).and_then(|m| m.modified()) {
            if m >= src {
                return bin;
            }
        }
    }
    let it = target.join("loadtest-it");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "loadtest", "--bin", "loadtest"])
        .env("CARGO_TARGET_DIR", &it)
        .current_dir(root)
        .status()
        .expect("running cargo build -p loadtest");
    assert!(status.success(), "cargo build -p loadtest failed");
    it.join("debug").join("loadtest")
}

fn run(bin: &Path, s: &Server, args: &[&str]) -> Value {
    let admin = format!("127.0.0.1:{}", s.admin_port);
    let out = Command::new(bin)
        .args(args)
        .args([
            "--target",
            &s.client_addr(),
            "--admin",
            &admin,
            "--json",
            "--quiet",
            "--timeout-secs",
            "60",
            "--drain-secs",
            "5",
        ])
        .output()
        .expect("running loadtest");
    let text = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadtest {args:?}: no JSON report ({e}); stderr:\n{text}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "loadtest {args:?} failed:\n{text}"
    );
    report
}

fn check(r: &Value, streams: u64, expected: u64) {
    let d = &r["delivery"];
    let ctx = serde_json::to_string_pretty(r).unwrap();
    assert_eq!(r["connect"]["connected"], streams, "{ctx}");
    assert_eq!(r["connect"]["failed"], 0, "{ctx}");
    assert_eq!(d["expected"], expected, "{ctx}");
    assert_eq!(d["received"], expected, "{ctx}");
    assert_eq!(d["unique"], expected, "{ctx}");
    for k in [
        "lost",
        "duplicated",
        "out_of_order",
        "misdelivered",
        "seq_errors",
        "unparsed",
        "closed_unexpectedly",
    ] {
        assert_eq!(d[k], 0, "{k} in {ctx}");
    }
    assert_eq!(d["latency_us"]["count"], expected, "{ctx}");
    if expected > 0 {
        assert!(d["per_sec"].as_f64().unwrap() > 0.0, "{ctx}");
    }
    assert_eq!(r["success"], true, "{ctx}");
}

#[test]
fn scenarios_deliver_everything_once_in_order() {
    let bin = loadtest_bin();
    let s = Server::start(&[]);

    let r = run(
        &bin,
        &s,
        &["fanout", "--subscribers", "300", "--messages", "200"],
    );
    check(&r, 300, 300 * 200);
    assert_eq!(r["subscribe"]["subscribed"], 300);
    assert_eq!(r["publish"]["published"], 200);

    let r = run(
        &bin,
        &s,
        &[
            "fanout",
            "--subscribers",
            "200",
            "--messages",
            "100",
            "--transport",
            "ws",
            "--rate",
            "500",
            "--body-bytes",
            "200",
        ],
    );
    check(&r, 200, 200 * 100);

    let r = run(
        &bin,
        &s,
        &[
            "unicast",
            "--users",
            "300",
            "--messages",
            "1000",
            "--seed",
            "7",
        ],
    );
    check(&r, 300, 1000);
    assert_eq!(r["publish"]["published"], 1000);

    let r = run(&bin, &s, &["chat", "--users", "300", "--messages", "1000"]);
    check(&r, 300, 1000);

    // Held streams only (the `hold` row of perf/vs-nchan.sh).
    let r = run(
        &bin,
        &s,
        &[
            "fanout",
            "--subscribers",
            "300",
            "--messages",
            "0",
            "--hold-secs",
            "0.5",
        ],
    );
    check(&r, 300, 0);
}
