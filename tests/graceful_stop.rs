//! SIGTERM / SIGINT stop the server gracefully: every stream gets its terminating chunk, the
//! exit status is 0 and the pid file is removed.
mod common;
use common::*;

use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Asserts the client's stream ends with the terminating chunk `0\r\n\r\n` and then EOF.
fn expect_terminating_chunk(c: &mut Client, who: &str) {
    let (rest, eof) = c.read_rest(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.ends_with(b"0\r\n\r\n"),
        "{who}: stream did not end with the terminating chunk; got {text:?}"
    );
    assert!(
        eof,
        "{who}: connection not closed after the terminating chunk"
    );
}

fn two_clients(s: &Server) -> (Client, Client) {
    let mut a = s.connect("alice");
    let mut b = s.connect("bob");
    for c in [&mut a, &mut b] {
        assert_eq!(c.status, 200);
        c.send(r#"{"y":0}"#);
        assert_eq!(c.recv(), json!({"y":0}));
    }
    (a, b)
}

fn pid_file_holds(s: &Server) -> bool {
    std::fs::read_to_string(&s.pid_file)
        .map(|t| t.trim() == s.pid().to_string())
        .unwrap_or(false)
}

#[test]
fn sigterm_ends_streams_exits_zero_and_removes_pid_file() {
    let mut s = Server::start(&[]);
    wait_until(T, "pid file with the server's pid", || pid_file_holds(&s));
    let (mut a, mut b) = two_clients(&s);

    let t0 = Instant::now();
    let st = s.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    expect_terminating_chunk(&mut a, "alice");
    expect_terminating_chunk(&mut b, "bob");
    assert!(!s.pid_file.exists(), "pid file removed at exit");
}

#[test]
fn sigint_ends_streams_exits_zero_and_removes_pid_file() {
    let mut s = Server::start(&[]);
    wait_until(T, "pid file with the server's pid", || pid_file_holds(&s));
    let (mut a, mut b) = two_clients(&s);

    let mut child = s.child.take().expect("running");
    let t0 = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut status = None;
    wait_until(T, "server to exit after SIGINT", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let st = status.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    expect_terminating_chunk(&mut a, "alice");
    expect_terminating_chunk(&mut b, "bob");
    assert!(!s.pid_file.exists(), "pid file removed at exit");
}
