//! Start-up and shutdown of one node, in a fixed order: bind every core's listeners, build the
//! mesh of core-to-core channels (and the cluster bus), start one pinned glommio executor per
//! core, and report ready once every core has opened its store. Each core's life is connect →
//! open store → serve → shut down (stop accepting, end streams, flush storage). The main
//! thread only binds, waits and joins.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::auth::Authenticator;
use crate::cluster::bus::{self, CoreLink};
use crate::cluster::{Membership, ViewCell};
use crate::config::{Config, FsyncMode, StorageKind};
use crate::ids::ShardId;
use crate::lockfile::{LockError, LockFile};
use crate::msg::CoreMsg;
use crate::net::{io_in_use, retry_bind};
use crate::router::Router;
use crate::shard::Shard;
use crate::shutdown::Signal;
#[cfg(feature = "scylla")]
use crate::storage::scylla::{ScyllaParams, ScyllaStore};
use crate::storage::{embedded::EmbeddedStore, memory::MemoryStore, Storage, Store};
use crate::transport::accept::ClientPort;

/// Room in each core-to-core channel before senders wait.
const MESH_CAPACITY: usize = 4096;
/// A core ended before saying whether its start-up worked.
const CORE_GONE: &str = "a core stopped during start-up";
/// How long streams get to drain their final chunk at shutdown.
const DRAIN: Duration = Duration::from_secs(3);

/// The addresses a started node listens on (the ports asked for, or the ones the kernel chose
/// for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub client: SocketAddr,
    pub admin: SocketAddr,
    /// The cluster bus port, when there is a cluster.
    pub bus: Option<u16>,
}

/// Runs the node until `stop` fires and every core has shut down. `ready` is called once every
/// listener is bound and every core has opened its store.
pub fn run(mut cfg: Config, stop: Arc<Signal>, ready: impl FnOnce(&Bound)) -> anyhow::Result<()> {
    let cpus = allowed_cpus();
    let cores = if cfg.cores == 0 {
        cpus.len()
    } else {
        cfg.cores
    };
    if cores > cpus.len() {
        bail!("--cores={cores} but only {} CPUs are available", cpus.len());
    }
    let mut dir_lock = check_storage(&cfg, cores)?;
    let (listeners, bound) = bind(&mut cfg, cores)?;
    let cfg = Arc::new(cfg);
    // The dynamic cluster joins before the cores start: they route by its first view.
    let dynamic = start_dynamic(&cfg, cores)?;
    let cell = match &dynamic {
        Some(d) => d.cell(),
        None => Arc::new(ViewCell::new(
            Arc::new(Membership::from_config(&cfg, cores)),
            cores,
        )),
    };
    let members = cell.current();
    // A member of the dynamic cluster hands its slots over before its cores stop: they stop
    // on a signal of their own, fired once it has left.
    let outer_stop = stop;
    let stop = if dynamic.is_some() {
        Arc::new(Signal::new(cores + 1))
    } else {
        outer_stop.clone()
    };
    let mesh = Mesh::new(cores);
    // The cluster bus (NNG) runs on threads of its own; each core gets its end of it.
    let (bus, links) = if members.is_cluster() {
        let (b, l) = bus::start(members.clone(), stop.clone()).map_err(|e| anyhow::anyhow!(e))?;
        #[cfg(feature = "scylla")]
        if let (Some(d), Some(link)) = (&dynamic, l.first()) {
            d.attach_bus(link.out.clone());
        }
        (Some(b), l.into_iter().map(Some).collect())
    } else {
        (None, (0..cores).map(|_| None).collect::<Vec<_>>())
    };
    let go = Arc::new(Signal::new(cores));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let started_us = crate::stats::unix_now_us();
    let mut handles = Vec::with_capacity(cores);
    for (i, ((listeners, (tx, rx)), link)) in listeners
        .into_iter()
        .zip(mesh.into_ends())
        .zip(links)
        .enumerate()
    {
        let core = Core {
            id: ShardId(i),
            cores,
            cfg: cfg.clone(),
            cell: cell.clone(),
            #[cfg(feature = "scylla")]
            fences: dynamic.as_ref().map(|d| d.fences()),
            started_us,
            stop: stop.clone(),
            go: go.clone(),
            ready: ready_tx.clone(),
        };
        handles.push(start_core(core, cpus[i], listeners, tx, rx, link)?);
    }
    drop(ready_tx);
    let startup = wait_ready(&ready_rx, cores, &cfg);
    #[cfg(feature = "scylla")]
    let leaver = dynamic.map(|d| {
        let (outer, stop, cell) = (outer_stop.clone(), stop.clone(), cell.clone());
        let limit = leave_limit(&cfg);
        std::thread::Builder::new()
            .name("ipush-leave".into())
            .spawn(move || leave_on_stop(d, &outer, &stop, &cell, limit))
            .expect("spawn the leave thread")
    });
    #[cfg(not(feature = "scylla"))]
    let _ = (&outer_stop, dynamic);
    match &startup {
        Ok(()) => {
            if let Some(lock) = &mut dir_lock {
                if let Err(e) = lock.write_pid() {
                    let path = lock.path().display();
                    tracing::warn!(%path, error = %e, "cannot write the pid into the lock file");
                }
            }
            go.fire();
            tracing::info!(
                client_addr = %bound.client, admin_addr = %bound.admin, cores,
                storage = ?cfg.storage, auth = ?cfg.auth,
                "ipush_server listening"
            );
            ready(&bound);
        }
        Err(_) => stop.fire(),
    }
    let core_error = join(handles);
    #[cfg(feature = "scylla")]
    if let Some(t) = leaver {
        let _ = t.join();
    }
    if let Some(b) = bus {
        // Every core has stopped: the bus threads end within a poll.
        stop.fire();
        b.join();
    }
    match (startup, core_error) {
        // A start-up that ended without a word from the cores: say why (glommio's error).
        (Err(e), Some(cause)) if e.to_string() == CORE_GONE => {
            bail!("{}", crate::diagnose::core_start_failure(&cause))
        }
        (Err(e), _) => Err(e),
        (Ok(()), Some(_)) => bail!("a core stopped abnormally"),
        (Ok(()), None) => Ok(()),
    }
}

