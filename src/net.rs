//! Binding listeners at start-up (main thread): every listener (client, admin, bus, and the
//! start-up probe) binds through [`retry_bind`], which waits out a port still held by a process
//! that just died.
//!
//! After `kill -9` the kernel keeps a dead server's listening sockets for a few milliseconds
//! more (io_uring tears its files down asynchronously), so an immediate restart on the same
//! ports would fail with "Address already in use". Like nginx, we retry the bind for a bounded
//! time and log each retry, then give up with the last error.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long a bind is retried while its address is in use.
pub const BIND_RETRY_FOR: Duration = Duration::from_secs(5);
/// Pause between two bind attempts.
pub const BIND_RETRY_EVERY: Duration = Duration::from_millis(50);

/// Runs `bind` until it succeeds, fails with an error other than "address in use"
/// (`in_use(&err)` false), or [`BIND_RETRY_FOR`] has passed; returns its last result. `what`
/// names the listener in the log (e.g. "--client_port 0.0.0.0:9000"), logged at the first
/// failure and then once a second.
pub fn retry_bind<T, E: Display>(
    what: &str,
    in_use: impl Fn(&E) -> bool,
    bind: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    retry_bind_for(what, BIND_RETRY_FOR, BIND_RETRY_EVERY, in_use, bind)
}

/// [`retry_bind`] with an explicit bound and pause.
pub fn retry_bind_for<T, E: Display>(
    what: &str,
    limit: Duration,
    every: Duration,
    in_use: impl Fn(&E) -> bool,
    mut bind: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let mut logged: Option<Instant> = None;
    loop {
        match bind() {
            Err(e) if in_use(&e) && start.elapsed() < limit => {
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        "bind of {what} failed ({e}); retrying for up to {:.1} s",
                        limit.saturating_sub(start.elapsed()).as_secs_f64()
                    );
                    logged = Some(Instant::now());
                }
                std::thread::sleep(every);
            }
            r => {
                if r.is_ok() && logged.is_some() {
                    tracing::info!(
                        "bound {what} after {} ms of retries",
                        start.elapsed().as_millis()
                    );
                }
                return r;
            }
        }
    }
}

/// The `in_use` test of [`retry_bind`] for `std::io` errors.
pub fn io_in_use(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrInUse
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn retries_while_in_use_then_succeeds() {
        let mut n = 0;
        let r: Result<u32, Error> = retry_bind_for(
            "test",
            Duration::from_secs(5),
            Duration::from_millis(1),
            io_in_use,
            || {
                n += 1;
                if n < 4 {
                    Err(ErrorKind::AddrInUse.into())
                } else {
                    Ok(n)
                }
            },
        );
        assert_eq!(r.unwrap(), 4);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut n = 0;
        let r: Result<(), Error> = retry_bind_for(
            "test",
            Duration::from_secs(5),
            Duration::from_millis(1),
            io_in_use,
            || {
                n += 1;
                Err(ErrorKind::PermissionDenied.into())
            },
        );
        assert_eq!(r.unwrap_err().kind(), ErrorKind::PermissionDenied);
        assert_eq!(n, 1);
    }

    #[test]
    fn gives_up_after_the_bound() {
        let start = Instant::now();
        let r: Result<(), Error> = retry_bind_for(
            "test",
            Duration::from_millis(100),
            Duration::from_millis(10),
            io_in_use,
            || Err(ErrorKind::AddrInUse.into()),
        );
        assert_eq!(r.unwrap_err().kind(), ErrorKind::AddrInUse);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}
