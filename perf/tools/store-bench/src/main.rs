//! One core's publish path, measured directly on a glommio executor: a `Shard` over
//! `Store::Embedded` (fsync never / always) or `Store::Memory`, driven by many concurrent
//! publishes so the store's group commit has something to group.
//!
//!     cargo run --release -- [key=value ...]
//!
//! keys (defaults): msgs=200000 users=10000 body=100 inflight=64 members=10000 chan_pubs=200
//! chan_inflight=4 modes=memory,never,always work=unicast,fanout dir=/tmp/ipush-store-bench
//! cpu=0 reps=3
//! Prints one line per run (modes interleaved within each repetition) and a markdown table of
//! the median run per (workload, mode) at the end. Disk bytes per delivery count every stored
//! message, the warm-up ones included.
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};
use ipush::config::Config;
use ipush::ids::ShardId;
use ipush::shard::Shard;
use ipush::storage::embedded::EmbeddedStore;
use ipush::storage::memory::MemoryStore;
use ipush::storage::Store;

#[derive(Clone)]
struct Opts {
    msgs: u64,
    users: u64,
    body: usize,
    inflight: usize,
    members: u64,
    chan_pubs: u64,
    chan_inflight: usize,
    modes: Vec<String>,
    work: Vec<String>,
    dir: PathBuf,
    cpu: usize,
    reps: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        msgs: 200_000,
        users: 10_000,
        body: 100,
        inflight: 64,
        members: 10_000,
        chan_pubs: 200,
        chan_inflight: 4,
        modes: vec!["memory".into(), "never".into(), "always".into()],
        work: vec!["unicast".into(), "fanout".into()],
        dir: PathBuf::from("/tmp/ipush-store-bench"),
        cpu: 0,
        reps: 3,
    };
    for a in std::env::args().skip(1) {
        let (k, v) = a.split_once('=').expect("key=value");
        let list = || v.split(',').map(String::from).collect::<Vec<_>>();
        match k {
            "msgs" => o.msgs = v.parse().unwrap(),
            "users" => o.users = v.parse().unwrap(),
            "body" => o.body = v.parse().unwrap(),
            "inflight" => o.inflight = v.parse().unwrap(),
            "members" => o.members = v.parse().unwrap(),
            "chan_pubs" => o.chan_pubs = v.parse().unwrap(),
            "chan_inflight" => o.chan_inflight = v.parse().unwrap(),
            "modes" => o.modes = list(),
            "work" => o.work = list(),
            "dir" => o.dir = v.into(),
            "cpu" => o.cpu = v.parse().unwrap(),
            "reps" => o.reps = v.parse().unwrap(),
            _ => panic!("unknown key {k}"),
        }
    }
    o
}

#[derive(Default, Clone)]
struct Row {
    mode: String,
    work: String,
    deliveries: u64,
    secs: f64,
    warmup_secs: f64,
    disk_bytes: u64,
    disk_after_compact: u64,
    files: usize,
    recovery_ms: u128,
    recovery_snap_ms: u128,
    records: u64,
    recovered_records: u64,
}

fn du(dir: &Path) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                let (t, c) = du(&e.path());
                total += t;
                n += c;
            } else {
                total += m.len();
                n += 1;
            }
        }
    }
    (total, n)
}

fn open(mode: &str, dir: &Path) -> Store {
    match mode {
        "memory" => Store::Memory(MemoryStore::new()),
        "never" | "always" => {
            let (s, _) = EmbeddedStore::open(dir, 0, 1, mode == "always").expect("open store");
            Store::Embedded(s)
        }
        _ => panic!("mode is memory, never or always"),
    }
}

fn body(n: usize, i: u64) -> String {
    let mut s = format!("message {i} ");
    while s.len() < n {
        s.push('x');
    }
    s.truncate(n);
    s
}

/// Runs `tasks` concurrent loops, each taking the next index below `n` and calling `f`.
async fn drive<F, Fut>(n: u64, tasks: usize, f: F)
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let next = Rc::new(Cell::new(0u64));
    let f = Rc::new(f);
    let mut hs = Vec::new();
    for _ in 0..tasks {
        let (next, f) = (next.clone(), f.clone());
        hs.push(glommio::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= n {
                    break;
                }
                next.set(i + 1);
                f(i).await;
            }
        }));
    }
    for h in hs {
        h.await;
    }
}

