//! Runs each `loadtest` message scenario briefly (hundreds of streams, hundreds of
//! messages) against a real `ipush_server` and checks the report's counts; and that
//! `--auth_secret` signs streams a `--auth=jwt` server accepts (and a wrong one is refused).
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

/// Runs a message scenario against `s`; returns the exit status, the JSON report and stderr.
fn run_status(bin: &Path, s: &Server, args: &[&str]) -> (Option<i32>, Value, String) {
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
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loadtest {args:?}: no JSON report ({e}); stderr:\n{text}"));
    (out.status.code(), report, text)
}

fn run(bin: &Path, s: &Server, args: &[&str]) -> Value {
    let (code, report, text) = run_status(bin, s, args);
    assert_eq!(code, Some(0), "loadtest {args:?} failed:\n{text}");
    report
}

/// Runs `loadtest hold` (50 streams held briefly) against `s`; returns the exit status,
/// the JSON report and stderr.
fn hold_status(bin: &Path, s: &Server, args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(bin)
        .arg("hold")
        .args(args)
        .args([
            "--target",
            &s.client_addr(),
            "--conns",
            "50",
            "--rate",
            "1000",
            "--hold-secs",
            "0.3",
            "--json",
            "--quiet",
            "--timeout-secs",
            "60",
        ])
        .output()
        .expect("running loadtest hold");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("loadtest hold {args:?}: no JSON report ({e}); stderr:\n{text}")
    });
    (out.status.code(), report, text)
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

/// `--pipeline` (requests in flight per admin connection) and `--batch` (`/pub/batch`):
/// every message delivered once, in order, every publish acknowledged.
#[test]
fn pipelined_and_batched_publishing_deliver_everything() {
    let bin = loadtest_bin();
    let s = Server::start(&[]);
    let runs: [&[&str]; 3] = [
        &[
            "unicast",
            "--users",
            "200",
            "--messages",
            "2000",
            "--pub-conns",
            "1",
            "--pipeline",
            "32",
            "--window",
            "512",
        ],
        &[
            "unicast",
            "--users",
            "200",
            "--messages",
            "3000",
            "--pub-conns",
            "2",
            "--batch",
            "100",
            "--pipeline",
            "2",
            "--window",
            "1000",
        ],
        &[
            "fanout",
            "--subscribers",
            "100",
            "--messages",
            "300",
            "--pub-conns",
            "1",
            "--batch",
            "20",
            "--window",
            "64",
        ],
    ];
    for args in runs {
        let r = run(&bin, &s, args);
        let (streams, msgs): (u64, u64) = (args[2].parse().unwrap(), args[4].parse().unwrap());
        let expected = if args[0] == "fanout" {
            streams * msgs
        } else {
            msgs
        };
        check(&r, streams, expected);
        assert_eq!(r["publish"]["published"], msgs, "{args:?}: {r}");
    }
}

/// `--auth_secret` makes every stream's password an HS256 JWT for its uid, which a server
/// with `--auth=jwt` and the same secret accepts (scenarios, `hold` in-process and through a
/// worker process); with a wrong secret, or none, every stream is refused (401) and the run
/// fails.
#[test]
fn auth_secret_mints_jwts_the_server_accepts() {
    const SECRET: &str = "loadtest-it-secret";
    let bin = loadtest_bin();
    let flag = format!("--auth_secret={SECRET}");
    let s = Server::start(&["--auth=jwt", &flag]);

    let r = run(
        &bin,
        &s,
        &[
            "unicast",
            "--users",
            "100",
            "--messages",
            "300",
            "--auth_secret",
            SECRET,
        ],
    );
    check(&r, 100, 300);

    // Global option: also before the subcommand, and spelled with a dash.
    let r = run(
        &bin,
        &s,
        &[
            "--auth-secret",
            SECRET,
            "fanout",
            "--subscribers",
            "100",
            "--messages",
            "50",
            "--transport",
            "ws",
        ],
    );
    check(&r, 100, 100 * 50);
    assert_eq!(r["subscribe"]["subscribed"], 100);

    let r = run(
        &bin,
        &s,
        &[
            "chat",
            "--users",
            "50",
            "--messages",
            "200",
            "--auth_secret",
            SECRET,
        ],
    );
    check(&r, 50, 200);

    // hold in this process, then through one worker process (the job carries the secret).
    for extra in [&[][..], &["--workers", "1"][..]] {
        let args: Vec<&str> = ["--auth_secret", SECRET]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let (code, r, text) = hold_status(&bin, &s, &args);
        let ctx = format!("hold {args:?}: {r}\n{text}");
        assert_eq!(code, Some(0), "{ctx}");
        assert_eq!(r["held_at_end"], 50, "{ctx}");
        assert_eq!(r["failed"], 0, "{ctx}");
    }

    // Wrong secret, or no secret (plain password "pw"): refused.
    for auth in [&["--auth_secret", "not-the-secret"][..], &[][..]] {
        let args: Vec<&str> = ["unicast", "--users", "50", "--messages", "0"]
            .iter()
            .chain(auth)
            .copied()
            .collect();
        let (code, r, text) = run_status(&bin, &s, &args);
        let ctx = format!("{args:?}: {r}\n{text}");
        assert_eq!(code, Some(2), "{ctx}");
        assert_eq!(r["success"], false, "{ctx}");
        assert_eq!(r["connect"]["connected"], 0, "{ctx}");
        assert_eq!(r["connect"]["failed"], 50, "{ctx}");
        assert_eq!(r["connect"]["failures"]["status 401"], 50, "{ctx}");
    }
    let (code, r, text) = hold_status(&bin, &s, &["--auth_secret", "not-the-secret"]);
    let ctx = format!("hold, wrong secret: {r}\n{text}");
    assert_eq!(code, Some(2), "{ctx}");
    assert_eq!(r["success"], false, "{ctx}");
    assert_eq!(r["held_at_end"], 0, "{ctx}");
    assert_eq!(r["failed"], 50, "{ctx}");
    assert_eq!(r["status_codes"]["401"], 50, "{ctx}");
}