/// How long a leaving member may take to hand its slots over before it stops anyway (the
/// others then claim what is left after the member timeout).
#[cfg(feature = "scylla")]
fn leave_limit(cfg: &Config) -> Duration {
    Duration::from_millis(3 * cfg.member_timeout_ms + 2 * cfg.scylla_timeout_ms)
}

/// The dynamic cluster's way out: on SIGTERM (`outer`), `POST /drain` (the cell's request)
/// or a core's failure (`stop` itself), hand every slot over (bounded by `limit`) while the
/// cores serve on, then stop the cores.
#[cfg(feature = "scylla")]
fn leave_on_stop(
    d: crate::cluster::dynamic::Dynamic,
    outer: &Signal,
    stop: &Signal,
    cell: &ViewCell,
    limit: Duration,
) {
    while !outer.is_set() && !stop.is_set() && !cell.leave_requested() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !stop.is_set() {
        tracing::info!("leaving the cluster: handing every slot over");
        let t0 = Instant::now();
        if d.leave(limit) {
            tracing::info!(
                ms = t0.elapsed().as_millis() as u64,
                "every slot handed over"
            );
        } else {
            tracing::warn!(?limit, "slots still held after the limit: stopping anyway");
        }
    }
    d.stop();
    stop.fire();
}

/// Joins the dynamic cluster when `cfg` asks for it (`--storage=scylla --node`, no `--nodes`).
#[cfg(feature = "scylla")]
fn start_dynamic(
    cfg: &Config,
    cores: usize,
) -> anyhow::Result<Option<crate::cluster::dynamic::Dynamic>> {
    if !cfg.is_dynamic() {
        return Ok(None);
    }
    let d = crate::cluster::dynamic::Dynamic::start(cfg, cores).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(node = %cfg.node, slots = cfg.cluster_slots, "joined the dynamic cluster");
    Ok(Some(d))
}

