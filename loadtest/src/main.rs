//! `loadtest`: the bundled load generator of ipush.
//!
//! Subcommands so far: `hold` (open N streams — chunked, WebSocket or SSE — at a
//! ramp rate, hold them, report connect latency, failures and the server's memory
//! per stream).

#![recursion_limit = "256"]

mod auth;
mod hold;
mod http;
mod latency;
mod move_scan;
mod net;
mod report;
mod scenario;
mod scenario_cli;
mod scenario_wire;
mod sys;
mod tally;
mod transport;
// ramp / worker / coordinator (C10M-style connection runs)
mod engine;
mod owner;
mod ramp;
mod worker;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "loadtest", version, about = "Load generator for ipush")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Send each stream a per-uid HS256 JWT signed with SECRET as its password.
    ///
    /// One token per uid, minted at connect time in place of --password, with claims
    /// `{"sub": uid, "exp": now + 24 h}`: what the server's `--auth=jwt --auth_secret` checks.
    /// `hold`/`ramp` workers get it with their job; `worker` uses its own for jobs that carry
    /// none. The URL-template mode has no password and ignores it.
    #[arg(
        long = "auth_secret",
        visible_alias = "auth-secret",
        value_name = "SECRET",
        global = true
    )]
    auth_secret: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N streams at a ramp rate, hold them T seconds, report.
    ///
    /// Exit status: 0 every stream held to the end; 2 the run finished with
    /// failures; 3 stopped by --timeout-secs; 1 could not run.
    Hold(HoldArgs),
    /// Keep opening streams at a rate until a target count or the first failures,
    /// printing connections vs. server memory and connect latency per step (--csv).
    ///
    /// Exit status: 0 target reached and held with no failure; 2 failures; 3 timed out.
    Ramp(ramp::RampArgs),
    /// Run jobs (hold/ramp shares) sent by a coordinator over TCP as JSON lines.
    Worker(worker::WorkerArgs),
    /// N subscribers of one channel, M channel publishes (admin API); checks every
    /// delivery (once, in order, per-member seqs) and reports msgs/s and latency.
    ///
    /// Exit status: 0 clean; 2 loss, duplicates, disorder or failures; 3 timed out; 1 could not run.
    Fanout(scenario_cli::FanoutArgs),
    /// N users, M admin publishes to random users (reproducible with --seed); same checks.
    Unicast(scenario_cli::UsersArgs),
    /// N users sending each other user messages on their own streams; same checks.
    Chat(scenario_cli::UsersArgs),
}

#[derive(Args, Debug)]
struct HoldArgs {
    /// Client port of the server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: String,
    /// Number of streams to open (must fit the open-file limit minus 64).
    #[arg(long, default_value_t = 1000)]
    conns: u64,
    /// New connections started per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Seconds to hold all streams once every connect finished.
    #[arg(long, default_value_t = 10.0)]
    hold_secs: f64,
    /// Uids are PREFIX{offset}..PREFIX{offset+conns-1}.
    #[arg(long, default_value = "lt")]
    uid_prefix: String,
    #[arg(long, default_value_t = 0)]
    uid_offset: u64,
    #[arg(long, default_value = "pw")]
    password: String,
    /// Stream transport: chunked (200 + chunked), ws (101 + WebSocket frames) or
    /// sse (200 + text/event-stream).
    #[arg(long, value_enum, default_value_t = transport::Transport::Chunked)]
    transport: transport::Transport,
    /// Message codec (`&codec=msgpack`; chunked and ws only).
    #[arg(long, value_enum, default_value_t = transport::Codec::Json)]
    codec: transport::Codec,
    /// Local source addresses to bind, round-robin: `127.0.0.2-127.0.0.20`,
    /// or a comma list of addresses and ranges.
    #[arg(long)]
    src: Option<String>,
    /// Server pids whose memory (/proc/PID/status VmRSS, smaps_rollup) is
    /// sampled before connecting, when every connect finished, and at the end.
    #[arg(long)]
    pids: Option<String>,
    /// Connect start -> stream head (200, 101 for ws) deadline per stream, in ms.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Hard bound on the whole run [default: conns/rate + hold + connect timeout + 30 s].
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// Print the report as JSON on stdout (text summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the connect-latency percentile distribution (µs) to this file.
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Split the streams over N local worker processes (each at most 19,000 sockets)
    /// started together; their reports (histograms too) are merged.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Use running workers (`loadtest worker --listen`), `HOST:PORT,...`.
    #[arg(long)]
    worker_addrs: Option<String>,
}

