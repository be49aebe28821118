//! Startup and shutdown of one node: binds every core's listeners, wires the cross-core
//! channels, starts one pinned glommio executor per core and runs each core's life cycle
//! (serve, then on the stop signal: stop accepting, end streams, flush storage). The main
//! thread only binds and joins.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Config, FsyncMode, StorageKind};
use crate::lockfile::{LockError, LockFile};
use crate::net::{io_in_use, retry_bind};
use crate::shard::ids::ShardId;
use crate::shard::msg::ShardMsg;
use crate::shard::Shard;
use crate::storage::scylla::{ScyllaParams, ScyllaStore};
use crate::storage::{embedded::EmbeddedStore, memory::MemoryStore, Storage, Store};

/// Room in each core-to-core channel before senders wait.
const MESH_CAPACITY: usize = 4096;
/// A core ended before saying whether its start-up worked.
const CORE_GONE: &str = "a core stopped during start-up";
/// How long streams get to drain their final chunk at shutdown.
const DRAIN: Duration = Duration::from_secs(3);

/// A listening socket with SO_REUSEPORT and the backlog we ask for (glommio's own bind
/// hard-codes 1024).
fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Refuses a port that something else already listens on (SO_REUSEPORT would otherwise share
/// it silently with another process of the same user).
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..num_cpus()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the node until `stop` is set and every core has shut down. `ready` is called once every
/// listener is bound.
pub fn run(cfg: Config, stop: Arc<AtomicBool>, ready: impl FnOnce()) -> anyhow::Result<()> {
    let cpus = allowed_cpus();
    let cores = if cfg.cores == 0 {
        cpus.len()
    } else {
        cfg.cores
    };
    if cores > cpus.len() {
        bail!("--cores={cores} but only {} CPUs are available", cpus.len());
    }
    let data_dir = (cfg.storage == StorageKind::Embedded).then(|| cfg.data_dir.clone());
    // Held until this function returns, i.e. until every core has stopped.
    let mut dir_lock = match &data_dir {
        Some(dir) => Some(lock_data_dir(dir)?),
        None => None,
    };
    if let Some(dir) = &data_dir {
        check_data_dir(dir, cores)?;
    }
    let client_addr = SocketAddr::new(cfg.client_host, cfg.client_port);
    let admin_addr = SocketAddr::new(cfg.admin_host, cfg.admin_port);
    for (addr, flag) in [(client_addr, "client_port"), (admin_addr, "admin_port")] {
        let what = format!("--{flag} {addr}");
        retry_bind(&what, io_in_use, || probe(addr))
            .with_context(|| format!("cannot bind {what}"))?;
    }
    let mut listeners = Vec::with_capacity(cores);
    for _ in 0..cores {
        let backlog = cfg.listen_backlog;
        let c = retry_bind("the client port", io_in_use, || {
            listen(client_addr, backlog)
        })
        .with_context(|| format!("cannot listen on client address {client_addr}"))?;
        let a = retry_bind("the admin port", io_in_use, || listen(admin_addr, backlog))
            .with_context(|| format!("cannot listen on admin address {admin_addr}"))?;
        listeners.push((c, a));
    }

    // senders[i][j]: core i to core j; inbox[j]: (i, receiver) for every i != j.
    let mut senders: Vec<Vec<Option<SharedSender<ShardMsg>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    let mut inbox: Vec<Vec<(usize, SharedReceiver<ShardMsg>)>> =
        (0..cores).map(|_| Vec::new()).collect();
    for (i, row) in senders.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(MESH_CAPACITY);
                *slot = Some(tx);
                inbox[j].push((i, rx));
            }
        }
    }

    let cfg = Arc::new(cfg);
    // The cluster bus (NNG) runs on threads of its own; each core gets its end of it.
    let members = Arc::new(crate::cluster::Membership::from_config(&cfg));
    let (bridge, mut links) = if members.is_cluster() {
        let (b, l) = crate::cluster::bridge::start(members.clone(), cores, stop.clone())
            .map_err(|e| anyhow::anyhow!(e))?;
        (Some(b), l.into_iter().map(Some).collect())
    } else {
        (None, (0..cores).map(|_| None).collect::<Vec<_>>())
    };
    let go = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let started_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut handles = Vec::with_capacity(cores);
    for (i, ((client, admin), (tx, rx))) in listeners
        .into_iter()
        .zip(senders.into_iter().zip(inbox))
        .enumerate()
    {
        let (cfg, stop, go, ready_tx) = (cfg.clone(), stop.clone(), go.clone(), ready_tx.clone());
        let link = links[i].take();
        let client = client.into_raw_fd();
        let admin = admin.into_raw_fd();
        let h = LocalExecutorBuilder::new(Placement::Fixed(cpus[i]))
            .name(&format!("ipush-core{i}"))
            // The kernel sizes io_uring's cancel hash table from the ring (8 buckets at
            // glommio's default depth of 128, 256 at 4096), and glommio cancels and re-arms its
            // preemption timer on every reactor turn: with 10,000 sockets armed, each cancel
            // walked ~1,250 polls (14% of the CPU in a unicast profile).
            .ring_depth(4096)
            .spawn(move || async move {
                // SAFETY: the fds come from listeners bound above and are owned from here on.
                let (client, admin) = unsafe {
                    (
                        glommio::net::TcpListener::from_raw_fd(client),
                        glommio::net::TcpListener::from_raw_fd(admin),
                    )
                };
                let core = Core {
                    id: ShardId(i),
                    cfg,
                    started_us,
                    stop,
                    go,
                    ready: ready_tx,
                };
                core_main(core, client, admin, tx, rx, link).await
            })
            .map_err(|e| anyhow::anyhow!("cannot start the executor of core {i}: {e}"))?;
        handles.push(h);
    }
    drop(ready_tx);
    // Every core opens its store (replaying it) before any of them serves.
    let mut startup_error = None;
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => startup_error = Some(e),
            Err(_) => startup_error = Some(CORE_GONE.to_string()),
        }
        if startup_error.is_some() {
            break;
        }
    }
    if startup_error.is_none() {
        if let Some(dir) = &data_dir {
            // Recorded only once every core has opened its store: a refused start changes
            // nothing on disk.
            if let Err(e) = record_data_dir(dir, cores) {
                startup_error = Some(format!("{e:#}"));
            }
        }
        if let Some(lock) = &mut dir_lock {
            if let Err(e) = lock.write_pid() {
                tracing::warn!(path = %lock.path().display(), error = %e, "cannot write the pid into the lock file");
            }
        }
    }
    if startup_error.is_some() {
        stop.store(true, Ordering::SeqCst);
    } else {
        go.store(true, Ordering::SeqCst);
        tracing::info!(
            %client_addr, %admin_addr, cores,
            storage = ?cfg.storage, auth = ?cfg.auth,
            "ipush_server listening"
        );
        ready();
    }
    let mut failed = false;
    // The first core's own error (say, glommio could not set up io_uring), to explain
    // a start-up that ended without a word from the cores.
    let mut core_error = None;
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            tracing::error!(core = i, error = %e, "core stopped abnormally");
            core_error.get_or_insert_with(|| e.to_string());
            failed = true;
        }
    }
    if let Some(b) = bridge {
        // Every core has stopped, so `stop` is set and the bus threads end within a poll.
        stop.store(true, Ordering::SeqCst);
        b.join();
    }
    if let Some(e) = startup_error {
        match core_error {
            Some(cause) if e == CORE_GONE => {
                bail!("{}", crate::diagnose::core_start_failure(&cause))
            }
            _ => bail!("{e}"),
        }
    }
    if failed {
        bail!("a core stopped abnormally");
    }
    Ok(())
}

