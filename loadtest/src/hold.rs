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
        serve_then(move |n, path| (reply(n, path).into_bytes(), true))
    }

    /// [`serve`] where `reply` also says whether to keep the socket open.
    fn serve_then(reply: impl Fn(u64, &str) -> (Vec<u8>, bool) + Send + 'static) -> String {
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
                let (answer, keep) = reply(n, &path);
                let _ = s.write_all(&answer);
                if keep {
                    open.push(s);
                }
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

    fn opts(target: String, transport: Transport, count: u64) -> EngineOpts {
        EngineOpts {
            target,
            uids: Uids::Range {
                prefix: "lt".into(),
                start: 0,
                count,
            },
            password: "pw".into(),
            auth_secret: None,
            transport,
            codec: Codec::Json,
            src: Vec::new(),
            rate: 2000,
            max_failures: 0,
            hold_secs: 0.5,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            tick: Duration::from_secs(1),
        }
    }

    /// The stream head and a heartbeat, then the move signal (with `location`, or without
    /// one) and the stream's end, in `t`'s framing.
    fn moved_stream(t: Transport, location: Option<&str>) -> Vec<u8> {
        let signal = match location {
            Some(l) => format!("{{\"error\":\"moved\",\"location\":\"{l}\"}}"),
            None => "{\"error\":\"moved\"}".to_string(),
        };
        match t {
            Transport::Chunked => format!(
                "{STREAM}7\r\n{{\"y\":0}}\r\n{:x}\r\n{signal}\r\n0\r\n\r\n",
                signal.len()
            )
            .into_bytes(),
            Transport::Ws => {
                let mut v = held_stream(t).into_bytes();
                v.extend_from_slice(b"\x81\x07{\"y\":0}");
                // Close 1012 with the JSON as its reason.
                v.extend_from_slice(&[0x88, signal.len() as u8 + 2, 0x03, 0xf4]);
                v.extend_from_slice(signal.as_bytes());
                v
            }
            Transport::Sse => format!(
                "{}data: {{\"y\":0}}\n\nevent: moved\ndata: {signal}\n\n",
                held_stream(t)
            )
            .into_bytes(),
        }
    }

    fn held_stream(t: Transport) -> String {
        match t {
            Transport::Chunked => STREAM.to_string(),
            Transport::Ws => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_string(),
            Transport::Sse => "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n".to_string(),
        }
    }

    /// Every stream is told to move (each transport, with and without a location): it
    /// reconnects, through a 303 when the signal has no location, and is held there.
    #[test]
    fn hold_follows_moves() {
        for t in [Transport::Chunked, Transport::Ws, Transport::Sse] {
            for with_location in [true, false] {
                let other = serve(move |_, _| held_stream(t));
                let to = other.clone();
                let seen = std::sync::Mutex::new(std::collections::HashSet::new());
                let target = serve_then(move |n, path| {
                    if seen.lock().unwrap().insert(n) {
                        let loc = format!("http://{to}{path}");
                        let loc = with_location.then_some(loc.as_str());
                        // SSE ends by closing the connection.
                        (moved_stream(t, loc), t != Transport::Sse)
                    } else {
                        let r = format!(
                            "HTTP/1.1 303 See Other\r\nLocation: http://{to}{path}\r\n\r\n"
                        );
                        (r.into_bytes(), true)
                    }
                });
                let r = run(opts(target, t, 10), Vec::new(), false).unwrap();
                let j = r.to_json();
                let case = format!("{t:?} location {with_location}: {j}");
                assert_eq!(j["connected"], 10, "{case}");
                assert_eq!(j["moves"], 10, "{case}");
                assert_eq!(j["redirects"], if with_location { 0 } else { 10 }, "{case}");
                assert_eq!(j["held_at_end"], 10, "{case}");
                assert_eq!(j["failed"], 0, "{case}");
                assert_eq!(j["success"], true, "{case}");
                assert!(r.to_text().contains("10 moves"), "{case}");
            }
        }
    }

    /// A stream that ends without the move signal is still a failure (no reconnect).
    #[test]
    fn hold_end_without_move_is_a_failure() {
        for t in [Transport::Chunked, Transport::Ws, Transport::Sse] {
            let target = serve_then(move |_, _| {
                let mut v = held_stream(t).into_bytes();
                v.extend_from_slice(match t {
                    Transport::Chunked => b"18\r\n{\"error\":\"disconnected\"}\r\n0\r\n\r\n",
                    // Close 1001 (going away) without a reason.
                    Transport::Ws => b"\x88\x02\x03\xe9",
                    Transport::Sse => b"data: {\"error\":\"disconnected\"}\n\n",
                });
                (v, t != Transport::Sse)
            });
            let r = run(opts(target, t, 4), Vec::new(), false).unwrap();
            let j = r.to_json();
            assert_eq!(j["moves"], 0, "{t:?}: {j}");
            assert_eq!(j["failures"]["closed_while_held"], 4, "{t:?}: {j}");
            assert_eq!(j["success"], false, "{t:?}: {j}");
        }
    }
}
