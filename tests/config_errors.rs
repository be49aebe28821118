//! Startup configuration errors: unknown flags, bad values and unreadable flagfiles are a clear
//! startup error naming the flag; command-line flags override the flagfile.
mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(10);

/// A private temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(unique(&format!("cfg-{tag}")));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Flags that keep a stray server off the default ports and out of the working directory.
fn safe_flags(dir: &TempDir) -> Vec<String> {
    vec![
        "--client_host=127.0.0.1".into(),
        "--client_port=0".into(),
        "--admin_port=0".into(),
        "--bus_port=0".into(),
        format!("--pid_file={}", dir.0.join("ipush.pid").display()),
        format!("--data_dir={}", dir.0.join("data").display()),
        "--storage=memory".into(),
        "--cores=1".into(),
    ]
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ipush_server"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ipush_server")
}

/// Runs the binary; kills it and panics if it runs longer than LIMIT.
fn run(args: &[String]) -> Output {
    let mut child = spawn(args);
    let end = Instant::now() + LIMIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ipush_server {args:?} still running after {LIMIT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a non-zero exit whose stderr mentions `needle`; returns stderr.
fn expect_failure(args: &[String], needle: &str) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{args:?} should fail; status {:?}, stderr {stderr}",
        out.status
    );
    assert!(
        stderr.contains(needle),
        "stderr for {args:?} should mention {needle:?}: {stderr}"
    );
    stderr
}

#[test]
fn unknown_flag_is_an_error_naming_it() {
    let d = TempDir::new("bogus");
    let mut a = safe_flags(&d);
    a.push("--bogus=1".into());
    expect_failure(&a, "bogus");
}

#[test]
fn bad_value_is_an_error_naming_the_flag() {
    let d = TempDir::new("badval");
    let mut a = safe_flags(&d);
    a.push("--max_message_bytes=abc".into());
    expect_failure(&a, "max_message_bytes");
}

#[test]
fn missing_flagfile_is_a_clear_error() {
    let d = TempDir::new("noff");
    let mut a = vec!["--flagfile=/nonexistent/ipush.conf".to_string()];
    a.extend(safe_flags(&d));
    let stderr = expect_failure(&a, "/nonexistent/ipush.conf");
    assert!(
        stderr.to_lowercase().contains("flagfile"),
        "message names the flagfile flag: {stderr}"
    );
}

#[test]
fn bad_flag_inside_flagfile_is_an_error_naming_it() {
    let d = TempDir::new("ffbad");
    let ff = d.0.join("bad.conf");
    std::fs::write(&ff, "# comment\n--bogus_in_file=3\n").unwrap();
    let mut a = vec![format!("--flagfile={}", ff.display())];
    a.extend(safe_flags(&d));
    expect_failure(&a, "bogus_in_file");
}

#[test]
fn command_line_overrides_flagfile() {
    let d = TempDir::new("ff");
    let ff = d.0.join("ipush.conf");
    // The flagfile asks for client port 1; the command line overrides it with 0 (any free port).
    std::fs::write(
        &ff,
        format!(
            "# test flagfile\n\n--client_host=127.0.0.1\n--client_port=1\n--admin_port=0\n\
             --bus_port=0\n--pid_file={}\n--data_dir={}\n--storage=memory\n--cores=1\n\
             --log_level=warn\n",
            d.0.join("ipush.pid").display(),
            d.0.join("data").display()
        ),
    )
    .unwrap();
    let args = vec![
        format!("--flagfile={}", ff.display()),
        "--client_port=0".to_string(),
    ];
    let mut child = spawn(&args);
    let ready = match wait_ready(&mut child, LIMIT) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "server from flagfile {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    assert_ne!(
        ready.client_port, 1,
        "the command line wins over the flagfile"
    );
    let (st, _, _) = raw_exchange(
        &format!("127.0.0.1:{}", ready.admin_port),
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        LIMIT,
    );
    assert_eq!(st, 200, "the flagfile's admin settings are in force");
    // The command-line client port is the one in use.
    let c = Client::connect(&format!("127.0.0.1:{}", ready.client_port), "cfguser", "pw")
        .expect("connect on the command-line client port");
    assert_eq!(c.status, 200);
    drop(c);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit {st:?}");
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn data_dir_of_another_core_count_is_refused() {
    let d = TempDir::new("embedded");
    let data = d.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("ipush.meta"), "format=1\ncores=3\n").unwrap();
    let mut a = safe_flags(&d);
    a.retain(|f| f != "--storage=memory");
    a.push("--storage=embedded".into());
    let err = expect_failure(&a, "--cores");
    assert!(err.contains("ipush.meta"), "{err}");
    assert_eq!(
        std::fs::read_to_string(data.join("ipush.meta")).unwrap(),
        "format=1\ncores=3\n",
        "nothing changed"
    );
}
