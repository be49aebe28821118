//! What a user of `--storage=scylla` meets when the database is not ready: nothing listening
//! at start (bounded retry, then an exit naming the address), a keyspace without the schema
//! (an exit naming both remedies, or `--scylla_init_schema=true` creating it), a schema of
//! another layout (refused, left as it is), and one from before the static highest seq (both
//! remedies named; `--scylla_init_schema=true` adds the column). The database: `IPUSH_TEST_SCYLLA` (see
//! `cql/cassandra/start.sh`); the first test needs none.
mod common;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the server with `flags` expecting it to exit within `limit`: (success, stderr).
fn start_fails(flags: &[String], limit: Duration) -> (bool, String) {
    let dir = std::env::temp_dir().join(unique("scyerr"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args([
        "--client_host=127.0.0.1".to_string(),
        "--client_port=0".into(),
        "--admin_port=0".into(),
        "--bus_port=0".into(),
        format!("--pid_file={}", dir.join("ipush.pid").display()),
        format!("--data_dir={}", dir.join("data").display()),
        "--cores=1".into(),
        "--log_level=warn".into(),
    ])
    .args(flags);
    let (status, stderr) = expect_exit(&mut cmd, limit);
    let _ = std::fs::remove_dir_all(&dir);
    (status.success(), stderr)
}

#[test]
fn nothing_listening_at_start_is_retried_then_an_exit_naming_the_address() {
    // A port nothing listens on: connection refused at every attempt.
    let port = unused_port();
    let t = Instant::now();
    let (ok, err) = start_fails(
        &[
            "--storage=scylla".into(),
            format!("--scylla_nodes=127.0.0.1:{port}"),
            "--scylla_timeout_ms=1000".into(),
        ],
        Duration::from_secs(90),
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("retrying"), "the start retried first: {err}");
    // Bounded: the retry lasts about 20 s, not forever, and not a single attempt.
    assert!(t.elapsed() >= Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn a_keyspace_without_the_schema_is_refused_naming_both_remedies() {
    let Some(ks) = TestKeyspace::new("a_keyspace_without_the_schema_is_refused") else {
        return;
    };
    let (ok, err) = start_fails(&ks.flags(), Duration::from_secs(90));
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("keyspace {} has no ipush tables", ks.name)),
        "{err}"
    );
    assert!(err.contains("--scylla_init_schema=true"), "{err}");
    assert!(err.contains("cql/create_schema.cql"), "{err}");
    // One table missing.
    ks.create();
    ks.run(&[format!("DROP TABLE {}.users", ks.name)]);
    let (ok, err) = start_fails(&ks.flags(), Duration::from_secs(90));
    assert!(!ok, "{err}");
    assert!(err.contains("missing table(s) users"), "{err}");
}

#[test]
fn a_schema_of_another_layout_is_refused_and_left_alone() {
    let Some(ks) = TestKeyspace::new("a_schema_of_another_layout_is_refused") else {
        return;
    };
    ks.create();
    // channel_members as an older layout might have it: shard a clustering column.
    let k = &ks.name;
    ks.run(&[
        format!("DROP TABLE {k}.channel_members"),
        format!(
            "CREATE TABLE {k}.channel_members (cid text, shard text, uid text, \
             PRIMARY KEY (cid, shard, uid))"
        ),
        format!("INSERT INTO {k}.channel_members (cid, shard, uid) VALUES ('c', '0/1', 'u')"),
    ]);
    for init in ["false", "true"] {
        let mut flags = ks.flags();
        flags.push(format!("--scylla_init_schema={init}"));
        let (ok, err) = start_fails(&flags, Duration::from_secs(90));
        assert!(!ok, "{err}");
        assert!(err.contains("made by another version"), "{err}");
        assert!(
            err.contains(
                "column channel_members.shard is clustering text, expected partition_key text"
            ),
            "{err}"
        );
    }
    // --scylla_init_schema=true altered nothing: the same layout is found again.
    let (ok, err) = start_fails(&ks.flags(), Duration::from_secs(90));
    assert!(
        !ok && err.contains("channel_members.shard is clustering"),
        "{err}"
    );
}

#[test]
fn init_schema_creates_the_keyspace_then_a_plain_start_uses_it() {
    let Some(ks) = TestKeyspace::new("init_schema_creates_the_keyspace") else {
        return;
    };
    let mut flags = ks.flags();
    flags.push("--scylla_init_schema=true".into());
    let mut s = Server::start(&strs(&flags));
    assert_eq!(
        s.post("/pub?to=newcomer&from=op", "first"),
        (200, json!({"result":"ok"}))
    );
    assert_eq!(s.get("/health").0, 200);
    assert!(s.stop().success());
    // The schema is there now: no flag needed, and the message is.
    let mut s = Server::start(&strs(&ks.flags()));
    let got = s.offline("newcomer");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["b"], "first");
    assert!(s.stop().success());
}

#[test]
fn a_keyspace_from_before_the_static_highest_seq_is_refused_or_given_the_column() {
    let Some(ks) = TestKeyspace::new("a_keyspace_from_before_the_static_highest_seq") else {
        return;
    };
    ks.create();
    // As an ipush before fencing left it: no static max_seq, the user's highest seq in users.
    let k = &ks.name;
    ks.run(&[
        format!("ALTER TABLE {k}.messages DROP max_seq"),
        format!("INSERT INTO {k}.users (uid, max_seq, last_ack) VALUES ('old', 5, 0)"),
    ]);
    let (ok, err) = start_fails(&ks.flags(), Duration::from_secs(90));
    assert!(!ok, "{err}");
    assert!(err.contains("before the static highest seq"), "{err}");
    assert!(err.contains("--scylla_init_schema=true"), "{err}");
    assert!(
        err.contains(&format!(
            "ALTER TABLE {k}.messages ADD max_seq bigint static"
        )),
        "{err}"
    );
    // --scylla_init_schema=true adds the column; the old highest seq still counts.
    let mut flags = ks.flags();
    flags.push("--scylla_init_schema=true".into());
    let mut s = Server::start(&strs(&flags));
    assert_eq!(
        s.post("/pub?to=old&from=op", "sixth"),
        (200, json!({"result":"ok"}))
    );
    let got = s.offline("old");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["s"].as_u64(), &got[0]["b"]),
        (Some(6), &json!("sixth"))
    );
    assert!(s.stop().success());
}
