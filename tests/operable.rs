//! What an operator meets: a start-up failure for lack of locked memory names the cause and the
//! fix; logs carry no ANSI colours when stderr is not a terminal; `--log_format=json` writes one
//! JSON object per line; `ipush_server gentoken` mints a token `--auth=jwt` accepts.
mod common;
use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server started with its stderr going to a file (so it is not a terminal).
struct Logged {
    child: Option<Child>,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Logged {
    fn start(extra: &[&str]) -> Logged {
        let dir = std::env::temp_dir().join(unique("operable"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stderr.log");
        let child = Command::new(server_bin())
            .args([
                "--client_host=127.0.0.1".to_string(),
                "--client_port=0".into(),
                "--admin_port=0".into(),
                "--bus_port=0".into(),
                "--storage=memory".into(),
                "--cores=2".into(),
                format!("--pid_file={}", dir.join("ipush.pid").display()),
            ])
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ipush_server");
        let mut s = Logged {
            child: Some(child),
            log,
            dir,
        };
        let ready = wait_ready(s.child.as_mut().unwrap(), Duration::from_secs(60));
        match ready {
            Ok(r) if raw_exchange_maybe(r.admin_port) => s,
            Ok(_) => panic!("ready but /health is not 200: {}", s.stderr()),
            Err(e) => panic!("server did not start ({e}): {}", s.stderr()),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait for the exit, return everything it logged.
    fn stop(&mut self) -> String {
        let mut c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(15);
        while c.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "no exit within 15 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn raw_exchange_maybe(admin_port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", admin_port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

#[test]
fn text_logs_have_no_colours_when_stderr_is_a_file() {
    let mut s = Logged::start(&["--log_level=info"]);
    let log = s.stop();
    assert!(log.contains("ipush_server listening"), "{log}");
    assert!(log.contains("ipush_server stopped"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escapes in a log file: {log:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut s = Logged::start(&["--log_level=info", "--log_format=json"]);
    let log = s.stop();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    let mut messages = Vec::new();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v.is_object(), "{l}");
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "ipush_server listening"),
        "{log}"
    );
    assert!(
        messages.iter().any(|m| m == "ipush_server stopped"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "{log:?}");
}

#[test]
fn unknown_log_format_is_refused_naming_the_flag() {
    let out = Command::new(server_bin())
        .args(["--log_format=xml", "--storage=memory", "--pid_file="])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log_format"), "{err}");
}

#[test]
fn gentoken_mints_a_token_jwt_auth_accepts() {
    let mint = |args: &[&str]| {
        let out = Command::new(server_bin())
            .arg("gentoken")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, token, err) = mint(&["--auth_secret=opsecret", "--uid=op1", "--ttl_s=600"]);
    assert!(ok, "{err}");
    assert_eq!(token.split('.').count(), 3, "{token}");
    let s = Server::start(&["--auth=jwt", "--auth_secret=opsecret"]);
    let mut c = Client::connect(&s.client_addr(), "op1", &token).expect("connect");
    assert_eq!(c.status, 200, "{}", c.head);
    let (st, v) = s.post("/pub?to=op1&from=ops", "minted");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        c.recv_non_hb(Duration::from_secs(10)).unwrap()["b"],
        "minted"
    );
    // The token is for op1 only, and for this secret only.
    let other = Client::connect(&s.client_addr(), "op2", &token).expect("connect");
    assert_eq!(other.status, 401, "{}", other.head);
    let (ok, wrong, _) = mint(&["--auth_secret=not-it", "--uid=op1"]);
    assert!(ok);
    let c2 = Client::connect(&s.client_addr(), "op1", &wrong).expect("connect");
    assert_eq!(c2.status, 401);
    // Bad input is refused with a message.
    let (ok, _, err) = mint(&["--uid=op1"]);
    assert!(!ok && err.contains("--auth_secret"), "{err}");
    let (ok, _, err) = mint(&["--auth_secret=", "--uid=op1"]);
    assert!(!ok && err.contains("--auth_secret"), "{err}");
}

#[test]
fn low_memlock_names_the_cause_and_the_fix() {
    let have_prlimit = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_prlimit {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prlimit (util-linux) is missing under CI=true"
        );
        eprintln!("skipped: prlimit not found");
        return;
    }
    let dir = std::env::temp_dir().join(unique("memlock"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("prlimit")
        .arg("--memlock=65536:65536")
        .arg(server_bin())
        .args([
            "--client_host=127.0.0.1".to_string(),
            "--client_port=0".into(),
            "--admin_port=0".into(),
            "--bus_port=0".into(),
            "--storage=memory".into(),
            "--cores=2".into(),
            "--pid_file=".into(),
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("the server ran with a 64 KiB memlock limit: the failure no longer reproduces");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(!out.status.success());
    assert!(err.contains("locked memory"), "{err}");
    assert!(err.contains("ulimit -l unlimited"), "{err}");
    assert!(err.contains("--ulimit memlock=-1"), "{err}");
    assert!(err.contains("64 KiB"), "{err}");
}
