//! The storage conformance suite (`ipush::storage::conformance`) against every backend:
//! memory and embedded always, scylla when `IPUSH_TEST_SCYLLA=host:port` is set.
use std::path::PathBuf;

use ipush::storage::embedded::EmbeddedStore;
use ipush::storage::memory::MemoryStore;
use ipush::storage::{conformance, Storage, Store};

fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipush-conf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn embedded(dir: PathBuf, core: u32, cores: u32, fsync: bool) -> Store {
    Store::Embedded(EmbeddedStore::open(&dir, core, cores, fsync).unwrap().0)
}

#[test]
fn memory_backend() {
    on_executor(|| async {
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
    on_executor(move || async move {
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
    on_executor(move || async move {
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
    on_executor(move || async move {
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

#[test]
fn scylla_backend_when_configured() {
    let Ok(addr) = std::env::var("IPUSH_TEST_SCYLLA") else {
        eprintln!("IPUSH_TEST_SCYLLA not set: the scylla run of the suite is skipped");
        return;
    };
    panic!("IPUSH_TEST_SCYLLA={addr} is set but the scylla backend is not built yet");
}
