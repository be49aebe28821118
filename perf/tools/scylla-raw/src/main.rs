//! The raw write rate of the database, for comparison with ipush's persisted publish rate
//! (perf/scylla-bench.sh): `writes` single-row INSERTs into `<keyspace>.messages` (the row
//! ipush writes for a one-recipient message: the body inline, USING TTL), `inflight` at a
//! time, through one driver session on a tokio runtime of `threads` workers (default 2; 0 = a
//! current-thread runtime, as each ipush bridge thread runs). With `batch=1` each write is
//! ipush's exact statement instead: an unlogged single-partition batch of that row and the
//! `users.max_seq` update. Prints one JSON line: writes, seconds, writes/s, latency p50/p99 µs.
//!
//!   scylla-raw nodes=127.0.0.1:9042 keyspace=ipush_bench writes=100000 inflight=512 [batch=1]
//!              [threads=0]
//!
//! The keyspace must hold cql/create_schema.cql (ipush_server --scylla_init_schema=true makes
//! it). Rows go to users `raw<N>`, never to ipush's own users. `drop_keyspace=1` drops the
//! keyspace at the end (the bench's clean-up).

use std::sync::Arc;
use std::time::Instant;

use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::Consistency;
use tokio::sync::Semaphore;

struct Args {
    nodes: String,
    keyspace: String,
    writes: u64,
    inflight: usize,
    users: u64,
    batch: bool,
    body_bytes: usize,
    drop_keyspace: bool,
    /// 0: a current-thread runtime (as one ipush bridge thread runs the driver); else workers.
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: "127.0.0.1:9042".into(),
        keyspace: "ipush".into(),
        writes: 100_000,
        inflight: 512,
        users: 10_000,
        batch: false,
        body_bytes: 64,
        drop_keyspace: false,
        threads: 2,
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {arg}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: not a number: {v}"))
        };
        match k {
            "nodes" => a.nodes = v.into(),
            "keyspace" => a.keyspace = v.into(),
            "writes" => a.writes = num(v)?.max(1),
            "inflight" => a.inflight = num(v)?.max(1) as usize,
            "users" => a.users = num(v)?.max(1),
            "batch" => a.batch = v == "1" || v == "true",
            "body_bytes" => a.body_bytes = num(v)? as usize,
            "drop_keyspace" => a.drop_keyspace = v == "1" || v == "true",
            "threads" => a.threads = num(v)? as usize,
            _ => {
                return Err(format!(
                    "unknown argument {k} (see the head of src/main.rs)"
                ))
            }
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scylla-raw: {e}");
            std::process::exit(2);
        }
    };
    let rt = if args.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("scylla-raw: {e}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<(), String> {
    let nodes: Vec<&str> = a.nodes.split(',').collect();
    let session = SessionBuilder::new()
        .known_nodes(&nodes)
        .build()
        .await
        .map_err(|e| format!("connect {}: {e}", a.nodes))?;
    let ks = &a.keyspace;
    let mut insert = session
        .prepare(format!(
            "INSERT INTO {ks}.messages (uid, seq, expires_at, kind, sender, channel, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
        ))
        .await
        .map_err(|e| format!("prepare (is cql/create_schema.cql in keyspace {ks}?): {e}"))?;
    insert.set_consistency(Consistency::One);
    let mut raise = session
        .prepare(format!(
            "UPDATE {ks}.users USING TIMESTAMP ? SET max_seq = ? WHERE uid = ?"
        ))
        .await
        .map_err(|e| format!("prepare: {e}"))?;
    raise.set_consistency(Consistency::One);
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.append_statement(insert.clone());
    batch.append_statement(raise);
    batch.set_consistency(Consistency::One);
    let (session, insert, batch) = (Arc::new(session), Arc::new(insert), Arc::new(batch));
    let body: Arc<str> = "x".repeat(a.body_bytes).into();
    let permits = Arc::new(Semaphore::new(a.inflight));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(a.writes as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.writes as usize);
    for i in 0..a.writes {
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let (session, insert, batch, body, lat, errors) = (
            session.clone(),
            insert.clone(),
            batch.clone(),
            body.clone(),
            lat.clone(),
            errors.clone(),
        );
        let uid = format!("raw{}", i % a.users);
        let seq = (i / a.users + 1) as i64;
        let use_batch = a.batch;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let row = (
                &uid,
                seq,
                now + 3600,
                3i8,
                "op",
                None::<&str>,
                &*body,
                3660i32,
            );
            let res = if use_batch {
                session
                    .batch(&batch, (row, (seq, seq, &uid)))
                    .await
                    .map(drop)
            } else {
                session.execute_unpaged(&insert, row).await.map(drop)
            };
            match res {
                Ok(()) => lat.lock().unwrap().push(t.elapsed().as_micros() as u32),
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    l.sort_unstable();
    let pct = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)));
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{{\"writes\":{},\"errors\":{errors},\"secs\":{secs:.3},\"per_sec\":{:.0},\"batch\":{},\"inflight\":{},\"p50_us\":{},\"p99_us\":{}}}",
        a.writes,
        (a.writes - errors) as f64 / secs,
        a.batch,
        a.inflight,
        pct(0.5).copied().unwrap_or(0),
        pct(0.99).copied().unwrap_or(0)
    );
    if a.drop_keyspace {
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), &[])
            .await
            .map_err(|e| format!("drop keyspace {ks}: {e}"))?;
    }
    Ok(())
}
