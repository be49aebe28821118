//! `loadtest hold`: open N streams (chunked, WebSocket or SSE) at a ramp rate on
//! one thread with non-blocking sockets (mio), hold them, report.

use crate::auth::Password;
use crate::http::{self, Counts, StreamStatus};
use crate::net::{classify, open_socket, resolve, Fail};
use crate::report::HoldReport;
use crate::sys;
use crate::transport::{self, Codec, Counter, Transport};
use anyhow::{bail, Context, Result};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// fds kept free for stdio, epoll, /proc reads.
pub const FD_MARGIN: u64 = 64;

#[derive(Debug, Clone)]
pub struct HoldOpts {
    pub target: String,
    pub conns: u64,
    pub rate: u64,
    pub hold_secs: f64,
    pub uid_prefix: String,
    pub uid_offset: u64,
    pub password: String,
    /// Send per-uid HS256 JWTs signed with this instead of `password`.
    pub auth_secret: Option<String>,
    pub transport: Transport,
    pub codec: Codec,
    pub src: Vec<Ipv4Addr>,
    pub pids: Vec<u32>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Writing,
    Head,
    Held,
    Done,
}

/// Where a redirected connection goes.
struct Redirect {
    addr: SocketAddr,
    host: String,
    path: String,
}

struct Conn {
    sock: Option<TcpStream>,
    started: Instant,
    state: State,
    written: u16,
    counter: Counter,
    /// Bytes of the response head so far; freed once the head is parsed.
    head: Vec<u8>,
    redirect: Option<Box<Redirect>>,
}

/// Size of the local ephemeral port range.
fn port_range_size() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

struct Runner {
    opts: HoldOpts,
    addr: SocketAddr,
    poll: Poll,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    report: HoldReport,
    counts: Counts,
    /// Connections in Connecting/Writing/Head.
    pending: u64,
    held: u64,
    /// Heartbeat payload in the run's codec.
    hb: &'static [u8],
    /// Seed of the connections' `Sec-WebSocket-Key`s.
    ws_seed: u64,
    /// Minted into each request when it is built (nothing kept per connection).
    password: Password,
}

pub fn run(opts: HoldOpts) -> Result<HoldReport> {
    if opts.conns == 0 {
        bail!("--conns must be > 0");
    }
    if opts.rate == 0 {
        bail!("--rate must be > 0");
    }
    if opts.transport == Transport::Sse && opts.codec == Codec::Msgpack {
        bail!("--codec msgpack is not available with --transport sse (a text-only transport)");
    }
    let limit = sys::raise_nofile()?;
    if opts.conns + FD_MARGIN > limit {
        bail!(
            "--conns {} does not fit the open-file limit {} (minus a margin of {}); \
             use at most {} per process",
            opts.conns,
            limit,
            FD_MARGIN,
            limit.saturating_sub(FD_MARGIN)
        );
    }
    let addr = resolve(&opts.target)?;
    if let Some(ports) = port_range_size() {
        let srcs = opts.src.len().max(1) as u64;
        if opts.conns > ports * srcs {
            eprintln!(
                "warning: {} connections from {} source address(es) exceed the {} local ports; \
                 pass a larger --src range",
                opts.conns, srcs, ports
            );
        }
    }
    let mut report = HoldReport::new(
        opts.target.clone(),
        opts.conns,
        opts.rate,
        opts.hold_secs,
        opts.pids.clone(),
    );
    report.transport = opts.transport.name();
    report.codec = opts.codec.name();
    let ws_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64) << 32;
    let mut r = Runner {
        report,
        addr,
        poll: Poll::new().context("epoll")?,
        conns: Vec::with_capacity(opts.conns as usize),
        buf: vec![0u8; 64 * 1024],
        counts: Counts::default(),
        pending: 0,
        held: 0,
        hb: opts.codec.heartbeat(),
        ws_seed,
        password: Password::new(&opts.password, opts.auth_secret.as_deref())?,
        opts,
    };
    if !r.opts.pids.is_empty() {
        r.report.mem_before = Some(sys::read_mem(&r.opts.pids)?);
    }
    r.report.kernel_before = sys::read_kernel();
    r.run_loop();
    // Close everything before returning (the server sees EOF on every stream).
    r.conns.clear();
    Ok(r.report)
}

