//! `loadtest fanout | unicast | chat`: message scenarios on one thread with mio.
//!
//! Streams are opened like `hold` does (303s followed), subscribed to a channel through
//! the admin API (fanout), then messages are published through a few keep-alive admin
//! connections (fanout, unicast) or sent by the clients on their own streams (chat).
//! Each body is `lt:<n>:<unix_nanos>`; every subscriber checks what it gets (right
//! recipient, per-member seqs consecutive, each message once, in order) and records
//! publish→receive latency. Every phase is bounded in time; the run stops by itself.
//!
//! A stream told to move (dynamic cluster: a final `{"error":"moved","location":…}` chunk,
//! or a WebSocket close 1012) reconnects after a small random jitter to the location (to
//! the configured address without one, which answers 303), and its checks carry on: the
//! messages replayed after the reconnect (seq at or below the highest seen) are dropped
//! like an SDK does, each checked to carry the same message as before.

use crate::auth::Password;
use crate::http::{self, query_escape};
use crate::latency::ScenarioReport;
use crate::move_scan::MoveQueue;
use crate::net::{open_socket, resolve};
use crate::scenario_wire::{
    centrifugo_api_ok, centrifugo_connect_request, centrifugo_publish_request, client_frame,
    is_uid, make_body, moved_close, moved_message, parse_body, parse_response, scan_centrifugo,
    scan_msg, CfPush, Decoder, Framing, Moved, Response, Rng, SeqLog, UrlTemplate,
};
use crate::sys;
use crate::transport::{self, Transport};
use anyhow::{bail, Context, Result};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Redirects one connect follows at most.
const MAX_REDIRECTS: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fanout,
    Unicast,
    Chat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fanout => "fanout",
            Kind::Unicast => "unicast",
            Kind::Chat => "chat",
        }
    }
}

/// The server under test, when it is not ipush and not reached through URL templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// ipush (`/connect` streams, admin `/sub` and `/pub`), or with the URL templates any
    /// server that streams raw lines (nchan).
    Ipush,
    /// Centrifugo v6: `POST /connection/uni_http_stream` streams whose HS256 connection token
    /// (signed with `--auth_secret`) subscribes them through its `channels` claim, and
    /// publishes through its server API (`POST /api/publish`, `X-API-Key`).
    Centrifugo,
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub kind: Kind,
    pub target: String,
    pub admin: String,
    pub streams: u64,
    pub channel: String,
    pub messages: u64,
    /// Messages per second; None = as fast as the window allows.
    pub rate: Option<f64>,
    pub body_bytes: usize,
    pub src: Vec<Ipv4Addr>,
    pub uid_prefix: String,
    pub password: String,
    /// Send per-uid HS256 JWTs signed with this instead of `password` (ipush mode; the
    /// URL templates have no password).
    pub auth_secret: Option<String>,
    pub transport: Transport,
    pub connect_rate: u64,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub drain: Duration,
    pub hold_secs: f64,
    pub pub_conns: usize,
    /// Messages in flight (published, not yet delivered everywhere).
    pub window: u64,
    pub seed: u64,
    pub sub_tpl: Option<UrlTemplate>,
    pub pub_tpl: Option<UrlTemplate>,
    pub pids: Vec<u32>,
    pub progress: bool,
    /// Admin request (subscribe, publish) deadline.
    pub request_timeout: Duration,
    /// Requests in flight on one admin connection (HTTP/1.1 pipelining); 1 = one at a time.
    pub pipeline: usize,
    /// Messages per `POST /pub/batch` request (ipush only); 1 = one `/pub` each.
    pub batch: usize,
    pub peer: Peer,
    /// Centrifugo's server-API key.
    pub api_key: Option<String>,
}

const FD_MARGIN: u64 = 64;

/// Moves in a row without a new message before a stream gives up (a loop between nodes).
const MAX_MOVES_IN_ROW: u32 = 5;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SState {
    Idle,
    Connecting,
    Writing,
    Head,
    Open,
    Done,
}

