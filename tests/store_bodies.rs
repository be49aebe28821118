//! The embedded store keeps message bodies on disk only: replay reads them back from the log
//! and from snapshots, a compaction copies the ones still needed and deletes the files it
//! replaces, a channel message is stored once for all its members, and a damaged record is a
//! corruption error naming its file, never wrong bytes.

mod common;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ipush::storage::embedded::EmbeddedStore;
use ipush::storage::{Storage, StorageError, StoredMsg};

const FAR: u64 = 4_000_000_000;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir("bodies", name)
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, 0, 1, false).unwrap().0
}

async fn all(s: &EmbeddedStore, uid: &str) -> Vec<StoredMsg> {
    s.offline(uid, 0, u64::MAX, 1000, 1).await.unwrap()
}

fn texts(m: &[StoredMsg]) -> Vec<(u64, String)> {
    m.iter().map(|m| (m.seq, m.body.body.to_string())).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// What user `u<i>` must list after `publish`: seqs 1..=5 of its own, 6 from the channel,
/// the first two acked.
fn expected(i: u32) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = (3..=5).map(|s| (s, format!("u{i} m{s}"))).collect();
    v.push((6, "to everyone".into()));
    v
}

async fn publish(s: &EmbeddedStore) {
    for i in 0..20u32 {
        let uid: Rc<str> = Rc::from(format!("u{i}"));
        for seq in 1..=5 {
            let b = ipush::storage::conformance::body(&format!("u{i} m{seq}"), None);
            s.append(&b, FAR, &[(uid.clone(), seq)]).await.unwrap();
        }
    }
    let members: Vec<(Rc<str>, u64)> = (0..20).map(|i| (Rc::from(format!("u{i}")), 6)).collect();
    s.append(
        &ipush::storage::conformance::body("to everyone", Some("ch")),
        FAR,
        &members,
    )
    .await
    .unwrap();
    for i in 0..20u32 {
        s.set_ack(&format!("u{i}"), 2).await.unwrap();
    }
}