/// Locks `dir/ipush.lock` (creating `dir` if needed) so that no second server uses the same
/// embedded store; the refusal names the holder.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<LockFile> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create --data_dir {}", dir.display()))?;
    match LockFile::acquire(&dir.join("ipush.lock")) {
        Ok(l) => Ok(l),
        Err(e @ LockError::Held { .. }) => bail!(
            "--data_dir {} is in use by another ipush_server: {e}. Two servers on one store \
             would give the same seqs twice and lose messages: give every server its own \
             --data_dir (and --pid_file), or stop the other one",
            dir.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// The embedded store places users by core count: refuse a data directory written with
/// another one (its users would be looked for on the wrong cores).
fn check_data_dir(dir: &std::path::Path, cores: usize) -> anyhow::Result<()> {
    let meta = dir.join("ipush.meta");
    match std::fs::read_to_string(&meta) {
        Ok(have) if have == meta_text(cores) => Ok(()),
        Ok(have) => bail!(
            "{} says `{}` but this server runs {cores} cores: users are placed by core count, \
             so start with the same --cores or use a new --data_dir",
            meta.display(),
            have.trim().replace('\n', " ")
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", meta.display())),
    }
}

fn meta_text(cores: usize) -> String {
    format!("format=1\ncores={cores}\n")
}

fn record_data_dir(dir: &std::path::Path, cores: usize) -> anyhow::Result<()> {
    let meta = dir.join("ipush.meta");
    if std::fs::read_to_string(&meta).is_ok_and(|m| m == meta_text(cores)) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create --data_dir {}", dir.display()))?;
    std::fs::write(&meta, meta_text(cores))
        .with_context(|| format!("cannot write {}", meta.display()))
}

/// One core's start-up parameters.
struct Core {
    id: ShardId,
    cfg: Arc<Config>,
    started_us: u64,
    stop: Arc<AtomicBool>,
    /// Set by the main thread once every core is ready.
    go: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Opens this core's store (on the core's executor: scylla connects without blocking it).
async fn open_store(core: &Core) -> Result<Store, String> {
    match core.cfg.storage {
        StorageKind::Memory => Ok(Store::Memory(MemoryStore::new())),
        StorageKind::Embedded => {
            let dir = core.cfg.data_dir.join(format!("core-{}", core.id.0));
            let (store, rec) = EmbeddedStore::open(
                &dir,
                core.id.0 as u32,
                core.cfg.cores as u32,
                core.cfg.fsync == FsyncMode::Always,
            )
            .map_err(|e| e.to_string())?;
            tracing::info!(
                core = %core.id, files = rec.files, bytes = rec.bytes,
                records = rec.records, ms = rec.millis as u64,
                "embedded store recovered"
            );
            Ok(Store::Embedded(store))
        }
        StorageKind::Scylla => {
            let cfg = &core.cfg;
            let params = ScyllaParams {
                nodes: cfg
                    .scylla_node_list()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                keyspace: cfg.scylla_keyspace.clone(),
                consistency: cfg.scylla_consistency,
                timeout: Duration::from_millis(cfg.scylla_timeout_ms),
                core: core.id.0 as u32,
                cores: cfg.cores as u32,
            };
            let store = ScyllaStore::open(params).await.map_err(|e| e.to_string())?;
            tracing::info!(core = %core.id, keyspace = %cfg.scylla_keyspace, "scylla store connected");
            Ok(Store::Scylla(store))
        }
    }
}

async fn core_main(
    core: Core,
    client: glommio::net::TcpListener,
    admin: glommio::net::TcpListener,
    senders: Vec<Option<SharedSender<ShardMsg>>>,
    inbox: Vec<(usize, SharedReceiver<ShardMsg>)>,
    bus: Option<crate::cluster::bridge::CoreLink>,
) {
    let id = core.id;
    // Every channel end connects at once: each connect waits for its peer core.
    let rx_tasks: Vec<_> = inbox
        .into_iter()
        .map(|(from, rx)| glommio::spawn_local(async move { (from, rx.connect().await) }))
        .collect();
    let tx_tasks: Vec<_> = senders
        .into_iter()
        .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
        .collect();
    let mut peers = Vec::with_capacity(tx_tasks.len());
    for t in tx_tasks {
        peers.push(match t {
            Some(t) => Some(t.await),
            None => None,
        });
    }
    let mut receivers = Vec::new();
    for t in rx_tasks {
        receivers.push(t.await);
    }

    let store = match open_store(&core).await {
        Ok(s) => {
            let _ = core.ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = core.ready.send(Err(format!("core {id}: {e}")));
            return;
        }
    };
    // Serve only once every core has opened its store.
    while !core.go.load(Ordering::SeqCst) {
        if core.stop.load(Ordering::SeqCst) {
            let _ = store.close().await;
            return;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let Core {
        cfg,
        started_us,
        stop,
        ..
    } = core;
    let shard = Rc::new(Shard::new(id, cfg, store, peers, started_us));
    if let Some(link) = bus {
        shard.attach_bus(link);
        glommio::spawn_local(shard.clone().bus_pump()).detach();
    }
    for (_from, rx) in receivers {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                shard.on_message(msg).await;
            }
        })
        .detach();
    }
    let client = glommio::spawn_local(crate::transport::accept::client_loop(shard.clone(), client));
    let admin = glommio::spawn_local(crate::admin::admin_loop(shard.clone(), admin));
    let house = glommio::spawn_local(housekeeping(shard.clone()));
    let flusher = glommio::spawn_local(crate::transport::stream::flusher(shard.clone()));

    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    // Shutdown, in order: stop accepting, end every stream, flush storage.
    drop(client);
    drop(admin);
    shard.begin_shutdown();
    let deadline = Instant::now() + DRAIN;
    while shard.stream_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    for c in shard.streams() {
        c.abort();
    }
    while shard.stream_count() > 0 && Instant::now() < deadline + Duration::from_secs(1) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(house);
    drop(flusher);
    if let Err(e) = shard.store.close().await {
        tracing::error!(core = %id, error = %e, "flushing storage at shutdown failed");
    }
    tracing::debug!(core = %id, "core stopped");
}

/// Once a second: node stats sample (core 0), heartbeats to quiet streams, stuck streams
/// closed; once a minute: expired messages purged.
async fn housekeeping(shard: Rc<Shard>) {
    let hb = shard.cfg.heartbeat_interval_s as u32;
    let mut tick: u64 = 0;
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if shard.id.0 == 0 {
            let (per_core, _) = shard.gather_stats().await;
            let mut total = crate::stats::Snapshot::default();
            for (_, s) in &per_core {
                total.add(s);
            }
            shard.sampler.borrow_mut().sample(&total);
        }
        let now = shard.clock();
        for c in shard.streams() {
            let quiet = now.saturating_sub(c.last_send.get());
            if c.is_ending() {
                // A final chunk nobody reads: stop waiting for it.
                let ticks = c.ending_ticks.get() + 1;
                c.ending_ticks.set(ticks);
                if ticks >= 5 {
                    c.abort();
                }
            } else if quiet >= hb && !c.is_replaying() && c.queue_len() == 0 {
                shard.push(&c, crate::shard::conn::Out::Heartbeat);
                c.last_send.set(now);
            }
        }
        if tick.is_multiple_of(60) {
            match shard.store.purge_expired(crate::stats::unix_now()).await {
                Ok(n) => shard.stats.purged.set(shard.stats.purged.get() + n as u64),
                Err(e) => tracing::warn!(error = %e, "purging expired messages failed"),
            }
        }
    }
}
