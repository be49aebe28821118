//! Command-line arguments of `fanout`, `unicast` and `chat`, and their output.

use crate::latency::percentile_distribution;
use crate::scenario::{self, Kind, Opts, Peer};
use crate::scenario_wire::UrlTemplate;
use crate::sys;
use crate::transport::Transport;
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Client port of the server (streams), HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub target: String,
    /// Admin port of the server (subscribe, publish), HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub admin: String,
    /// Messages to publish (chat: to send).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Messages per second [default: as fast as the --window allows].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages in flight: published but not yet delivered (fan-out: to every subscriber).
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Pad each body (`lt:<n>:<unix_nanos>:xxx…`) to at least this many bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// Keep-alive admin connections publishing (and subscribing) in parallel.
    #[arg(long, default_value_t = 4)]
    pub pub_conns: usize,
    /// Requests in flight on each admin connection (HTTP/1.1 pipelining; 1 = wait for each
    /// answer). The --window still bounds the messages in flight.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Messages per request through `POST /pub/batch` (NDJSON, ipush only; 1 = one `/pub`
    /// request per message).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Uids are PREFIX0..PREFIX{N-1} [default: `lt<random>-`, fresh every run].
    #[arg(long)]
    pub uid_prefix: Option<String>,
    #[arg(long, default_value = "pw")]
    pub password: String,
    /// Stream transport: chunked or ws.
    #[arg(long, value_enum, default_value_t = Transport::Chunked)]
    pub transport: Transport,
    /// Local source addresses for the streams: `127.0.0.2-127.0.0.20` or a comma list.
    #[arg(long)]
    pub src: Option<String>,
    /// New streams started per second.
    #[arg(long, default_value_t = 10_000)]
    pub connect_rate: u64,
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Seconds to hold the streams after connecting (and subscribing), before publishing.
    #[arg(long, default_value_t = 0.0)]
    pub hold_secs: f64,
    /// Seconds without a new delivery, after the last publish, before giving up on the rest.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Deadline of one admin request (subscribe, publish), seconds.
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout_secs: f64,
    /// Hard bound on the whole run [default: connect + hold + messages/rate + drain + 60 s].
    #[arg(long)]
    pub timeout_secs: Option<f64>,
    /// Seed of the random recipients (unicast) and senders (chat).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Generic mode (e.g. nchan): subscriber URL, `{channel}` (unicast: the user's own
    /// channel) and `{uid}` replaced. The body is split on newlines (http-raw-stream).
    #[arg(long)]
    pub sub_url_template: Option<String>,
    /// Generic mode: publisher URL (POST), `{channel}` / `{uid}` replaced.
    #[arg(long)]
    pub pub_url_template: Option<String>,
    /// The server: ipush (or, with the URL templates, nchan-like), or Centrifugo v6
    /// (`--target` is its HTTP address, for streams and the server API; needs `--api-key`
    /// and `--auth_secret`, its `client.token.hmac_secret_key`).
    #[arg(long, value_enum, default_value_t = Peer::Ipush)]
    pub peer: Peer,
    /// Centrifugo's server-API key (`http_api.key`), sent as `X-API-Key`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Server pids whose memory is read before and after connecting.
    #[arg(long)]
    pub pids: Option<String>,
    /// Print the report as JSON on stdout (text summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the publish→receive latency percentile distribution (µs) to this file.
    #[arg(long)]
    pub hist_out: Option<std::path::PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Subscribers of the channel (one stream each).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u64,
    /// Channel [default: `lt<random>`, fresh every run].
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct UsersArgs {
    /// Users (one stream each).
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{:06x}",
        (t ^ (std::process::id() as u64) << 20) & 0xff_ffff
    )
}

pub fn run_fanout(a: FanoutArgs, auth_secret: Option<String>) -> Result<i32> {
    let ch = a.channel.unwrap_or_else(|| format!("lt{}", run_id()));
    run(Kind::Fanout, a.subscribers, ch, a.common, auth_secret)
}

