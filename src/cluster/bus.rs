//! The NNG cluster bus: two threads of its own (NNG calls block and NNG runs its own I/O
//! threads) that own every bus socket. They never touch a core's state: inbound frames reach
//! the owner core over a channel plus a waker; cores hand outbound frames to the sender
//! thread over a channel. No lock is shared with the push path.
//!
//! Topology: each node listens with one pull0 socket on its bus port, and dials every peer with
//! one push0 socket per peer, so "send to node X" is a send on X's dialer and "broadcast" is a
//! send on all of them. Push/pull queues a frame a peer cannot take yet (and refuses one when
//! the queue is full, counted) where bus0 dropped it silently: under a burst of cross-node
//! requests bus0 lost ~0.3 % of them, each a request that timed out as 503. NNG redials by
//! itself when a peer comes back. Every node pings every
//! peer twice a second; a peer not heard from for `DOWN_AFTER` counts as down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use super::wire::{self, Body, Frame};
use super::{Membership, NodeId};

/// Member ids the bus can name (the dynamic cluster's `control::MAX_MEMBERS`).
const MAX_MEMBERS: usize = 1024;
use crate::ids::ShardId;
use crate::shutdown::Signal;

const PING_EVERY: Duration = Duration::from_millis(500);
/// A peer not heard from for this long is down: requests to it fail at once (503).
pub const DOWN_AFTER: Duration = Duration::from_millis(2000);

/// What a core asks the sender thread to do.
pub enum Outbound {
    To(NodeId, Vec<u8>),
    /// To every peer.
    All(Vec<u8>),
    /// The dynamic cluster's peers now (id and bus URL): new ones are dialed, gone ones closed.
    Peers(Vec<(NodeId, String)>),
}

/// Liveness and traffic of the bus, shared read-mostly by all threads.
pub struct BusState {
    started: Instant,
    /// Milliseconds since `started` when each node was last heard from (0 = never).
    last_seen: Vec<AtomicU64>,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Frames that did not decode (foreign, damaged, other version): dropped.
    pub malformed: AtomicU64,
    /// Frames NNG would not take (peer's queue full or no pipe).
    pub send_failed: AtomicU64,
}

impl BusState {
    fn new(nodes: usize) -> Self {
        BusState {
            started: Instant::now(),
            last_seen: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
        }
    }

    fn seen(&self, node: NodeId) {
        if let Some(s) = self.last_seen.get(node.0 as usize) {
            let now = self.started.elapsed().as_millis() as u64;
            s.store(now.max(1), Ordering::Relaxed);
        }
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        let Some(s) = self.last_seen.get(node.0 as usize) else {
            return false;
        };
        let seen = s.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        seen != 0 && now.saturating_sub(seen) < DOWN_AFTER.as_millis() as u64
    }
}

/// One core's end of the bridge.
pub struct CoreLink {
    pub out: crossbeam_channel::Sender<Outbound>,
    pub inbox: crossbeam_channel::Receiver<Frame>,
    pub wake: Arc<AtomicWaker>,
    pub state: Arc<BusState>,
}