struct Stream {
    sock: Option<TcpStream>,
    state: SState,
    started: Instant,
    req: Vec<u8>,
    written: usize,
    head: Vec<u8>,
    dec: Option<Decoder>,
    /// Redirects followed by this connect (a move may see a slot's old and new holders
    /// redirect to each other once while their views catch up).
    redirects: u8,
    /// Bytes to send (chat), and how much of it went out.
    out: Vec<u8>,
    out_off: usize,
    last_s: u64,
    max_n: Option<u64>,
    /// Chat: last message number per sender.
    last_from: HashMap<u32, u64>,
    /// The move signal this connection got (it ends the connection).
    moved: Option<Moved>,
    /// Re-opening after a move (not counted as a connect).
    reconnecting: bool,
    /// After a move: seqs at or below `last_s` are the server's replay, to be checked.
    replaying: bool,
    moves_in_row: u32,
    /// Message number by seq, to check replays.
    seqs: SeqLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Sub(u32),
    Pub(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    Down,
    Connecting,
    Idle,
    Busy,
}

/// One request written and not answered yet: its jobs (several for a `/pub/batch`).
struct Flight {
    jobs: Vec<Job>,
    batch: bool,
    sent_at: Instant,
}

struct Admin {
    sock: Option<TcpStream>,
    /// Idle: connected with room for another request (`--pipeline`); Busy: full.
    state: AState,
    /// Requests not yet fully written, from `off`.
    req: Vec<u8>,
    off: usize,
    resp: Vec<u8>,
    /// Requests in flight, oldest first (answers come in this order).
    inflight: VecDeque<Flight>,
    /// When the connect started (Connecting).
    sent_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Subscribe,
    Hold,
    Publish,
    Drain,
}

struct Runner {
    o: Opts,
    poll: Poll,
    stream_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin_host: String,
    stream_host: String,
    framing: Framing,
    streams: Vec<Stream>,
    admins: Vec<Admin>,
    jobs: VecDeque<Job>,
    r: ScenarioReport,
    buf: Vec<u8>,
    phase: Phase,
    pending: u64,
    open: u64,
    /// Streams between a move signal and their next head.
    moving: u64,
    move_queue: MoveQueue,
    ws_seed: u64,
    /// Minted into each stream's request when it is built.
    password: Password,
    rng: Rng,
    /// For the move jitter (apart from `rng`, so that `--seed` still picks the same users).
    move_rng: Rng,
    // Per-message state.
    send_ev: Vec<u64>,
    ack_ev: Vec<u64>,
    acked: Vec<bool>,
    dest: Vec<u32>,
    from: Vec<u32>,
    /// Fanout: bit per (stream, message); unicast/chat: bit per message.
    seen: Vec<u64>,
    ev: u64,
    issued: u64,
    sub_done: u64,
    pub_done: u64,
    first_pub: Option<Instant>,
    last_ack: Option<Instant>,
    last_delivery: Option<Instant>,
    /// Streams open when publishing started (fanout expectations).
    open_at_pub: u64,
}

pub fn run(o: Opts) -> Result<ScenarioReport> {
    if o.streams == 0 {
        bail!("need at least one stream");
    }
    if o.kind == Kind::Chat && o.streams < 2 && o.messages > 0 {
        bail!("chat needs at least 2 users");
    }
    if o.sub_tpl.is_some() != o.pub_tpl.is_some() {
        bail!("--sub-url-template and --pub-url-template go together");
    }
    if o.sub_tpl.is_some() && o.kind == Kind::Chat {
        bail!("chat has no generic (URL template) mode");
    }
    if o.peer == Peer::Centrifugo {
        if o.sub_tpl.is_some() || o.kind == Kind::Chat {
            bail!("--peer centrifugo runs fanout and unicast, without URL templates");
        }
        if o.batch > 1 {
            bail!("--batch needs ipush's /pub/batch: not with --peer centrifugo");
        }
        if o.api_key.is_none() || o.auth_secret.is_none() {
            bail!("--peer centrifugo needs --api-key (server API) and --auth_secret (HS256 connection tokens)");
        }
    } else if o.api_key.is_some() {
        bail!("--api-key is for --peer centrifugo");
    }
    if o.transport == Transport::Sse {
        bail!("--transport sse is not supported by the message scenarios (use chunked or ws)");
    }
    let limit = sys::raise_nofile()?;
    let need = o.streams + o.pub_conns as u64 + FD_MARGIN;
    if need > limit {
        bail!(
            "{} streams + {} admin connections do not fit the open-file limit {limit} (margin {FD_MARGIN})",
            o.streams,
            o.pub_conns
        );
    }
    let generic = o.sub_tpl.is_some();
    let (stream_host, admin_host) = match (&o.sub_tpl, &o.pub_tpl) {
        (Some(s), Some(p)) => (s.authority.clone(), p.authority.clone()),
        _ => (o.target.clone(), o.admin.clone()),
    };
    let stream_addr = resolve(&stream_host)?;
    let admin_addr = if o.messages > 0 || (o.kind == Kind::Fanout && !generic) {
        resolve(&admin_host)?
    } else {
        stream_addr
    };
    let centrifugo = o.peer == Peer::Centrifugo;
    let framing = if generic || centrifugo {
        Framing::Lines
    } else if o.transport == Transport::Ws {
        Framing::Ws
    } else {
        Framing::Chunked
    };
    let mut r = ScenarioReport::new(o.kind.name());
    r.target = if generic {
        format!(
            "http://{}{} / http://{}{}",
            stream_host,
            o.sub_tpl.as_ref().map(|t| t.path.as_str()).unwrap_or(""),
            admin_host,
            o.pub_tpl.as_ref().map(|t| t.path.as_str()).unwrap_or("")
        )
    } else {
        format!("{} (admin {})", o.target, o.admin)
    };
    r.transport = if generic {
        "raw-lines"
    } else if centrifugo {
        "uni_http_stream"
    } else {
        o.transport.name()
    };
    r.mode = if generic {
        "generic"
    } else if centrifugo {
        "centrifugo"
    } else {
        "ipush"
    };
    r.streams = o.streams;
    r.messages = o.messages;
    r.rate = o.rate;
    r.seed = o.seed;
    r.hold_secs = o.hold_secs;
    let m = o.messages as usize;
    let seen_bits = if o.kind == Kind::Fanout {
        o.streams as usize * m
    } else {
        m
    };
    let ws_seed = (now_nanos() as u64) ^ ((std::process::id() as u64) << 32);
    let mut run = Runner {
        poll: Poll::new().context("epoll")?,
        stream_addr,
        admin_addr,
        admin_host,
        stream_host,
        framing,
        streams: Vec::with_capacity(o.streams as usize),
        admins: Vec::new(),
        jobs: VecDeque::new(),
        r,
        buf: vec![0u8; 256 * 1024],
        phase: Phase::Connect,
        pending: 0,
        open: 0,
        moving: 0,
        move_queue: MoveQueue::default(),
        ws_seed,
        password: Password::new(&o.password, o.auth_secret.as_deref())?,
        rng: Rng::new(o.seed),
        move_rng: Rng::new(o.seed ^ 0x6d6f_7665),
        send_ev: vec![0; m],
        ack_ev: vec![u64::MAX; m],
        acked: vec![false; m],
        dest: vec![u32::MAX; m],
        from: vec![u32::MAX; if o.kind == Kind::Chat { m } else { 0 }],
        seen: vec![0; seen_bits.div_ceil(64)],
        ev: 0,
        issued: 0,
        sub_done: 0,
        pub_done: 0,
        first_pub: None,
        last_ack: None,
        last_delivery: None,
        open_at_pub: 0,
        o,
    };
    for _ in 0..run.o.pub_conns.max(1) {
        run.admins.push(Admin {
            sock: None,
            state: AState::Down,
            req: Vec::new(),
            off: 0,
            resp: Vec::new(),
            inflight: VecDeque::new(),
            sent_at: Instant::now(),
        });
    }
    if !run.o.pids.is_empty() {
        run.r.mem_before = Some(sys::read_mem(&run.o.pids)?);
    }
    run.run_loop();
    if !run.o.pids.is_empty() {
        run.r.mem_end = sys::read_mem(&run.o.pids).ok();
    }
    run.finish();
    run.streams.clear();
    run.admins.clear();
    Ok(run.r)
}

impl Runner {
    fn uid(&self, i: usize) -> String {
        format!("{}{}", self.o.uid_prefix, i)
    }

    /// Whether `s` is `uid(i)`, without building it (once per received message).
    fn is_uid(&self, s: &str, i: usize) -> bool {
        is_uid(s, &self.o.uid_prefix, i)
    }

    fn is_generic(&self) -> bool {
        self.o.sub_tpl.is_some()
    }

    fn is_centrifugo(&self) -> bool {
        self.o.peer == Peer::Centrifugo
    }

    /// The channel stream `i` listens on outside ipush: the fan-out channel, or in unicast
    /// the user's own channel, named by the uid.
    fn peer_channel(&self, i: usize) -> String {
        match self.o.kind {
            Kind::Fanout => self.o.channel.clone(),
            _ => self.uid(i),
        }
    }

    /// Deliveries expected per published message, for the window.
    fn per_msg(&self) -> u64 {
        match self.o.kind {
            Kind::Fanout => self.open_at_pub.max(1),
            _ => 1,
        }
    }

