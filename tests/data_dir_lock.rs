//! One server per `--data_dir` and per `--pid_file`: a second server on a live server's data
//! directory (or pid file) is refused at start with a message naming the holder's pid, exits
//! non-zero and changes nothing; the first one keeps serving. A `kill -9` leaves no stale lock.
mod common;
use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// Runs a second server with `args` (ports the kernel picks), expecting it to exit within 30 s;
/// returns its status and stderr. Kills it and panics if it is still running then.
fn second_server(cwd: &Path, args: &[String]) -> (ExitStatus, String) {
    let mut cmd = Command::new(server_bin());
    cmd.arg("--client_host=127.0.0.1")
        .arg("--client_port=0")
        .arg("--admin_port=0")
        .arg("--bus_port=0")
        .arg("--cores=2")
        .arg("--log_level=warn")
        .args(args)
        .current_dir(cwd);
    expect_exit(&mut cmd, Duration::from_secs(30))
}

#[test]
fn second_server_on_one_data_dir_is_refused_naming_the_holder() {
    let mut s = Server::start(&["--storage=embedded"]);
    let (st, v) = s.post("/pub?to=owner&from=op", "first");
    assert_eq!((st, v), (200, json!({"result":"ok"})));
    let data = s.data_dir();
    let lock = data.join("ipush.lock");
    wait_until(Duration::from_secs(10), "the pid in ipush.lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t == format!("{}\n", s.pid()))
    });
    let before = dir_contents(&data);
    let other_pid = s.dir.join("second.pid");
    let (status, stderr) = second_server(
        &s.dir,
        &[
            "--storage=embedded".into(),
            format!("--data_dir={}", data.display()),
            format!("--pid_file={}", other_pid.display()),
        ],
    );
    eprintln!("refused: {stderr}");
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("--data_dir"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", s.pid())),
        "the refusal names the holder's pid {}: {stderr}",
        s.pid()
    );
    assert_eq!(
        dir_contents(&data),
        before,
        "a refused start changes nothing"
    );
    assert!(!other_pid.exists(), "the refused server leaves no pid file");
    // The first server is untouched and still serves.
    let (st, v) = s.post("/pub?to=owner&from=op", "second");
    assert_eq!((st, v), (200, json!({"result":"ok"})));
    let seqs: Vec<u64> = s
        .offline("owner")
        .iter()
        .map(|m| m["s"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);

    // kill -9 leaves the file but no lock: the next server takes the directory over.
    s.kill9();
    s.restart(&["--storage=embedded"]);
    let bodies: Vec<String> = s
        .offline("owner")
        .iter()
        .map(|m| m["b"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, vec!["first", "second"]);
    wait_until(Duration::from_secs(10), "the new pid in ipush.lock", || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t == format!("{}\n", s.pid()))
    });
    s.stop();
}

#[test]
fn second_server_with_a_live_pid_file_is_refused_and_leaves_it() {
    let mut s = Server::start(&[]);
    wait_until(Duration::from_secs(10), "the pid file", || {
        std::fs::read_to_string(&s.pid_file).is_ok_and(|t| t == format!("{}\n", s.pid()))
    });
    let other_data = s.dir.join("other-data");
    let (status, stderr) = second_server(
        &s.dir,
        &[
            "--storage=embedded".into(),
            format!("--data_dir={}", other_data.display()),
            format!("--pid_file={}", s.pid_file.display()),
        ],
    );
    eprintln!("refused: {stderr}");
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("--pid_file"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", s.pid())),
        "the refusal names the holder's pid: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&s.pid_file).unwrap(),
        format!("{}\n", s.pid()),
        "the live server's pid file is left as it was"
    );
    assert!(!other_data.exists(), "refused before touching its data dir");
    assert_eq!(s.get("/health").0, 200);
    assert!(s.stop().success());
    assert!(!s.pid_file.exists(), "removed by its owner at exit");
}