/// Without the scylla backend there is no dynamic cluster (config validation says so).
#[cfg(not(feature = "scylla"))]
enum NoDynamic {}

#[cfg(not(feature = "scylla"))]
impl NoDynamic {
    fn cell(&self) -> Arc<ViewCell> {
        match *self {}
    }
}

#[cfg(not(feature = "scylla"))]
fn start_dynamic(_cfg: &Config, _cores: usize) -> anyhow::Result<Option<NoDynamic>> {
    Ok(None)
}

/// Before anything binds: the embedded store's directory is locked (the lock is held until
/// `run` returns, i.e. until every core has stopped) and laid out for this core count; the
/// scylla keyspace answers and holds this version's schema.
fn check_storage(cfg: &Config, cores: usize) -> anyhow::Result<Option<LockFile>> {
    match cfg.storage {
        StorageKind::Embedded => {
            let lock = lock_data_dir(&cfg.data_dir)?;
            check_data_dir(&cfg.data_dir, cores)?;
            Ok(Some(lock))
        }
        StorageKind::Scylla => check_scylla(cfg).map(|()| None),
        StorageKind::Memory => Ok(None),
    }
}

/// One core's listeners, as raw fds that cross to its executor thread.
struct Listeners {
    client: RawFd,
    admin: RawFd,
}

/// Binds every core's client and admin listeners (SO_REUSEPORT, one pair per core). A port of
/// 0 is chosen by the kernel for the first core and shared by the others; `cfg` then holds the
/// ports actually bound.
fn bind(cfg: &mut Config, cores: usize) -> anyhow::Result<(Vec<Listeners>, Bound)> {
    let mut client_addr = SocketAddr::new(cfg.client_host, cfg.client_port);
    let mut admin_addr = SocketAddr::new(cfg.admin_host, cfg.admin_port);
    for (addr, flag) in [(client_addr, "client_port"), (admin_addr, "admin_port")] {
        if addr.port() != 0 {
            let what = format!("--{flag} {addr}");
            retry_bind(&what, io_in_use, || probe(addr))
                .with_context(|| format!("cannot bind {what}"))?;
        }
    }
    let backlog = cfg.listen_backlog;
    let mut out = Vec::with_capacity(cores);
    for _ in 0..cores {
        let c = retry_bind("the client port", io_in_use, || {
            listen(client_addr, backlog)
        })
        .with_context(|| format!("cannot listen on client address {client_addr}"))?;
        defer_accept(&c, cfg.defer_accept_s)
            .with_context(|| format!("cannot set TCP_DEFER_ACCEPT on {client_addr}"))?;
        let a = retry_bind("the admin port", io_in_use, || listen(admin_addr, backlog))
            .with_context(|| format!("cannot listen on admin address {admin_addr}"))?;
        client_addr = c.local_addr()?;
        admin_addr = a.local_addr()?;
        out.push(Listeners {
            client: c.into_raw_fd(),
            admin: a.into_raw_fd(),
        });
    }
    cfg.client_port = client_addr.port();
    cfg.admin_port = admin_addr.port();
    let bound = Bound {
        client: client_addr,
        admin: admin_addr,
        bus: (!cfg.nodes.is_empty() || cfg.is_dynamic()).then_some(cfg.bus_port),
    };
    Ok((out, bound))
}

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