    fn run_loop(&mut self) {
        let t0 = Instant::now();
        let deadline = t0 + self.o.timeout;
        let mut events = Events::with_capacity(4096);
        let mut next_progress = t0 + Duration::from_secs(1);
        let mut next_scan = t0;
        let mut phase_start = t0;
        let mut drain_deadline = None;
        let mut last_recv = 0u64;
        let mut last_progress = (0u64, 0u64, 0u64);
        let mut stalled_since = t0;
        let is_tty = unsafe { libc::isatty(2) } == 1;
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.r.timed_out = true;
                break;
            }
            match self.phase {
                Phase::Connect => {
                    let started = self.streams.len() as u64;
                    if started < self.o.streams {
                        let due =
                            ((now - t0).as_secs_f64() * self.o.connect_rate as f64) as u64 + 1;
                        for _ in started..due.min(self.o.streams) {
                            self.start_stream();
                        }
                    } else if self.pending == 0 {
                        self.r.connect_secs = now.duration_since(t0).as_secs_f64();
                        if !self.o.pids.is_empty() {
                            self.r.mem_connected = sys::read_mem(&self.o.pids).ok();
                        }
                        phase_start = now;
                        if self.o.kind == Kind::Fanout
                            && !self.is_generic()
                            && !self.is_centrifugo()
                        {
                            self.phase = Phase::Subscribe;
                            for i in 0..self.o.streams {
                                self.jobs.push_back(Job::Sub(i as u32));
                            }
                        } else {
                            self.phase = Phase::Hold;
                        }
                        self.note(is_tty, &format!("connected {} streams", self.open));
                    }
                }
                Phase::Subscribe => {
                    if self.sub_done == self.o.streams {
                        self.r.subscribe_secs = now.duration_since(phase_start).as_secs_f64();
                        self.phase = Phase::Hold;
                        phase_start = now;
                        self.note(is_tty, &format!("subscribed {}", self.r.subscribed));
                    }
                }
                Phase::Hold => {
                    if now.duration_since(phase_start).as_secs_f64() >= self.o.hold_secs {
                        self.phase = Phase::Publish;
                        self.open_at_pub = self.open + self.moving;
                        phase_start = now;
                    }
                }
                Phase::Publish => {
                    let progress = (self.r.received, self.pub_done, self.issued);
                    if progress != last_progress {
                        last_progress = progress;
                        stalled_since = now;
                    } else if now.duration_since(stalled_since)
                        >= self.o.drain + self.o.request_timeout
                    {
                        // Nothing moves (lost messages hold the window): stop publishing.
                        self.r.drain_timed_out = true;
                        break;
                    }
                    self.issue(now, phase_start);
                    let all_done = match self.o.kind {
                        Kind::Chat => self.issued == self.o.messages,
                        _ => self.pub_done == self.o.messages,
                    };
                    if all_done {
                        let t = self.first_pub.unwrap_or(phase_start);
                        self.r.publish_secs = now.duration_since(t).as_secs_f64();
                        self.phase = Phase::Drain;
                        drain_deadline = Some(now + self.o.drain);
                    }
                }
                Phase::Drain => {
                    let expected = self.expected();
                    if self.r.unique + self.r.unacked_delivered >= expected
                        || self.open + self.moving == 0
                    {
                        break;
                    }
                    if self.r.received != last_recv {
                        // Progress: restart the drain wait.
                        drain_deadline = Some(now + self.o.drain);
                    }
                    if drain_deadline.is_some_and(|d| now >= d) {
                        self.r.drain_timed_out = true;
                        break;
                    }
                }
            }
            if self.phase == Phase::Drain {
                last_recv = self.r.received;
            }
            self.dispatch_jobs(now);
            if !self.move_queue.is_empty() {
                self.reconnect_moved(now);
            }
            if now >= next_scan {
                next_scan = now + Duration::from_millis(20);
                self.scan_timeouts(now);
            }
            if now >= next_progress {
                next_progress = now + Duration::from_secs(1);
                if self.o.progress {
                    let line = format!(
                        "[{:6.1}s] {:?} open={} opening={} failed={} subscribed={} published={}/{} received={}/{} closed={}",
                        now.duration_since(t0).as_secs_f64(),
                        self.phase,
                        self.open,
                        self.pending,
                        self.r.connect_failed,
                        self.r.subscribed,
                        self.r.published,
                        self.o.messages,
                        self.r.received,
                        self.expected(),
                        self.r.closed_unexpectedly
                    );
                    if is_tty {
                        eprint!("\r\x1b[K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                }
            }
            let wait = match self.phase {
                Phase::Connect | Phase::Publish => Duration::from_millis(1),
                _ => Duration::from_millis(5),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    *self.r.failures.entry(format!("poll: {e}")).or_insert(0) += 1;
                    break;
                }
            }
            let n = self.o.streams as usize;
            let toks: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for t in toks {
                if t < n {
                    if t < self.streams.len() {
                        self.on_stream(t);
                    }
                } else {
                    self.on_admin(t - n);
                }
            }
        }
        if self.o.progress && is_tty {
            eprintln!();
        }
        self.r.elapsed_secs = t0.elapsed().as_secs_f64();
        if self.phase == Phase::Connect {
            self.r.connect_secs = self.r.elapsed_secs;
        }
    }

    fn note(&self, is_tty: bool, s: &str) {
        if self.o.progress {
            eprintln!("{}{s}", if is_tty { "\r\x1b[K" } else { "" });
        }
    }

    fn expected(&self) -> u64 {
        match self.o.kind {
            Kind::Fanout => self.r.published * self.open_at_pub,
            Kind::Unicast => self.r.published,
            Kind::Chat => self.issued - self.r.send_skipped,
        }
    }

    fn finish(&mut self) {
        // Deliveries of messages whose publish failed are not expected; set them apart.
        if self.o.kind != Kind::Chat {
            let m = self.o.messages as usize;
            let streams = match self.o.kind {
                Kind::Fanout => self.streams.len(),
                _ => 1,
            };
            let mut extra = 0u64;
            for n in (0..m).filter(|&n| !self.acked[n]) {
                for i in 0..streams {
                    let bit = if self.o.kind == Kind::Fanout {
                        i * m + n
                    } else {
                        n
                    };
                    if self.seen[bit / 64] & (1u64 << (bit % 64)) != 0 {
                        extra += 1;
                    }
                }
            }
            self.r.unacked_delivered = extra;
            self.r.unique -= extra;
        }
        if self.o.kind == Kind::Chat {
            self.r.published = self.issued - self.r.send_skipped;
        }
        self.r.expected = self.expected();
        self.r.lost = self.r.expected.saturating_sub(self.r.unique);
        if self.r.publish_secs == 0.0 {
            if let (Some(a), Some(b)) = (self.first_pub, self.last_ack) {
                self.r.publish_secs = b.duration_since(a).as_secs_f64();
            }
        }
        self.r.delivery_secs = match (self.first_pub, self.last_delivery) {
            (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        self.r.connect_failed = self.r.failures.values().sum();
    }

    // ---- streams ----

    /// The path stream `i` first connects to.
    fn connect_path(&self, i: usize) -> String {
        match &self.o.sub_tpl {
            Some(t) => t.expand(&self.peer_channel(i), &self.uid(i)),
            None => {
                let uid = self.uid(i);
                format!(
                    "/connect?uid={}&password={}",
                    query_escape(&uid),
                    query_escape(&self.password.for_uid(&uid))
                )
            }
        }
    }

    fn start_stream(&mut self) {
        let i = self.streams.len();
        let path = self.connect_path(i);
        let key = transport::ws_key(self.ws_seed, i as u64);
        let t = if self.is_generic() {
            Transport::Chunked
        } else {
            self.o.transport
        };
        let req = if self.is_centrifugo() {
            let token = self
                .password
                .centrifugo_token(&self.uid(i), &self.peer_channel(i))
                .expect("--peer centrifugo has a secret (checked in run)");
            centrifugo_connect_request(&self.stream_host, &token)
        } else {
            transport::connect_request(&path, &self.stream_host, t, &key)
        };
        self.streams.push(Stream {
            sock: None,
            state: SState::Idle,
            started: Instant::now(),
            req,
            written: 0,
            head: Vec::new(),
            dec: None,
            redirects: 0,
            out: Vec::new(),
            out_off: 0,
            last_s: 0,
            max_n: None,
            last_from: HashMap::new(),
            moved: None,
            reconnecting: false,
            replaying: false,
            moves_in_row: 0,
            seqs: SeqLog::default(),
        });
        self.pending += 1;
        let addr = self.stream_addr;
        self.open_stream(i, addr);
    }

    fn open_stream(&mut self, i: usize, addr: SocketAddr) {
        let src = if self.o.src.is_empty() {
            None
        } else {
            Some(self.o.src[i % self.o.src.len()])
        };
        match open_socket(addr, src, true) {
            Ok(mut s) => {
                if let Err(e) = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    return self.stream_fail(i, &format!("register: {e}"));
                }
                let st = &mut self.streams[i];
                st.sock = Some(s);
                st.state = SState::Connecting;
                st.written = 0;
            }
            Err(e) => self.stream_fail(i, &format!("connect: {}", e.kind())),
        }
    }

    /// A stream failed before its head (a connect failure) or ended after it.
    /// A connection that got the move signal ends as a move, whatever ends it.
    fn stream_fail(&mut self, i: usize, why: &str) {
        let st = &mut self.streams[i];
        match st.state {
            SState::Done => return,
            SState::Open if st.moved.is_some() => return self.begin_move(i),
            SState::Open => {
                self.open -= 1;
                self.r.closed_unexpectedly += 1;
            }
            _ if st.reconnecting => {
                // The stream is lost: it was open, and its reconnect after the move failed.
                self.moving -= 1;
                self.r.closed_unexpectedly += 1;
                *self
                    .r
                    .stream_errors
                    .entry(format!("reconnect after move: {why}"))
                    .or_insert(0) += 1;
            }
            _ => {
                self.pending -= 1;
                *self.r.failures.entry(why.to_string()).or_insert(0) += 1;
            }
        }
        st.state = SState::Done;
        if let Some(mut s) = st.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        st.head = Vec::new();
        st.out = Vec::new();
        st.dec = None;
    }

    fn on_stream(&mut self, i: usize) {
        if self.streams[i].state == SState::Connecting {
            let s = match self.streams[i].sock.as_ref() {
                Some(s) => s,
                None => return,
            };
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return self.stream_fail(i, &format!("connect: {}", e.kind()))
                }
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => self.streams[i].state = SState::Writing,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.stream_fail(i, &format!("connect: {}", e.kind())),
            }
        }
        if self.streams[i].state == SState::Writing {
            let st = &mut self.streams[i];
            let s = st.sock.as_mut().expect("socket");
            while st.written < st.req.len() {
                match s.write(&st.req[st.written..]) {
                    Ok(0) => return self.stream_fail(i, "closed before head"),
                    Ok(k) => st.written += k,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return self.stream_fail(i, &format!("write: {}", e.kind())),
                }
            }
            // Not needed again: a redirect builds its own.
            st.req = Vec::new();
            st.state = SState::Head;
        }
        if self.streams[i].state == SState::Open
            && self.streams[i].out_off < self.streams[i].out.len()
        {
            self.flush_out(i);
        }
        if matches!(self.streams[i].state, SState::Head | SState::Open) {
            self.read_stream(i);
        }
    }

