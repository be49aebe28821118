//! A full disk under the embedded store, on a small tmpfs as `--data_dir`: publishes fail with
//! 5xx and `/health` says 503 while it is full; a live stream never sees a message whose write
//! failed; every publish answered ok survives a restart with its seq, and no seq shown is ever
//! given to another message; when space returns the server takes writes again by itself.
mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const EMBEDDED: &str = "--storage=embedded";

/// A tmpfs mounted for one test, unmounted (and its mount point removed) when dropped, also
/// when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m"); None (after printing "skipped") when this
    /// environment cannot mount one, which fails the test under `CI=true`.
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(unique(test));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let _ = std::fs::remove_dir(&dir);
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").map_or(true, |v| v != "true"),
                    "{test}: CI=true but a tmpfs cannot be mounted: {why}"
                );
                eprintln!("{test}: skipped (cannot mount a tmpfs: {why})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.dir).status();
        if !st.is_ok_and(|s| s.success()) {
            // Still busy (a server not yet reaped): detach it now, freed once unused.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Fills the file system of `dir` with `dir/filler` until a write fails; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 16 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // A full disk also fails small writes: the last pages go too.
    let _ = f.write_all(&[0u8; 1]);
    let _ = f.write_all(&[0u8; 1]);
    path
}

/// Leaves `free` bytes free again by shortening the filler.
fn free_some(filler: &Path, free: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(filler)
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(free)).unwrap();
}

/// The server's flags on `data`: one core, so `/health` and the writes see the same store.
fn flags(data: &Path) -> Vec<String> {
    vec![
        EMBEDDED.into(),
        "--cores=1".into(),
        "--max_offline_msg_num=10000".into(),
        format!("--data_dir={}", data.display()),
    ]
}

fn start(data: &Path) -> Server {
    Server::start(&strs(&flags(data)))
}

/// What a stream shows: every (seq, body) in arrival order, heartbeats skipped. Reads until
/// the answer to a `{"y":0}` it sends, so everything the server queued before is in.
fn drain(c: &mut Client, seen: &mut Vec<(u64, String)>) {
    c.send(r#"{"y":0}"#);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < end, "no heartbeat answer within 20 s");
        let m = c.recv();
        if m == json!({"y":0}) {
            return;
        }
        if let (Some(s), Some(b)) = (m["s"].as_u64(), m["b"].as_str()) {
            seen.push((s, b.to_string()));
        }
    }
}

fn body(i: usize) -> String {
    format!("m{i}-{}", "x".repeat(1000))
}

fn health(s: &Server) -> (u16, Value) {
    s.get("/health")
}

/// `(seq, body)` of every message `/msg` lists for `uid`.
fn msg_list(s: &Server, uid: &str) -> Vec<(u64, String)> {
    s.offline(uid)
        .iter()
        .map(|m| (m["s"].as_u64().unwrap(), m["b"].as_str().unwrap().into()))
        .collect()
}

/// Every seq the stream showed belongs to one body, ascending, and was answered ok.
fn check_shown(seen: &[(u64, String)], oks: &BTreeMap<String, ()>) {
    for w in seen.windows(2) {
        assert!(w[0].0 < w[1].0, "seqs not ascending on the stream: {w:?}");
    }
    for (s, b) in seen {
        assert!(
            oks.contains_key(b),
            "the stream showed seq {s} of a publish that was not answered ok"
        );
    }
}

