//! Distributed runs: `loadtest worker --listen HOST:PORT` takes a job (one JSON line over
//! TCP), runs it with the [`engine`](crate::engine), streams a `tick` line every second and a
//! final `report` line (HDR histograms as V2-serialized base64). The coordinator side
//! ([`coordinate`]) spawns local workers or dials remote ones, hands each its job with a
//! common start time, relays a `stop` line when told to, and merges the reports.
//!
//! Wire format, one JSON object per line:
//! - coordinator → worker: the [`Job`]; later optionally `{"type":"stop"}` (stop opening).
//! - worker → coordinator: `{"type":"tick",...}` (cumulative counters, `interval_hist`),
//!   then `{"type":"report",...}` (see [`report_to_json`]) or `{"type":"error","error":..}`.

use crate::engine::{self, EngineOpts, EngineReport, Snapshot, Uids};
use crate::owner;
use crate::tally::Failures;
use crate::transport::{Codec, Transport};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most sockets one worker may hold (the per-process fd cap here is 20,000).
pub const MAX_PER_WORKER: u64 = 19_000;

/// One worker's share of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Client port the streams connect to.
    pub target: String,
    pub uid_prefix: String,
    pub uid_start: u64,
    pub conns: u64,
    /// When set, only uids that node `owner_index` of these node names owns (rendezvous
    /// hashing, as the server) are used, so every connect lands on its owner.
    pub owner_nodes: Vec<String>,
    pub owner_index: usize,
    /// `(j, m)`: of the owned uids, take every m-th starting at j (several workers per node).
    pub owner_split: (u64, u64),
    pub password: String,
    /// HS256 secret: streams send per-uid JWTs instead of `password`; empty = none.
    /// Sent in the job only when set (a worker's own `--auth_secret` fills in when absent).
    pub auth_secret: String,
    pub transport: String,
    pub codec: String,
    /// Source address spec (`127.0.1.1-127.0.1.4`), empty = kernel's choice.
    pub src: String,
    pub rate: u64,
    pub max_failures: u64,
    pub hold_secs: f64,
    pub connect_timeout_ms: u64,
    pub timeout_secs: f64,
    pub tick_ms: u64,
    /// Wall-clock start (ms since the Unix epoch); 0 = at once.
    pub start_at_ms: u64,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            target: "127.0.0.1:9000".into(),
            uid_prefix: "lt".into(),
            uid_start: 0,
            conns: 1000,
            owner_nodes: Vec::new(),
            owner_index: 0,
            owner_split: (0, 1),
            password: "pw".into(),
            auth_secret: String::new(),
            transport: "chunked".into(),
            codec: "json".into(),
            src: String::new(),
            rate: 1000,
            max_failures: 0,
            hold_secs: 10.0,
            connect_timeout_ms: 10_000,
            timeout_secs: 600.0,
            tick_ms: 1000,
            start_at_ms: 0,
        }
    }
}