    fn flush_out(&mut self, i: usize) {
        let st = &mut self.streams[i];
        let Some(s) = st.sock.as_mut() else { return };
        while st.out_off < st.out.len() {
            match s.write(&st.out[st.out_off..]) {
                Ok(0) => break,
                Ok(k) => st.out_off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.stream_fail(i, "write"),
            }
        }
        if st.out_off == st.out.len() {
            st.out.clear();
            st.out_off = 0;
        }
    }

    /// Reads until the socket is drained. A read shorter than the buffer drained it (as tokio
    /// assumes): data arriving later raises a new edge-triggered event, so the extra read that
    /// would only return EAGAIN — one recv() per event, half of them in a fan-out — is skipped.
    fn read_stream(&mut self, i: usize) {
        loop {
            let st = &mut self.streams[i];
            let Some(s) = st.sock.as_mut() else { return };
            let k = match s.read(&mut self.buf) {
                Ok(0) => return self.stream_fail(i, "closed before head"),
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.stream_fail(i, &format!("read: {}", e.kind())),
            };
            if st.state == SState::Head {
                st.head.extend_from_slice(&self.buf[..k]);
                match http::parse_head(&st.head) {
                    Ok(None) => continue,
                    Err(_) => return self.stream_fail(i, "bad response head"),
                    Ok(Some(h)) => {
                        if !self.on_head(i, h) {
                            return;
                        }
                    }
                }
            } else {
                let data = std::mem::take(&mut self.buf);
                let ok = self.feed(i, &data[..k]);
                self.buf = data;
                if !ok {
                    return;
                }
            }
            if k < self.buf.len() {
                return;
            }
        }
    }

    /// Returns whether to keep reading.
    fn on_head(&mut self, i: usize, h: http::Head) -> bool {
        let generic = self.is_generic() || self.is_centrifugo();
        let want = if !generic && self.o.transport == Transport::Ws {
            101
        } else {
            200
        };
        let st = &mut self.streams[i];
        if h.status == want {
            let framing_ok = generic
                || match self.o.transport {
                    Transport::Ws => h.upgrade_websocket,
                    _ => h.chunked,
                };
            if !framing_ok {
                self.stream_fail(i, "stream head without the transport's framing");
                return false;
            }
            if st.reconnecting {
                st.reconnecting = false;
                st.replaying = st.last_s != 0;
                self.moving -= 1;
            } else {
                let us = st.started.elapsed().as_micros().max(1) as u64;
                let _ = self.r.connect_latency_us.record(us.min(3_600_000_000));
                self.r.connected += 1;
                self.pending -= 1;
            }
            self.open += 1;
            st.state = SState::Open;
            st.dec = Some(Decoder::new(self.framing, h.chunked));
            let head = std::mem::take(&mut st.head);
            return self.feed(i, &head[h.len..]);
        }
        if matches!(h.status, 301 | 302 | 303 | 307 | 308) && st.redirects < MAX_REDIRECTS {
            let target = h.location.as_deref().and_then(http::parse_location);
            if let Some((host, path)) = target {
                if let Ok(addr) = resolve(&host) {
                    self.r.redirects += 1;
                    let key = transport::ws_key(self.ws_seed, i as u64);
                    let t = if generic {
                        Transport::Chunked
                    } else {
                        self.o.transport
                    };
                    st.req = transport::connect_request(&path, &host, t, &key);
                    st.redirects += 1;
                    st.head = Vec::new();
                    if let Some(mut s) = st.sock.take() {
                        let _ = self.poll.registry().deregister(&mut s);
                    }
                    self.open_stream(i, addr);
                    return false;
                }
            }
        }
        self.stream_fail(i, &format!("status {}", h.status));
        false
    }

    /// Decode and check received bytes. Returns whether the stream is still open.
    fn feed(&mut self, i: usize, data: &[u8]) -> bool {
        let mut dec = match self.streams[i].dec.take() {
            Some(d) => d,
            None => return false,
        };
        // The decoder is out of `self` and `data` is not in it, so each payload is checked
        // where it lies; one clock reading per read.
        let mut clock = None;
        let res = dec.feed(data, &mut |p: &[u8]| {
            let (now, nanos) = *clock.get_or_insert_with(|| (Instant::now(), now_nanos()));
            self.on_message(i, p, now, nanos);
        });
        match res {
            Ok(false) => {
                self.streams[i].dec = Some(dec);
                true
            }
            Ok(true) => {
                if let Some(m) = dec.close_payload().and_then(moved_close) {
                    self.streams[i].moved = Some(m);
                }
                self.stream_fail(i, "ended");
                false
            }
            Err(e) => {
                *self
                    .r
                    .stream_errors
                    .entry(format!("framing: {e:?}"))
                    .or_insert(0) += 1;
                self.stream_fail(i, "bad framing");
                false
            }
        }
    }

