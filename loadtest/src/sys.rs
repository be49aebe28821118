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

/// System-wide kernel memory (the server's and the load generator's sockets both count when
/// they share a machine), in bytes unless named otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// /proc/meminfo Slab, SUnreclaim.
    pub slab: u64,
    pub sunreclaim: u64,
    /// /proc/net/sockstat `TCP: inuse` and `mem` (pages of socket buffers, as bytes).
    pub tcp_inuse: u64,
    pub tcp_mem: u64,
}

fn sockstat_field(text: &str, proto: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(proto))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next()?.parse().ok();
        }
    }
    None
}

pub fn parse_kernel(meminfo: &str, sockstat: &str, page: u64) -> Kernel {
    Kernel {
        slab: kb_field(meminfo, "Slab").unwrap_or(0),
        sunreclaim: kb_field(meminfo, "SUnreclaim").unwrap_or(0),
        tcp_inuse: sockstat_field(sockstat, "TCP:", "inuse").unwrap_or(0),
        tcp_mem: sockstat_field(sockstat, "TCP:", "mem").unwrap_or(0) * page,
    }
}

pub fn read_kernel() -> Option<Kernel> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(parse_kernel(&meminfo, &sockstat, page.max(1) as u64))
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
    fn kernel_parsing() {
        let mi =
            "MemTotal: 100 kB\nSlab:     2000 kB\nSReclaimable: 1500 kB\nSUnreclaim:  500 kB\n";
        let ss =
            "sockets: used 11\nTCP: inuse 7 orphan 0 tw 3 alloc 9 mem 151\nUDP: inuse 0 mem 2\n";
        let k = parse_kernel(mi, ss, 4096);
        assert_eq!(k.slab, 2000 * 1024);
        assert_eq!(k.sunreclaim, 500 * 1024);
        assert_eq!(k.tcp_inuse, 7);
        assert_eq!(k.tcp_mem, 151 * 4096);
    }

    #[test]
    fn own_memory() {
        let m = read_mem(&[std::process::id()]).unwrap();
        assert!(m.rss > 0);
    }
}
