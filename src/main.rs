//! `ipush_server`: flags → logging → one executor per core → wait for SIGTERM/SIGINT.

use std::sync::Arc;

use ipush::config::{self, AuthMode, ConfigError};
use ipush::shutdown::Signal;

fn main() {
    let cfg = match config::parse_args(std::env::args()) {
        Ok(c) => c,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("ipush_server: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "ipush={0},ipush_server={0}",
            cfg.log_level
        )))
        .with_writer(std::io::stderr)
        .init();
    if cfg.auth == AuthMode::None {
        tracing::warn!("--auth=none: any non-empty password is accepted (development only)");
    }
    raise_fd_limit();

    let stop = Arc::new(Signal::new(cfg.cores.max(1) + 1));
    if let Err(e) = on_signal(stop.clone()) {
        eprintln!("ipush_server: cannot install the signal handler: {e}");
        std::process::exit(1);
    }
    let pid_file = cfg.pid_file.clone();
    let mut wrote_pid = false;
    let res = ipush::server::run(cfg, stop, |bound| {
        // One line on stdout for whoever started us (tests, scripts): the addresses bound.
        let bus = bound
            .bus
            .map(|p| format!(" bus_port={p}"))
            .unwrap_or_default();
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "ipush_server ready client={} admin={}{bus} pid={}",
            bound.client,
            bound.admin,
            std::process::id()
        );
        let _ = std::io::stdout().flush();
        if !pid_file.is_empty() {
            match std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
                Ok(()) => wrote_pid = true,
                Err(e) => tracing::error!(path = %pid_file, error = %e, "cannot write --pid_file"),
            }
        }
    });
    if wrote_pid {
        let _ = std::fs::remove_file(&pid_file);
    }
    match res {
        Ok(()) => tracing::info!("ipush_server stopped"),
        Err(e) => {
            eprintln!("ipush_server: {e:#}");
            std::process::exit(1);
        }
    }
}

/// SIGTERM and SIGINT fire `stop` (from a thread of their own).
fn on_signal(stop: Arc<Signal>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::Builder::new()
        .name("ipush-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.fire();
            }
        })?;
    Ok(())
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