/// TCP_DEFER_ACCEPT: the kernel queues a connection for accept once its first bytes arrive
/// (or after about `secs` without any), so a `/connect` is accepted with its head already
/// readable: one wake-up instead of two.
fn defer_accept(l: &std::net::TcpListener, secs: u32) -> std::io::Result<()> {
    let v = secs as libc::c_int;
    // SAFETY: setsockopt on a socket we own, with a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

/// The bounded channels between every pair of cores, before any core has connected its ends.
struct Mesh {
    /// senders[i][j]: core i to core j (None for i == j).
    senders: Vec<Vec<Option<SharedSender<CoreMsg>>>>,
    /// inbox[j]: a receiver from every other core.
    inbox: Vec<Vec<SharedReceiver<CoreMsg>>>,
}

type MeshEnds = (
    Vec<Option<SharedSender<CoreMsg>>>,
    Vec<SharedReceiver<CoreMsg>>,
);

impl Mesh {
    fn new(cores: usize) -> Self {
        let mut senders: Vec<Vec<Option<SharedSender<CoreMsg>>>> = (0..cores)
            .map(|_| (0..cores).map(|_| None).collect())
            .collect();
        let mut inbox: Vec<Vec<_>> = (0..cores).map(|_| Vec::new()).collect();
        for (i, row) in senders.iter_mut().enumerate() {
            for (j, slot) in row.iter_mut().enumerate() {
                if i != j {
                    let (tx, rx) = shared_channel::new_bounded(MESH_CAPACITY);
                    *slot = Some(tx);
                    inbox[j].push(rx);
                }
            }
        }
        Mesh { senders, inbox }
    }

    /// Each core's ends: its senders to every core and its receivers from them.
    fn into_ends(self) -> impl Iterator<Item = MeshEnds> {
        self.senders.into_iter().zip(self.inbox)
    }
}

/// Waits for every core to open its store; then records the data directory's layout.
fn wait_ready(
    ready: &std::sync::mpsc::Receiver<Result<(), String>>,
    cores: usize,
    cfg: &Config,
) -> anyhow::Result<()> {
    for _ in 0..cores {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("{CORE_GONE}"),
        }
    }
    if cfg.storage == StorageKind::Embedded {
        // Recorded only once every core has opened its store: a refused start changes
        // nothing on disk.
        record_data_dir(&cfg.data_dir, cores)?;
    }
    Ok(())
}

/// Waits for every core's thread; the first core's error, if any stopped abnormally.
fn join(handles: Vec<glommio::ExecutorJoinHandle<()>>) -> Option<String> {
    let mut first = None;
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            tracing::error!(core = i, error = %e, "core stopped abnormally");
            first.get_or_insert_with(|| e.to_string());
        }
    }
    first
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

/// How long the start-up waits for ScyllaDB / Cassandra to answer before giving up.
#[cfg(feature = "scylla")]
const SCYLLA_START_RETRY: Duration = Duration::from_secs(20);

/// Before any core starts: the database answers and the keyspace holds this version's schema
/// (created with `--scylla_init_schema=true`). Blocks the main thread, which is no core.
#[cfg(feature = "scylla")]
fn check_scylla(cfg: &Config) -> anyhow::Result<()> {
    let nodes: Vec<String> = cfg
        .scylla_node_list()
        .into_iter()
        .map(str::to_string)
        .collect();
    let created = crate::storage::scylla::check_blocking(
        &nodes,
        &cfg.scylla_keyspace,
        cfg.scylla_init_schema,
        Duration::from_millis(cfg.scylla_timeout_ms),
        SCYLLA_START_RETRY,
    )?;
    if created {
        tracing::info!(keyspace = %cfg.scylla_keyspace, "scylla schema created");
    }
    Ok(())
}

/// Why `--storage=scylla` fails in a build without the driver.
#[cfg(not(feature = "scylla"))]
const NO_SCYLLA: &str =
    "--storage=scylla: this ipush_server was built without the `scylla` feature (build it with default features)";