    fn on_message(&mut self, i: usize, p: &[u8], now: Instant, nanos: u128) {
        let m = self.o.messages;
        let body_n;
        let body_t;
        if self.is_centrifugo() {
            let Some((n, t)) = self.on_centrifugo_push(i, p) else {
                return;
            };
            body_n = n;
            body_t = t;
        } else if self.is_generic() {
            match parse_body(p) {
                Some((n, t)) => {
                    body_n = n;
                    body_t = t;
                }
                None => {
                    self.r.unparsed += 1;
                    return;
                }
            }
        } else {
            let Some(msg) = scan_msg(p) else {
                self.r.unparsed += 1;
                return;
            };
            if let Some(e) = &msg.error {
                if e == "moved" {
                    self.streams[i].moved = moved_message(p);
                } else {
                    *self.r.stream_errors.entry(e.to_string()).or_insert(0) += 1;
                }
                return;
            }
            if msg.y == Some(0) {
                self.r.heartbeats += 1;
                return;
            }
            let Some((n, t)) = msg.b.as_deref().and_then(|b| parse_body(b.as_bytes())) else {
                self.r.unparsed += 1;
                return;
            };
            body_n = n;
            body_t = t;
            // Right recipient and type.
            let want_y = if self.o.kind == Kind::Fanout { 4 } else { 3 };
            let mut wrong =
                msg.y != Some(want_y) || !msg.t.as_deref().is_some_and(|t| self.is_uid(t, i));
            if self.o.kind == Kind::Fanout && msg.c.as_deref() != Some(self.o.channel.as_str()) {
                wrong = true;
            }
            if self.o.kind == Kind::Chat && (body_n as usize) < self.from.len() {
                let sender = self.from[body_n as usize];
                let from_ok = |f: &str| self.is_uid(f, sender as usize);
                if sender != u32::MAX && !msg.f.as_deref().is_some_and(from_ok) {
                    wrong = true;
                }
            }
            if wrong {
                self.r.misdelivered += 1;
            }
            // Per-member seq; after a move, the replay of what was seen is checked, dropped.
            match msg.s {
                Some(s) => {
                    let st = &mut self.streams[i];
                    if st.replaying && s <= st.last_s {
                        match st.seqs.get(s) {
                            Some(seen) if u64::from(seen) != body_n => {
                                self.r.replay_mismatch += 1;
                            }
                            Some(_) => self.r.replayed += 1,
                            None => self.r.replayed_unchecked += 1,
                        }
                        return;
                    }
                    st.replaying = false;
                    if st.last_s != 0 && s != st.last_s + 1 {
                        self.r.seq_errors += 1;
                    }
                    st.last_s = s;
                    st.moves_in_row = 0;
                    st.seqs
                        .push(s, u32::try_from(body_n).unwrap_or(u32::MAX - 1));
                }
                None => self.r.seq_errors += 1,
            }
        }
        self.r.received += 1;
        self.last_delivery = Some(now);
        let lat_us = (nanos.saturating_sub(body_t) / 1000).max(1) as u64;
        let _ = self.r.latency_us.record(lat_us.min(3_600_000_000));
        if body_n >= m {
            self.r.misdelivered += 1;
            return;
        }
        let n = body_n as usize;
        if self.o.kind != Kind::Fanout && self.dest[n] != i as u32 {
            self.r.misdelivered += 1;
            return;
        }
        let bit = match self.o.kind {
            Kind::Fanout => i * m as usize + n,
            _ => n,
        };
        let (w, b) = (bit / 64, 1u64 << (bit % 64));
        if self.seen[w] & b != 0 {
            self.r.duplicated += 1;
            return;
        }
        self.seen[w] |= b;
        self.r.unique += 1;
        // Order.
        match self.o.kind {
            Kind::Chat => {
                let sender = self.from[n];
                let st = &mut self.streams[i];
                let last = st.last_from.entry(sender).or_insert(0);
                if *last > body_n + 1 {
                    self.r.out_of_order += 1;
                } else {
                    *last = body_n + 1;
                }
            }
            _ => {
                let st = &mut self.streams[i];
                match st.max_n {
                    Some(mx) if body_n < mx => {
                        // Out of order only if n's publish was answered before mx's was sent.
                        if self.ack_ev[n] < self.send_ev[mx as usize] {
                            self.r.out_of_order += 1;
                        }
                    }
                    _ => st.max_n = Some(body_n),
                }
            }
        }
    }

    /// Stream `i`'s connection ended after a move signal: queue its reconnect, after a jitter,
    /// to the signal's location or, without one, to the configured address (303 to the
    /// owner). Its checks carry on.
    fn begin_move(&mut self, i: usize) {
        let st = &mut self.streams[i];
        let moved = st.moved.take().unwrap_or(Moved { location: None });
        if let Some(mut s) = st.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        st.head = Vec::new();
        st.out = Vec::new();
        st.out_off = 0;
        st.dec = None;
        st.state = SState::Idle;
        self.open -= 1;
        self.r.moves += 1;
        st.moves_in_row += 1;
        if st.moves_in_row > MAX_MOVES_IN_ROW {
            st.state = SState::Done;
            self.r.closed_unexpectedly += 1;
            *self
                .r
                .stream_errors
                .entry(format!("moved {MAX_MOVES_IN_ROW} times in a row"))
                .or_insert(0) += 1;
            return;
        }
        // The location names the node (and the user only): the stream reconnects there with
        // its own query (credentials, codec), as the SDKs do.
        let target = moved
            .location
            .as_deref()
            .and_then(http::parse_location)
            .and_then(|(host, _)| Some((resolve(&host).ok()?, host)));
        let (addr, host) = target.unwrap_or((self.stream_addr, self.stream_host.clone()));
        let path = self.connect_path(i);
        let key = transport::ws_key(self.ws_seed, i as u64);
        let st = &mut self.streams[i];
        st.req = transport::connect_request(&path, &host, self.o.transport, &key);
        st.redirects = 0;
        st.reconnecting = true;
        self.moving += 1;
        self.move_queue
            .push(&mut self.move_rng, Instant::now(), i, addr);
    }

    /// Opens the moved streams whose jitter is over.
    fn reconnect_moved(&mut self, now: Instant) {
        for (i, addr) in self.move_queue.take_due(now) {
            self.streams[i].started = now;
            self.open_stream(i, addr);
        }
    }

    /// Checks one Centrifugo push on stream `i` (right channel, history offsets consecutive,
    /// like ipush's per-member seqs); the body's `(n, unix_nanos)` of a publication.
    fn on_centrifugo_push(&mut self, i: usize, p: &[u8]) -> Option<(u64, u128)> {
        match scan_centrifugo(p) {
            None => {
                self.r.unparsed += 1;
                None
            }
            Some(CfPush::Ping) => {
                self.r.heartbeats += 1;
                None
            }
            Some(CfPush::Connect) => None,
            Some(CfPush::Other(key)) => {
                *self
                    .r
                    .stream_errors
                    .entry(format!("push {key}"))
                    .or_insert(0) += 1;
                None
            }
            Some(CfPush::Pub {
                channel,
                data,
                offset,
            }) => {
                let right = match self.o.kind {
                    Kind::Fanout => channel == self.o.channel.as_str(),
                    _ => self.is_uid(&channel, i),
                };
                if !right {
                    self.r.misdelivered += 1;
                }
                let st = &mut self.streams[i];
                if offset == 0 || (st.last_s != 0 && offset != st.last_s + 1) {
                    self.r.seq_errors += 1;
                }
                st.last_s = offset;
                match parse_body(data.as_bytes()) {
                    Some(nt) => Some(nt),
                    None => {
                        self.r.unparsed += 1;
                        None
                    }
                }
            }
        }
    }

    // ---- publishing ----

