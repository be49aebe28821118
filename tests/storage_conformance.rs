//! The storage conformance suite (`ipush::storage::conformance`) against every backend:
//! memory and embedded always, scylla when `IPUSH_TEST_SCYLLA=host:port` is set.

mod common;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ipush::config::ScyllaConsistency;
use ipush::protocol::{MsgBody, MsgType};
use ipush::storage::embedded::EmbeddedStore;
use ipush::storage::memory::MemoryStore;
use ipush::storage::scylla::{self, ScyllaParams, ScyllaStore};
use ipush::storage::{conformance, Storage, StorageError, Store};

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir("conf", name)
}

fn embedded(dir: PathBuf, core: u32, cores: u32, fsync: bool) -> Store {
    Store::Embedded(EmbeddedStore::open(&dir, core, cores, fsync).unwrap().0)
}

#[test]
fn memory_backend() {
    common::on_executor(|| async {
        conformance::run("mem-", false, |_| async {
            Store::Memory(MemoryStore::new())
        })
        .await;
    });
}

#[test]
fn embedded_backend() {
    let dir = temp_dir("emb");
    let d = dir.clone();
    common::on_executor(move || async move {
        conformance::run("emb-", true, |_| {
            let d = d.clone();
            async move { embedded(d, 0, 1, false) }
        })
        .await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn embedded_backend_fsync_always() {
    let dir = temp_dir("emb-fsync");
    let d = dir.clone();
    common::on_executor(move || async move {
        conformance::run("embf-", true, |_| {
            let d = d.clone();
            async move { embedded(d, 0, 1, true) }
        })
        .await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn embedded_backend_restarted_from_a_snapshot() {
    // Same suite, but every reopen first compacts the log into a snapshot.
    let dir = temp_dir("emb-snap");
    let d = dir.clone();
    common::on_executor(move || async move {
        conformance::run("embs-", true, |generation| {
            let d = d.clone();
            async move {
                if generation > 0 {
                    let (s, _) = EmbeddedStore::open(&d, 0, 1, false).unwrap();
                    s.compact().await.unwrap();
                    s.close().await.unwrap();
                }
                embedded(d, 0, 1, false)
            }
        })
        .await;
    });
    let files: Vec<String> = std::fs::read_dir(dir.join(""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("snap-")), "{files:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn embedded_concurrent_cores() {
    // Two cores, each with its own store under one data directory, at the same time.
    let dir = temp_dir("emb-cores");
    let handles: Vec<_> = (0..2u32)
        .map(|core| {
            let d = dir.join(format!("core-{core}"));
            glommio::LocalExecutorBuilder::default()
                .spawn(move || async move {
                    conformance::run(&format!("core{core}-"), true, |_| {
                        let d = d.clone();
                        async move { embedded(d, core, 2, false) }
                    })
                    .await;
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The database of `IPUSH_TEST_SCYLLA`, or `None` when it is not set (then `test` is skipped,
/// and says so; under `CI=true` it must be set).
fn scylla_addr(test: &str) -> Option<String> {
    let Ok(addr) = std::env::var("IPUSH_TEST_SCYLLA") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but IPUSH_TEST_SCYLLA is not set (bash cql/cassandra/start.sh starts one)"
        );
        // Straight to stderr: libtest hides eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped (IPUSH_TEST_SCYLLA not set)"
        );
        return None;
    };
    Some(addr)
}

/// Runs `f` with the store parameters of a fresh keyspace `ipush_test_<pid><tag>` (made from
/// cql/create_schema.cql) and drops the keyspace at the end, pass or fail.
fn with_keyspace(addr: String, tag: &str, f: impl FnOnce(&dyn Fn(u32, u32) -> ScyllaParams)) {
    let keyspace = format!("ipush_test_{}{tag}", std::process::id());
    let nodes = vec![addr];
    let timeout = Duration::from_secs(30);
    let schema = scylla::schema_statements(include_str!("../cql/create_schema.cql"), &keyspace);
    scylla::execute_blocking(&nodes, &schema, timeout).expect("creating the test keyspace");
    let params = |core: u32, cores: u32| ScyllaParams {
        nodes: nodes.clone(),
        keyspace: keyspace.clone(),
        node: "self".into(),
        consistency: ScyllaConsistency::One,
        timeout: Duration::from_secs(10),
        core,
        cores,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&params)));
    let dropped = scylla::execute_blocking(
        &nodes,
        &[format!("DROP KEYSPACE IF EXISTS {keyspace}")],
        timeout,
    );
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("dropping the test keyspace");
}

async fn open_scylla(p: ScyllaParams) -> Store {
    Store::Scylla(
        ScyllaStore::open(p)
            .await
            .expect("opening the scylla store"),
    )
}

#[test]
fn scylla_backend_when_configured() {
    // Runs the suite on a fresh keyspace, first as one core, then as two cores at once.
    let Some(addr) = scylla_addr("scylla_backend_when_configured") else {
        return;
    };
    let pid = std::process::id();
    with_keyspace(addr, "", |params| {
        let p = params(0, 1);
        common::on_executor(move || async move {
            // reopen = a new bridge thread and session on the same keyspace
            conformance::run(&format!("scy-{pid}-"), true, |_| open_scylla(p.clone())).await;
        });
        let handles: Vec<_> = (0..2u32)
            .map(|core| {
                let p = params(core, 2);
                glommio::LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        let prefix = format!("scy-{pid}-core{core}-");
                        conformance::run(&prefix, true, |_| open_scylla(p.clone())).await;
                    })
                    .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn scylla_answers_each_request_of_a_batch_on_its_own() {
    // Requests issued in one executor turn cross to the bridge as one batch and come back as
    // batches. A statement the database refuses (an empty partition key) fails its own
    // request only: the others are answered ok and are stored, the refused ones are never
    // answered ok, and a read issued after them in the same turn sees the stored ones.
    let Some(addr) = scylla_addr("scylla_answers_each_request_of_a_batch_on_its_own") else {
        return;
    };
    with_keyspace(addr, "b", |params| {
        let p = params(0, 1);
        common::on_executor(move || async move {
            let store = Rc::new(open_scylla(p).await);
            let now = ipush::stats::unix_now();
            let uids: Vec<Rc<str>> = (0..40)
                .map(|i| {
                    Rc::from(if i % 3 == 1 {
                        String::new()
                    } else {
                        format!("b{i}")
                    })
                })
                .collect();
            let appends: Vec<_> = uids
                .iter()
                .map(|uid| {
                    let (store, uid) = (store.clone(), uid.clone());
                    glommio::spawn_local(async move {
                        let body = Rc::new(MsgBody {
                            kind: MsgType::User,
                            from: "op".into(),
                            channel: None,
                            body: format!("to {uid}").into(),
                        });
                        store.append(&body, now + 3600, &[(uid, 7)]).await
                    })
                })
                .collect();
            let probe = {
                let store = store.clone();
                glommio::spawn_local(async move { store.load_user("b0").await })
            };
            for (uid, task) in uids.iter().zip(appends) {
                match (uid.is_empty(), task.await) {
                    (false, Ok(())) => {}
                    (true, Err(StorageError::Unavailable(e))) => {
                        assert!(e.starts_with("scylla: append"), "{e}")
                    }
                    (empty, res) => panic!("uid {uid:?} (refused: {empty}): {res:?}"),
                }
            }
            assert_eq!(probe.await.unwrap().max_seq, 7, "the read after the writes");
            for uid in uids.iter().filter(|u| !u.is_empty()) {
                let stored = store.offline(uid, 0, 7, 10, now).await.unwrap();
                assert_eq!(stored.len(), 1, "{uid}");
                assert_eq!(
                    (stored[0].seq, &*stored[0].body.body),
                    (7, &*format!("to {uid}"))
                );
            }
            store.close().await.unwrap();
        });
    });
}