#[cfg(not(feature = "scylla"))]
fn check_scylla(_cfg: &Config) -> anyhow::Result<()> {
    bail!(NO_SCYLLA)
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
    cores: usize,
    cfg: Arc<Config>,
    cell: Arc<ViewCell>,
    /// The dynamic cluster's fences, which this core's scylla store writes by.
    #[cfg(feature = "scylla")]
    fences: Option<Arc<crate::fencing::Fences>>,
    started_us: u64,
    stop: Arc<Signal>,
    /// Fired by the main thread once every core is ready.
    go: Arc<Signal>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Starts core `core.id`'s executor, pinned to `cpu`.
fn start_core(
    core: Core,
    cpu: usize,
    l: Listeners,
    senders: Vec<Option<SharedSender<CoreMsg>>>,
    inbox: Vec<SharedReceiver<CoreMsg>>,
    link: Option<CoreLink>,
) -> anyhow::Result<glommio::ExecutorJoinHandle<()>> {
    let i = core.id.0;
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("ipush-core{i}"))
        // The kernel sizes io_uring's cancel hash table from the ring (8 buckets at glommio's
        // default depth of 128, 256 at 4096), and glommio cancels and re-arms its preemption
        // timer on every reactor turn: with 10,000 sockets armed, each cancel walked ~1,250
        // polls (14% of the CPU in a unicast profile).
        .ring_depth(4096)
        .spawn(move || async move {
            // SAFETY: the fds come from listeners bound by `bind` and are owned from here on.
            let (client, admin) = unsafe {
                (
                    crate::transport::accept::ClientListener::from_raw_fd(l.client),
                    glommio::net::TcpListener::from_raw_fd(l.admin),
                )
            };
            core_main(core, client, admin, senders, inbox, link).await
        })
        .map_err(|e| anyhow::anyhow!("cannot start the executor of core {i}: {e}"))
}

/// A core's life: connect to the other cores, open its store, wait for the others, serve
/// until stopped, shut down.
async fn core_main(
    core: Core,
    client: crate::transport::accept::ClientListener,
    admin: glommio::net::TcpListener,
    senders: Vec<Option<SharedSender<CoreMsg>>>,
    inbox: Vec<SharedReceiver<CoreMsg>>,
    bus: Option<CoreLink>,
) {
    let (peers, receivers) = connect(senders, inbox).await;
    let store = match open_store(&core).await {
        Ok(s) => {
            let _ = core.ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = core.ready.send(Err(format!("core {}: {e}", core.id)));
            return;
        }
    };
    // Serve only once every core has opened its store (or stop, if one could not).
    futures_lite::future::or(core.go.wait(core.id.0), core.stop.wait(core.id.0)).await;
    if core.stop.is_set() {
        let _ = store.close().await;
        return;
    }
    let shard = Rc::new(Shard::new(
        core.id,
        core.cores,
        core.cfg.clone(),
        store,
        core.started_us,
    ));
    let router = Rc::new(Router::new(shard.clone(), core.cell.clone(), peers));
    let served = serve(&core, &router, client, admin, receivers, bus);
    core.stop.wait(core.id.0).await;
    shut_down(&shard, served).await;
}

/// Connects every channel end at once (each connect waits for its peer core).
async fn connect(
    senders: Vec<Option<SharedSender<CoreMsg>>>,
    inbox: Vec<SharedReceiver<CoreMsg>>,
) -> (
    Vec<Option<ConnectedSender<CoreMsg>>>,
    Vec<glommio::channels::shared_channel::ConnectedReceiver<CoreMsg>>,
) {
    let rx_tasks: Vec<_> = inbox
        .into_iter()
        .map(|rx| glommio::spawn_local(rx.connect()))
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
    let mut receivers = Vec::with_capacity(rx_tasks.len());
    for t in rx_tasks {
        receivers.push(t.await);
    }
    (peers, receivers)
}

/// The tasks a serving core runs; dropping a handle cancels its task.
struct Served {
    accepting: Vec<glommio::Task<()>>,
    background: Vec<glommio::Task<()>>,
}