impl Runner {
    fn run_loop(&mut self) {
        let t0 = Instant::now();
        let hard_deadline = t0 + self.opts.timeout;
        let mut events = Events::with_capacity(4096);
        let n = self.opts.conns;
        let mut settled_at: Option<Instant> = None;
        let mut next_progress = t0 + Duration::from_secs(1);
        let mut next_scan = t0;
        let mut last_connected = 0u64;
        let is_tty = unsafe { libc::isatty(2) } == 1;

        loop {
            let now = Instant::now();
            if now >= hard_deadline {
                self.report.timed_out = true;
                break;
            }
            // Ramp: start every connection that is due by now.
            let started = self.conns.len() as u64;
            if started < n {
                let due = ((now - t0).as_secs_f64() * self.opts.rate as f64) as u64 + 1;
                let due = due.min(n);
                for _ in started..due {
                    self.start_conn();
                }
            }
            // Timeouts of connections still opening.
            if now >= next_scan && self.pending > 0 {
                next_scan = now + Duration::from_millis(20);
                let ct = self.opts.connect_timeout;
                for i in 0..self.conns.len() {
                    let c = &self.conns[i];
                    if matches!(c.state, State::Connecting | State::Writing | State::Head)
                        && now.duration_since(c.started) >= ct
                    {
                        self.fail(i, Fail::Timeout);
                    }
                }
            }
            // Settle: every connection started and none still opening.
            if settled_at.is_none() && self.conns.len() as u64 == n && self.pending == 0 {
                settled_at = Some(now);
                self.report.ramp_secs = now.duration_since(t0).as_secs_f64();
                self.report.held_at_settle = self.held;
                if !self.opts.pids.is_empty() {
                    self.report.mem_after = sys::read_mem(&self.opts.pids).ok();
                }
                self.report.kernel_after = sys::read_kernel();
                if self.opts.progress {
                    eprintln!(
                        "{}settled after {:.2}s: held={} failed={}; holding {}s",
                        if is_tty { "\r\x1b[K" } else { "" },
                        self.report.ramp_secs,
                        self.held,
                        self.report.failures.total(),
                        self.opts.hold_secs
                    );
                }
            }
            if let Some(s) = settled_at {
                if now.duration_since(s).as_secs_f64() >= self.opts.hold_secs {
                    self.report.completed = true;
                    break;
                }
            }
            if now >= next_progress {
                next_progress += Duration::from_secs(1);
                if next_progress < now {
                    next_progress = now + Duration::from_secs(1);
                }
                let rate = self.report.connected - last_connected;
                last_connected = self.report.connected;
                if self.opts.progress {
                    let line = format!(
                        "[{:6.1}s] held={} opening={} failed={} rate={}/s msgs={}",
                        now.duration_since(t0).as_secs_f64(),
                        self.held,
                        self.pending,
                        self.report.failures.total(),
                        rate,
                        self.counts.messages
                    );
                    if is_tty {
                        eprint!("\r\x1b[K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
            let wait = if (self.conns.len() as u64) < n {
                Duration::from_millis(1)
            } else if self.pending > 0 {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    self.report
                        .errors
                        .entry(format!("poll: {e}"))
                        .and_modify(|c| *c += 1)
                        .or_insert(1);
                    break;
                }
            }
            for ev in events.iter() {
                self.on_event(ev.token().0);
            }
        }
        if self.opts.progress && is_tty {
            eprintln!();
        }
        if !self.opts.pids.is_empty() {
            self.report.mem_end = sys::read_mem(&self.opts.pids).ok();
        }
        self.report.kernel_end = sys::read_kernel();
        self.report.held_at_end = self.held;
        self.report.opening_at_end = self.pending;
        self.report.messages = self.counts.messages;
        self.report.heartbeats = self.counts.heartbeats;
        self.report.closes = self.counts.closes;
        self.report.elapsed_secs = t0.elapsed().as_secs_f64();
        if settled_at.is_none() {
            self.report.ramp_secs = self.report.elapsed_secs;
            self.report.held_at_settle = self.held;
        }
    }

    fn src_for(&self, i: usize) -> Option<Ipv4Addr> {
        if self.opts.src.is_empty() {
            None
        } else {
            Some(self.opts.src[i % self.opts.src.len()])
        }
    }

    fn start_conn(&mut self) {
        let i = self.conns.len();
        self.conns.push(Conn {
            sock: None,
            started: Instant::now(),
            state: State::Connecting,
            written: 0,
            counter: Counter::new(self.opts.transport),
            head: Vec::new(),
            redirect: None,
        });
        self.report.attempted += 1;
        self.pending += 1;
        let addr = self.addr;
        self.open(i, addr);
    }

    fn open(&mut self, i: usize, addr: SocketAddr) {
        let src = self.src_for(i);
        match open_socket(addr, src, false) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    self.fail(i, classify(&e));
                    return;
                }
                let c = &mut self.conns[i];
                c.sock = Some(s);
                c.state = State::Connecting;
                c.written = 0;
            }
            Err(e) => self.fail(i, classify(&e)),
        }
    }

