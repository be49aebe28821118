//! The connection engine shared by `hold`, `ramp` and `worker` jobs: one thread,
//! non-blocking sockets (mio), opens streams (chunked, WebSocket or SSE, following one
//! redirect) at a rate from a uid range or an explicit uid list (which may be the uids one
//! cluster node owns, so each connect goes straight to its owner), reports a snapshot every
//! tick, stops opening at a target count, after `max_failures` failures, or when told to,
//! then holds what it has for `hold_secs`. A stream told to move (dynamic cluster, any
//! transport: see [`crate::move_scan`]) reconnects after a small jitter to the signal's
//! location, or to its target without one (which answers 303), and is held again.

use crate::auth::Password;
use crate::http::{self, Counts, StreamStatus};
use crate::move_scan::{MoveQueue, MoveScan};
use crate::net::{classify, open_socket, resolve, Fail};
use crate::scenario_wire::Rng;
use crate::tally::{new_histogram, Failures};
use crate::transport::{self, Codec, Counter, Transport};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// fds kept free for stdio, epoll, /proc reads.
pub const FD_MARGIN: u64 = 64;

/// Moves in a row (each connection up less than a second) before a stream gives up.
const MAX_MOVES_IN_ROW: u8 = 5;
/// Redirects one connect follows at most.
const MAX_HOPS: u8 = 4;

/// The uids to connect, in order: connection i gets uid i.
#[derive(Debug, Clone)]
pub enum Uids {
    /// `{prefix}{start}`, `{prefix}{start + 1}`, ... made when each request is built
    /// (nothing kept per connection).
    Range {
        prefix: String,
        start: u64,
        count: u64,
    },
    List(Vec<String>),
}

impl Uids {
    pub fn len(&self) -> u64 {
        match self {
            Uids::Range { count, .. } => *count,
            Uids::List(v) => v.len() as u64,
        }
    }

    pub fn get(&self, i: usize) -> Cow<'_, str> {
        match self {
            Uids::Range { prefix, start, .. } => {
                Cow::Owned(format!("{prefix}{}", start + i as u64))
            }
            Uids::List(v) => Cow::Borrowed(&v[i]),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOpts {
    /// `HOST:PORT` of the client port; connection i goes to the one of its uid's owner
    /// (all connections go to `target` when the uid list is not owner-filtered).
    pub target: String,
    /// Uids to connect, in order; at most `uids.len()` streams are opened.
    pub uids: Uids,
    pub password: String,
    /// Send per-uid HS256 JWTs signed with this instead of `password`.
    pub auth_secret: Option<String>,
    pub transport: Transport,
    pub codec: Codec,
    pub src: Vec<Ipv4Addr>,
    /// New connections started per second.
    pub rate: u64,
    /// Stop opening after this many failures (0 = never).
    pub max_failures: u64,
    pub hold_secs: f64,
    pub connect_timeout: Duration,
    /// Hard bound on the whole run.
    pub timeout: Duration,
    pub tick: Duration,
}

/// Cumulative counters at one tick, plus the connect latencies recorded since the last tick.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub t_secs: f64,
    pub attempted: u64,
    pub connected: u64,
    pub held: u64,
    pub opening: u64,
    pub failed: u64,
    /// Messages received (heartbeats included).
    pub messages: u64,
    /// Connect latencies since the last snapshot, if the observer wants them.
    pub interval_us: Option<Histogram<u64>>,
    /// The last snapshot of the run, taken before the sockets are closed.
    pub done: bool,
}

/// The result of one engine run (one process's share of a run).
#[derive(Debug, Clone)]
pub struct EngineReport {
    /// Connects started (first attempts, not redirects).
    pub attempted: u64,
    /// Stream heads received (200, or 101 for WebSocket).
    pub connected: u64,
    pub redirects: u64,
    /// Move signals followed (a reconnect after each; not counted in `connected`).
    pub moves: u64,
    /// Streams open when opening was over (every connect done) / at the end.
    pub held_at_settle: u64,
    pub held_at_end: u64,
    /// Connections still opening when the run stopped (only after a timeout).
    pub opening_at_end: u64,
    pub failures: Failures,
    pub status_codes: BTreeMap<u16, u64>,
    /// Other errors by description.
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Histogram<u64>,
    /// First connect start -> every connect finished.
    pub ramp_secs: f64,
    pub elapsed_secs: f64,
    pub messages: u64,
    pub heartbeats: u64,
    /// WebSocket close frames received (each also a `closed_while_held`, or a move).
    pub closes: u64,
    pub bytes: u64,
    /// Opening stopped early (failures or a stop request) rather than at the target.
    pub stopped_early: bool,
    /// The ramp settled and the hold ran its full time.
    pub completed: bool,
    /// Stopped by the `timeout` hard bound.
    pub timed_out: bool,
}

impl EngineReport {
    pub fn new() -> Self {
        EngineReport {
            attempted: 0,
            connected: 0,
            redirects: 0,
            moves: 0,
            held_at_settle: 0,
            held_at_end: 0,
            opening_at_end: 0,
            failures: Failures::default(),
            status_codes: BTreeMap::new(),
            errors: BTreeMap::new(),
            latency_us: new_histogram(),
            ramp_secs: 0.0,
            elapsed_secs: 0.0,
            messages: 0,
            heartbeats: 0,
            closes: 0,
            bytes: 0,
            stopped_early: false,
            completed: false,
            timed_out: false,
        }
    }
}

impl Default for EngineReport {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Writing,
    Head,
    Held,
    /// Told to move; waiting out the jitter before reconnecting.
    Moving,
    Done,
}

struct Conn {
    sock: Option<TcpStream>,
    started: Instant,
    state: State,
    written: u16,
    counter: Counter,
    head: Vec<u8>,
    /// `(addr, host, path)` after a redirect or to a move's location.
    redirect: Option<Box<(SocketAddr, String, String)>>,
    /// Redirects followed since the last connect began (a move may see a slot's old and new
    /// holders redirect to each other while their views catch up).
    hops: u8,
    /// Re-opening after a move: its head is not a new connect.
    moved: bool,
    moves_in_row: u8,
    scan: MoveScan,
}

struct Runner<'a> {
    o: &'a EngineOpts,
    addr: SocketAddr,
    poll: Poll,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    r: EngineReport,
    counts: Counts,
    interval: Option<Histogram<u64>>,
    pending: u64,
    held: u64,
    hb: &'static [u8],
    /// Minted into each request when it is built (nothing kept per connection).
    password: Password,
    move_queue: MoveQueue,
    rng: Rng,
}