impl Job {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": "job",
            "target": self.target,
            "uid_prefix": self.uid_prefix,
            "uid_start": self.uid_start,
            "conns": self.conns,
            "owner_nodes": self.owner_nodes,
            "owner_index": self.owner_index,
            "owner_split": [self.owner_split.0, self.owner_split.1],
            "password": self.password,
            "transport": self.transport,
            "codec": self.codec,
            "src": self.src,
            "rate": self.rate,
            "max_failures": self.max_failures,
            "hold_secs": self.hold_secs,
            "connect_timeout_ms": self.connect_timeout_ms,
            "timeout_secs": self.timeout_secs,
            "tick_ms": self.tick_ms,
            "start_at_ms": self.start_at_ms,
        });
        if !self.auth_secret.is_empty() {
            v["auth_secret"] = json!(self.auth_secret);
        }
        v
    }

    /// Parse a job; missing fields take the defaults, wrong types are errors.
    pub fn from_json(v: &Value) -> Result<Job> {
        let o = v.as_object().context("job is not a JSON object")?;
        if o.get("type").and_then(Value::as_str).unwrap_or("job") != "job" {
            bail!("not a job: {v}");
        }
        let d = Job::default();
        let s = |k: &str, d: &str| -> Result<String> {
            match o.get(k) {
                None => Ok(d.to_string()),
                Some(x) => Ok(x
                    .as_str()
                    .with_context(|| format!("{k}: not a string"))?
                    .into()),
            }
        };
        let u = |k: &str, d: u64| -> Result<u64> {
            match o.get(k) {
                None => Ok(d),
                Some(x) => x
                    .as_u64()
                    .with_context(|| format!("{k}: not an unsigned integer")),
            }
        };
        let f = |k: &str, d: f64| -> Result<f64> {
            match o.get(k) {
                None => Ok(d),
                Some(x) => x.as_f64().with_context(|| format!("{k}: not a number")),
            }
        };
        let owner_nodes = match o.get("owner_nodes") {
            None => Vec::new(),
            Some(x) => x
                .as_array()
                .context("owner_nodes: not an array")?
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(String::from)
                        .context("owner_nodes: not strings")
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let owner_split = match o.get("owner_split") {
            None => (0, 1),
            Some(x) => {
                let a = x.as_array().context("owner_split: not an array")?;
                let j = a.first().and_then(Value::as_u64);
                let m = a.get(1).and_then(Value::as_u64);
                match (j, m, a.len()) {
                    (Some(j), Some(m), 2) if m > 0 && j < m => (j, m),
                    _ => bail!("owner_split: want [j, m] with 0 <= j < m"),
                }
            }
        };
        let job = Job {
            target: s("target", &d.target)?,
            uid_prefix: s("uid_prefix", &d.uid_prefix)?,
            uid_start: u("uid_start", d.uid_start)?,
            conns: u("conns", d.conns)?,
            owner_index: u("owner_index", 0)? as usize,
            owner_nodes,
            owner_split,
            password: s("password", &d.password)?,
            auth_secret: s("auth_secret", "")?,
            transport: s("transport", &d.transport)?,
            codec: s("codec", &d.codec)?,
            src: s("src", "")?,
            rate: u("rate", d.rate)?,
            max_failures: u("max_failures", d.max_failures)?,
            hold_secs: f("hold_secs", d.hold_secs)?,
            connect_timeout_ms: u("connect_timeout_ms", d.connect_timeout_ms)?,
            timeout_secs: f("timeout_secs", d.timeout_secs)?,
            tick_ms: u("tick_ms", d.tick_ms)?,
            start_at_ms: u("start_at_ms", 0)?,
        };
        if !job.owner_nodes.is_empty() && job.owner_index >= job.owner_nodes.len() {
            bail!(
                "owner_index {} out of {} nodes",
                job.owner_index,
                job.owner_nodes.len()
            );
        }
        if job.conns > MAX_PER_WORKER {
            bail!("conns {} over {} per worker", job.conns, MAX_PER_WORKER);
        }
        if !(job.hold_secs.is_finite() && job.hold_secs >= 0.0) {
            bail!("hold_secs must be >= 0");
        }
        if !(job.timeout_secs.is_finite() && job.timeout_secs > 0.0) {
            bail!("timeout_secs must be > 0");
        }
        if job.rate == 0 {
            bail!("rate must be > 0");
        }
        parse_transport(&job.transport)?;
        parse_codec(&job.codec)?;
        Ok(job)
    }

    /// The uids this job connects, in order.
    pub fn uids(&self) -> Result<Uids> {
        if self.owner_nodes.is_empty() {
            return Ok(Uids::Range {
                prefix: self.uid_prefix.clone(),
                start: self.uid_start,
                count: self.conns,
            });
        }
        let ring = owner::Ring::new(&self.owner_nodes);
        let (j, m) = self.owner_split;
        let mut out = Vec::with_capacity(self.conns as usize);
        let mut owned = 0u64;
        // Bounded scan: on average one uid in `nodes` is owned; allow 8x plus slack.
        let limit = self.conns * m * self.owner_nodes.len() as u64 * 8 + 100_000;
        let mut i = self.uid_start;
        while (out.len() as u64) < self.conns && i < self.uid_start + limit {
            let uid = format!("{}{}", self.uid_prefix, i);
            if ring.owner(&uid) == self.owner_index {
                if owned % m == j {
                    out.push(uid);
                }
                owned += 1;
            }
            i += 1;
        }
        if (out.len() as u64) < self.conns {
            bail!(
                "found only {} owned uids in {} candidates",
                out.len(),
                limit
            );
        }
        Ok(Uids::List(out))
    }

    pub fn engine_opts(&self) -> Result<EngineOpts> {
        Ok(EngineOpts {
            target: self.target.clone(),
            uids: self.uids()?,
            password: self.password.clone(),
            auth_secret: (!self.auth_secret.is_empty()).then(|| self.auth_secret.clone()),
            transport: parse_transport(&self.transport)?,
            codec: parse_codec(&self.codec)?,
            src: if self.src.is_empty() {
                Vec::new()
            } else {
                crate::sys::parse_src(&self.src)?
            },
            rate: self.rate,
            max_failures: self.max_failures,
            hold_secs: self.hold_secs,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
            timeout: Duration::from_secs_f64(self.timeout_secs),
            tick: Duration::from_millis(self.tick_ms.max(10)),
        })
    }
}