    fn fail(&mut self, i: usize, why: Fail) {
        let c = &mut self.conns[i];
        match c.state {
            State::Done => return,
            State::Held => self.held -= 1,
            _ => self.pending -= 1,
        }
        c.state = State::Done;
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        c.head = Vec::new();
        c.redirect = None;
        let f = &mut self.report.failures;
        match why {
            Fail::Refused => f.refused += 1,
            Fail::Timeout => f.timeout += 1,
            Fail::Status(code) => {
                f.status += 1;
                *self.report.status_codes.entry(code).or_insert(0) += 1;
            }
            Fail::ClosedWhileHeld => f.closed_while_held += 1,
            Fail::ClosedBeforeHead => f.closed_before_head += 1,
            Fail::BadResponse => f.bad_response += 1,
            Fail::Other(msg) => {
                f.other += 1;
                *self.report.errors.entry(msg).or_insert(0) += 1;
            }
        }
    }

    fn request_for(&self, i: usize) -> Vec<u8> {
        let c = &self.conns[i];
        let t = self.opts.transport;
        // Rebuilt on every writable event: the key must not change between calls.
        let key = match t {
            Transport::Ws => transport::ws_key(self.ws_seed, i as u64),
            _ => String::new(),
        };
        match &c.redirect {
            Some(r) => transport::connect_request(&r.path, &r.host, t, &key),
            None => {
                let uid = format!(
                    "{}{}",
                    self.opts.uid_prefix,
                    self.opts.uid_offset + i as u64
                );
                let mut path = format!(
                    "/connect?uid={}&password={}",
                    http::query_escape(&uid),
                    http::query_escape(&self.password.for_uid(&uid))
                );
                if self.opts.codec != Codec::Json {
                    path.push_str("&codec=");
                    path.push_str(self.opts.codec.name());
                }
                transport::connect_request(&path, &self.opts.target, t, &key)
            }
        }
    }

    fn on_event(&mut self, i: usize) {
        if i >= self.conns.len() {
            return;
        }
        if self.conns[i].state == State::Connecting {
            let s = match self.conns[i].sock.as_ref() {
                Some(s) => s,
                None => return,
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

    /// Read until WouldBlock (mio is edge-triggered).
    fn read_all(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            let s = match c.sock.as_mut() {
                Some(s) => s,
                None => return,
            };
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
            self.report.bytes += k as u64;
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
                let st = c.counter.feed(&self.buf[..k], self.hb, &mut self.counts);
                match st {
                    StreamStatus::Open => {}
                    StreamStatus::Ended => return self.fail(i, Fail::ClosedWhileHeld),
                    StreamStatus::Bad => return self.fail(i, Fail::BadResponse),
                }
            }
        }
    }

    /// Act on a parsed head. Returns whether to keep reading this socket.
    fn on_head(&mut self, i: usize, h: http::Head) -> bool {
        let held_status = match self.opts.transport {
            Transport::Ws => 101,
            Transport::Chunked | Transport::Sse => 200,
        };
        match h.status {
            s if s == held_status => {
                let framing_ok = match self.opts.transport {
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
                if !framing_ok {
                    self.fail(i, Fail::BadResponse);
                    return false;
                }
                let c = &mut self.conns[i];
                let us = c.started.elapsed().as_micros().max(1) as u64;
                let _ = self.report.latency_us.record(us.min(3_600_000_000));
                self.report.connected += 1;
                self.pending -= 1;
                self.held += 1;
                c.state = State::Held;
                c.redirect = None;
                let head = std::mem::take(&mut c.head);
                let st = c.counter.feed(&head[h.len..], self.hb, &mut self.counts);
                match st {
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
            301 | 302 | 303 | 307 | 308 if self.conns[i].redirect.is_none() => {
                let target = h
                    .location
                    .as_deref()
                    .and_then(http::parse_location)
                    .and_then(|(host, path)| {
                        let addr = resolve(&host).ok()?;
                        Some(Redirect { addr, host, path })
                    });
                match target {
                    Some(r) => {
                        self.report.redirects += 1;
                        let c = &mut self.conns[i];
                        if let Some(mut s) = c.sock.take() {
                            let _ = self.poll.registry().deregister(&mut s);
                        }
                        c.head = Vec::new();
                        let addr = r.addr;
                        c.redirect = Some(Box::new(r));
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