#[test]
fn bodies_are_read_back_across_compactions_and_restarts() {
    let dir = temp_dir("compact");
    let d = dir.clone();
    common::on_executor(move || async move {
        let s = open(&d);
        publish(&s).await;
        for i in 0..20 {
            assert_eq!(texts(&all(&s, &format!("u{i}")).await), expected(i));
        }
        let before = files(&d);
        s.compact().await.unwrap();
        let after = files(&d);
        assert!(
            after.iter().all(|f| !before.contains(f)),
            "the compaction deleted what it replaced: {before:?} -> {after:?}"
        );
        // Now read from the snapshot, then from the snapshot and the new log.
        for i in 0..20 {
            assert_eq!(texts(&all(&s, &format!("u{i}")).await), expected(i));
        }
        s.append(
            &ipush::storage::conformance::body("late", None),
            FAR,
            &[(Rc::from("u3"), 7)],
        )
        .await
        .unwrap();
        let mut want = expected(3);
        want.push((7, "late".into()));
        assert_eq!(texts(&all(&s, "u3").await), want);
        // A second compaction copies from the first snapshot and the log after it.
        s.compact().await.unwrap();
        assert_eq!(texts(&all(&s, "u3").await), want);
        assert_eq!(texts(&all(&s, "u4").await), expected(4));
        // The window and limit still apply to what is read back.
        let newest = s.offline("u3", 2, 7, 2, 1).await.unwrap();
        assert_eq!(texts(&newest), want[3..].to_vec());
        s.shutdown().await.unwrap();

        let s = open(&d);
        assert_eq!(texts(&all(&s, "u3").await), want);
        for i in [0, 7, 19] {
            assert_eq!(texts(&all(&s, &format!("u{i}")).await), expected(i));
        }
        let ch = all(&s, "u9").await;
        assert_eq!(ch[3].body.channel.as_deref(), Some("ch"));
        assert_eq!(ch[3].expires_at, FAR);
        s.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_channel_message_is_stored_once_for_all_its_members() {
    let dir = temp_dir("fanout");
    let d = dir.clone();
    common::on_executor(move || async move {
        let s = open(&d);
        let big = "b".repeat(20_000);
        let members: Vec<(Rc<str>, u64)> =
            (0..1000).map(|i| (Rc::from(format!("m{i}")), 1)).collect();
        s.append(
            &ipush::storage::conformance::body(&big, Some("ch")),
            FAR,
            &members,
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        let bytes = |d: &Path| -> u64 {
            std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        // One body, and ~22 bytes per member.
        assert!(
            bytes(&d) < 20_000 + 1000 * 40,
            "{} bytes: {:?}",
            bytes(&d),
            files(&d)
        );
        for i in [0, 500, 999] {
            let m = all(&s, &format!("m{i}")).await;
            assert_eq!(m.len(), 1);
            assert_eq!(*m[0].body.body, *big);
        }
        s.compact().await.unwrap();
        // The snapshot adds each member's counters (~32 bytes), still one body.
        assert!(bytes(&d) < 20_000 + 1000 * 80, "{} bytes", bytes(&d));
        assert_eq!(*all(&s, "m999").await[0].body.body, *big);
        s.shutdown().await.unwrap();
        let s = open(&d);
        assert_eq!(*all(&s, "m0").await[0].body.body, *big);
        s.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_damaged_body_is_a_corruption_error_naming_the_file() {
    let dir = temp_dir("damaged");
    let d = dir.clone();
    common::on_executor(move || async move {
        let s = open(&d);
        s.append(
            &ipush::storage::conformance::body("first-body", None),
            FAR,
            &[(Rc::from("a"), 1)],
        )
        .await
        .unwrap();
        s.append(
            &ipush::storage::conformance::body("other-body", None),
            FAR,
            &[(Rc::from("b"), 1)],
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        // Damage a's body in place while the store runs (after the start-up check).
        let wal = files(&d)
            .into_iter()
            .find(|f| f.starts_with("wal-"))
            .unwrap();
        let path = d.join(&wal);
        let mut data = std::fs::read(&path).unwrap();
        let at = data
            .windows(10)
            .position(|w| w == b"first-body")
            .expect("the body is in the log");
        data[at] = b'F';
        std::fs::write(&path, &data).unwrap();
        match s.offline("a", 0, 1, 10, 1).await {
            Err(StorageError::Corrupt(e)) => {
                assert!(e.contains(&wal) && e.contains("checksum"), "{e}")
            }
            other => panic!("a damaged body was not refused: {other:?}"),
        }
        // Other records are unaffected.
        assert_eq!(texts(&all(&s, "b").await), [(1, "other-body".to_string())]);
        s.shutdown().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// What each user must list: `(seq, body)` ascending.
type Model =
    std::rc::Rc<std::cell::RefCell<std::collections::BTreeMap<String, Vec<(u64, String)>>>>;

#[test]
fn acks_and_appends_during_a_compaction_are_kept() {
    // The compaction lists every message, copies them (giving the core back between
    // batches), then points the index at the copies: messages acked or added meanwhile must
    // come out as they are then, not as they were listed.
    use std::cell::Cell;
    const USERS: u32 = 1000;
    let dir = temp_dir("concurrent");
    let d = dir.clone();
    common::on_executor(move || async move {
        let s = Rc::new(open(&d));
        let model: Model = Rc::default();
        for i in 0..USERS {
            let uid: Rc<str> = Rc::from(format!("c{i}"));
            for seq in 1..=40 {
                let text = format!("c{i} m{seq} {}", "x".repeat(1000));
                let b = ipush::storage::conformance::body(&text, None);
                s.append(&b, FAR, &[(uid.clone(), seq)]).await.unwrap();
                model
                    .borrow_mut()
                    .entry(uid.to_string())
                    .or_default()
                    .push((seq, text));
            }
        }
        let done = Rc::new(Cell::new(false));
        let changes = Rc::new(Cell::new(0u32));
        let writer = glommio::spawn_local({
            let (s, model, done, changes) =
                (s.clone(), model.clone(), done.clone(), changes.clone());
            async move {
                let mut round = 0u32;
                // Bounded; 100 changes each time the compaction gives the core back (an
                // append with nothing queued is written inline and is ready at once).
                while !done.get() && round < 20_000 {
                    if round.is_multiple_of(100) {
                        glommio::executor().yield_task_queue_now().await;
                    }
                    let i = (round * 7) % USERS;
                    let uid = format!("c{i}");
                    let (last_ack, next) = {
                        let m = model.borrow();
                        let v = &m[&uid];
                        (
                            v.first().map_or(0, |f| f.0),
                            v.last().map_or(0, |l| l.0) + 1,
                        )
                    };
                    s.set_ack(&uid, last_ack).await.unwrap();
                    let text = format!("{uid} late{next}");
                    let b = ipush::storage::conformance::body(&text, None);
                    s.append(&b, FAR, &[(Rc::from(uid.as_str()), next)])
                        .await
                        .unwrap();
                    let mut m = model.borrow_mut();
                    let v = m.get_mut(&uid).unwrap();
                    v.retain(|(seq, _)| *seq > last_ack);
                    v.push((next, text));
                    changes.set(changes.get() + 1);
                    round += 1;
                }
            }
        });
        s.compact().await.unwrap();
        done.set(true);
        writer.await;
        assert!(
            changes.get() >= 5,
            "{} changes during the compaction",
            changes.get()
        );
        let check = |s: Rc<EmbeddedStore>, model: Model| async move {
            let m = model.borrow().clone();
            for (uid, want) in m {
                assert_eq!(texts(&all(&s, &uid).await), want, "{uid}");
            }
        };
        check(s.clone(), model.clone()).await;
        s.shutdown().await.unwrap();
        let s = Rc::new(open(&d));
        check(s.clone(), model.clone()).await;
        s.shutdown().await.unwrap();
        eprintln!(
            "acks_and_appends_during_a_compaction_are_kept: {} changes during it",
            changes.get()
        );
    });
    let _ = std::fs::remove_dir_all(dir);
}