    fn issue(&mut self, now: Instant, phase_start: Instant) {
        let m = self.o.messages;
        let due = match self.o.rate {
            Some(r) => (((now - phase_start).as_secs_f64() * r) as u64 + 1).min(m),
            None => m,
        };
        let per = self.per_msg();
        while self.issued < due {
            let delivered_msgs =
                (self.r.unique + self.r.send_skipped) / per + self.r.publish_failed;
            if self.issued >= delivered_msgs + self.o.window {
                break;
            }
            let n = self.issued as usize;
            match self.o.kind {
                Kind::Chat => {
                    let users = self.o.streams;
                    let a = self.rng.below(users) as usize;
                    let mut b = self.rng.below(users - 1) as usize;
                    if b >= a {
                        b += 1;
                    }
                    self.dest[n] = b as u32;
                    self.from[n] = a as u32;
                    self.issued += 1;
                    if self.first_pub.is_none() {
                        self.first_pub = Some(now);
                    }
                    if self.streams[a].state != SState::Open {
                        self.r.send_skipped += 1;
                        continue;
                    }
                    let body = make_body(n as u64, now_nanos(), self.o.body_bytes);
                    let msg = format!(
                        "{{\"y\":3,\"f\":\"{}\",\"t\":\"{}\",\"b\":\"{}\"}}",
                        self.uid(a),
                        self.uid(b),
                        body
                    );
                    let mask = (self.rng.next_u64() as u32).to_le_bytes();
                    let frame = client_frame(self.framing, msg.as_bytes(), mask);
                    self.streams[a].out.extend_from_slice(&frame);
                    self.flush_out(a);
                }
                _ => {
                    if self.o.kind == Kind::Unicast {
                        self.dest[n] = self.rng.below(self.o.streams) as u32;
                    }
                    self.jobs.push_back(Job::Pub(n as u32));
                    self.issued += 1;
                }
            }
        }
    }

    /// A `/pub/batch` request: one NDJSON line per message.
    fn batch_request(&self, jobs: &[Job]) -> Vec<u8> {
        let mut body = String::new();
        for job in jobs {
            let Job::Pub(n) = *job else { continue };
            let b = make_body(n as u64, now_nanos(), self.o.body_bytes);
            match self.o.kind {
                Kind::Fanout => body.push_str(&format!(
                    "{{\"channel\":{},\"from\":\"lt\",\"b\":\"{b}\"}}\n",
                    serde_json::Value::from(self.o.channel.as_str())
                )),
                _ => body.push_str(&format!(
                    "{{\"to\":{},\"from\":\"lt\",\"b\":\"{b}\"}}\n",
                    serde_json::Value::from(self.uid(self.dest[n as usize] as usize))
                )),
            }
        }
        let host = &self.admin_host;
        let mut v = format!(
            "POST /pub/batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body.as_bytes());
        v
    }

    fn admin_request(&self, job: Job) -> Vec<u8> {
        let host = &self.admin_host;
        match job {
            Job::Sub(i) => {
                let path = format!(
                    "/sub?uid={}&cid={}",
                    query_escape(&self.uid(i as usize)),
                    query_escape(&self.o.channel)
                );
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
            }
            Job::Pub(n) => {
                let body = make_body(n as u64, now_nanos(), self.o.body_bytes);
                if let Some(key) = &self.o.api_key {
                    let ch = self.peer_channel(self.dest[n as usize] as usize);
                    return centrifugo_publish_request(host, key, &ch, &body);
                }
                let path = match (&self.o.pub_tpl, self.o.kind) {
                    (Some(t), Kind::Fanout) => t.expand(&self.o.channel, ""),
                    (Some(t), _) => {
                        let u = self.uid(self.dest[n as usize] as usize);
                        t.expand(&u, &u)
                    }
                    (None, Kind::Fanout) => {
                        format!("/pub?channel={}&from=lt", query_escape(&self.o.channel))
                    }
                    (None, _) => format!(
                        "/pub?to={}&from=lt",
                        query_escape(&self.uid(self.dest[n as usize] as usize))
                    ),
                };
                let mut v = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                v.extend_from_slice(body.as_bytes());
                v
            }
        }
    }

    fn dispatch_jobs(&mut self, now: Instant) {
        if self.jobs.is_empty() {
            return;
        }
        for j in 0..self.admins.len() {
            if self.jobs.is_empty() {
                return;
            }
            match self.admins[j].state {
                AState::Down => self.admin_connect(j),
                AState::Idle => {
                    while !self.jobs.is_empty() && self.admins[j].inflight.len() < self.o.pipeline {
                        self.send_next(j, now);
                    }
                    if self.admins[j].inflight.len() >= self.o.pipeline {
                        self.admins[j].state = AState::Busy;
                    }
                    self.admin_write(j);
                }
                _ => {}
            }
        }
    }

    /// Queues the next request on admin connection `j`: one job, or with `--batch` up to
    /// that many publishes in one `/pub/batch`.
    fn send_next(&mut self, j: usize, now: Instant) {
        let mut jobs = vec![self.jobs.pop_front().expect("job")];
        let batch = self.o.batch > 1 && matches!(jobs[0], Job::Pub(_)) && !self.is_generic();
        while batch && jobs.len() < self.o.batch && matches!(self.jobs.front(), Some(Job::Pub(_))) {
            jobs.extend(self.jobs.pop_front());
        }
        let req = if batch {
            self.batch_request(&jobs)
        } else {
            self.admin_request(jobs[0])
        };
        for job in &jobs {
            if let Job::Pub(n) = *job {
                self.ev += 1;
                self.send_ev[n as usize] = self.ev;
                if self.first_pub.is_none() {
                    self.first_pub = Some(now);
                }
            }
        }
        let a = &mut self.admins[j];
        if a.off == a.req.len() {
            a.req.clear();
            a.off = 0;
        }
        a.req.extend_from_slice(&req);
        a.inflight.push_back(Flight {
            jobs,
            batch,
            sent_at: Instant::now(),
        });
    }

    fn admin_token(&self, j: usize) -> Token {
        Token(self.o.streams as usize + j)
    }

    fn admin_connect(&mut self, j: usize) {
        match open_socket(self.admin_addr, None, true) {
            Ok(mut s) => {
                let tok = self.admin_token(j);
                if self
                    .poll
                    .registry()
                    .register(&mut s, tok, Interest::READABLE | Interest::WRITABLE)
                    .is_err()
                {
                    return;
                }
                let a = &mut self.admins[j];
                a.sock = Some(s);
                a.state = AState::Connecting;
                a.sent_at = Instant::now();
                a.resp.clear();
            }
            Err(e) => {
                *self
                    .r
                    .stream_errors
                    .entry(format!("admin connect: {}", e.kind()))
                    .or_insert(0) += 1;
            }
        }
    }

    fn admin_down(&mut self, j: usize, why: &str) {
        let a = &mut self.admins[j];
        if let Some(mut s) = a.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        a.state = AState::Down;
        a.resp.clear();
        a.req.clear();
        a.off = 0;
        let lost: Vec<Job> = a.inflight.drain(..).flat_map(|f| f.jobs).collect();
        for job in lost {
            self.job_failed(job, why);
        }
    }

    fn job_failed(&mut self, job: Job, why: &str) {
        match job {
            Job::Sub(_) => {
                self.r.subscribe_failed += 1;
                self.sub_done += 1;
            }
            Job::Pub(_) => {
                self.r.publish_failed += 1;
                self.pub_done += 1;
            }
        }
        *self
            .r
            .stream_errors
            .entry(format!("admin: {why}"))
            .or_insert(0) += 1;
    }

    fn admin_write(&mut self, j: usize) {
        let a = &mut self.admins[j];
        let Some(s) = a.sock.as_mut() else { return };
        while a.off < a.req.len() {
            match s.write(&a.req[a.off..]) {
                Ok(0) => return self.admin_down(j, "closed"),
                Ok(k) => a.off += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.admin_down(j, &format!("write {}", e.kind())),
            }
        }
    }

    fn on_admin(&mut self, j: usize) {
        if j >= self.admins.len() {
            return;
        }
        if self.admins[j].state == AState::Connecting {
            let Some(s) = self.admins[j].sock.as_ref() else {
                return;
            };
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let why = format!("connect {}", e.kind());
                    return self.admin_down(j, &why);
                }
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => self.admins[j].state = AState::Idle,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => return self.admin_down(j, "connect"),
            }
        }
        if !self.admins[j].inflight.is_empty() {
            self.admin_write(j);
        }
        loop {
            let a = &mut self.admins[j];
            let Some(s) = a.sock.as_mut() else { return };
            let k = match s.read(&mut self.buf) {
                Ok(0) => return self.admin_down(j, "closed"),
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.admin_down(j, &format!("read {}", e.kind())),
            };
            a.resp.extend_from_slice(&self.buf[..k]);
            if k < self.buf.len() {
                break; // drained (see read_stream)
            }
        }
        while self.admin_answer(j) {}
    }

    /// Acts on the answer at the front of connection `j`'s input, if complete; false when
    /// there is none (yet) or the connection went down.
    fn admin_answer(&mut self, j: usize) -> bool {
        let a = &mut self.admins[j];
        if a.resp.is_empty() {
            return false;
        }
        let resp = match parse_response(&a.resp) {
            Ok(None) => return false,
            Err(e) => {
                self.admin_down(j, &e);
                return false;
            }
            Ok(Some(resp)) => resp,
        };
        a.resp.drain(..resp.len);
        let flight = a.inflight.pop_front();
        if a.state == AState::Busy {
            a.state = AState::Idle;
        }
        if resp.close {
            self.admin_down(j, "close");
        }
        let Some(flight) = flight else {
            return !resp.close;
        };
        let rtt = flight.sent_at.elapsed();
        if flight.batch {
            self.batch_answered(&flight.jobs, &resp, rtt);
        } else {
            // Centrifugo's server API answers errors with a 200 and an `error` object.
            let ok = (200..300).contains(&resp.status)
                && (!self.is_centrifugo() || centrifugo_api_ok(&resp.body));
            self.job_answered(flight.jobs[0], resp.status, ok, &resp.body, rtt);
        }
        !resp.close
    }

    /// A `/pub/batch` answer: one NDJSON line per job, each with its own status.
    fn batch_answered(&mut self, jobs: &[Job], resp: &Response, rtt: Duration) {
        let lines: Vec<&[u8]> = resp
            .body
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for (k, job) in jobs.iter().enumerate() {
            let (status, line) = match lines.get(k) {
                Some(l) if resp.status == 200 => (line_status(l), *l),
                _ => (resp.status, &resp.body[..]),
            };
            self.job_answered(*job, status, status == 200, line, rtt);
        }
    }

    fn job_answered(&mut self, job: Job, status: u16, ok: bool, body: &[u8], rtt: Duration) {
        match job {
            Job::Sub(_) => {
                self.sub_done += 1;
                if ok {
                    self.r.subscribed += 1;
                } else {
                    self.r.subscribe_failed += 1;
                }
            }
            Job::Pub(n) => {
                self.pub_done += 1;
                *self.r.publish_statuses.entry(status).or_insert(0) += 1;
                let _ = self
                    .r
                    .publish_latency_us
                    .record((rtt.as_micros() as u64).clamp(1, 3_600_000_000));
                if ok {
                    self.last_ack = Some(Instant::now());
                    self.r.published += 1;
                    self.ev += 1;
                    self.ack_ev[n as usize] = self.ev;
                    self.acked[n as usize] = true;
                } else {
                    self.r.publish_failed += 1;
                    let body = String::from_utf8_lossy(body);
                    let body: String = body.chars().take(80).collect();
                    *self
                        .r
                        .stream_errors
                        .entry(format!("publish {status}: {body}"))
                        .or_insert(0) += 1;
                }
            }
        }
    }

    fn scan_timeouts(&mut self, now: Instant) {
        if self.pending + self.moving > 0 {
            let ct = self.o.connect_timeout;
            for i in 0..self.streams.len() {
                let st = &self.streams[i];
                if matches!(
                    st.state,
                    SState::Connecting | SState::Writing | SState::Head
                ) && now.duration_since(st.started) >= ct
                {
                    self.stream_fail(i, "connect timeout");
                }
            }
        }
        for j in 0..self.admins.len() {
            let a = &self.admins[j];
            let since = match a.inflight.front() {
                Some(f) => Some(f.sent_at),
                None => (a.state == AState::Connecting).then_some(a.sent_at),
            };
            if since.is_some_and(|t| now.duration_since(t) >= self.o.request_timeout) {
                self.admin_down(j, "timeout");
            }
        }
    }
}

