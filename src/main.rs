//! `ipush_server`: flags → logging → one executor per core → wait for SIGTERM/SIGINT.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ipush::config::{self, AuthMode, ConfigError};

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

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ipush_server: cannot install the signal handler: {e}");
            std::process::exit(1);
        }
    }
    let pid_file = cfg.pid_file.clone();
    let mut wrote_pid = false;
    let res = ipush::server::run(cfg, stop, || {
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