/// The bus threads; they end once `stop` fires.
pub struct Bus {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bus {
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// Opens the bus: listens on this node's bus address, dials every peer, and starts the
/// receiving and sending threads. Fails (clearly) when the bus port cannot be bound.
pub fn start(members: Arc<Membership>, stop: Arc<Signal>) -> Result<(Bus, Vec<CoreLink>), String> {
    let cores = members.cores();
    let me = members.me();
    let my = members.node(me).clone();
    // The dynamic cluster's ids are assigned for the keyspace's life, up to MAX_MEMBERS.
    let ids = if members.is_dynamic() {
        MAX_MEMBERS
    } else {
        members.len()
    };
    let state = Arc::new(BusState::new(ids));
    let listener = nng::Socket::new(nng::Protocol::Pull0)
        .map_err(|e| format!("cannot open the bus socket: {e}"))?;
    let listen_url = url(&my.host, my.bus_port);
    let what = format!("the bus {listen_url}");
    crate::net::retry_bind(
        &what,
        |e: &nng::Error| *e == nng::Error::AddressInUse,
        || listener.listen(&listen_url),
    )
    .map_err(|e| {
        format!(
            "cannot listen on the bus at {listen_url} (--nodes entry of {}): {e}",
            my.name
        )
    })?;
    use nng::options::Options;
    let _ = listener.set_opt::<nng::options::RecvTimeout>(Some(Duration::from_millis(200)));
    let _ = listener.set_opt::<nng::options::RecvBufferSize>(1024);

    let mut dialers = Vec::new();
    for peer in members.peers() {
        let spec = members.node(peer);
        let u = url(&spec.host, spec.bus_port);
        let s = dial(&u).map_err(|e| format!("cannot dial node {} on the bus: {e}", spec.name))?;
        dialers.push((peer, u, s));
    }

    let (out_tx, out_rx) = crossbeam_channel::unbounded::<Outbound>();
    let mut inboxes = Vec::with_capacity(cores);
    let mut links = Vec::with_capacity(cores);
    for _ in 0..cores {
        let (tx, rx) = crossbeam_channel::unbounded::<Frame>();
        let wake = Arc::new(AtomicWaker::new());
        inboxes.push((tx, wake.clone()));
        links.push(CoreLink {
            out: out_tx.clone(),
            inbox: rx,
            wake,
            state: state.clone(),
        });
    }

    let recv = {
        let (state, stop, members) = (state.clone(), stop.clone(), members.clone());
        std::thread::Builder::new()
            .name("ipush-bus-recv".into())
            .spawn(move || receive(listener, inboxes, members, state, stop))
            .map_err(|e| format!("cannot start the bus thread: {e}"))?
    };
    let send = {
        let (state, stop) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ipush-bus-send".into())
            .spawn(move || send_loop(me, dialers, out_rx, state, stop))
            .map_err(|e| format!("cannot start the bus thread: {e}"))?
    };
    Ok((
        Bus {
            threads: vec![recv, send],
        },
        links,
    ))
}

/// A dialer to one peer (asynchronous: the peer may not be up yet; NNG keeps redialing).
fn dial(u: &str) -> Result<nng::Socket, nng::Error> {
    use nng::options::Options;
    let s = nng::Socket::new(nng::Protocol::Push0)?;
    let _ = s.set_opt::<nng::options::SendBufferSize>(1024);
    let _ = s.set_opt::<nng::options::ReconnectMinTime>(Some(Duration::from_millis(100)));
    let _ = s.set_opt::<nng::options::ReconnectMaxTime>(Some(Duration::from_millis(1000)));
    s.dial_async(u)?;
    Ok(s)
}

/// The bus URLs of `members`' peers, for [`Outbound::Peers`].
pub fn peer_urls(members: &Membership) -> Vec<(NodeId, String)> {
    members
        .peers()
        .map(|p| {
            let spec = members.node(p);
            (p, url(&spec.host, spec.bus_port))
        })
        .collect()
}

fn receive(
    socket: nng::Socket,
    inboxes: Vec<(crossbeam_channel::Sender<Frame>, Arc<AtomicWaker>)>,
    members: Arc<Membership>,
    state: Arc<BusState>,
    stop: Arc<Signal>,
) {
    while !stop.is_set() {
        let msg = match socket.recv() {
            Ok(m) => m,
            Err(nng::Error::TimedOut) => continue,
            Err(nng::Error::Closed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "bus receive failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let frame = match wire::decode(&msg) {
            Ok(f) => f,
            Err(e) => {
                state.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, bytes = msg.len(), "dropped a bus frame");
                continue;
            }
        };
        state.received.fetch_add(1, Ordering::Relaxed);
        state.seen(frame.from);
        let core = match &frame.body {
            Body::Ping => continue,
            Body::Answer(_) => frame.core,
            // Node-wide work (channel fan-out, stats) is coordinated by core 0.
            Body::Request(r) => r.uid().map_or(ShardId(0), |uid| members.locate(uid).core),
        };
        let Some((tx, wake)) = inboxes.get(core.0) else {
            state.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if tx.send(frame).is_ok() {
            wake.wake();
        }
    }
    socket.close();
}

fn send_loop(
    me: NodeId,
    mut dialers: Vec<(NodeId, String, nng::Socket)>,
    out: crossbeam_channel::Receiver<Outbound>,
    state: Arc<BusState>,
    stop: Arc<Signal>,
) {
    let ping = wire::encode(&Frame {
        from: me,
        core: ShardId(0),
        id: 0,
        body: Body::Ping,
    });
    let put = |s: &nng::Socket, bytes: &[u8]| {
        // Never block: a peer that is gone or full loses the frame, and its request times out.
        match s.try_send(nng::Message::from(bytes)) {
            Ok(()) => {
                state.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                state.send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let mut next_ping = Instant::now();
    while !stop.is_set() {
        if Instant::now() >= next_ping {
            for (_, _, s) in &dialers {
                put(s, &ping);
            }
            next_ping = Instant::now() + PING_EVERY;
        }
        match out.recv_timeout(PING_EVERY / 2) {
            Ok(Outbound::To(node, bytes)) => {
                if let Some((_, _, s)) = dialers.iter().find(|(n, _, _)| *n == node) {
                    put(s, &bytes);
                }
            }
            Ok(Outbound::All(bytes)) => {
                for (_, _, s) in &dialers {
                    put(s, &bytes);
                }
            }
            Ok(Outbound::Peers(peers)) => {
                dialers.retain(|(n, u, s)| {
                    let keep = peers.iter().any(|(pn, pu)| pn == n && pu == u);
                    if !keep {
                        s.close();
                    }
                    keep
                });
                for (n, u) in peers {
                    if dialers.iter().any(|(dn, _, _)| *dn == n) {
                        continue;
                    }
                    match dial(&u) {
                        Ok(s) => dialers.push((n, u, s)),
                        Err(e) => tracing::warn!(url = %u, error = %e, "cannot dial a peer"),
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    for (_, _, s) in dialers {
        s.close();
    }
}
