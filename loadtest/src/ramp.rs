//! `loadtest ramp`: keep opening streams at a rate until a target count or the first
//! failures, printing a line per step (connections, server memory summed over `--pids`,
//! kernel memory, connect latency of the step) and a CSV with `--csv`. Runs in-process, or
//! spread over worker processes (`--workers N` local, `--worker-addrs` remote, `--cluster`:
//! workers per node connecting each uid straight to its owner). `hold --workers` uses the
//! same coordinator with hold semantics (no failure stop).

use crate::engine::{self, EngineReport, Snapshot};
use crate::owner;
use crate::sys::{self, Kernel, Mem};
use crate::tally::new_histogram;
use crate::transport::{Codec, Transport};
use crate::worker::{self, Event, Job, Workers, MAX_PER_WORKER};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct RampArgs {
    /// Client port of the server, HOST:PORT (ignored with --cluster).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub target: String,
    /// Cluster `--nodes` spec (`n1=HOST:CPORT:APORT:BPORT,...`): the connections are split
    /// evenly over the nodes, each node's share by one or more workers (≤ 19,000 sockets
    /// each) connecting only uids that node owns (no redirects).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Target number of streams.
    #[arg(long, default_value_t = 10_000)]
    pub conns: u64,
    /// New connections per second (in total, over all workers).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Stop opening after this many failures in total (0 = never).
    #[arg(long, default_value_t = 1)]
    pub max_failures: u64,
    /// Seconds to hold what is open once opening stopped.
    #[arg(long, default_value_t = 0.0)]
    pub hold_secs: f64,
    #[arg(long, default_value = "lt")]
    pub uid_prefix: String,
    #[arg(long, default_value_t = 0)]
    pub uid_offset: u64,
    #[arg(long, default_value = "pw")]
    pub password: String,
    #[arg(long, value_enum, default_value_t = Transport::Chunked)]
    pub transport: Transport,
    #[arg(long, value_enum, default_value_t = Codec::Json)]
    pub codec: Codec,
    /// Local source addresses (`127.0.1.1-127.0.1.200`); split into slices per worker.
    #[arg(long)]
    pub src: Option<String>,
    /// Server pids whose VmRSS is summed at every step.
    #[arg(long)]
    pub pids: Option<String>,
    /// Seconds per step line.
    #[arg(long, default_value_t = 1.0)]
    pub step_secs: f64,
    /// Write the steps as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Run the connections in N local worker processes (0 = in this process; more are
    /// used if N would put over 19,000 sockets on one).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Remote (or already running) workers, `HOST:PORT,...` (`loadtest worker --listen`).
    #[arg(long)]
    pub worker_addrs: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Hard bound on the run [default: conns/rate + hold + connect timeout + 60 s].
    #[arg(long)]
    pub timeout_secs: Option<f64>,
    /// Print the final report as JSON on stdout (steps and summary go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the connect-latency percentile distribution (µs) to this file.
    #[arg(long)]
    pub hist_out: Option<PathBuf>,
}

/// Memory and time of one step.
#[derive(Debug, Clone, Default)]
struct Sample {
    mem: Option<Mem>,
    kernel: Option<Kernel>,
    mem_available: u64,
}

fn sample(pids: &[u32]) -> Sample {
    let mem_available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    Sample {
        mem: if pids.is_empty() {
            None
        } else {
            sys::read_mem(pids).ok()
        },
        kernel: sys::read_kernel(),
        mem_available,
    }
}

/// Prints step lines and CSV rows; remembers the baseline and the peak.
struct Stepper {
    pids: Vec<u32>,
    csv: Option<std::fs::File>,
    base: Sample,
    t0: Instant,
    last_connected: u64,
    peak: (u64, Sample),
    last: (u64, Sample),
    first_failure_at: Option<(f64, u64)>,
    steps: u64,
}

const CSV_HEAD: &str = "t_secs,attempted,connected,held,opening,failed,server_rss_bytes,\
server_rss_delta_bytes,server_rss_per_conn_bytes,slab_bytes,slab_delta_bytes,\
slab_per_conn_bytes,sunreclaim_bytes,tcp_mem_bytes,mem_available_bytes,step_connects,\
lat_p50_us,lat_p90_us,lat_p99_us,lat_max_us";

