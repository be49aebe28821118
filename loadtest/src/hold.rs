//! `loadtest hold`: open N streams (chunked, WebSocket or SSE) at a ramp rate with the
//! connection engine, hold them, report; samples the server's memory (/proc, `--pids`)
//! before connecting, once every connect finished, and at the end of the hold.

use crate::engine::{self, EngineOpts, EngineReport, Observer, Snapshot, FD_MARGIN};
use crate::report::HoldReport;
use crate::sys::{self, Kernel, Mem};
use crate::transport::{Codec, Transport};
use anyhow::{bail, Result};

/// Size of the local ephemeral port range.
fn port_range_size() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Reads the server's memory when the ramp settles and at the end; prints progress.
struct Hold<'a> {
    hold_secs: f64,
    pids: &'a [u32],
    progress: bool,
    is_tty: bool,
    last_connected: u64,
    mem_after: Option<Mem>,
    kernel_after: Option<Kernel>,
    mem_end: Option<Mem>,
    kernel_end: Option<Kernel>,
}

impl Hold<'_> {
    fn read_mem(&self) -> Option<Mem> {
        if self.pids.is_empty() {
            None
        } else {
            sys::read_mem(self.pids).ok()
        }
    }
}

impl Observer for Hold<'_> {
    fn tick(&mut self, s: &Snapshot) {
        if s.done {
            self.mem_end = self.read_mem();
            self.kernel_end = sys::read_kernel();
            if self.progress && self.is_tty {
                eprintln!();
            }
            return;
        }
        let rate = s.connected - self.last_connected;
        self.last_connected = s.connected;
        if self.progress {
            let line = format!(
                "[{:6.1}s] held={} opening={} failed={} rate={}/s msgs={}",
                s.t_secs, s.held, s.opening, s.failed, rate, s.messages
            );
            if self.is_tty {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    fn wants_intervals(&self) -> bool {
        false
    }

    fn settled(&mut self, r: &EngineReport) {
        self.mem_after = self.read_mem();
        self.kernel_after = sys::read_kernel();
        if self.progress {
            eprintln!(
                "{}settled after {:.2}s: held={} failed={}; holding {}s",
                if self.is_tty { "\r\x1b[K" } else { "" },
                r.ramp_secs,
                r.held_at_settle,
                r.failures.total(),
                self.hold_secs
            );
        }
    }
}

/// Run `hold` with `opts` (no failure limit; ticks drive the progress line) against the
/// servers whose memory `pids` names.
pub fn run(opts: EngineOpts, pids: Vec<u32>, progress: bool) -> Result<HoldReport> {
    let conns = opts.uids.len();
    if conns == 0 {
        bail!("--conns must be > 0");
    }
    if opts.rate == 0 {
        bail!("--rate must be > 0");
    }
    if opts.transport == Transport::Sse && opts.codec == Codec::Msgpack {
        bail!("--codec msgpack is not available with --transport sse (a text-only transport)");
    }
    let limit = sys::raise_nofile()?;
    if conns + FD_MARGIN > limit {
        bail!(
            "--conns {} does not fit the open-file limit {} (minus a margin of {}); \
             use at most {} per process",
            conns,
            limit,
            FD_MARGIN,
            limit.saturating_sub(FD_MARGIN)
        );
    }
    if let Some(ports) = port_range_size() {
        let srcs = opts.src.len().max(1) as u64;
        if conns > ports * srcs {
            eprintln!(
                "warning: {} connections from {} source address(es) exceed the {} local ports; \
                 pass a larger --src range",
                conns, srcs, ports
            );
        }
    }
    let mem_before = if pids.is_empty() {
        None
    } else {
        Some(sys::read_mem(&pids)?)
    };
    let kernel_before = sys::read_kernel();
    let mut hold = Hold {
        hold_secs: opts.hold_secs,
        pids: &pids,
        progress,
        is_tty: unsafe { libc::isatty(2) } == 1,
        last_connected: 0,
        mem_after: None,
        kernel_after: None,
        mem_end: None,
        kernel_end: None,
    };
    let run = engine::run(&opts, &engine::never(), &mut hold)?;
    let Hold {
        mem_after,
        kernel_after,
        mem_end,
        kernel_end,
        ..
    } = hold;
    Ok(HoldReport {
        target: opts.target.clone(),
        conns,
        rate: opts.rate,
        hold_secs: opts.hold_secs,
        transport: opts.transport.name(),
        codec: opts.codec.name(),
        run,
        pids,
        mem_before,
        mem_after,
        mem_end,
        kernel_before,
        kernel_after,
        kernel_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Uids;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// A server on a thread: reads each request head and answers by the uid's number
    /// (`lt{n}`) with `reply(n, request path)`; keeps every answered socket open.
    fn serve(reply: impl Fn(u64, &str) -> String + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
                let n = path
                    .split("uid=lt")
                    .nth(1)
                    .and_then(|x| x.split('&').next()?.parse().ok())
                    .unwrap_or(0);
                let mut s = r.into_inner();
                let _ = s.write_all(reply(n, &path).as_bytes());
                open.push(s);
            }
        });
        addr
    }

    const STREAM: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Through the engine, `hold` follows a 303 to another server and counts each
    /// failure by kind: 503 (status), a stream that ends (closed while held).
    #[test]
    fn hold_follows_redirects_and_counts_failures() {
        let other = serve(|_, _| STREAM.to_string());
        let target = serve(move |n, path| match n % 4 {
            0 => STREAM.to_string(),
            1 => format!("HTTP/1.1 303 See Other\r\nLocation: http://{other}{path}\r\n\r\n"),
            2 => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string(),
            _ => format!("{STREAM}2\r\nhi\r\n0\r\n\r\n"),
        });
        let opts = EngineOpts {
            target,
            uids: Uids::Range {
                prefix: "lt".into(),
                start: 0,
                count: 40,
            },
            password: "pw".into(),
            auth_secret: None,
            transport: Transport::Chunked,
            codec: Codec::Json,
            src: Vec::new(),
            rate: 2000,
            max_failures: 0,
            hold_secs: 0.3,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            tick: Duration::from_secs(1),
        };
        let r = run(opts, Vec::new(), false).unwrap();
        let j = r.to_json();
        assert_eq!(j["attempted"], 40, "{j}");
        assert_eq!(j["connected"], 30, "{j}");
        assert_eq!(j["redirects"], 10, "{j}");
        assert_eq!(j["held_at_end"], 20, "{j}");
        assert_eq!(j["failed"], 20, "{j}");
        assert_eq!(j["failures"]["status"], 10, "{j}");
        assert_eq!(j["status_codes"]["503"], 10, "{j}");
        assert_eq!(j["failures"]["closed_while_held"], 10, "{j}");
        assert_eq!(j["messages_received"], 10, "{j}");
        assert_eq!(j["connect_latency_us"]["count"], 30, "{j}");
        assert_eq!(j["completed"], true, "{j}");
        assert_eq!(j["success"], false, "{j}");
        assert!(r.to_text().contains("-> FAILURES"));
    }
}