/// What a run tells its caller while it runs; a closure `FnMut(&Snapshot)` gets the ticks.
pub trait Observer {
    /// Every `tick`, and once at the end (`done`) before the sockets are closed.
    fn tick(&mut self, s: &Snapshot);
    /// Once, when opening is over (every connection started, none still opening);
    /// `r.ramp_secs` and `r.held_at_settle` are set.
    fn settled(&mut self, _r: &EngineReport) {}
    /// Whether snapshots carry their interval's connect latencies (costs two ~190 KB
    /// histograms).
    fn wants_intervals(&self) -> bool {
        true
    }
}

impl<F: FnMut(&Snapshot)> Observer for F {
    fn tick(&mut self, s: &Snapshot) {
        self(s)
    }
}

/// Run the engine. `stop` (checked every loop) ends opening early.
pub fn run(opts: &EngineOpts, stop: &AtomicBool, obs: &mut dyn Observer) -> Result<EngineReport> {
    if opts.rate == 0 {
        bail!("rate must be > 0");
    }
    let limit = crate::sys::raise_nofile()?;
    let n = opts.uids.len();
    if n + FD_MARGIN > limit {
        bail!(
            "{} connections do not fit the open-file limit {} of one process; use workers",
            n,
            limit
        );
    }
    let addr = resolve(&opts.target)?;
    let mut r = Runner {
        o: opts,
        addr,
        poll: Poll::new().context("epoll")?,
        conns: Vec::with_capacity(n as usize),
        buf: vec![0u8; 64 * 1024],
        r: EngineReport::new(),
        counts: Counts::default(),
        interval: obs.wants_intervals().then(new_histogram),
        pending: 0,
        held: 0,
        hb: opts.codec.heartbeat(),
        password: Password::new(&opts.password, opts.auth_secret.as_deref())?,
        move_queue: MoveQueue::default(),
        rng: Rng::new(std::process::id() as u64),
    };
    r.run_loop(stop, obs);
    r.conns.clear();
    Ok(r.r)
}