async fn run_one(o: Opts, mode: String, work: String) -> Row {
    let dir = o.dir.join(format!("{work}-{mode}"));
    let _ = std::fs::remove_dir_all(&dir);
    let store = open(&mode, &dir);
    let shard = Rc::new(Shard::new(
        ShardId(0),
        1,
        Arc::new(Config::default()),
        store,
        0,
    ));
    let mut row = Row {
        mode: mode.clone(),
        work: work.clone(),
        ..Row::default()
    };
    let bodies: Rc<Vec<String>> = Rc::new((0..64).map(|i| body(o.body, i)).collect());
    match work.as_str() {
        "unicast" => {
            // Warm-up: every user loaded once (and given one message), not timed.
            let t = Instant::now();
            {
                let (shard, bodies) = (shard.clone(), bodies.clone());
                drive(o.users, o.inflight, move |i| {
                    let (shard, bodies) = (shard.clone(), bodies.clone());
                    async move {
                        let uid = format!("user{i}");
                        shard
                            .publish_user(&uid, "op", &bodies[i as usize % 64], 604_800)
                            .await
                            .expect("publish");
                    }
                })
                .await;
            }
            row.warmup_secs = t.elapsed().as_secs_f64();
            let t = Instant::now();
            {
                let (shard, bodies, users) = (shard.clone(), bodies.clone(), o.users);
                drive(o.msgs, o.inflight, move |i| {
                    let (shard, bodies) = (shard.clone(), bodies.clone());
                    async move {
                        let uid = format!("user{}", i % users);
                        shard
                            .publish_user(&uid, "op", &bodies[i as usize % 64], 604_800)
                            .await
                            .expect("publish");
                    }
                })
                .await;
            }
            row.secs = t.elapsed().as_secs_f64();
            row.deliveries = o.msgs;
            // The warm-up messages are stored too.
            row.recovered_records = o.msgs + o.users;
        }
        "fanout" => {
            {
                let shard = shard.clone();
                drive(o.members, o.inflight, move |i| {
                    let shard = shard.clone();
                    async move {
                        shard
                            .subscribe(&format!("member{i}"), "bigchannel")
                            .await
                            .expect("subscribe");
                    }
                })
                .await;
            }
            // Warm-up: the first publish loads the member list and every member.
            let t = Instant::now();
            let n = shard
                .publish_channel("bigchannel", "op", &bodies[0], 604_800)
                .await
                .expect("publish");
            assert_eq!(n, o.members);
            row.warmup_secs = t.elapsed().as_secs_f64();
            let t = Instant::now();
            {
                let (shard, bodies, members) = (shard.clone(), bodies.clone(), o.members);
                drive(o.chan_pubs, o.chan_inflight, move |i| {
                    let (shard, bodies) = (shard.clone(), bodies.clone());
                    async move {
                        let n = shard
                            .publish_channel("bigchannel", "op", &bodies[i as usize % 64], 604_800)
                            .await
                            .expect("publish");
                        assert_eq!(n, members);
                    }
                })
                .await;
            }
            row.secs = t.elapsed().as_secs_f64();
            row.deliveries = o.chan_pubs * o.members;
            row.recovered_records = (o.chan_pubs + 1) * o.members;
        }
        _ => panic!("work is unicast or fanout"),
    }
    // Flushes and closes the store.
    shard.close_store().await.expect("close");
    if mode != "memory" {
        let (bytes, files) = du(&dir);
        row.disk_bytes = bytes;
        row.files = files;
        drop(shard);
        // Restart: replay of the log as written.
        let (s, rec) = EmbeddedStore::open(&dir, 0, 1, false).expect("reopen");
        row.recovery_ms = rec.millis;
        row.records = rec.records;
        // Then a snapshot (what background compaction leaves) and a restart from it.
        s.compact().await.expect("compact");
        row.disk_after_compact = du(&dir).0;
        s.shutdown().await.expect("close");
        drop(s);
        let (s, rec) = EmbeddedStore::open(&dir, 0, 1, false).expect("reopen");
        row.recovery_snap_ms = rec.millis;
        s.shutdown().await.expect("close");
    }
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn main() {
    let o = opts();
    let mut rows = Vec::new();
    for work in o.work.clone() {
        for (rep, mode) in (0..o.reps).flat_map(|r| o.modes.iter().map(move |m| (r, m.clone()))) {
            let (o2, m2, w2) = (o.clone(), mode.clone(), work.clone());
            let row = LocalExecutorBuilder::new(Placement::Fixed(o.cpu))
                .name("bench")
                .spawn(move || run_one(o2, m2, w2))
                .expect("executor")
                .join()
                .expect("join");
            println!(
                "#{rep} {work:8} {mode:7} {:>10} deliveries in {:7.3} s = {:>10.0}/s  warm-up {:.3} s  disk {} B ({:.1} B/delivery, {} files) after compaction {} B ({:.1} B/delivery)  recovery {} ms ({} records), from snapshot {} ms",
                row.deliveries,
                row.secs,
                row.deliveries as f64 / row.secs,
                row.warmup_secs,
                row.disk_bytes,
                row.disk_bytes as f64 / row.recovered_records.max(1) as f64,
                row.files,
                row.disk_after_compact,
                row.disk_after_compact as f64 / row.recovered_records.max(1) as f64,
                row.recovery_ms,
                row.records,
                row.recovery_snap_ms
            );
            rows.push(row);
        }
    }
    println!();
    println!("| workload | store | deliveries | seconds | **deliveries/s** median (min–max) | disk B/delivery (log) | disk B/delivery (after snapshot) | recovery ms (log / snapshot) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for work in &o.work {
        for mode in &o.modes {
            let mut rs: Vec<&Row> = rows
                .iter()
                .filter(|r| &r.work == work && &r.mode == mode)
                .collect();
            rs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let r = rs[rs.len() / 2];
            let rate = |r: &Row| r.deliveries as f64 / r.secs;
            let per = |b: u64| {
                if r.mode == "memory" {
                    "—".to_string()
                } else {
                    format!("{:.1}", b as f64 / r.recovered_records.max(1) as f64)
                }
            };
            println!(
                "| {} | {} | {} | {:.3} | **{:.0}** ({:.0}–{:.0}) | {} | {} | {} |",
                r.work,
                r.mode,
                r.deliveries,
                r.secs,
                rate(r),
                rate(rs[rs.len() - 1]),
                rate(rs[0]),
                per(r.disk_bytes),
                per(r.disk_after_compact),
                if r.mode == "memory" {
                    "—".to_string()
                } else {
                    format!("{} / {}", r.recovery_ms, r.recovery_snap_ms)
                }
            );
        }
    }
}