impl Stepper {
    fn new(pids: Vec<u32>, csv: Option<&PathBuf>) -> Result<Stepper> {
        let csv = match csv {
            Some(p) => {
                let mut f = std::fs::File::create(p)
                    .with_context(|| format!("creating {}", p.display()))?;
                writeln!(f, "{CSV_HEAD}")?;
                Some(f)
            }
            None => None,
        };
        let base = sample(&pids);
        Ok(Stepper {
            pids,
            csv,
            base: base.clone(),
            t0: Instant::now(),
            last_connected: 0,
            peak: (0, base.clone()),
            last: (0, base),
            first_failure_at: None,
            steps: 0,
        })
    }

    fn step(&mut self, s: &Snapshot) {
        let now = sample(&self.pids);
        let t = self.t0.elapsed().as_secs_f64();
        self.steps += 1;
        let rss = now.mem.map(|m| m.rss).unwrap_or(0);
        let rss0 = self.base.mem.map(|m| m.rss).unwrap_or(0);
        let slab = now.kernel.map(|k| k.slab).unwrap_or(0);
        let slab0 = self.base.kernel.map(|k| k.slab).unwrap_or(0);
        let per = |d: i64| {
            if s.held > 0 {
                d as f64 / s.held as f64
            } else {
                0.0
            }
        };
        let rss_d = rss as i64 - rss0 as i64;
        let slab_d = slab as i64 - slab0 as i64;
        let h = s.interval_us.as_ref().filter(|h| !h.is_empty());
        let q = |x: f64| h.map_or(0, |h| h.value_at_quantile(x));
        let step_connects = s.connected.saturating_sub(self.last_connected);
        self.last_connected = s.connected;
        if s.failed > 0 && self.first_failure_at.is_none() {
            self.first_failure_at = Some((t, s.held));
        }
        eprintln!(
            "[{t:6.1}s] held={:>8} opening={:>5} failed={:<4} +{:<6} rss={:>8.1} MB ({:>6.0} B/conn) \
             slab={:>8.1} MB ({:>6.0} B/conn) avail={:>6.2} GB  connect p50={}us p99={}us max={}us",
            s.held,
            s.opening,
            s.failed,
            step_connects,
            rss as f64 / 1e6,
            per(rss_d),
            slab as f64 / 1e6,
            per(slab_d),
            now.mem_available as f64 / 1e9,
            q(0.5),
            q(0.99),
            h.map_or(0, |h| h.max())
        );
        if let Some(f) = &mut self.csv {
            let k = now.kernel.unwrap_or_default();
            let _ = writeln!(
                f,
                "{t:.2},{},{},{},{},{},{rss},{rss_d},{:.1},{slab},{slab_d},{:.1},{},{},{},{step_connects},{},{},{},{}",
                s.attempted,
                s.connected,
                s.held,
                s.opening,
                s.failed,
                per(rss_d),
                per(slab_d),
                k.sunreclaim,
                k.tcp_mem,
                now.mem_available,
                q(0.5),
                q(0.9),
                q(0.99),
                h.map_or(0, |h| h.max())
            );
            let _ = f.flush();
        }
        if s.held >= self.peak.0 {
            self.peak = (s.held, now.clone());
        }
        self.last = (s.held, now);
    }

    fn summary(&self) -> Value {
        let mem = |x: &(u64, Sample)| {
            let (held, smp) = x;
            let rss = smp.mem.map(|m| m.rss);
            let rss0 = self.base.mem.map(|m| m.rss);
            let slab = smp.kernel.map(|k| k.slab);
            let slab0 = self.base.kernel.map(|k| k.slab);
            let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) if *held > 0 => {
                    json!(((a as f64 - b as f64) / *held as f64 * 10.0).round() / 10.0)
                }
                _ => Value::Null,
            };
            json!({
                "held": held,
                "server_rss_bytes": rss,
                "server_rss_per_conn_bytes": per(rss, rss0),
                "server_private_dirty_per_conn_bytes":
                    per(smp.mem.map(|m| m.private_dirty), self.base.mem.map(|m| m.private_dirty)),
                "kernel_slab_bytes": slab,
                "kernel_slab_per_conn_bytes": per(slab, slab0),
                "kernel_sunreclaim_per_conn_bytes":
                    per(smp.kernel.map(|k| k.sunreclaim), self.base.kernel.map(|k| k.sunreclaim)),
                "kernel_tcp_mem_bytes": smp.kernel.map(|k| k.tcp_mem),
                "mem_available_bytes": smp.mem_available,
            })
        };
        json!({
            "baseline": {
                "server_rss_bytes": self.base.mem.map(|m| m.rss),
                "kernel_slab_bytes": self.base.kernel.map(|k| k.slab),
                "kernel_sunreclaim_bytes": self.base.kernel.map(|k| k.sunreclaim),
                "mem_available_bytes": self.base.mem_available,
            },
            "peak": mem(&self.peak),
            "end": mem(&self.last),
            "first_failure": self.first_failure_at.map(|(t, h)| json!({"t_secs": t, "held": h})),
            "steps": self.steps,
        })
    }
}

