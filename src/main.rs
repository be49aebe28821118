//! `ipush_server`: flags → logging → one executor per core → wait for SIGTERM/SIGINT.

use std::sync::Arc;

use ipush::config::{self, AuthMode, ConfigError, LogFormat};
use ipush::lockfile::{LockError, LockFile};
use ipush::shutdown::Signal;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("gentoken") {
        match ipush::auth::gentoken(std::env::args().skip(1)) {
            Ok(token) => println!("{token}"),
            Err(ConfigError::Clap(e)) => e.exit(),
            Err(e) => {
                eprintln!("ipush_server gentoken: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    let cfg = match config::parse_args(std::env::args()) {
        Ok(c) => c,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("ipush_server: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&cfg);
    if cfg.auth == AuthMode::None {
        tracing::warn!("--auth=none: any non-empty password is accepted (development only)");
    }
    raise_fd_limit();
    fix_mmap_threshold();

    let stop = Arc::new(Signal::new(cfg.cores.max(1) + 1));
    if let Err(e) = on_signal(stop.clone()) {
        eprintln!("ipush_server: cannot install the signal handler: {e}");
        std::process::exit(1);
    }
    // Locked for the life of the process: a second server with the same --pid_file is refused
    // rather than overwriting (and at its exit deleting) a live server's pid file.
    let mut pid_lock = match cfg.pid_path() {
        None => None,
        Some(path) => match LockFile::acquire(&path) {
            Ok(l) => Some(l),
            Err(e @ LockError::Held { .. }) => {
                eprintln!(
                    "ipush_server: --pid_file {} belongs to a running server: {e}. Give every \
                     server its own --pid_file (and --data_dir), or stop the other one",
                    path.display()
                );
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("ipush_server: --pid_file: {e}");
                std::process::exit(1);
            }
        },
    };
    let res = ipush::server::run(cfg, stop, |bound| {
        report_ready(bound);
        if let Some(l) = &mut pid_lock {
            if let Err(e) = l.write_pid() {
                tracing::error!(path = %l.path().display(), error = %e, "cannot write --pid_file");
            }
        }
    });
    if let Some(l) = pid_lock {
        // Still locked by us, so the file is ours to remove.
        let _ = std::fs::remove_file(l.path());
    }
    match res {
        Ok(()) => tracing::info!("ipush_server stopped"),
        Err(e) => {
            eprintln!("ipush_server: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Logs to stderr at `--log_level`, as `--log_format` says; ANSI colours only on a terminal
/// (and not when `NO_COLOR` is set), so journald and log files get plain text.
fn init_logging(cfg: &config::Config) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::new(format!("ipush={0},ipush_server={0}", cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init()
        }
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// One line on stdout for whoever started us (tests, scripts): the addresses bound (port 0
/// asks the kernel for a free one).
fn report_ready(bound: &ipush::server::Bound) {
    use std::io::Write;
    let bus = bound
        .bus
        .map(|p| format!(" bus_port={p}"))
        .unwrap_or_default();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "ipush_server ready client={} admin={}{bus} pid={}",
        bound.client,
        bound.admin,
        std::process::id()
    );
    let _ = out.flush();
}

/// SIGTERM and SIGINT fire `stop` (from a thread of their own).
fn on_signal(stop: Arc<Signal>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("ipush-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.fire();
            }
        })?;
    Ok(())
}

/// Allocations of 128 KiB and more always get their own mapping, returned to the kernel when
/// freed. glibc otherwise raises the threshold after the first big free (up to 32 MiB), so a
/// compaction's lists and a big `/pub/batch` body then come from the heap, between the
/// index's small allocations, and their pages stay in RSS (measured with perf/store-memory.sh:
/// 67 -> 63 B of RSS per stored message while serving).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Streams are file descriptors: take the whole hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
