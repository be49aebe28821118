//! `--auth=jwt`: the password is an HS256 JWT signed with `--auth_secret`, `sub` == uid, `exp`
//! honoured; every failure is `401 {"error":"auth failed"}` and counted in auth_fail_number.
mod common;
use common::*;

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_server() -> Server {
    Server::start(&["--auth=jwt", "--auth_secret=s3cret"])
}

fn auth_fails(s: &Server) -> u64 {
    s.stats()["auth_fail_number"]
        .as_u64()
        .expect("auth_fail_number")
}

#[test]
fn valid_token_connects() {
    let s = jwt_server();
    let tok = ipush::auth::mint_hs256(b"s3cret", "user001", now() + 3600);
    let mut c = Client::connect(&s.client_addr(), "user001", &tok).expect("connect");
    assert_eq!(c.status, 200, "{}", c.head);
    c.send(r#"{"y":0}"#);
    assert_eq!(c.recv(), json!({"y":0}));
    // Messages reach it.
    let (st, v) = s.post("/pub?to=user001&from=op", "hi");
    assert_eq!(st, 200, "{v}");
    let m = c.recv_non_hb(T).expect("message");
    assert_eq!(m["b"], "hi");
    assert_eq!(auth_fails(&s), 0);
}

#[test]
fn bad_tokens_are_rejected_and_counted() {
    let s = jwt_server();
    let before = auth_fails(&s);
    assert_eq!(before, 0);
    let later = now() + 3600;
    let bad: Vec<(&str, String)> = vec![
        (
            "wrong secret",
            ipush::auth::mint_hs256(b"not-the-secret", "user001", later),
        ),
        (
            "expired",
            ipush::auth::mint_hs256(b"s3cret", "user001", now() - 3600),
        ),
        (
            "other uid",
            ipush::auth::mint_hs256(b"s3cret", "user002", later),
        ),
        ("garbage", "garbage.not.ajwt".to_string()),
    ];
    for (i, (what, tok)) in bad.iter().enumerate() {
        let req = format!(
            "GET /connect?uid=user001&password={tok} HTTP/1.1\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
        );
        let (st, head, body) = raw_exchange(&s.client_addr(), req.as_bytes(), T);
        assert_eq!(st, 401, "{what}: {head}");
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{what}: body not JSON: {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(v, json!({"error":"auth failed"}), "{what}");
        let want = i as u64 + 1;
        wait_until(T, "auth_fail_number to count the failure", || {
            auth_fails(&s) >= want
        });
    }
    assert_eq!(auth_fails(&s), bad.len() as u64);

    // A good token still works afterwards and does not count as a failure.
    let tok = ipush::auth::mint_hs256(b"s3cret", "user001", later);
    let c = Client::connect(&s.client_addr(), "user001", &tok).expect("connect");
    assert_eq!(c.status, 200, "{}", c.head);
    drop(c);
    assert_eq!(auth_fails(&s), bad.len() as u64);
}