/// Where the connections run.
enum Mode {
    Local,
    Spawn(usize),
    Remote(Vec<String>),
}

/// Run a ramp (or, with `max_failures == 0` and a hold, a distributed hold). Returns the
/// exit status: 0 the target was held with no failure, 2 failures, 3 timed out.
pub fn run(a: RampArgs, kind: &str, auth_secret: Option<String>) -> Result<i32> {
    anyhow::ensure!(a.conns > 0, "--conns must be > 0");
    anyhow::ensure!(a.rate > 0, "--rate must be > 0");
    anyhow::ensure!(
        a.hold_secs.is_finite() && a.hold_secs >= 0.0,
        "--hold-secs must be >= 0"
    );
    anyhow::ensure!(
        a.step_secs.is_finite() && a.step_secs >= 0.05,
        "--step-secs must be >= 0.05"
    );
    let pids = match &a.pids {
        Some(p) => sys::parse_pids(p)?,
        None => Vec::new(),
    };
    let src = match &a.src {
        Some(s) => sys::parse_src(s)?,
        None => Vec::new(),
    };
    let timeout = match a.timeout_secs {
        Some(t) => {
            anyhow::ensure!(t.is_finite() && t > 0.0, "--timeout-secs must be > 0");
            t
        }
        None => {
            a.conns as f64 / a.rate as f64 + a.hold_secs + a.connect_timeout_ms as f64 / 1e3 + 60.0
        }
    };
    let base = Job {
        target: a.target.clone(),
        uid_prefix: a.uid_prefix.clone(),
        uid_start: a.uid_offset,
        conns: a.conns,
        password: a.password.clone(),
        auth_secret: auth_secret.unwrap_or_default(),
        transport: a.transport.name().into(),
        codec: a.codec.name().into(),
        src: String::new(),
        rate: a.rate,
        max_failures: a.max_failures,
        hold_secs: a.hold_secs,
        connect_timeout_ms: a.connect_timeout_ms,
        timeout_secs: timeout,
        tick_ms: (a.step_secs * 1000.0) as u64,
        ..Job::default()
    };
    let remote = match &a.worker_addrs {
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    let jobs: Vec<Job> = match &a.cluster {
        Some(spec) => cluster_jobs(&base, spec, &src)?,
        None => {
            let w = if remote.is_empty() {
                a.workers
            } else {
                remote.len()
            };
            if w == 0 && a.conns <= MAX_PER_WORKER {
                vec![Job {
                    src: worker::src_slice(&src, 0, 1),
                    ..base.clone()
                }]
            } else {
                worker::split_plain(&base, a.conns, w, &src)
            }
        }
    };
    let mode = if !remote.is_empty() {
        Mode::Remote(remote)
    } else if a.workers == 0 && a.cluster.is_none() && jobs.len() == 1 {
        Mode::Local
    } else {
        Mode::Spawn(jobs.len())
    };
    let mut stepper = Stepper::new(pids.clone(), a.csv.as_ref())?;
    eprintln!(
        "loadtest {kind}: {} streams to {} at {}/s in {} ({}), max failures {}, hold {} s",
        a.conns,
        a.cluster
            .as_deref()
            .map(|_| "the cluster")
            .unwrap_or(&a.target),
        a.rate,
        match &mode {
            Mode::Local => "this process".to_string(),
            Mode::Spawn(n) => format!("{n} local worker processes"),
            Mode::Remote(r) => format!("{} remote workers", r.len()),
        },
        a.transport.name(),
        a.max_failures,
        a.hold_secs
    );
    let started = Instant::now();
    let report = match mode {
        Mode::Local => {
            let opts = jobs[0].engine_opts()?;
            let stop = engine::never();
            engine::run(&opts, &stop, &mut |s: &Snapshot| stepper.step(s))?
        }
        Mode::Spawn(n) => {
            let (_kids, addrs) = worker::spawn_local(n)?;
            coordinate(&addrs, jobs, a.max_failures, timeout, &mut stepper)?
        }
        Mode::Remote(addrs) => coordinate(&addrs, jobs, a.max_failures, timeout, &mut stepper)?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(p) = &a.hist_out {
        std::fs::write(
            p,
            crate::latency::percentile_distribution(&report.latency_us),
        )
        .with_context(|| format!("writing {}", p.display()))?;
    }
    let mut j = summary_json(&report, &a, kind, elapsed);
    j["memory"] = stepper.summary();
    let text = summary_text(&j);
    if a.json {
        eprint!("{text}");
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{text}");
    }
    Ok(
        if report.completed && report.failures.total() == 0 && report.held_at_end == a.conns {
            0
        } else if report.timed_out {
            3
        } else {
            2
        },
    )
}

/// Jobs for a cluster: node k's share split over ceil(share / 19,000) workers, each
/// connecting to node k and only uids node k owns.
fn cluster_jobs(base: &Job, spec: &str, src: &[std::net::Ipv4Addr]) -> Result<Vec<Job>> {
    let nodes = owner::parse_nodes(spec)?;
    let names: Vec<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let k = nodes.len() as u64;
    let mut jobs = Vec::new();
    for (i, (_, client, _)) in nodes.iter().enumerate() {
        let share = base.conns / k + u64::from((i as u64) < base.conns % k);
        if share == 0 {
            continue;
        }
        let m = share.div_ceil(MAX_PER_WORKER);
        for j in 0..m {
            jobs.push(Job {
                target: client.clone(),
                owner_nodes: names.clone(),
                owner_index: i,
                owner_split: (j, m),
                conns: share / m + u64::from(j < share % m),
                ..base.clone()
            });
        }
    }
    let w = jobs.len();
    let per_rate = (base.rate / w as u64).max(1);
    for (x, job) in jobs.iter_mut().enumerate() {
        job.rate = per_rate;
        job.src = worker::src_slice(src, x, w);
    }
    Ok(jobs)
}

/// Drive connected workers: relay a stop once the failure budget is spent, print a step
/// every tick from the workers' latest counters, merge the reports. Steps stop at the first
/// report: a worker closes its sockets before it reports, so later memory samples would not
/// describe held streams.
fn coordinate(
    addrs: &[String],
    mut jobs: Vec<Job>,
    max_failures: u64,
    timeout: f64,
    stepper: &mut Stepper,
) -> Result<EngineReport> {
    let n = jobs.len();
    let lead = Duration::from_millis(1000 + 100 * n as u64);
    let mut w = Workers::start(addrs, &mut jobs, lead)?;
    let tick = Duration::from_millis(jobs[0].tick_ms.max(10));
    let deadline = Instant::now() + lead + Duration::from_secs_f64(timeout + 30.0);
    let mut latest: Vec<Option<Snapshot>> = vec![None; n];
    let mut reports: Vec<Option<EngineReport>> = vec![None; n];
    let mut step_hist: Histogram<u64> = new_histogram();
    let mut next_step = Instant::now() + lead + tick;
    let mut stopped = false;
    let mut done = 0usize;
    let mut disconnected = false;
    while done < n && !disconnected {
        let now = Instant::now();
        if now >= deadline {
            eprintln!("loadtest: coordinator deadline passed; {done} of {n} reports");
            break;
        }
        let wait = next_step
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        // One blocking receive, then drain whatever else is queued before any step.
        let mut first = match w.rx.recv_timeout(wait) {
            Ok(ev) => Some(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                disconnected = true;
                None
            }
        };
        // Bounded drain: at most a few thousand events per round.
        for _ in 0..4096 {
            let ev = match first.take() {
                Some(ev) => ev,
                None => match w.rx.try_recv() {
                    Ok(ev) => ev,
                    Err(_) => break,
                },
            };
            match ev {
                Event::Tick(i, s) => {
                    if let Some(h) = &s.interval_us {
                        worker::merge_hist(&mut step_hist, h);
                    }
                    latest[i] = Some(s);
                }
                Event::Report(i, r) => {
                    if reports[i].is_none() {
                        done += 1;
                    }
                    reports[i] = Some(r);
                }
                Event::Failed(i, e) => {
                    if reports[i].is_none() {
                        done += 1;
                        eprintln!("loadtest: worker {i} ({}) failed: {e}", addrs[i]);
                        let mut r = EngineReport::new();
                        r.errors.insert(format!("worker failed: {e}"), 1);
                        r.failures.other = 1;
                        reports[i] = Some(r);
                    }
                }
            }
        }
        let failed: u64 = latest.iter().flatten().map(|s| s.failed).sum();
        if !stopped && max_failures > 0 && failed >= max_failures {
            stopped = true;
            w.stop_all();
        }
        let now = Instant::now();
        if now >= next_step {
            next_step = now + tick;
            // Stop sampling once any worker finished: it is about to close its sockets.
            if done == 0 && !latest.iter().flatten().any(|s| s.done) {
                let total = sum_snapshots(&latest, &step_hist);
                stepper.step(&total);
            }
            step_hist.reset();
        }
    }
    let parts: Vec<EngineReport> = reports
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                let mut e = EngineReport::new();
                e.timed_out = true;
                e
            })
        })
        .collect();
    Ok(worker::merge_reports(&parts))
}

