//! OS helpers: fd limit, source-address ranges, server memory from /proc.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;

/// Raise RLIMIT_NOFILE soft to hard; returns the new soft limit.
pub fn raise_nofile() -> Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
            rl.rlim_cur = rl.rlim_max;
        }
    }
    Ok(rl.rlim_cur)
}

/// `127.0.0.2-127.0.0.20`, `127.0.0.2`, or a comma list of either.
pub fn parse_src(spec: &str) -> Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a
                    .trim()
                    .parse()
                    .with_context(|| format!("bad address {a:?}"))?;
                let b: Ipv4Addr = b
                    .trim()
                    .parse()
                    .with_context(|| format!("bad address {b:?}"))?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a {
                    bail!("empty source range {part:?}");
                }
                if b - a > 65_535 {
                    bail!("source range {part:?} too large");
                }
                out.extend((a..=b).map(Ipv4Addr::from));
            }
            None => out.push(
                part.parse()
                    .with_context(|| format!("bad address {part:?}"))?,
            ),
        }
    }
    if out.is_empty() {
        bail!("no source addresses in {spec:?}");
    }
    Ok(out)
}

pub fn parse_pids(spec: &str) -> Result<Vec<u32>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|p| p.parse::<u32>().with_context(|| format!("bad pid {p:?}")))
        .collect()
}

/// Memory of a set of processes, summed, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mem {
    /// VmRSS from /proc/PID/status.
    pub rss: u64,
    /// From /proc/PID/smaps_rollup (0 when unavailable).
    pub pss: u64,
    pub private_dirty: u64,
    pub anonymous: u64,
}

/// Value in bytes of a `Key:   123 kB` line.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let num = rest.split_whitespace().next()?.parse::<u64>().ok()?;
        Some(num * 1024)
    })
}

pub fn parse_status(text: &str) -> Option<u64> {
    kb_field(text, "VmRSS")
}

pub fn parse_rollup(text: &str) -> (u64, u64, u64) {
    (
        kb_field(text, "Pss").unwrap_or(0),
        kb_field(text, "Private_Dirty").unwrap_or(0),
        kb_field(text, "Anonymous").unwrap_or(0),
    )
}

pub fn read_mem(pids: &[u32]) -> Result<Mem> {
    let mut m = Mem::default();
    for &pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        m.rss += parse_status(&status).with_context(|| format!("no VmRSS for pid {pid}"))?;
        if let Ok(r) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            let (pss, pd, anon) = parse_rollup(&r);
            m.pss += pss;
            m.private_dirty += pd;
            m.anonymous += anon;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn src_ranges() {
        let v = parse_src("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(
            v,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4)
            ]
        );
        let v = parse_src("10.0.0.255-10.0.1.0, 127.0.0.9").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], Ipv4Addr::new(10, 0, 1, 0));
        assert!(parse_src("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_src("x").is_err());
        assert!(parse_src("").is_err());
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pids("1, 22,333").unwrap(), vec![1, 22, 333]);
        assert!(parse_pids("1,a").is_err());
    }

    #[test]
    fn proc_parsing() {
        let status = "Name:\tx\nVmHWM:\t  9000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_status(status), Some(1234 * 1024));
        let rollup = "55d0-7ff [rollup]\nRss:  100 kB\nPss:   90 kB\nPss_Anon:  5 kB\nPrivate_Dirty:  40 kB\nAnonymous:   30 kB\n";
        assert_eq!(parse_rollup(rollup), (90 * 1024, 40 * 1024, 30 * 1024));
    }

    #[test]
    fn own_memory() {
        let m = read_mem(&[std::process::id()]).unwrap();
        assert!(m.rss > 0);
    }
}
