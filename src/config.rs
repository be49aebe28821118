//! Startup configuration: gflags-style flags, flagfile expansion and validation; run once on the main thread before any core starts.
//!
//! `ipush_server --flagfile=conf/default.conf --client_port=9100`: a flagfile holds one
//! `--name=value` per line (`#` comments and blank lines ignored). Its lines are expanded in
//! place of the `--flagfile=...` argument, so flags given later on the command line override
//! the file (clap's `args_override_self`). Nested flagfiles are an error.
//!
//! Parsing and validation do no I/O beyond reading the flagfile; [`parse_args`] returns a
//! [`Config`] whose every field is checked, or a [`ConfigError`] naming the bad flag.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Largest accepted `--max_message_bytes` (16 MiB).
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Why the command line could not become a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unknown flag, unparsable value, or `--help` / `--version` (main calls `.exit()` on it).
    #[error("{0}")]
    Clap(#[from] clap::Error),
    /// A value that parsed but is out of range or inconsistent with another flag.
    #[error("{0}")]
    Invalid(String),
    /// The flagfile could not be read.
    #[error("{0}")]
    Io(String),
}

/// Storage backend (`--storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// Durable, on local disk under `--data_dir`, one store per core.
    Embedded,
    /// In memory only: for tests and ephemeral use.
    Memory,
    /// ScyllaDB / Apache Cassandra through the scylla driver.
    Scylla,
}

/// When the embedded store syncs its log to disk (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncMode {
    /// A publish is answered once its log write has reached the OS (survives kill -9, not
    /// power loss).
    Never,
    /// A publish is answered once its group commit has been fdatasync'ed (survives power loss).
    Always,
}

/// Consistency level of scylla reads and writes (`--scylla_consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScyllaConsistency {
    One,
    Quorum,
    #[value(name = "local_quorum")]
    LocalQuorum,
    All,
}

/// Client authentication mode (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Any non-empty password is accepted (development).
    None,
    /// The password is an HS256 JWT signed with `--auth_secret`, `sub` == uid, `exp` honoured.
    Jwt,
}