/// Sum of the workers' latest cumulative counters, with the step's latencies.
fn sum_snapshots(latest: &[Option<Snapshot>], step: &Histogram<u64>) -> Snapshot {
    let mut t = Snapshot {
        t_secs: 0.0,
        attempted: 0,
        connected: 0,
        held: 0,
        opening: 0,
        failed: 0,
        messages: 0,
        interval_us: Some(step.clone()),
        done: false,
    };
    for s in latest.iter().flatten() {
        t.t_secs = t.t_secs.max(s.t_secs);
        t.attempted += s.attempted;
        t.connected += s.connected;
        t.held += s.held;
        t.opening += s.opening;
        t.failed += s.failed;
        t.messages += s.messages;
    }
    t
}

fn summary_json(r: &EngineReport, a: &RampArgs, kind: &str, elapsed: f64) -> Value {
    let f = &r.failures;
    json!({
        "scenario": kind,
        "target": a.cluster.as_deref().unwrap_or(&a.target),
        "conns": a.conns, "rate": a.rate, "hold_secs": a.hold_secs,
        "max_failures": a.max_failures, "transport": a.transport.name(),
        "attempted": r.attempted, "connected": r.connected, "redirects": r.redirects,
        "moves": r.moves,
        "held_at_settle": r.held_at_settle, "held_at_end": r.held_at_end,
        "opening_at_end": r.opening_at_end,
        "failed": f.total(),
        "failures": {
            "refused": f.refused, "timeout": f.timeout, "status": f.status,
            "closed_while_held": f.closed_while_held, "closed_before_head": f.closed_before_head,
            "bad_response": f.bad_response, "other": f.other,
        },
        "status_codes": r.status_codes.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": r.errors.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "connect_latency_us": crate::latency::hist_json(&r.latency_us),
        "ramp_secs": r.ramp_secs,
        "connects_per_sec": if r.ramp_secs > 0.0 { (r.connected as f64 / r.ramp_secs).round() } else { 0.0 },
        "elapsed_secs": elapsed,
        "messages": r.messages, "heartbeats": r.heartbeats,
        "stopped_early": r.stopped_early, "completed": r.completed, "timed_out": r.timed_out,
    })
}

fn summary_text(j: &Value) -> String {
    let g = |p: &str| j.pointer(p).cloned().unwrap_or(Value::Null);
    format!(
        "{} summary: held {} of {} at the end ({} at settle), {} attempted, {} failed {}, errors {}, \
         status {}; ramp {:.1} s ({} connects/s); connect latency µs {}; server RSS per conn \
         at peak {} B, end {} B; kernel slab per conn at peak {} B; first failure {}\n",
        g("/scenario"),
        g("/held_at_end"),
        g("/conns"),
        g("/held_at_settle"),
        g("/attempted"),
        g("/failed"),
        g("/failures"),
        g("/errors"),
        g("/status_codes"),
        g("/ramp_secs").as_f64().unwrap_or(0.0),
        g("/connects_per_sec"),
        g("/connect_latency_us"),
        g("/memory/peak/server_rss_per_conn_bytes"),
        g("/memory/end/server_rss_per_conn_bytes"),
        g("/memory/peak/kernel_slab_per_conn_bytes"),
        g("/memory/first_failure"),
    )
}