pub fn run_unicast(a: UsersArgs, auth_secret: Option<String>) -> Result<i32> {
    run(Kind::Unicast, a.users, String::new(), a.common, auth_secret)
}

pub fn run_chat(a: UsersArgs, auth_secret: Option<String>) -> Result<i32> {
    run(Kind::Chat, a.users, String::new(), a.common, auth_secret)
}

fn run(
    kind: Kind,
    streams: u64,
    channel: String,
    a: CommonArgs,
    auth_secret: Option<String>,
) -> Result<i32> {
    if let Some(r) = a.rate {
        ensure!(r.is_finite() && r > 0.0, "--rate must be > 0");
    }
    ensure!(a.window > 0, "--window must be > 0");
    ensure!(a.pipeline > 0, "--pipeline must be > 0");
    ensure!(a.batch > 0, "--batch must be > 0");
    ensure!(
        a.batch == 1 || a.pub_url_template.is_none(),
        "--batch needs ipush's /pub/batch: not with --pub-url-template"
    );
    ensure!(a.connect_rate > 0, "--connect-rate must be > 0");
    ensure!(
        a.hold_secs.is_finite() && a.hold_secs >= 0.0,
        "--hold-secs must be >= 0"
    );
    ensure!(
        a.drain_secs.is_finite() && a.drain_secs > 0.0,
        "--drain-secs must be > 0"
    );
    ensure!(
        a.request_timeout_secs.is_finite() && a.request_timeout_secs > 0.0,
        "--request-timeout-secs must be > 0"
    );
    let src = match &a.src {
        Some(s) => sys::parse_src(s)?,
        None => Vec::new(),
    };
    let pids = match &a.pids {
        Some(p) => sys::parse_pids(p)?,
        None => Vec::new(),
    };
    let tpl = |s: &Option<String>| -> Result<Option<UrlTemplate>> {
        s.as_deref()
            .map(|s| UrlTemplate::parse(s).map_err(anyhow::Error::msg))
            .transpose()
    };
    let connect_timeout = Duration::from_millis(a.connect_timeout_ms.max(1));
    let timeout = match a.timeout_secs {
        Some(t) => {
            ensure!(t.is_finite() && t > 0.0, "--timeout-secs must be > 0");
            Duration::from_secs_f64(t)
        }
        None => Duration::from_secs_f64(
            streams as f64 / a.connect_rate as f64
                + connect_timeout.as_secs_f64()
                + a.hold_secs
                + a.rate.map(|r| a.messages as f64 / r).unwrap_or(0.0)
                + a.drain_secs
                + 60.0,
        ),
    };
    let opts = Opts {
        kind,
        // Centrifugo serves its server API on the client port.
        admin: if a.peer == Peer::Centrifugo {
            a.target.clone()
        } else {
            a.admin
        },
        target: a.target,
        streams,
        channel,
        messages: a.messages,
        rate: a.rate,
        body_bytes: a.body_bytes,
        src,
        uid_prefix: a.uid_prefix.unwrap_or_else(|| format!("lt{}-", run_id())),
        password: a.password,
        auth_secret,
        transport: a.transport,
        connect_rate: a.connect_rate,
        connect_timeout,
        timeout,
        drain: Duration::from_secs_f64(a.drain_secs),
        hold_secs: a.hold_secs,
        pub_conns: a.pub_conns.max(1),
        window: a.window,
        seed: a.seed,
        sub_tpl: tpl(&a.sub_url_template)?,
        pub_tpl: tpl(&a.pub_url_template)?,
        pids,
        progress: !a.quiet,
        request_timeout: Duration::from_secs_f64(a.request_timeout_secs),
        pipeline: a.pipeline,
        batch: a.batch,
        peer: a.peer,
        api_key: a.api_key,
    };
    let report = scenario::run(opts)?;
    if let Some(path) = &a.hist_out {
        std::fs::write(path, percentile_distribution(&report.latency_us))
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
    } else if report.timed_out {
        3
    } else {
        2
    })
}