impl Runner<'_> {
    fn snapshot(&mut self, t0: Instant, done: bool) -> Snapshot {
        Snapshot {
            t_secs: t0.elapsed().as_secs_f64(),
            attempted: self.r.attempted,
            connected: self.r.connected,
            held: self.held,
            opening: self.pending,
            failed: self.r.failures.total(),
            messages: self.counts.messages,
            interval_us: self.interval.as_mut().map(|h| {
                let c = h.clone();
                h.reset();
                c
            }),
            done,
        }
    }

    fn run_loop(&mut self, stop: &AtomicBool, obs: &mut dyn Observer) {
        let t0 = Instant::now();
        let hard_deadline = t0 + self.o.timeout;
        let mut events = Events::with_capacity(4096);
        let mut n = self.o.uids.len();
        let mut settled_at: Option<Instant> = None;
        let mut next_tick = t0 + self.o.tick;
        let mut next_scan = t0;
        loop {
            let now = Instant::now();
            if now >= hard_deadline {
                self.r.timed_out = true;
                break;
            }
            let started = self.conns.len() as u64;
            if started < n {
                let failed = self.r.failures.total();
                if stop.load(Ordering::Relaxed)
                    || (self.o.max_failures > 0 && failed >= self.o.max_failures)
                {
                    n = started;
                    self.r.stopped_early = true;
                } else {
                    let due = ((now - t0).as_secs_f64() * self.o.rate as f64) as u64 + 1;
                    for _ in started..due.min(n) {
                        self.start_conn();
                    }
                }
            }
            if !self.move_queue.is_empty() {
                self.reconnect_moved(now);
            }
            if now >= next_scan && self.pending > 0 {
                next_scan = now + Duration::from_millis(20);
                let ct = self.o.connect_timeout;
                for i in 0..self.conns.len() {
                    let c = &self.conns[i];
                    if matches!(c.state, State::Connecting | State::Writing | State::Head)
                        && now.duration_since(c.started) >= ct
                    {
                        self.fail(i, Fail::Timeout);
                    }
                }
            }
            if settled_at.is_none() && self.conns.len() as u64 == n && self.pending == 0 {
                settled_at = Some(now);
                self.r.ramp_secs = now.duration_since(t0).as_secs_f64();
                self.r.held_at_settle = self.held;
                obs.settled(&self.r);
            }
            if let Some(s) = settled_at {
                if now.duration_since(s).as_secs_f64() >= self.o.hold_secs {
                    self.r.completed = true;
                    break;
                }
            }
            if now >= next_tick {
                next_tick += self.o.tick;
                if next_tick < now {
                    next_tick = now + self.o.tick;
                }
                let s = self.snapshot(t0, false);
                obs.tick(&s);
            }
            let wait = if (self.conns.len() as u64) < n {
                Duration::from_millis(1)
            } else if !self.move_queue.is_empty() {
                Duration::from_millis(5)
            } else if self.pending > 0 {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    *self.r.errors.entry(format!("poll: {e}")).or_insert(0) += 1;
                    break;
                }
            }
            for ev in events.iter() {
                self.on_event(ev.token().0);
            }
        }
        let s = self.snapshot(t0, true);
        obs.tick(&s);
        self.r.held_at_end = self.held;
        self.r.opening_at_end = self.pending;
        self.r.messages = self.counts.messages;
        self.r.heartbeats = self.counts.heartbeats;
        self.r.closes = self.counts.closes;
        self.r.elapsed_secs = t0.elapsed().as_secs_f64();
        if settled_at.is_none() {
            self.r.ramp_secs = self.r.elapsed_secs;
            self.r.held_at_settle = self.held;
        }
    }

    fn start_conn(&mut self) {
        let i = self.conns.len();
        self.conns.push(Conn {
            sock: None,
            started: Instant::now(),
            state: State::Connecting,
            written: 0,
            counter: Counter::new(self.o.transport),
            head: Vec::new(),
            redirect: None,
            hops: 0,
            moved: false,
            moves_in_row: 0,
            scan: MoveScan::default(),
        });
        self.r.attempted += 1;
        self.pending += 1;
        let addr = self.addr;
        self.open(i, addr);
    }

    fn open(&mut self, i: usize, addr: SocketAddr) {
        let src = if self.o.src.is_empty() {
            None
        } else {
            Some(self.o.src[i % self.o.src.len()])
        };
        match open_socket(addr, src, false) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    return self.fail(i, classify(&e));
                }
                let c = &mut self.conns[i];
                c.sock = Some(s);
                c.state = State::Connecting;
                c.written = 0;
            }
            Err(e) => self.fail(i, classify(&e)),
        }
    }

    /// A held stream that got the move signal ends as a move, whatever ends it.
    fn fail(&mut self, i: usize, why: Fail) {
        let c = &mut self.conns[i];
        match c.state {
            State::Done | State::Moving => return,
            State::Held if c.scan.signal().is_some() => return self.begin_move(i),
            State::Held => self.held -= 1,
            _ => self.pending -= 1,
        }
        c.state = State::Done;
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.head = Vec::new();
        c.redirect = None;
        let f = &mut self.r.failures;
        match why {
            Fail::Refused => f.refused += 1,
            Fail::Timeout => f.timeout += 1,
            Fail::Status(code) => {
                f.status += 1;
                *self.r.status_codes.entry(code).or_insert(0) += 1;
            }
            Fail::ClosedWhileHeld => f.closed_while_held += 1,
            Fail::ClosedBeforeHead => f.closed_before_head += 1,
            Fail::BadResponse => f.bad_response += 1,
            Fail::Other(msg) => {
                f.other += 1;
                *self.r.errors.entry(msg).or_insert(0) += 1;
            }
        }
    }

    /// Held stream `i` was told to move: it is opening again, after a jitter, to the
    /// signal's location or to the target (303 to the owner).
    fn begin_move(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let moved = std::mem::take(&mut c.scan).signal();
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        self.held -= 1;
        self.pending += 1;
        self.r.moves += 1;
        let now = Instant::now();
        if now.duration_since(c.started) >= Duration::from_secs(1) {
            c.moves_in_row = 0;
        }
        c.moves_in_row += 1;
        if c.moves_in_row > MAX_MOVES_IN_ROW {
            c.state = State::Connecting;
            let why = format!("moved {MAX_MOVES_IN_ROW} times in a row");
            return self.fail(i, Fail::Other(why));
        }
        c.state = State::Moving;
        c.counter = Counter::new(self.o.transport);
        c.head = Vec::new();
        c.hops = 0;
        c.moved = true;
        // The location names the node (and the user only): reconnect there with the stream's
        // own query (credentials, codec), as the SDKs do.
        let to = moved
            .and_then(|m| m.location)
            .as_deref()
            .and_then(http::parse_location)
            .and_then(|(host, _)| Some((resolve(&host).ok()?, host)));
        let path = self.own_path(i);
        let c = &mut self.conns[i];
        c.redirect = to.map(|(addr, host)| Box::new((addr, host, path)));
        let addr = c.redirect.as_ref().map_or(self.addr, |r| r.0);
        self.move_queue.push(&mut self.rng, now, i, addr);
    }

    /// Opens the moved streams whose jitter is over.
    fn reconnect_moved(&mut self, now: Instant) {
        for (i, addr) in self.move_queue.take_due(now) {
            self.conns[i].started = now;
            self.conns[i].state = State::Connecting;
            self.open(i, addr);
        }
    }

    fn request_for(&self, i: usize) -> Vec<u8> {
        let c = &self.conns[i];
        let t = self.o.transport;
        let key = match t {
            Transport::Ws => transport::ws_key(0x1c10_6d00 ^ std::process::id() as u64, i as u64),
            _ => String::new(),
        };
        match &c.redirect {
            Some(r) => transport::connect_request(&r.2, &r.1, t, &key),
            None => transport::connect_request(&self.own_path(i), &self.o.target, t, &key),
        }
    }

    /// Stream `i`'s own `/connect` path: its uid, credentials and codec.
    fn own_path(&self, i: usize) -> String {
        let uid = self.o.uids.get(i);
        let mut path = format!(
            "/connect?uid={}&password={}",
            http::query_escape(&uid),
            http::query_escape(&self.password.for_uid(&uid))
        );
        if self.o.codec != Codec::Json {
            path.push_str("&codec=");
            path.push_str(self.o.codec.name());
        }
        path
    }

    fn on_event(&mut self, i: usize) {
        if i >= self.conns.len() {
            return;
        }
        if self.conns[i].state == State::Connecting {
            let Some(s) = self.conns[i].sock.as_ref() else {
                return;
            };
            match s.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(i, classify(&e)),
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => self.conns[i].state = State::Writing,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.fail(i, classify(&e)),
            }
        }
        if self.conns[i].state == State::Writing {
            let req = self.request_for(i);
            let c = &mut self.conns[i];
            let s = c.sock.as_mut().expect("socket while writing");
            loop {
                let off = c.written as usize;
                if off >= req.len() {
                    c.state = State::Head;
                    break;
                }
                match s.write(&req[off..]) {
                    Ok(0) => return self.fail(i, Fail::ClosedBeforeHead),
                    Ok(k) => c.written += k as u16,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return self.fail(i, classify(&e)),
                }
            }
        }
        if matches!(self.conns[i].state, State::Head | State::Held) {
            self.read_all(i);
        }
    }

    fn read_all(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            let Some(s) = c.sock.as_mut() else { return };
            let k = match s.read(&mut self.buf) {
                Ok(0) => {
                    let why = if c.state == State::Held {
                        Fail::ClosedWhileHeld
                    } else {
                        Fail::ClosedBeforeHead
                    };
                    return self.fail(i, why);
                }
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let why = if c.state == State::Held {
                        Fail::ClosedWhileHeld
                    } else if e.kind() == ErrorKind::ConnectionReset {
                        Fail::ClosedBeforeHead
                    } else {
                        classify(&e)
                    };
                    return self.fail(i, why);
                }
            };
            self.r.bytes += k as u64;
            if c.state == State::Head {
                c.head.extend_from_slice(&self.buf[..k]);
                match http::parse_head(&c.head) {
                    Ok(None) => continue,
                    Err(_) => return self.fail(i, Fail::BadResponse),
                    Ok(Some(h)) => {
                        if !self.on_head(i, h) {
                            return;
                        }
                    }
                }
            } else {
                c.scan.feed(&self.buf[..k]);
                match c.counter.feed(&self.buf[..k], self.hb, &mut self.counts) {
                    StreamStatus::Open => {}
                    StreamStatus::Ended => return self.fail(i, Fail::ClosedWhileHeld),
                    StreamStatus::Bad => return self.fail(i, Fail::BadResponse),
                }
            }
        }
    }

    fn on_head(&mut self, i: usize, h: http::Head) -> bool {
        let held_status = match self.o.transport {
            Transport::Ws => 101,
            Transport::Chunked | Transport::Sse => 200,
        };
        match h.status {
            s if s == held_status => {
                let ok = match self.o.transport {
                    Transport::Chunked => h.chunked,
                    Transport::Ws => h.upgrade_websocket,
                    // The body runs until close: no chunked framing.
                    Transport::Sse => {
                        !h.chunked
                            && h.content_type.as_deref().is_some_and(|ct| {
                                ct.split(';')
                                    .next()
                                    .unwrap_or("")
                                    .trim()
                                    .eq_ignore_ascii_case("text/event-stream")
                            })
                    }
                };
                if !ok {
                    self.fail(i, Fail::BadResponse);
                    return false;
                }
                let c = &mut self.conns[i];
                if !c.moved {
                    let us = c.started.elapsed().as_micros().max(1) as u64;
                    let us = us.min(3_600_000_000);
                    let _ = self.r.latency_us.record(us);
                    if let Some(h) = &mut self.interval {
                        let _ = h.record(us);
                    }
                    self.r.connected += 1;
                }
                c.moved = false;
                self.pending -= 1;
                self.held += 1;
                c.state = State::Held;
                c.redirect = None;
                let head = std::mem::take(&mut c.head);
                c.scan.feed(&head[h.len..]);
                match c.counter.feed(&head[h.len..], self.hb, &mut self.counts) {
                    StreamStatus::Open => true,
                    StreamStatus::Ended => {
                        self.fail(i, Fail::ClosedWhileHeld);
                        false
                    }
                    StreamStatus::Bad => {
                        self.fail(i, Fail::BadResponse);
                        false
                    }
                }
            }
            301 | 302 | 303 | 307 | 308 if self.conns[i].hops < MAX_HOPS => {
                let target = h
                    .location
                    .as_deref()
                    .and_then(http::parse_location)
                    .and_then(|(host, path)| Some((resolve(&host).ok()?, host, path)));
                match target {
                    Some(t) => {
                        self.r.redirects += 1;
                        let c = &mut self.conns[i];
                        if let Some(mut s) = c.sock.take() {
                            let _ = self.poll.registry().deregister(&mut s);
                        }
                        c.head = Vec::new();
                        c.hops += 1;
                        let addr = t.0;
                        c.redirect = Some(Box::new(t));
                        self.open(i, addr);
                    }
                    None => self.fail(i, Fail::Status(h.status)),
                }
                false
            }
            code => {
                self.fail(i, Fail::Status(code));
                false
            }
        }
    }
}

/// A stop flag nobody sets.
pub fn never() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