/// Starts serving: the inbox pumps, the bus pump, both ports, housekeeping and the flusher.
fn serve(
    core: &Core,
    router: &Rc<Router>,
    client: crate::transport::accept::ClientListener,
    admin: glommio::net::TcpListener,
    receivers: Vec<glommio::channels::shared_channel::ConnectedReceiver<CoreMsg>>,
    bus: Option<CoreLink>,
) -> Served {
    let mut background = Vec::new();
    if let Some(link) = bus {
        router.attach_bus(link);
        background.push(glommio::spawn_local(router.clone().bus_pump()));
    }
    for rx in receivers {
        let router = router.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    CoreMsg::Handoff(h) => crate::transport::accept::adopt(router.clone(), h),
                    other => router.on_message(other).await,
                }
            }
        })
        .detach();
    }
    let port = Rc::new(ClientPort {
        router: router.clone(),
        auth: Authenticator::from_config(&core.cfg),
    });
    let accepting = vec![
        glommio::spawn_local(crate::transport::accept::client_loop(port, client)),
        glommio::spawn_local(crate::admin::admin_loop(router.clone(), admin)),
    ];
    background.push(glommio::spawn_local(housekeeping(router.clone())));
    if router.view().is_dynamic() {
        // Views change without traffic too: install each within a few ms of its publishing.
        let r = router.clone();
        background.push(glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                r.refresh();
            }
        }));
    }
    let flusher = crate::transport::stream::flusher(router.shard().clone());
    background.push(glommio::spawn_local(flusher));
    Served {
        accepting,
        background,
    }
}

/// Shutdown, in order: stop accepting, end every stream (bounded), stop the background tasks,
/// flush storage.
async fn shut_down(shard: &Shard, served: Served) {
    drop(served.accepting);
    shard.begin_shutdown();
    let deadline = Instant::now() + DRAIN;
    while shard.stream_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shard.abort_streams();
    while shard.stream_count() > 0 && Instant::now() < deadline + Duration::from_secs(1) {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(served.background);
    if let Err(e) = shard.close_store().await {
        tracing::error!(core = %shard.id(), error = %e, "flushing storage at shutdown failed");
    }
    tracing::debug!(core = %shard.id(), "core stopped");
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
                core.cores as u32,
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
        StorageKind::Scylla => open_scylla(core).await,
    }
}

/// This core's scylla store, connected.
#[cfg(feature = "scylla")]
async fn open_scylla(core: &Core) -> Result<Store, String> {
    let cfg = &core.cfg;
    let params = ScyllaParams {
        nodes: cfg
            .scylla_node_list()
            .into_iter()
            .map(str::to_string)
            .collect(),
        keyspace: cfg.scylla_keyspace.clone(),
        node: core.cell.current().me_name().to_string(),
        consistency: cfg.scylla_consistency,
        timeout: Duration::from_millis(cfg.scylla_timeout_ms),
        core: core.id.0 as u32,
        cores: core.cores as u32,
    };
    let store = match &core.fences {
        Some(f) => ScyllaStore::open_fenced(params, f.clone()).await,
        None => ScyllaStore::open(params).await,
    }
    .map_err(|e| e.to_string())?;
    tracing::info!(core = %core.id, keyspace = %cfg.scylla_keyspace, "scylla store connected");
    Ok(Store::Scylla(store))
}

#[cfg(not(feature = "scylla"))]
async fn open_scylla(_core: &Core) -> Result<Store, String> {
    Err(NO_SCYLLA.to_string())
}

/// Once a second: node stats sample (core 0), heartbeats to quiet streams, stuck streams
/// closed, idle users evicted; once a minute: expired messages purged.
async fn housekeeping(router: Rc<Router>) {
    let shard = router.shard().clone();
    let mut tick: u64 = 0;
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if shard.id().0 == 0 {
            let (per_core, _) = router.gather_stats().await;
            let mut total = crate::stats::Snapshot::default();
            for (_, s) in &per_core {
                total.add(s);
            }
            shard.sampler().borrow_mut().sample(&total);
        }
        shard.tick_streams();
        shard.sweep_idle_users().await;
        if tick.is_multiple_of(60) {
            if let Err(e) = shard.purge_expired().await {
                tracing::warn!(error = %e, "purging expired messages failed");
            }
        }
    }
}