fn run_hold(a: HoldArgs, auth_secret: Option<String>) -> Result<i32> {
    if a.workers > 0 || a.worker_addrs.is_some() {
        let r = ramp::RampArgs {
            target: a.target,
            cluster: None,
            conns: a.conns,
            rate: a.rate,
            max_failures: 0,
            hold_secs: a.hold_secs,
            uid_prefix: a.uid_prefix,
            uid_offset: a.uid_offset,
            password: a.password,
            transport: a.transport,
            codec: a.codec,
            src: a.src,
            pids: a.pids,
            step_secs: 1.0,
            csv: None,
            workers: a.workers,
            worker_addrs: a.worker_addrs,
            connect_timeout_ms: a.connect_timeout_ms,
            timeout_secs: a.timeout_secs,
            json: a.json,
            hist_out: a.hist_out,
        };
        return ramp::run(r, "hold", auth_secret);
    }
    let src = match &a.src {
        Some(s) => sys::parse_src(s)?,
        None => Vec::new(),
    };
    let pids = match &a.pids {
        Some(p) => sys::parse_pids(p)?,
        None => Vec::new(),
    };
    anyhow::ensure!(
        a.hold_secs.is_finite() && a.hold_secs >= 0.0,
        "--hold-secs must be >= 0"
    );
    let connect_timeout = Duration::from_millis(a.connect_timeout_ms.max(1));
    let timeout = match a.timeout_secs {
        Some(t) => {
            anyhow::ensure!(t.is_finite() && t > 0.0, "--timeout-secs must be > 0");
            Duration::from_secs_f64(t)
        }
        None => Duration::from_secs_f64(
            a.conns as f64 / a.rate.max(1) as f64
                + a.hold_secs
                + connect_timeout.as_secs_f64()
                + 30.0,
        ),
    };
    let opts = engine::EngineOpts {
        target: a.target,
        uids: engine::Uids::Range {
            prefix: a.uid_prefix,
            start: a.uid_offset,
            count: a.conns,
        },
        password: a.password,
        auth_secret,
        transport: a.transport,
        codec: a.codec,
        src,
        rate: a.rate,
        max_failures: 0,
        hold_secs: a.hold_secs,
        connect_timeout,
        timeout,
        tick: Duration::from_secs(1),
    };
    let report = hold::run(opts, pids, !a.quiet)?;
    if let Some(path) = &a.hist_out {
        std::fs::write(path, report.percentile_distribution())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        eprint!("{}", report.to_text());
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.success() {
        0
    } else if report.run.timed_out {
        3
    } else {
        2
    })
}

fn main() {
    let cli = Cli::parse();
    let auth = cli.auth_secret;
    if auth.as_deref() == Some("") {
        eprintln!("loadtest: error: --auth_secret must not be empty");
        std::process::exit(1);
    }
    let code = match cli.cmd {
        Cmd::Hold(a) => run_hold(a, auth),
        Cmd::Ramp(a) => ramp::run(a, "ramp", auth),
        Cmd::Worker(a) => worker::run_worker(a, auth),
        Cmd::Fanout(a) => scenario_cli::run_fanout(a, auth),
        Cmd::Unicast(a) => scenario_cli::run_unicast(a, auth),
        Cmd::Chat(a) => scenario_cli::run_chat(a, auth),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            std::process::exit(1);
        }
    }
}