pub fn parse_transport(s: &str) -> Result<Transport> {
    Ok(match s {
        "chunked" => Transport::Chunked,
        "ws" => Transport::Ws,
        "sse" => Transport::Sse,
        _ => bail!("unknown transport {s:?}"),
    })
}

pub fn parse_codec(s: &str) -> Result<Codec> {
    Ok(match s {
        "json" => Codec::Json,
        "msgpack" => Codec::Msgpack,
        _ => bail!("unknown codec {s:?}"),
    })
}

// ---------------------------------------------------------------- histograms

/// HdrHistogram V2 encoding, base64.
pub fn hist_to_b64(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serializing to a Vec cannot fail");
    crate::transport::base64(&buf)
}

pub fn hist_from_b64(s: &str) -> Result<Histogram<u64>> {
    let bytes = base64_decode(s).context("histogram: bad base64")?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| anyhow!("histogram: {e:?}"))?;
    Ok(h)
}

/// Merge `src` into `dst` (same bounds as [`crate::tally::new_histogram`]; values out of
/// range are clamped).
pub fn merge_hist(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dst.add(src).is_err() {
        for v in src.iter_recorded() {
            let x = v.value_iterated_to().min(dst.high());
            let _ = dst.record_n(x, v.count_at_value());
        }
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.trim_end_matches('=').as_bytes();
    if b.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    for chunk in b.chunks(4) {
        let mut acc = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * k);
        }
        out.push((acc >> 16) as u8);
        if chunk.len() > 2 {
            out.push((acc >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- reports

fn failures_json(f: &Failures) -> Value {
    json!({
        "refused": f.refused, "timeout": f.timeout, "status": f.status,
        "closed_while_held": f.closed_while_held, "closed_before_head": f.closed_before_head,
        "bad_response": f.bad_response, "other": f.other,
    })
}

fn failures_from(v: &Value) -> Failures {
    let g = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Failures {
        refused: g("refused"),
        timeout: g("timeout"),
        status: g("status"),
        closed_while_held: g("closed_while_held"),
        closed_before_head: g("closed_before_head"),
        bad_response: g("bad_response"),
        other: g("other"),
    }
}

pub fn report_to_json(r: &EngineReport) -> Value {
    let codes: Map<String, Value> = r
        .status_codes
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let errors: Map<String, Value> = r
        .errors
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "type": "report",
        "attempted": r.attempted, "connected": r.connected, "redirects": r.redirects,
        "moves": r.moves,
        "held_at_settle": r.held_at_settle, "held_at_end": r.held_at_end,
        "opening_at_end": r.opening_at_end,
        "failures": failures_json(&r.failures),
        "status_codes": codes, "errors": errors,
        "latency_hist": hist_to_b64(&r.latency_us),
        "ramp_secs": r.ramp_secs, "elapsed_secs": r.elapsed_secs,
        "messages": r.messages, "heartbeats": r.heartbeats, "closes": r.closes,
        "bytes": r.bytes,
        "stopped_early": r.stopped_early, "completed": r.completed, "timed_out": r.timed_out,
    })
}

pub fn report_from_json(v: &Value) -> Result<EngineReport> {
    if v.get("type").and_then(Value::as_str) != Some("report") {
        bail!("not a report: {}", truncate(&v.to_string()));
    }
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut r = EngineReport::new();
    r.attempted = u("attempted");
    r.connected = u("connected");
    r.redirects = u("redirects");
    r.moves = u("moves");
    r.held_at_settle = u("held_at_settle");
    r.held_at_end = u("held_at_end");
    r.opening_at_end = u("opening_at_end");
    r.failures = failures_from(v.get("failures").unwrap_or(&Value::Null));
    if let Some(m) = v.get("status_codes").and_then(Value::as_object) {
        for (k, c) in m {
            if let (Ok(code), Some(c)) = (k.parse::<u16>(), c.as_u64()) {
                r.status_codes.insert(code, c);
            }
        }
    }
    if let Some(m) = v.get("errors").and_then(Value::as_object) {
        for (k, c) in m {
            r.errors.insert(k.clone(), c.as_u64().unwrap_or(0));
        }
    }
    r.latency_us = hist_from_b64(
        v.get("latency_hist")
            .and_then(Value::as_str)
            .context("report without latency_hist")?,
    )?;
    r.ramp_secs = f("ramp_secs");
    r.elapsed_secs = f("elapsed_secs");
    r.messages = u("messages");
    r.heartbeats = u("heartbeats");
    r.closes = u("closes");
    r.bytes = u("bytes");
    r.stopped_early = b("stopped_early");
    r.completed = b("completed");
    r.timed_out = b("timed_out");
    Ok(r)
}

/// Sum worker reports: counters add, histograms merge, times take the maximum, flags:
/// `completed` only if every part completed, `timed_out`/`stopped_early` if any did.
pub fn merge_reports(parts: &[EngineReport]) -> EngineReport {
    let mut m = EngineReport::new();
    m.completed = !parts.is_empty();
    for p in parts {
        m.attempted += p.attempted;
        m.connected += p.connected;
        m.redirects += p.redirects;
        m.moves += p.moves;
        m.held_at_settle += p.held_at_settle;
        m.held_at_end += p.held_at_end;
        m.opening_at_end += p.opening_at_end;
        let (f, g) = (&mut m.failures, &p.failures);
        f.refused += g.refused;
        f.timeout += g.timeout;
        f.status += g.status;
        f.closed_while_held += g.closed_while_held;
        f.closed_before_head += g.closed_before_head;
        f.bad_response += g.bad_response;
        f.other += g.other;
        for (k, v) in &p.status_codes {
            *m.status_codes.entry(*k).or_insert(0) += v;
        }
        for (k, v) in &p.errors {
            *m.errors.entry(k.clone()).or_insert(0) += v;
        }
        merge_hist(&mut m.latency_us, &p.latency_us);
        m.ramp_secs = m.ramp_secs.max(p.ramp_secs);
        m.elapsed_secs = m.elapsed_secs.max(p.elapsed_secs);
        m.messages += p.messages;
        m.heartbeats += p.heartbeats;
        m.closes += p.closes;
        m.bytes += p.bytes;
        m.stopped_early |= p.stopped_early;
        m.completed &= p.completed;
        m.timed_out |= p.timed_out;
    }
    m
}

pub fn tick_to_json(s: &Snapshot) -> Value {
    json!({
        "type": "tick", "t": s.t_secs, "attempted": s.attempted, "connected": s.connected,
        "held": s.held, "opening": s.opening, "failed": s.failed, "messages": s.messages,
        "interval_hist": s.interval_us.as_ref().map(hist_to_b64), "done": s.done,
    })
}

pub fn tick_from_json(v: &Value) -> Result<Snapshot> {
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Snapshot {
        t_secs: v.get("t").and_then(Value::as_f64).unwrap_or(0.0),
        attempted: u("attempted"),
        connected: u("connected"),
        held: u("held"),
        opening: u("opening"),
        failed: u("failed"),
        messages: u("messages"),
        interval_us: v
            .get("interval_hist")
            .and_then(Value::as_str)
            .map(hist_from_b64)
            .transpose()?,
        done: v.get("done").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- worker side

/// Serve up to `max_jobs` jobs on `listen`, one at a time; give up waiting for a job after
/// `idle` (bounded). Prints `listening ADDR` on stdout first. `auth_secret` signs the
/// streams of jobs that carry no secret of their own.
pub fn serve(listen: &str, max_jobs: u64, idle: Duration, auth_secret: Option<&str>) -> Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("listening {}", l.local_addr()?);
    std::io::stdout().flush()?;
    l.set_nonblocking(true)?;
    for _ in 0..max_jobs.max(1) {
        let deadline = Instant::now() + idle;
        let sock = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!("no job within {:?}", idle);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        sock.set_nonblocking(false)?;
        if let Err(e) = serve_one(sock, auth_secret) {
            eprintln!("loadtest worker: job failed: {e:#}");
        }
    }
    Ok(())
}

fn serve_one(sock: TcpStream, auth_secret: Option<&str>) -> Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut rd = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    rd.read_line(&mut line).context("reading the job")?;
    let mut out = sock;
    let send = |out: &mut TcpStream, v: &Value| -> Result<()> {
        out.write_all(format!("{v}\n").as_bytes())?;
        Ok(())
    };
    let job = match serde_json::from_str::<Value>(&line)
        .context("job is not JSON")
        .and_then(|v| Job::from_json(&v))
    {
        Ok(mut j) => {
            if j.auth_secret.is_empty() {
                j.auth_secret = auth_secret.unwrap_or_default().to_string();
            }
            j
        }
        Err(e) => {
            let _ = send(
                &mut out,
                &json!({"type": "error", "error": format!("{e:#}")}),
            );
            return Err(e);
        }
    };
    let opts = match job.engine_opts() {
        Ok(o) => o,
        Err(e) => {
            let _ = send(
                &mut out,
                &json!({"type": "error", "error": format!("{e:#}")}),
            );
            return Err(e);
        }
    };
    // A `stop` line (or EOF: the coordinator went away) stops opening.
    let stop = engine::never();
    {
        let stop = stop.clone();
        rd.get_ref().set_read_timeout(None)?;
        std::thread::spawn(move || {
            let mut l = String::new();
            loop {
                l.clear();
                match rd.read_line(&mut l) {
                    Ok(0) | Err(_) => {
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) if l.contains("stop") => stop.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                }
            }
        });
    }
    if job.start_at_ms > 0 {
        let wait = job.start_at_ms.saturating_sub(now_ms()).min(60_000);
        std::thread::sleep(Duration::from_millis(wait));
    }
    let mut tick_out = out.try_clone()?;
    let res = engine::run(&opts, &stop, &mut |s: &Snapshot| {
        let _ = send(&mut tick_out, &tick_to_json(s));
    });
    match res {
        Ok(r) => send(&mut out, &report_to_json(&r)),
        Err(e) => send(
            &mut out,
            &json!({"type": "error", "error": format!("{e:#}")}),
        ),
    }
}

/// `loadtest worker` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Address to accept jobs on (`0` port = any; the bound address is printed as
    /// `listening HOST:PORT` on stdout).
    #[arg(long, default_value = "0.0.0.0:7070")]
    pub listen: String,
    /// Serve this many jobs, one after another, then exit.
    #[arg(long, default_value_t = 1)]
    pub max_jobs: u64,
    /// Exit if no job arrives within this many seconds.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout_secs: u64,
}

pub fn run_worker(a: WorkerArgs, auth_secret: Option<String>) -> Result<i32> {
    serve(
        &a.listen,
        a.max_jobs,
        Duration::from_secs(a.idle_timeout_secs.max(1)),
        auth_secret.as_deref(),
    )?;
    Ok(0)
}

// ---------------------------------------------------------------- coordinator side

/// What the coordinator sees while a run goes on.
pub enum Event {
    Tick(usize, Snapshot),
    Report(usize, EngineReport),
    Failed(usize, String),
}

/// Spawned local worker processes (killed on drop if still running).
pub struct Spawned(Vec<Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Start `n` local worker processes; returns their addresses.
pub fn spawn_local(n: usize) -> Result<(Spawned, Vec<String>)> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut kids = Spawned(Vec::new());
    let mut addrs = Vec::new();
    for _ in 0..n {
        let mut c = Command::new(&exe)
            .args(["worker", "--listen", "127.0.0.1:0", "--max-jobs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning a worker")?;
        let out = c.stdout.take().context("worker stdout")?;
        kids.0.push(c);
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .with_context(|| format!("worker said {line:?}"))?;
        addrs.push(addr.to_string());
    }
    Ok((kids, addrs))
}

/// Connected workers: send jobs, then receive events on one channel.
pub struct Workers {
    socks: Vec<TcpStream>,
    pub rx: mpsc::Receiver<Event>,
}

impl Workers {
    /// Dial every worker, give each its job (all with the same start time `lead` from now).
    pub fn start(addrs: &[String], jobs: &mut [Job], lead: Duration) -> Result<Workers> {
        if addrs.len() < jobs.len() {
            bail!("{} jobs but {} workers", jobs.len(), addrs.len());
        }
        let start_at = now_ms() + lead.as_millis() as u64;
        let (tx, rx) = mpsc::channel();
        let mut socks = Vec::new();
        for (i, job) in jobs.iter_mut().enumerate() {
            job.start_at_ms = start_at;
            let mut s = TcpStream::connect(&addrs[i])
                .with_context(|| format!("connecting to worker {}", addrs[i]))?;
            s.write_all(format!("{}\n", job.to_json()).as_bytes())?;
            let rd = BufReader::new(s.try_clone()?);
            let tx = tx.clone();
            std::thread::spawn(move || read_events(i, rd, tx));
            socks.push(s);
        }
        Ok(Workers { socks, rx })
    }

    /// Tell every worker to stop opening.
    pub fn stop_all(&mut self) {
        for s in &mut self.socks {
            let _ = s.write_all(b"{\"type\":\"stop\"}\n");
        }
    }
}

fn read_events(i: usize, mut rd: BufReader<TcpStream>, tx: mpsc::Sender<Event>) {
    let mut line = String::new();
    // Bounded by the worker closing its socket after the report (it always does).
    loop {
        line.clear();
        match rd.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::Failed(i, "worker closed without a report".into()));
                return;
            }
            Ok(_) => {}
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Event::Failed(i, format!("bad line from worker: {e}")));
                return;
            }
        };
        let ev = match v.get("type").and_then(Value::as_str) {
            Some("tick") => match tick_from_json(&v) {
                Ok(s) => Event::Tick(i, s),
                Err(e) => Event::Failed(i, format!("{e:#}")),
            },
            Some("report") => {
                let ev = match report_from_json(&v) {
                    Ok(r) => Event::Report(i, r),
                    Err(e) => Event::Failed(i, format!("{e:#}")),
                };
                let _ = tx.send(ev);
                return;
            }
            _ => {
                let msg = v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown message")
                    .to_string();
                let _ = tx.send(Event::Failed(i, msg));
                return;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// Split `total` connections into jobs of at most [`MAX_PER_WORKER`] over `workers` (at
/// least enough workers to respect the cap), contiguous uid ranges, source addresses split
/// into contiguous slices (or all shared when there are fewer addresses than workers).
pub fn split_plain(base: &Job, total: u64, workers: usize, src: &[std::net::Ipv4Addr]) -> Vec<Job> {
    let need = total.div_ceil(MAX_PER_WORKER).max(1) as usize;
    let w = workers.max(need).max(1);
    let mut jobs = Vec::with_capacity(w);
    let mut start = base.uid_start;
    for k in 0..w {
        let n = total / w as u64 + u64::from((k as u64) < total % w as u64);
        let mut j = base.clone();
        j.uid_start = start;
        j.conns = n;
        j.rate = (base.rate / w as u64).max(1);
        j.src = src_slice(src, k, w);
        start += n;
        jobs.push(j);
    }
    jobs
}

/// Worker k's slice of the source addresses, as a comma list.
pub fn src_slice(src: &[std::net::Ipv4Addr], k: usize, w: usize) -> String {
    if src.is_empty() {
        return String::new();
    }
    let part: Vec<_> = if src.len() >= w {
        let per = src.len() / w;
        src[k * per..(k + 1) * per].to_vec()
    } else {
        vec![src[k % src.len()]]
    };
    part.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::new_histogram;

    #[test]
    fn base64_round_trip() {
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let enc = crate::transport::base64(&data);
            assert_eq!(base64_decode(&enc).unwrap(), data, "n={n}");
        }
        assert!(base64_decode("a*b=").is_none());
    }

    #[test]
    fn histogram_serialize_and_merge() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
        }
        for v in 1001..=2000u64 {
            b.record(v * 10).unwrap();
        }
        let a2 = hist_from_b64(&hist_to_b64(&a)).unwrap();
        assert_eq!(a2.len(), 1000);
        assert_eq!(a2.max(), a.max());
        assert_eq!(a2.value_at_quantile(0.5), a.value_at_quantile(0.5));
        let b2 = hist_from_b64(&hist_to_b64(&b)).unwrap();
        let mut m = new_histogram();
        merge_hist(&mut m, &a2);
        merge_hist(&mut m, &b2);
        assert_eq!(m.len(), 2000);
        assert_eq!(m.min(), 1);
        assert_eq!(m.max(), b.max());
        // The median of the merge sits at the boundary of the two halves.
        let p50 = m.value_at_quantile(0.5);
        assert!((999..=1001).contains(&p50), "p50 {p50}");
        assert!(m.value_at_quantile(0.99) >= 19_700);
        // A histogram with other bounds merges too (values clamped into range).
        let mut wide = Histogram::<u64>::new(3).unwrap();
        wide.record(5).unwrap();
        merge_hist(&mut m, &wide);
        assert_eq!(m.len(), 2001);
    }

    #[test]
    fn job_round_trip_and_defaults() {
        let j = Job {
            target: "127.0.0.7:9100".into(),
            owner_nodes: vec!["n1".into(), "n2".into()],
            owner_index: 1,
            owner_split: (1, 3),
            conns: 500,
            src: "127.0.1.1-127.0.1.4".into(),
            start_at_ms: 123,
            ..Job::default()
        };
        let back = Job::from_json(&j.to_json()).unwrap();
        assert_eq!(back, j);
        // No secret: the job on the wire is as it was before `auth_secret` existed.
        assert!(j.to_json().get("auth_secret").is_none());
        assert_eq!(back.engine_opts().unwrap().auth_secret, None);
        let signed = Job {
            auth_secret: "s3cret".into(),
            ..j.clone()
        };
        let back = Job::from_json(&signed.to_json()).unwrap();
        assert_eq!(back, signed);
        assert_eq!(
            back.engine_opts().unwrap().auth_secret.as_deref(),
            Some("s3cret")
        );
        let d = Job::from_json(&json!({"conns": 5})).unwrap();
        assert_eq!(d.conns, 5);
        assert_eq!(d.target, Job::default().target);
        assert!(Job::from_json(&json!({"conns": "5"})).is_err());
        assert!(Job::from_json(&json!({"conns": 20000})).is_err());
        assert!(Job::from_json(&json!({"transport": "smoke"})).is_err());
        assert!(Job::from_json(&json!({"owner_nodes": ["a"], "owner_index": 1})).is_err());
        assert!(Job::from_json(&json!({"owner_split": [3, 3]})).is_err());
        assert!(Job::from_json(&json!({"type": "stop"})).is_err());
        assert!(Job::from_json(&json!([1])).is_err());
    }

    #[test]
    fn owned_uids_are_owned_and_split_disjoint() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let ring = owner::Ring::new(&nodes);
        let mk = |j| Job {
            owner_nodes: nodes.clone(),
            owner_index: 2,
            owner_split: (j, 2),
            conns: 100,
            ..Job::default()
        };
        let list = |j| match mk(j).uids().unwrap() {
            Uids::List(v) => v,
            u => panic!("{u:?}"),
        };
        let (a, b) = (list(0), list(1));
        assert_eq!(a.len(), 100);
        assert!(a.iter().chain(&b).all(|u| ring.owner(u) == 2));
        assert!(a.iter().all(|u| !b.contains(u)));
        let plain = Job {
            conns: 3,
            uid_start: 7,
            ..Job::default()
        }
        .uids()
        .unwrap();
        assert_eq!(plain.len(), 3);
        assert_eq!([plain.get(0), plain.get(2)], ["lt7", "lt9"]);
    }

    #[test]
    fn report_round_trip_and_merge() {
        let mut r = EngineReport::new();
        r.attempted = 10;
        r.connected = 9;
        r.held_at_end = 8;
        r.moves = 3;
        r.failures.timeout = 1;
        r.failures.closed_while_held = 1;
        r.status_codes.insert(503, 1);
        r.errors.insert("EADDRNOTAVAIL (local ports)".into(), 2);
        r.completed = true;
        r.ramp_secs = 1.5;
        for v in [100, 200, 300] {
            r.latency_us.record(v).unwrap();
        }
        let back = report_from_json(&report_to_json(&r)).unwrap();
        assert_eq!(back.attempted, 10);
        assert_eq!(back.moves, 3);
        assert_eq!(back.failures, r.failures);
        assert_eq!(back.status_codes, r.status_codes);
        assert_eq!(back.errors, r.errors);
        assert_eq!(back.latency_us.len(), 3);
        let mut r2 = back.clone();
        r2.completed = false;
        r2.ramp_secs = 2.5;
        let m = merge_reports(&[back, r2]);
        assert_eq!(m.attempted, 20);
        assert_eq!(m.held_at_end, 16);
        assert_eq!(m.moves, 6);
        assert_eq!(m.failures.total(), 4);
        assert_eq!(m.status_codes[&503], 2);
        assert_eq!(m.latency_us.len(), 6);
        assert_eq!(m.ramp_secs, 2.5);
        assert!(!m.completed);
        assert!(report_from_json(&json!({"type": "tick"})).is_err());
        assert!(report_from_json(&json!({"type": "report"})).is_err());
    }

    #[test]
    fn tick_round_trip() {
        let mut h = new_histogram();
        h.record(42).unwrap();
        let s = Snapshot {
            t_secs: 1.0,
            attempted: 3,
            connected: 2,
            held: 2,
            opening: 1,
            failed: 0,
            messages: 5,
            interval_us: Some(h),
            done: true,
        };
        let b = tick_from_json(&tick_to_json(&s)).unwrap();
        assert_eq!((b.attempted, b.held, b.opening, b.messages), (3, 2, 1, 5));
        assert_eq!(b.interval_us.map(|h| h.len()), Some(1));
        assert!(b.done);
    }

    #[test]
    fn splitting() {
        let base = Job {
            rate: 1000,
            ..Job::default()
        };
        let src = crate::sys::parse_src("127.0.1.1-127.0.1.8").unwrap();
        let jobs = split_plain(&base, 40_000, 2, &src);
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs.iter().map(|j| j.conns).sum::<u64>(), 40_000);
        assert!(jobs.iter().all(|j| j.conns <= MAX_PER_WORKER));
        assert_eq!(jobs[1].uid_start, jobs[0].conns);
        assert_eq!(jobs[0].src, "127.0.1.1,127.0.1.2");
        let jobs = split_plain(&base, 10, 4, &src[..1]);
        assert!(jobs.iter().all(|j| j.src == "127.0.1.1"));
    }
}