#[test]
fn a_full_disk_fails_publishes_then_recovers_by_itself_and_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("disk-full", "6m") else {
        return;
    };
    let data = fs.dir.join("data");
    let mut s = start(&data);
    let mut c = s.connect("dfu");
    let mut seen = Vec::new();
    let mut oks = BTreeMap::new();
    // The segment exists before the disk fills.
    let (st, _) = s.post("/pub?to=dfu&from=op", &body(0));
    assert_eq!(st, 200);
    oks.insert(body(0), ());
    assert_eq!(health(&s).0, 200);

    let filler = fill(&fs.dir);
    free_some(&filler, 48 << 10);
    // Publish until writes fail, then a few more that must fail too.
    let mut failed = 0;
    let mut i = 1;
    while failed < 5 {
        assert!(
            i < 2000,
            "48 KiB free took {i} publishes of 1 KB without a failure"
        );
        let (st, v) = s.post("/pub?to=dfu&from=op", &body(i));
        if st == 200 {
            assert_eq!(failed, 0, "a publish succeeded while the disk stayed full");
            oks.insert(body(i), ());
        } else {
            assert!(st >= 500, "{st} {v}");
            failed += 1;
        }
        i += 1;
    }
    let (st, v) = health(&s);
    assert_eq!(st, 503, "health while the disk is full: {v}");
    assert!(v.to_string().contains("storage"), "{v}");
    drain(&mut c, &mut seen);
    check_shown(&seen, &oks);
    assert_eq!(seen.len(), oks.len(), "every ok publish was shown live");

    // Space returns: the server takes writes again without a restart.
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(15),
        "/health 200 after space returned",
        || health(&s).0 == 200,
    );
    for _ in 0..5 {
        let (st, v) = s.post("/pub?to=dfu&from=op", &body(i));
        assert_eq!(st, 200, "{v}");
        oks.insert(body(i), ());
        i += 1;
    }
    drain(&mut c, &mut seen);
    check_shown(&seen, &oks);
    assert_eq!(seen.len(), oks.len());
    let max_shown = seen.last().unwrap().0;
    // Read back by the running server (bodies come from disk): every record written after the
    // failure landed where the index says, and none of the failed ones is listed.
    let listed = msg_list(&s, "dfu");
    assert_eq!(
        listed, seen,
        "before the restart, /msg lists exactly what was shown"
    );

    // A hard stop; the restart needs no repair and has every acknowledged message.
    drop(c);
    s.kill9();
    s.restart(&strs(&flags(&data)));
    let listed = msg_list(&s, "dfu");
    assert_eq!(
        listed, seen,
        "after the restart, /msg lists exactly what was shown"
    );
    let (st, _) = s.post("/pub?to=dfu&from=op", "after restart");
    assert_eq!(st, 200);
    let mut c = s.connect("dfu");
    let mut again = Vec::new();
    drain(&mut c, &mut again);
    let (last, b) = again.last().unwrap().clone();
    assert_eq!(b, "after restart");
    assert!(
        last > max_shown,
        "seq {last} reused (shown up to {max_shown})"
    );
    assert_eq!(
        &again[..again.len() - 1],
        &seen[..],
        "replay shows the same seqs"
    );
}

#[test]
fn a_live_stream_never_gets_a_message_whose_write_failed() {
    let Some(fs) = Tmpfs::mount("disk-full-live", "4m") else {
        return;
    };
    let data = fs.dir.join("data");
    let s = start(&data);
    let mut c = s.connect("dfl");
    let (st, _) = s.post("/pub?to=dfl&from=op", "stored");
    assert_eq!(st, 200);
    let filler = fill(&fs.dir);
    // The log's last page may still hold a record or two: publish until one fails, then a
    // few more, all of which must fail.
    let mut oks = vec!["stored".to_string()];
    let mut lost = Vec::new();
    for k in 0..200 {
        let b = format!("m{k}-{}", body(k));
        let (st, v) = s.post("/pub?to=dfl&from=op", &b);
        if st == 200 && lost.is_empty() {
            oks.push(b);
        } else {
            assert!(st >= 500, "a publish after a failed one answered {st} {v}");
            lost.push(b);
            if lost.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(lost.len(), 3, "no publish failed on a full disk");
    let mut seen = Vec::new();
    drain(&mut c, &mut seen);
    let bodies: Vec<&String> = seen.iter().map(|(_, b)| b).collect();
    assert_eq!(
        bodies,
        oks.iter().collect::<Vec<_>>(),
        "the stream shows only what was stored"
    );
    assert_eq!(
        s.offline("dfl").len(),
        oks.len(),
        "/msg lists only what was stored"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(15),
        "a publish succeeding again",
        || s.post("/pub?to=dfl&from=op", "back").0 == 200,
    );
    drain(&mut c, &mut seen);
    assert_eq!(seen.last().unwrap().1, "back");
    assert!(
        seen.iter().all(|(_, b)| !lost.contains(b)),
        "a failed publish was shown"
    );
    for w in seen.windows(2) {
        assert!(w[0].0 < w[1].0, "{seen:?}");
    }
}