/// The `"status":N` of one `/pub/batch` answer line (0 if it has none).
fn line_status(line: &[u8]) -> u16 {
    let key = b"\"status\":";
    line.windows(key.len())
        .position(|w| w == key)
        .and_then(|i| {
            let digits = &line[i + key.len()..];
            let end = digits
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::{Arc, Mutex};

    /// How the fake old node ends its user's stream once `MOVE_AT` messages are out.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum End {
        /// `{"error":"moved","location":…}` chunk, or WebSocket close 1012 with it.
        Moved,
        /// `{"error":"moved"}` without a location (the old node then answers 303).
        MovedNoLocation,
        /// The stream just ends: no move signal.
        Plain,
    }

    const MOVE_AT: usize = 8;

    /// One user's messages and stream across a fake two-node cluster: the old node serves
    /// the stream until `MOVE_AT` messages went out, then ends it; the new node replays
    /// every stored message from seq 1 and goes on live.
    struct Cluster {
        ws: bool,
        end: End,
        /// The new node replays seq 1 with another message.
        corrupt_replay: bool,
        new_node: String,
        /// Stored message JSON by seq - 1.
        stored: Vec<String>,
        live: Option<StdStream>,
        moved: bool,
    }

    fn frame(ws: bool, payload: &str) -> Vec<u8> {
        if ws {
            let mut v = vec![0x81, payload.len() as u8];
            v.extend_from_slice(payload.as_bytes());
            v
        } else {
            format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
        }
    }

    /// Reads one request head; returns its path.
    fn read_head(r: &mut BufReader<StdStream>) -> Option<(String, usize)> {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let path = line.split(' ').nth(1)?.to_string();
        let mut clen = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).ok()? == 0 {
                return None;
            }
            if h == "\r\n" {
                return Some((path, clen));
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                clen = v.trim().parse().ok()?;
            }
        }
    }

    fn stream_head(ws: bool) -> &'static [u8] {
        if ws {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        }
    }

    /// A client port: `new` is the node the user moves to.
    fn client_port(c: Arc<Mutex<Cluster>>, new: bool) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s);
                let Some((path, _)) = read_head(&mut r) else {
                    continue;
                };
                let mut s = r.into_inner();
                let mut c = c.lock().unwrap();
                if !new && c.moved {
                    let to = format!(
                        "HTTP/1.1 303 See Other\r\nLocation: http://{}{path}\r\nContent-Length: 0\r\n\r\n",
                        c.new_node
                    );
                    let _ = s.write_all(to.as_bytes());
                    continue;
                }
                let _ = s.write_all(stream_head(c.ws));
                if new {
                    for (k, m) in c.stored.iter().enumerate() {
                        let m = if k == 0 && c.corrupt_replay {
                            m.replace("\"b\":\"lt:0:", "\"b\":\"lt:1:")
                        } else {
                            m.clone()
                        };
                        let _ = s.write_all(&frame(c.ws, &m));
                    }
                }
                c.live = Some(s);
            }
        });
        addr
    }

    /// The admin port: `/sub` answers ok, `/pub` stores the message with the next seq and
    /// writes it to the live stream; the `MOVE_AT`th one is followed by the stream's end.
    fn admin_port(c: Arc<Mutex<Cluster>>, uid: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s);
                    while let Some((path, clen)) = read_head(&mut r) {
                        let mut body = vec![0u8; clen];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        if path.starts_with("/pub") {
                            publish(&mut c.lock().unwrap(), &path, &body, uid);
                        }
                        let ok =
                            b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"result\":\"ok\"}";
                        if r.get_mut().write_all(ok).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn publish(c: &mut Cluster, path: &str, body: &[u8], uid: &str) {
        let b = String::from_utf8_lossy(body);
        let seq = c.stored.len() + 1;
        let m = if path.contains("channel=") {
            format!(
                "{{\"y\":4,\"f\":\"lt\",\"t\":\"{uid}\",\"c\":\"ch\",\"b\":\"{b}\",\"s\":{seq}}}"
            )
        } else {
            format!("{{\"y\":3,\"f\":\"lt\",\"t\":\"{uid}\",\"b\":\"{b}\",\"s\":{seq}}}")
        };
        let f = frame(c.ws, &m);
        c.stored.push(m);
        if let Some(s) = c.live.as_mut() {
            let _ = s.write_all(&f);
        }
        if seq != MOVE_AT || c.moved {
            return;
        }
        let Some(mut s) = c.live.take() else { return };
        let signal = match c.end {
            End::Moved => format!(
                "{{\"error\":\"moved\",\"location\":\"http://{}/connect?uid={uid}&password=pw\"}}",
                c.new_node
            ),
            End::MovedNoLocation => "{\"error\":\"moved\"}".to_string(),
            End::Plain => String::new(),
        };
        let end: Vec<u8> = if c.ws {
            let code: u16 = if c.end == End::Plain { 1001 } else { 1012 };
            let mut v = vec![0x88, signal.len() as u8 + 2];
            v.extend_from_slice(&code.to_be_bytes());
            v.extend_from_slice(signal.as_bytes());
            v
        } else {
            let mut v = if signal.is_empty() {
                Vec::new()
            } else {
                frame(false, &signal)
            };
            v.extend_from_slice(b"0\r\n\r\n");
            v
        };
        let _ = s.write_all(&end);
        c.moved = c.end != End::Plain;
    }

    /// Runs `kind` with one stream and 20 messages against the fake cluster.
    fn run_moved(kind: Kind, ws: bool, end: End, corrupt_replay: bool) -> ScenarioReport {
        let c = Arc::new(Mutex::new(Cluster {
            ws,
            end,
            corrupt_replay,
            new_node: String::new(),
            stored: Vec::new(),
            live: None,
            moved: false,
        }));
        let new_node = client_port(c.clone(), true);
        c.lock().unwrap().new_node = new_node;
        let target = client_port(c.clone(), false);
        let admin = admin_port(c, "lt-u0");
        let o = Opts {
            kind,
            target,
            admin,
            streams: 1,
            channel: "ch".into(),
            messages: 20,
            rate: None,
            body_bytes: 0,
            src: Vec::new(),
            uid_prefix: "lt-u".into(),
            password: "pw".into(),
            auth_secret: None,
            transport: if ws {
                Transport::Ws
            } else {
                Transport::Chunked
            },
            connect_rate: 1000,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            drain: Duration::from_secs(2),
            hold_secs: 0.0,
            pub_conns: 1,
            window: 4,
            seed: 1,
            sub_tpl: None,
            pub_tpl: None,
            pids: Vec::new(),
            progress: false,
            // Also bounds how long a run with a lost stream waits for nothing (plain end).
            request_timeout: Duration::from_secs(1),
            pipeline: 1,
            batch: 1,
            peer: Peer::Ipush,
            api_key: None,
        };
        run(o).unwrap()
    }

    fn checks(r: &ScenarioReport) -> Value {
        let j = r.to_json();
        serde_json::json!({
            "success": j["success"],
            "moves": j["connect"]["moves"],
            "redirects": j["connect"]["redirects"],
            "received": j["delivery"]["received"],
            "lost": j["delivery"]["lost"],
            "duplicated": j["delivery"]["duplicated"],
            "seq_errors": j["delivery"]["seq_errors"],
            "replayed": j["delivery"]["replayed"],
            "replay_mismatch": j["delivery"]["replay_mismatch"],
            "closed_unexpectedly": j["delivery"]["closed_unexpectedly"],
        })
    }

    /// On both transports: one move, the replay of seqs 1..=8 dropped, nothing lost or
    /// duplicated, `redirects` 303s followed on the way.
    fn assert_clean_move(kind: Kind, end: End, redirects: u64) {
        for ws in [false, true] {
            let r = run_moved(kind, ws, end, false);
            let want = serde_json::json!({
                "success": true, "moves": 1, "redirects": redirects, "received": 20, "lost": 0,
                "duplicated": 0, "seq_errors": 0, "replayed": MOVE_AT,
                "replay_mismatch": 0, "closed_unexpectedly": 0,
            });
            assert_eq!(checks(&r), want, "ws {ws}: {}", r.to_text());
        }
    }

    /// Moved with a location (chunked chunk, WebSocket close 1012): straight there.
    #[test]
    fn unicast_follows_a_move_and_keeps_its_checks() {
        assert_clean_move(Kind::Unicast, End::Moved, 0);
    }

    /// Moved without a location: back to the target, 303 to the new node.
    #[test]
    fn fanout_follows_a_move_without_location_through_a_303() {
        assert_clean_move(Kind::Fanout, End::MovedNoLocation, 1);
    }

    /// A replayed seq that carries another message is reported, and fails the run.
    #[test]
    fn replay_with_another_body_is_an_error() {
        let r = run_moved(Kind::Unicast, false, End::Moved, true);
        let c = checks(&r);
        assert_eq!(c["replay_mismatch"], 1, "{}", r.to_text());
        assert_eq!(c["replayed"], MOVE_AT - 1, "{}", r.to_text());
        assert_eq!(c["success"], false, "{}", r.to_text());
        assert!(r.to_text().contains("replay-mismatch 1"));
    }

    /// A stream that ends without a move signal is a failure, as before: no reconnect.
    #[test]
    fn plain_end_is_still_a_failure() {
        for ws in [false, true] {
            let r = run_moved(Kind::Unicast, ws, End::Plain, false);
            let c = checks(&r);
            assert_eq!(c["moves"], 0, "{}", r.to_text());
            assert_eq!(c["closed_unexpectedly"], 1, "{}", r.to_text());
            assert_eq!(c["received"], MOVE_AT, "{}", r.to_text());
            assert_eq!(c["success"], false, "{}", r.to_text());
        }
    }
}