/// Log verbosity (`--log_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)] // the names say it
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The lower-case name, as accepted by `tracing_subscriber::EnvFilter`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log line format (`--log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// One member of the cluster (a `--nodes` entry, or a member row of the dynamic cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique node name, the key of the ownership hash.
    pub name: String,
    /// Host clients and peers reach this node at (no brackets, even for IPv6).
    pub host: String,
    pub client_port: u16,
    pub admin_port: u16,
    pub bus_port: u16,
}

impl NodeSpec {
    /// `HOST:CLIENT_PORT` (IPv6 hosts bracketed): what /shard answers and 303 Locations carry.
    pub fn client_addr(&self) -> String {
        host_port(&self.host, self.client_port)
    }
}

/// `host:port`, with `[...]` around an IPv6 literal.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The validated server configuration. Build it with [`parse_args`].
#[derive(Clone, Parser)]
#[command(
    name = "ipush_server",
    version,
    about = "ipush: distributed message push server (thread-per-core, shared-nothing)",
    rename_all = "snake_case",
    args_override_self = true
)]
pub struct Config {
    /// Read flags from this file: one --name=value per line, '#' comments; later command-line flags override it
    #[arg(long, value_name = "PATH")]
    pub flagfile: Option<PathBuf>,

    /// Address the client listener binds (every core binds it with SO_REUSEPORT)
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub client_host: IpAddr,

    /// Client port (1-65535); with --nodes, this node's entry supplies it
    #[arg(long, default_value_t = 9000)]
    pub client_port: u16,

    /// Address the admin HTTP listener binds
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub admin_host: IpAddr,

    /// Admin HTTP port (1-65535); with --nodes, this node's entry supplies it
    #[arg(long, default_value_t = 9001)]
    pub admin_port: u16,

    /// Cluster bus (NNG) port (1-65535); with --nodes, this node's entry supplies it
    #[arg(long, default_value_t = 9002)]
    pub bus_port: u16,

    /// Number of cores (executors) to run; 0 = all available cores. After parsing: the resolved count (>= 1)
    #[arg(long, default_value_t = 0)]
    pub cores: usize,

    /// PID file written at start and removed at exit; empty = none
    #[arg(long, default_value = "ipush_server.pid")]
    pub pid_file: String,

    /// Storage backend
    #[arg(long, value_enum, default_value_t = StorageKind::Embedded)]
    pub storage: StorageKind,

    /// Directory of the embedded storage (one store per core below it)
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,

    /// Embedded store durability: never (answer once the write reached the OS) or always
    /// (answer once it is fdatasync'ed; group-committed)
    #[arg(long, value_enum, default_value_t = FsyncMode::Never)]
    pub fsync: FsyncMode,

    /// Comma-separated HOST:PORT list of ScyllaDB/Cassandra contact points (--storage=scylla)
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub scylla_nodes: String,

    /// Keyspace of the scylla backend
    #[arg(long, default_value = "ipush")]
    pub scylla_keyspace: String,

    /// Consistency level of scylla reads and writes
    #[arg(long, value_enum, default_value_t = ScyllaConsistency::LocalQuorum)]
    pub scylla_consistency: ScyllaConsistency,

    /// Timeout of scylla session creation and of every query, in milliseconds (100-600000)
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub scylla_timeout_ms: u64,

    /// Create the scylla keyspace and tables of cql/create_schema.cql (keyspace renamed to
    /// --scylla_keyspace) when they are missing: true or false. The keyspace is made with
    /// SimpleStrategy, replication_factor 1 (a dev node); create a production keyspace yourself
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "true|false")]
    pub scylla_init_schema: bool,

    /// Client authentication: none (any non-empty password) or jwt (HS256 token, sub = uid)
    #[arg(long, value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// HMAC secret of --auth=jwt tokens (required non-empty when --auth=jwt)
    #[arg(long, default_value = "")]
    pub auth_secret: String,

    /// Name of this node: its --nodes entry, or with --storage=scylla and no --nodes its member name in the dynamic cluster
    #[arg(long, default_value = "")]
    pub node: String,

    /// Dynamic cluster: a member not heard from for this long is down and its slots are claimed, in ms (500-600000)
    #[arg(long, default_value_t = 3000)]
    pub member_timeout_ms: u64,

    /// Dynamic cluster: the keyspace's slot count, fixed by its first member (1-65536)
    #[arg(long, default_value_t = 1024)]
    pub cluster_slots: u32,

    /// Raw static cluster membership: n1=HOST:CLIENT_PORT:ADMIN_PORT:BUS_PORT,n2=...; empty = single node
    #[arg(long = "nodes", default_value = "")]
    pub nodes_raw: String,

    /// `--nodes` parsed, in the order given; empty for a single node.
    #[arg(skip)]
    pub nodes: Vec<NodeSpec>,

    /// Offline messages sent on connect: the newest N unacked (1-100000)
    #[arg(long, default_value_t = 100)]
    pub max_offline_msg_num: usize,

    /// Largest message payload accepted or published, in bytes (64-16777216)
    #[arg(long, default_value_t = 65536)]
    pub max_message_bytes: usize,

    /// Most lines of one /pub/batch body (1-100000)
    #[arg(long, default_value_t = 10_000)]
    pub max_batch_lines: usize,

    /// Most bytes of one /pub/batch body (1024-16777216; a forwarded batch must fit a bus frame)
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Seconds of silence after which the server sends a heartbeat {"y":0} (1-3600)
    #[arg(long, default_value_t = 30)]
    pub heartbeat_interval_s: u64,

    /// Seconds a user with no stream stays resident on its core after its last use; then its
    /// per-core state is dropped and reloaded from storage on next use (0 = never, 1-86400)
    #[arg(long, default_value_t = 300)]
    pub user_idle_s: u64,

    /// Log level: error, warn, info, debug or trace
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log format: text (coloured only when stderr is a terminal) or json (one object per line)
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Streams this node holds at most; beyond it /connect answers 503
    #[arg(long, default_value_t = 1_000_000)]
    pub max_connections: usize,

    /// Time to wait for another node's answer before a request fails with 503, in ms (100-60000)
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub cluster_timeout_ms: u64,

    /// Messages queued to one stream before it is closed as a slow reader (16-1000000)
    #[arg(long, default_value_t = 1024)]
    pub send_queue_max: usize,

    /// Seconds a /pub idempotency_key is remembered: a repeat within it answers the first
    /// answer and publishes nothing (1-604800)
    #[arg(long, default_value_t = 300)]
    pub idempotency_window_s: u64,

    /// Idempotency keys one core remembers at most (each ~130 bytes); beyond it a keyed /pub
    /// answers 429 until keys expire (1-100000000)
    #[arg(long, default_value_t = 200_000)]
    pub idempotency_max_keys: usize,

    /// Milliseconds allowed to send a full request head (1-3600000)
    #[arg(long, default_value_t = 10_000)]
    pub head_timeout_ms: u64,

    /// Host put in /shard answers and 303 Locations; empty = client_host, or 127.0.0.1 when that is 0.0.0.0/::
    #[arg(long, default_value = "")]
    pub advertise_host: String,

    /// Origins whose pages may read client-port answers cross-origin (CORS): `*`, a comma-separated list of origins (`null` allowed), or empty for none
    #[arg(long, default_value = "*")]
    pub client_allow_origin: String,

    /// listen(2) backlog of the client and admin listeners (1-2147483647)
    #[arg(long, default_value_t = 65535)]
    pub listen_backlog: i32,

    /// TCP_DEFER_ACCEPT seconds on the client port: a connection is accepted once its first
    /// bytes arrive, so accept and head read are one wake-up; a silent client is accepted
    /// after about this long anyway. 0 = off (0-600)
    #[arg(long, default_value_t = 1)]
    pub defer_accept_s: u32,
}

impl fmt::Debug for Config {
    /// Like a derived Debug, except that `auth_secret` is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.auth_secret.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("Config")
            .field("flagfile", &self.flagfile)
            .field("client_host", &self.client_host)
            .field("client_port", &self.client_port)
            .field("admin_host", &self.admin_host)
            .field("admin_port", &self.admin_port)
            .field("bus_port", &self.bus_port)
            .field("cores", &self.cores)
            .field("pid_file", &self.pid_file)
            .field("storage", &self.storage)
            .field("data_dir", &self.data_dir)
            .field("fsync", &self.fsync)
            .field("cluster_timeout_ms", &self.cluster_timeout_ms)
            .field("scylla_nodes", &self.scylla_nodes)
            .field("scylla_keyspace", &self.scylla_keyspace)
            .field("scylla_consistency", &self.scylla_consistency)
            .field("scylla_timeout_ms", &self.scylla_timeout_ms)
            .field("scylla_init_schema", &self.scylla_init_schema)
            .field("auth", &self.auth)
            .field("auth_secret", &secret)
            .field("node", &self.node)
            .field("nodes", &self.nodes)
            .field("max_offline_msg_num", &self.max_offline_msg_num)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_batch_lines", &self.max_batch_lines)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("heartbeat_interval_s", &self.heartbeat_interval_s)
            .field("user_idle_s", &self.user_idle_s)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("max_connections", &self.max_connections)
            .field("send_queue_max", &self.send_queue_max)
            .field("idempotency_window_s", &self.idempotency_window_s)
            .field("idempotency_max_keys", &self.idempotency_max_keys)
            .field("head_timeout_ms", &self.head_timeout_ms)
            .field("advertise_host", &self.advertise_host)
            .field("client_allow_origin", &self.client_allow_origin)
            .field("listen_backlog", &self.listen_backlog)
            .field("defer_accept_s", &self.defer_accept_s)
            .finish()
    }
}

impl Default for Config {
    /// Every flag at its default, validated (cores resolved to the available count).
    fn default() -> Self {
        parse_args(["ipush_server".to_string()]).expect("default flags are valid")
    }
}

/// A dynamic cluster member's name: what `--nodes` entries may be called, too.
fn valid_member_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Config {
    /// Whether this node is a member of the dynamic cluster: `--storage=scylla --node=NAME`
    /// and no `--nodes` (membership and ownership live in the keyspace).
    pub fn is_dynamic(&self) -> bool {
        self.storage == StorageKind::Scylla && !self.node.is_empty() && self.nodes.is_empty()
    }

    /// `HOST:CLIENT_PORT` clients are sent to for users of this node (/shard, 303 Location).
    ///
    /// In a cluster it is this node's `--nodes` entry; otherwise `--advertise_host`, else
    /// `--client_host`, else (client_host unspecified) `127.0.0.1`. IPv6 hosts are bracketed.
    pub fn advertise_addr(&self) -> String {
        if let Some(me) = self.self_node() {
            return me.client_addr();
        }
        host_port(&self.advertised_host(), self.client_port)
    }

    /// The host others reach this node at: `--advertise_host`, else `--client_host`, else
    /// (client_host unspecified) `127.0.0.1`.
    pub fn advertised_host(&self) -> String {
        if !self.advertise_host.is_empty() {
            self.advertise_host.clone()
        } else if self.client_host.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.client_host.to_string()
        }
    }

    /// `host:port` of this node's client, admin and bus listeners as the dynamic cluster's
    /// member row carries them.
    pub fn member_addrs(&self) -> (String, String, String) {
        let h = self.advertised_host();
        (
            host_port(&h, self.client_port),
            host_port(&h, self.admin_port),
            host_port(&h, self.bus_port),
        )
    }

    /// This node's entry of `--nodes`, or `None` when running as a single node.
    pub fn self_node(&self) -> Option<&NodeSpec> {
        if self.node.is_empty() {
            return None;
        }
        self.nodes.iter().find(|n| n.name == self.node)
    }

    /// `--heartbeat_interval_s` as a Duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_s)
    }

    /// `--head_timeout_ms` as a Duration.
    pub fn head_timeout(&self) -> Duration {
        Duration::from_millis(self.head_timeout_ms)
    }

    /// The PID file path, or `None` when `--pid_file` is empty.
    pub fn pid_path(&self) -> Option<PathBuf> {
        (!self.pid_file.is_empty()).then(|| PathBuf::from(&self.pid_file))
    }

    /// `--scylla_nodes` split on commas, trimmed, empty entries dropped.
    pub fn scylla_node_list(&self) -> Vec<&str> {
        split_list(&self.scylla_nodes).collect()
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Parses the command line (`args` includes `argv[0]`), expanding `--flagfile`, and validates it.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    let cli_given = flags_named(args.iter().skip(1));
    let expanded = expand_flagfiles(args)?;
    let mut cfg = Config::try_parse_from(expanded)?;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    validate(&mut cfg, available, &cli_given)?;
    Ok(cfg)
}

/// Names of the `--name[=value]` flags among `args` (to tell command-line flags from file flags).
fn flags_named<'a>(args: impl Iterator<Item = &'a String>) -> HashSet<String> {
    args.filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split_once('=').map_or(a, |(name, _)| name).to_string())
        .collect()
}

/// Replaces each `--flagfile=PATH` / `--flagfile PATH` with the file's flags, keeping the
/// `--flagfile=PATH` argument itself (so `Config::flagfile` records it).
fn expand_flagfiles(args: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(argv0) = it.next() {
        out.push(argv0);
    }
    while let Some(arg) = it.next() {
        let path = if let Some(p) = arg.strip_prefix("--flagfile=") {
            p.to_string()
        } else if arg == "--flagfile" {
            match it.next() {
                Some(p) => p,
                None => {
                    out.push(arg); // let clap report the missing value
                    continue;
                }
            }
        } else {
            out.push(arg);
            continue;
        };
        if path.is_empty() {
            return Err(ConfigError::Invalid(
                "invalid value for --flagfile: empty path".to_string(),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Io(format!("cannot read --flagfile={path}: {e}")))?;
        out.push(format!("--flagfile={path}"));
        out.extend(flagfile_lines(&path, &text)?);
    }
    Ok(out)
}

/// The flags of one flagfile, in order. Pure: `path` is only used in error messages.
fn flagfile_lines(path: &str, text: &str) -> Result<Vec<String>, ConfigError> {
    let mut flags = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lineno = i + 1;
        if !line.starts_with("--") || line.len() == 2 {
            return Err(ConfigError::Invalid(format!(
                "{path} line {lineno}: expected --name=value, got '{line}'"
            )));
        }
        if line == "--flagfile" || line.starts_with("--flagfile=") {
            return Err(ConfigError::Invalid(format!(
                "{path} line {lineno}: nested --flagfile is not allowed"
            )));
        }
        flags.push(line.to_string());
    }
    Ok(flags)
}

fn invalid(flag: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("invalid value for --{flag}: {why}"))
}

fn check_range<T: PartialOrd + fmt::Display>(
    flag: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(invalid(flag, format!("must be between {lo} and {hi}")));
    }
    Ok(())
}

/// Range and cross-flag checks; fills `nodes`, resolves `cores` and, in a cluster, takes this
/// node's ports from its `--nodes` entry (a port flag given on the command line itself that
/// disagrees with the entry is an error).
fn validate(
    cfg: &mut Config,
    available_cores: usize,
    cli_given: &HashSet<String>,
) -> Result<(), ConfigError> {
    // Port 0: any free port (the server reports the ones it bound); not in a cluster, whose
    // `--nodes` entries name real ports.

    if cfg.cores > available_cores {
        return Err(invalid(
            "cores",
            format!(
                "{} exceeds the {available_cores} available cores",
                cfg.cores
            ),
        ));
    }
    if cfg.cores == 0 {
        cfg.cores = available_cores.max(1);
    }

    check_range("max_offline_msg_num", cfg.max_offline_msg_num, 1, 100_000)?;
    check_range(
        "max_message_bytes",
        cfg.max_message_bytes,
        64,
        MAX_MESSAGE_BYTES_LIMIT,
    )?;
    check_range("max_batch_lines", cfg.max_batch_lines, 1, 100_000)?;
    check_range(
        "max_batch_bytes",
        cfg.max_batch_bytes,
        1024,
        MAX_MESSAGE_BYTES_LIMIT,
    )?;
    check_range("heartbeat_interval_s", cfg.heartbeat_interval_s, 1, 3600)?;
    check_range("user_idle_s", cfg.user_idle_s, 0, 86_400)?;
    check_range("max_connections", cfg.max_connections, 1, usize::MAX)?;
    check_range("send_queue_max", cfg.send_queue_max, 16, 1_000_000)?;
    check_range("head_timeout_ms", cfg.head_timeout_ms, 1, 3_600_000)?;
    check_range("idempotency_window_s", cfg.idempotency_window_s, 1, 604_800)?;
    check_range(
        "idempotency_max_keys",
        cfg.idempotency_max_keys,
        1,
        100_000_000,
    )?;
    check_range("listen_backlog", cfg.listen_backlog, 1, i32::MAX)?;
    check_range("defer_accept_s", cfg.defer_accept_s, 0, 600)?;

    crate::http::cors::check_policy(&cfg.client_allow_origin)
        .map_err(|why| invalid("client_allow_origin", why))?;

    if cfg
        .advertise_host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            "advertise_host",
            "must be a host name or IP address",
        ));
    }

    match cfg.storage {
        StorageKind::Embedded if cfg.data_dir.as_os_str().is_empty() => {
            return Err(invalid(
                "data_dir",
                "must not be empty with --storage=embedded",
            ));
        }
        StorageKind::Scylla => {
            if cfg.scylla_node_list().is_empty() {
                return Err(invalid(
                    "scylla_nodes",
                    "must not be empty with --storage=scylla",
                ));
            }
            let ks = &cfg.scylla_keyspace;
            if ks.is_empty()
                || ks.len() > 48
                || !ks.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(invalid(
                    "scylla_keyspace",
                    "must be 1-48 characters of [A-Za-z0-9_]",
                ));
            }
        }
        _ => {}
    }

    if cfg.auth == AuthMode::Jwt && cfg.auth_secret.is_empty() {
        return Err(invalid("auth_secret", "must not be empty with --auth=jwt"));
    }

    if !(500..=600_000).contains(&cfg.member_timeout_ms) {
        return Err(invalid("member_timeout_ms", "must be 500-600000"));
    }
    if !(1..=65_536).contains(&cfg.cluster_slots) {
        return Err(invalid("cluster_slots", "must be 1-65536"));
    }
    cfg.nodes = parse_nodes(&cfg.nodes_raw)?;
    if cfg.nodes.is_empty() {
        if !cfg.node.is_empty() && cfg.storage != StorageKind::Scylla {
            return Err(invalid(
                "node",
                "--node requires --nodes (or --storage=scylla for the dynamic cluster)",
            ));
        }
        if !cfg.node.is_empty() && !valid_member_name(&cfg.node) {
            return Err(invalid("node", "a member name is 1-64 of A-Za-z0-9-_."));
        }
    } else {
        if cfg.node.is_empty() {
            return Err(invalid("node", "must name this node's entry of --nodes"));
        }
        let Some(me) = cfg.nodes.iter().find(|n| n.name == cfg.node).cloned() else {
            return Err(invalid(
                "node",
                format!("'{}' is not one of the --nodes entries", cfg.node),
            ));
        };
        if !cfg.advertise_host.is_empty() && cfg.advertise_host != me.host {
            return Err(invalid(
                "advertise_host",
                format!(
                    "conflicts with the --nodes entry of {} (host {})",
                    me.name, me.host
                ),
            ));
        }
        for (flag, port, slot) in [
            ("client_port", me.client_port, &mut cfg.client_port),
            ("admin_port", me.admin_port, &mut cfg.admin_port),
            ("bus_port", me.bus_port, &mut cfg.bus_port),
        ] {
            if cli_given.contains(flag) && *slot != port {
                return Err(invalid(
                    flag,
                    format!(
                        "{} conflicts with the --nodes entry of {} ({port})",
                        *slot, me.name
                    ),
                ));
            }
            *slot = port;
        }
    }

    let same = |a: u16, b: u16| a != 0 && a == b;
    if same(cfg.client_port, cfg.admin_port)
        || same(cfg.client_port, cfg.bus_port)
        || same(cfg.admin_port, cfg.bus_port)
    {
        return Err(ConfigError::Invalid(format!(
            "--client_port, --admin_port and --bus_port must differ (got {}, {}, {})",
            cfg.client_port, cfg.admin_port, cfg.bus_port
        )));
    }
    Ok(())
}

/// Parses `n1=HOST:CLIENT_PORT:ADMIN_PORT:BUS_PORT,n2=...` (IPv6 hosts as `[::1]`).
/// Names and `host:port` addresses must be unique; an empty string is no cluster.
pub fn parse_nodes(raw: &str) -> Result<Vec<NodeSpec>, ConfigError> {
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for entry in split_list(raw) {
        let bad = |why: &str| invalid("nodes", format!("entry '{entry}': {why}"));
        let (name, addr) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=HOST:CLIENT_PORT:ADMIN_PORT:BUS_PORT"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("empty node name"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("node name contains whitespace"));
        }
        let mut parts = addr.trim().rsplitn(4, ':');
        let (Some(bus), Some(admin), Some(client), Some(host)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected NAME=HOST:CLIENT_PORT:ADMIN_PORT:BUS_PORT"));
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("invalid host"));
        }
        let port = |p: &str| -> Result<u16, ConfigError> {
            match p.parse::<u16>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(bad(&format!("port '{p}' must be between 1 and 65535"))),
            }
        };
        let spec = NodeSpec {
            name: name.to_string(),
            host: host.to_string(),
            client_port: port(client)?,
            admin_port: port(admin)?,
            bus_port: port(bus)?,
        };
        if !names.insert(spec.name.clone()) {
            return Err(bad("duplicate node name"));
        }
        for p in [spec.client_port, spec.admin_port, spec.bus_port] {
            if !addrs.insert((spec.host.to_ascii_lowercase(), p)) {
                return Err(bad(&format!(
                    "address {} is used twice",
                    host_port(host, p)
                )));
            }
        }
        nodes.push(spec);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("ipush_server")
            .chain(list.iter().copied())
            .map(String::from)
            .collect()
    }

    fn parse(list: &[&str]) -> Result<Config, ConfigError> {
        parse_args(args(list))
    }

    fn err(list: &[&str]) -> String {
        parse(list).expect_err("expected an error").to_string()
    }

    /// A flagfile in the temp dir, unique per test.
    fn flagfile(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "ipush-config-test-{}-{name}.conf",
            std::process::id()
        ));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.client_host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.client_port, 9000);
        assert_eq!(c.admin_host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.admin_port, 9001);
        assert_eq!(c.bus_port, 9002);
        assert!(c.cores >= 1);
        assert_eq!(c.pid_file, "ipush_server.pid");
        assert_eq!(c.storage, StorageKind::Embedded);
        assert_eq!(c.fsync, FsyncMode::Never);
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.scylla_node_list(), vec!["127.0.0.1:9042"]);
        assert_eq!(c.scylla_keyspace, "ipush");
        assert!(!c.scylla_init_schema);
        assert_eq!(c.auth, AuthMode::None);
        assert!(c.nodes.is_empty() && c.self_node().is_none());
        assert_eq!(c.max_offline_msg_num, 100);
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!((c.max_batch_lines, c.max_batch_bytes), (10_000, 16 << 20));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(30));
        assert_eq!(c.user_idle_s, 300);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.max_connections, 1_000_000);
        assert_eq!(c.send_queue_max, 1024);
        assert_eq!(c.idempotency_window_s, 300);
        assert_eq!(c.idempotency_max_keys, 200_000);
        assert_eq!(c.head_timeout(), Duration::from_millis(10_000));
        assert_eq!(c.listen_backlog, 65535);
        assert_eq!(c.defer_accept_s, 1);
        assert_eq!(c.advertise_addr(), "127.0.0.1:9000");
    }

    #[test]
    fn flagfile_expansion_and_override_order() {
        let path = flagfile(
            "order",
            "# a comment\n\n  --client_port=9100\n--storage=memory\n   # indented comment\n--log_level=debug\n--auth_secret=a b c\n",
        );
        // The command line after the flagfile overrides it.
        let c = parse(&[&format!("--flagfile={path}"), "--client_port=9200"]).unwrap();
        assert_eq!(c.client_port, 9200);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.auth_secret, "a b c");
        assert_eq!(c.flagfile.as_deref(), Some(std::path::Path::new(&path)));
        // Flags before the flagfile are overridden by it (expanded in place).
        let c = parse(&["--client_port=9200", "--flagfile", &path]).unwrap();
        assert_eq!(c.client_port, 9100);
        // Space-separated values work on the command line too.
        let c = parse(&["--flagfile", &path, "--client_port", "9300"]).unwrap();
        assert_eq!(c.client_port, 9300);
    }

    #[test]
    fn flagfile_errors() {
        let nested = flagfile("nested", "--client_port=1\n--flagfile=/etc/other.conf\n");
        let e = err(&[&format!("--flagfile={nested}")]);
        assert!(
            e.contains("nested --flagfile") && e.contains("line 2"),
            "{e}"
        );

        let junk = flagfile("junk", "client_port=1\n");
        let e = err(&[&format!("--flagfile={junk}")]);
        assert!(e.contains("line 1") && e.contains("--name=value"), "{e}");

        let e = parse(&["--flagfile=/nonexistent/ipush.conf"]).unwrap_err();
        assert!(matches!(e, ConfigError::Io(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/ipush.conf"));

        let unknown = flagfile("unknown", "--no_such_flag=3\n");
        let e = err(&[&format!("--flagfile={unknown}")]);
        assert!(e.contains("--no_such_flag"), "{e}");
    }

    #[test]
    fn unknown_flag_is_named() {
        let e = parse(&["--bogus_flag=1"]).unwrap_err();
        assert!(matches!(e, ConfigError::Clap(_)));
        assert!(e.to_string().contains("--bogus_flag"), "{e}");
        // kebab-case spellings are not accepted: names are snake_case as in gflags
        assert!(err(&["--client-port=1"]).contains("--client-port"));
    }

    #[test]
    fn bad_values_are_named() {
        assert!(err(&["--client_port=abc"]).contains("--client_port"));
        assert!(err(&["--client_port=70000"]).contains("--client_port"));
        assert!(err(&["--client_host=not-an-ip"]).contains("--client_host"));
        assert!(err(&["--storage=disk"]).contains("--storage"));
        assert!(err(&["--auth=basic"]).contains("--auth"));
        assert!(err(&["--log_level=loud"]).contains("--log_level"));
        assert_eq!(
            err(&["--max_message_bytes=10"]),
            "invalid value for --max_message_bytes: must be between 64 and 16777216"
        );
        // Port 0 asks the kernel for any free port (the server reports what it bound).
        let any = parse(&["--client_port=0", "--admin_port=0", "--bus_port=0"]).unwrap();
        assert_eq!((any.client_port, any.admin_port, any.bus_port), (0, 0, 0));
        assert!(err(&["--max_offline_msg_num=0"]).contains("--max_offline_msg_num"));
        assert!(err(&["--max_batch_lines=0"]).contains("--max_batch_lines"));
        assert!(err(&["--max_batch_bytes=100"]).contains("--max_batch_bytes"));
        assert!(err(&["--max_offline_msg_num=100001"]).contains("--max_offline_msg_num"));
        assert!(err(&["--heartbeat_interval_s=0"]).contains("--heartbeat_interval_s"));
        assert!(err(&["--heartbeat_interval_s=3601"]).contains("--heartbeat_interval_s"));
        assert!(err(&["--user_idle_s=86401"]).contains("--user_idle_s"));
        assert_eq!(parse(&["--user_idle_s=0"]).unwrap().user_idle_s, 0);
        assert!(err(&["--send_queue_max=15"]).contains("--send_queue_max"));
        assert!(err(&["--idempotency_window_s=0"]).contains("--idempotency_window_s"));
        assert!(err(&["--idempotency_window_s=604801"]).contains("--idempotency_window_s"));
        assert!(err(&["--idempotency_max_keys=0"]).contains("--idempotency_max_keys"));
        assert!(err(&["--max_connections=0"]).contains("--max_connections"));
        assert!(err(&["--head_timeout_ms=0"]).contains("--head_timeout_ms"));
        assert!(err(&["--listen_backlog=0"]).contains("--listen_backlog"));
        assert!(err(&["--auth=jwt"]).contains("--auth_secret"));
        assert!(err(&["--cores=100000"]).contains("--cores"));
        assert!(err(&["--client_port=9001"]).contains("must differ"));
        assert!(err(&["--storage=scylla", "--scylla_nodes=,"]).contains("--scylla_nodes"));
        assert!(err(&["--storage=scylla", "--scylla_keyspace=a-b"]).contains("--scylla_keyspace"));
        assert!(parse(&["--auth=jwt", "--auth_secret=s3cret"]).is_ok());
        assert!(parse(&["--storage=embedded"]).is_ok());
        assert!(
            parse(&["--scylla_init_schema=true"])
                .unwrap()
                .scylla_init_schema
        );
        assert!(
            !parse(&["--scylla_init_schema=false"])
                .unwrap()
                .scylla_init_schema
        );
        assert!(err(&["--scylla_init_schema=yes"]).contains("--scylla_init_schema"));
    }

    #[test]
    fn help_and_version_are_clap_errors() {
        for flag in ["--help", "--version"] {
            assert!(matches!(parse(&[flag]), Err(ConfigError::Clap(_))));
        }
    }

    #[test]
    fn cores_resolve() {
        let c = parse(&["--cores=1"]).unwrap();
        assert_eq!(c.cores, 1);
        let avail = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse(&["--cores=0"]).unwrap().cores, avail);
    }

    #[test]
    fn advertise_addr_rules() {
        let c = parse(&["--client_host=10.0.0.5"]).unwrap();
        assert_eq!(c.advertise_addr(), "10.0.0.5:9000");
        let c = parse(&["--client_host=::", "--advertise_host=push.example.com"]).unwrap();
        assert_eq!(c.advertise_addr(), "push.example.com:9000");
        let c = parse(&["--client_host=::"]).unwrap();
        assert_eq!(c.advertise_addr(), "127.0.0.1:9000");
        let c = parse(&["--client_host=::1"]).unwrap();
        assert_eq!(c.advertise_addr(), "[::1]:9000");
        assert!(err(&["--advertise_host=a b"]).contains("--advertise_host"));
    }

    #[test]
    fn client_allow_origin_values() {
        assert_eq!(parse(&[]).unwrap().client_allow_origin, "*");
        for ok in [
            "",
            "https://app.example.com",
            "https://a.example,http://localhost:8080,null",
        ] {
            let flag = format!("--client_allow_origin={ok}");
            assert!(parse(&[flag.as_str()]).is_ok(), "{ok:?}");
        }
        for bad in [
            "app.example.com",
            "*,https://a.example",
            "https://a.example/x",
        ] {
            let flag = format!("--client_allow_origin={bad}");
            assert!(
                err(&[flag.as_str()]).contains("--client_allow_origin"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nodes_parse() {
        let c = parse(&[
            "--node=n2",
            "--nodes=n1=127.0.0.1:9000:9001:9002, n2=127.0.0.1:9100:9101:9102,n3=[::1]:9000:9001:9002",
        ])
        .unwrap();
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(
            c.nodes[2],
            NodeSpec {
                name: "n3".into(),
                host: "::1".into(),
                client_port: 9000,
                admin_port: 9001,
                bus_port: 9002
            }
        );
        assert_eq!(c.nodes[2].client_addr(), "[::1]:9000");
        let me = c.self_node().unwrap();
        assert_eq!(me.name, "n2");
        // This node's ports come from its entry.
        assert_eq!(
            (c.client_port, c.admin_port, c.bus_port),
            (9100, 9101, 9102)
        );
        assert_eq!(c.advertise_addr(), "127.0.0.1:9100");
    }

    #[test]
    fn nodes_errors() {
        let two = "--nodes=n1=h1:9000:9001:9002,n2=h2:9000:9001:9002";
        let cases: &[(&[&str], &str)] = &[
            (&["--node=n1"], "--node requires --nodes"),
            (&[two], "--node: must name"),
            (&["--node=n9", two], "'n9' is not one of"),
            (
                &[
                    "--node=n1",
                    "--nodes=n1=h1:9000:9001:9002,n1=h2:9000:9001:9002",
                ],
                "duplicate node name",
            ),
            (
                &[
                    "--node=n1",
                    "--nodes=n1=h1:9000:9001:9002,=h2:9000:9001:9002",
                ],
                "empty node name",
            ),
            (
                &[
                    "--node=n1",
                    "--nodes=n1=h1:9000:9001:9002,n2=h1:9000:9101:9102",
                ],
                "used twice",
            ),
            (&["--node=n1", "--nodes=n1=h1:9000:9000:9002"], "used twice"),
            (
                &["--node=n1", "--nodes=n1=h1:0:9001:9002"],
                "between 1 and 65535",
            ),
            (
                &["--node=n1", "--nodes=n1=h1:9000:9001:70000"],
                "between 1 and 65535",
            ),
            (&["--node=n1", "--nodes=n1=h1:9000:9001"], "expected NAME="),
            (&["--node=n1", "--nodes=n1"], "expected NAME="),
            (&["--node=n1", "--nodes=n1=:9000:9001:9002"], "invalid host"),
            (
                &["--node=n1", two, "--client_port=9500"],
                "--client_port: 9500 conflicts",
            ),
            (
                &["--node=n1", two, "--advertise_host=other"],
                "--advertise_host",
            ),
        ];
        for (list, want) in cases {
            let e = err(list);
            assert!(e.contains(want), "{list:?}: {e}");
            assert!(e.contains("--node"), "{list:?}: {e}");
        }
    }

    #[test]
    fn node_ports_from_flagfile_yield_to_nodes_entry() {
        // A flagfile listing the default ports (like conf/default.conf) does not conflict.
        let path = flagfile(
            "ports",
            "--client_port=9000\n--admin_port=9001\n--bus_port=9002\n",
        );
        let c = parse(&[
            &format!("--flagfile={path}"),
            "--node=n2",
            "--nodes=n1=h1:9000:9001:9002,n2=h2:9100:9101:9102",
        ])
        .unwrap();
        assert_eq!(c.client_port, 9100);
        assert_eq!(c.advertise_addr(), "h2:9100");
        // Repeating the entry's own port on the command line is fine.
        assert!(parse(&[
            "--client_port=9100",
            "--node=n2",
            "--nodes=n1=h1:9000:9001:9002,n2=h2:9100:9101:9102",
        ])
        .is_ok());
    }

    #[test]
    fn debug_redacts_secret() {
        let c = parse(&["--auth=jwt", "--auth_secret=topsecret"]).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("topsecret") && d.contains("<redacted>"), "{d}");
    }

    #[test]
    fn default_conf_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/default.conf");
        let c = parse(&[&format!("--flagfile={path}")]).unwrap();
        let d = parse(&[]).unwrap();
        // The file states the defaults: the result equals a run without it (bar `flagfile`).
        assert_eq!(
            format!(
                "{:?}",
                Config {
                    flagfile: None,
                    ..c
                }
            ),
            format!("{d:?}")
        );
    }
}
