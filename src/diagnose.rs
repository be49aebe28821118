//! Start-up failures explained (main thread): turns the error a core's executor died with
//! into its cause and the fix, e.g. the locked-memory limit io_uring needs.

/// The locked-memory limit (soft, bytes) of this process; `None` = unlimited or unknown.
pub fn memlock_limit() -> Option<u64> {
    // SAFETY: getrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) != 0 || r.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        Some(r.rlim_cur)
    }
}

/// Below this locked-memory limit glommio's rings cannot be set up: it asks for 512 KiB
/// (`MemLockLimit(65536/524288)` under the old kernel default of 64 KiB).
pub const MEMLOCK_NEEDED: u64 = 512 << 10;

/// The message for a core whose executor failed with `error` before it started serving.
pub fn core_start_failure(error: &str) -> String {
    explain(error, memlock_limit())
}

/// [`core_start_failure`] with the locked-memory limit given (pure, for tests).
pub fn explain(error: &str, memlock: Option<u64>) -> String {
    let e = error.to_ascii_lowercase();
    let memory =
        e.contains("cannot allocate memory") || e.contains("enomem") || e.contains("memlock");
    let low = memlock.is_some_and(|l| l < MEMLOCK_NEEDED);
    if memory || low {
        let have = match memlock {
            Some(l) => format!("the limit is {} KiB", l / 1024),
            None => "the limit is unlimited".to_string(),
        };
        return format!(
            "a core could not start its io_uring ({error}): io_uring needs locked memory and \
             {have}; raise it with `ulimit -l unlimited` (systemd: LimitMEMLOCK=infinity, \
             docker: --ulimit memlock=-1)"
        );
    }
    if e.contains("function not implemented")
        || e.contains("enosys")
        || e.contains("operation not permitted")
        || e.contains("eperm")
    {
        return format!(
            "a core could not start io_uring ({error}): this kernel does not offer io_uring to \
             this process. ipush needs Linux 5.8 or later with io_uring enabled \
             (sysctl kernel.io_uring_disabled=0); in docker, the default seccomp profile may \
             block it: run with --security-opt seccomp=unconfined or a profile allowing \
             io_uring_setup, io_uring_enter and io_uring_register"
        );
    }
    format!("a core stopped during start-up: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_memlock_names_the_fix() {
        let m = explain(
            "IO error occurred: MemLockLimit(65536/524288)",
            Some(64 << 10),
        );
        assert!(m.contains("ulimit -l unlimited"), "{m}");
        assert!(m.contains("--ulimit memlock=-1"), "{m}");
        assert!(m.contains("64 KiB"), "{m}");
        let m = explain("Cannot allocate memory (os error 12)", None);
        assert!(m.contains("ulimit -l unlimited"), "{m}");
        // A low limit is named even when the error text does not say memory.
        assert!(explain("something odd", Some(0)).contains("ulimit -l"));
    }

    #[test]
    fn missing_io_uring_names_the_kernel() {
        let m = explain("Function not implemented (os error 38)", None);
        assert!(m.contains("io_uring"), "{m}");
        assert!(m.contains("seccomp"), "{m}");
        assert!(!m.contains("ulimit"), "{m}");
    }

    #[test]
    fn other_errors_are_passed_on() {
        let m = explain("no such device", Some(1 << 30));
        assert_eq!(m, "a core stopped during start-up: no such device");
    }
}
