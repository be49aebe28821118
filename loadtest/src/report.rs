//! The `hold` report: counters, latency histogram, server memory; rendered as
//! JSON (`--json`) or text.

use crate::engine::EngineReport;
use crate::sys::{Kernel, Mem};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

#[derive(Debug)]
pub struct HoldReport {
    pub target: String,
    pub conns: u64,
    pub rate: u64,
    pub hold_secs: f64,
    /// `chunked`, `ws` or `sse`.
    pub transport: &'static str,
    /// `json` or `msgpack`.
    pub codec: &'static str,
    /// The engine's counters: connects, failures, latency, messages, ramp and hold times.
    pub run: EngineReport,
    pub pids: Vec<u32>,
    pub mem_before: Option<Mem>,
    pub mem_after: Option<Mem>,
    pub mem_end: Option<Mem>,
    /// System-wide kernel memory at the same three points.
    pub kernel_before: Option<Kernel>,
    pub kernel_after: Option<Kernel>,
    pub kernel_end: Option<Kernel>,
}

impl HoldReport {
    pub fn connects_per_sec(&self) -> f64 {
        if self.run.ramp_secs > 0.0 {
            self.run.connected as f64 / self.run.ramp_secs
        } else {
            0.0
        }
    }

    /// (after - before) / held_at_settle for one memory field.
    fn per_stream(&self, f: fn(&Mem) -> u64) -> Option<f64> {
        let (b, a) = (self.mem_before?, self.mem_after?);
        if self.run.held_at_settle == 0 {
            return None;
        }
        Some((f(&a) as f64 - f(&b) as f64) / self.run.held_at_settle as f64)
    }

    /// (end - before) / held_at_end: the same figure once the streams sat idle for the hold.
    fn per_stream_end(&self, f: fn(&Mem) -> u64) -> Option<f64> {
        let (b, e) = (self.mem_before?, self.mem_end?);
        if self.run.held_at_end == 0 || !self.run.completed {
            return None;
        }
        Some((f(&e) as f64 - f(&b) as f64) / self.run.held_at_end as f64)
    }

    /// Kernel bytes per held stream (end of hold minus before), system-wide: with the load
    /// generator on the same machine this counts both ends of each connection.
    fn kernel_per_conn(&self, f: fn(&Kernel) -> u64) -> Option<f64> {
        let (b, e) = (self.kernel_before?, self.kernel_end?);
        if self.run.held_at_end == 0 || !self.run.completed {
            return None;
        }
        Some((f(&e) as f64 - f(&b) as f64) / self.run.held_at_end as f64)
    }

    /// Everything ok: every stream held to the end, nothing failed.
    pub fn success(&self) -> bool {
        self.run.completed && self.run.failures.total() == 0 && self.run.held_at_end == self.conns
    }

    pub fn latency_json(&self) -> Value {
        crate::latency::hist_json(&self.run.latency_us)
    }

    pub fn to_json(&self) -> Value {
        let f = &self.run.failures;
        let codes: Map<String, Value> = self
            .run
            .status_codes
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let errors: Map<String, Value> = self
            .run
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mem = |m: &Option<Mem>| match m {
            Some(m) => json!({
                "rss": m.rss, "pss": m.pss,
                "private_dirty": m.private_dirty, "anonymous": m.anonymous,
            }),
            None => Value::Null,
        };
        let kernel = |k: &Option<Kernel>| match k {
            Some(k) => json!({
                "slab": k.slab, "sunreclaim": k.sunreclaim,
                "tcp_inuse": k.tcp_inuse, "tcp_mem": k.tcp_mem,
            }),
            None => Value::Null,
        };
        let round1 = |x: Option<f64>| x.map(|v| (v * 10.0).round() / 10.0);
        json!({
            "scenario": "hold",
            "target": self.target,
            "conns": self.conns,
            "rate": self.rate,
            "hold_secs": self.hold_secs,
            "transport": self.transport,
            "codec": self.codec,
            "attempted": self.run.attempted,
            "connected": self.run.connected,
            "redirects": self.run.redirects,
            "moves": self.run.moves,
            "held_at_settle": self.run.held_at_settle,
            "held_at_end": self.run.held_at_end,
            "opening_at_end": self.run.opening_at_end,
            "failed": f.total(),
            "failures": {
                "refused": f.refused,
                "timeout": f.timeout,
                "status": f.status,
                "closed_while_held": f.closed_while_held,
                "closed_before_head": f.closed_before_head,
                "bad_response": f.bad_response,
                "other": f.other,
            },
            "status_codes": codes,
            "errors": errors,
            "connect_latency_us": self.latency_json(),
            "ramp_secs": (self.run.ramp_secs * 1000.0).round() / 1000.0,
            "connects_per_sec": self.connects_per_sec().round(),
            "elapsed_secs": (self.run.elapsed_secs * 1000.0).round() / 1000.0,
            "messages_received": self.run.messages,
            "heartbeats_received": self.run.heartbeats,
            "close_frames_received": self.run.closes,
            "bytes_received": self.run.bytes,
            "server_pids": self.pids,
            "server_rss_bytes_before": self.mem_before.map(|m| m.rss),
            "server_rss_bytes_after": self.mem_after.map(|m| m.rss),
            "server_rss_bytes_end": self.mem_end.map(|m| m.rss),
            "server_rss_bytes_per_stream": round1(self.per_stream(|m| m.rss)),
            "server_private_dirty_bytes_per_stream": round1(self.per_stream(|m| m.private_dirty)),
            "server_anonymous_bytes_per_stream": round1(self.per_stream(|m| m.anonymous)),
            "server_rss_bytes_per_stream_end": round1(self.per_stream_end(|m| m.rss)),
            "server_private_dirty_bytes_per_stream_end": round1(self.per_stream_end(|m| m.private_dirty)),
            "server_anonymous_bytes_per_stream_end": round1(self.per_stream_end(|m| m.anonymous)),
            "kernel_slab_bytes_per_conn": round1(self.kernel_per_conn(|k| k.slab)),
            "kernel_sunreclaim_bytes_per_conn": round1(self.kernel_per_conn(|k| k.sunreclaim)),
            "kernel_tcp_mem_bytes_per_conn": round1(self.kernel_per_conn(|k| k.tcp_mem)),
            "kernel_before": kernel(&self.kernel_before),
            "kernel_after": kernel(&self.kernel_after),
            "kernel_end": kernel(&self.kernel_end),
            "server_mem_before": mem(&self.mem_before),
            "server_mem_after": mem(&self.mem_after),
            "server_mem_end": mem(&self.mem_end),
            "completed": self.run.completed,
            "timed_out": self.run.timed_out,
            "success": self.success(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let f = &self.run.failures;
        let _ = writeln!(
            s,
            "hold {} ({}/{}): conns={} rate={}/s hold={}s -> {}",
            self.target,
            self.transport,
            self.codec,
            self.conns,
            self.rate,
            self.hold_secs,
            if self.success() {
                "OK"
            } else if self.run.timed_out {
                "TIMED OUT"
            } else {
                "FAILURES"
            }
        );
        let _ = writeln!(
            s,
            "  connected {} of {} attempted in {:.3}s ({:.0} connects/s), {} redirects, {} moves; held {} at settle, {} at end, {} still opening",
            self.run.connected,
            self.run.attempted,
            self.run.ramp_secs,
            self.connects_per_sec(),
            self.run.redirects,
            self.run.moves,
            self.run.held_at_settle,
            self.run.held_at_end,
            self.run.opening_at_end
        );
        let h = &self.run.latency_us;
        if !h.is_empty() {
            let ms = |v: u64| v as f64 / 1000.0;
            let _ = writeln!(
                s,
                "  connect latency ms: p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} max={:.3}",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max())
            );
        }
        let _ = writeln!(
            s,
            "  failed {}: refused={} timeout={} status={} closed_while_held={} closed_before_head={} bad_response={} other={}",
            f.total(),
            f.refused,
            f.timeout,
            f.status,
            f.closed_while_held,
            f.closed_before_head,
            f.bad_response,
            f.other
        );
        if !self.run.status_codes.is_empty() {
            let _ = writeln!(s, "  status codes: {:?}", self.run.status_codes);
        }
        if !self.run.errors.is_empty() {
            let _ = writeln!(s, "  errors: {:?}", self.run.errors);
        }
        let _ = writeln!(
            s,
            "  received {} messages ({} heartbeats), {} close frames, {} bytes",
            self.run.messages, self.run.heartbeats, self.run.closes, self.run.bytes
        );
        if let (Some(b), Some(a)) = (self.mem_before, self.mem_after) {
            let _ = writeln!(
                s,
                "  server RSS {} -> {} bytes; per stream: rss={:.1} private_dirty={:.1} anonymous={:.1} bytes",
                b.rss,
                a.rss,
                self.per_stream(|m| m.rss).unwrap_or(0.0),
                self.per_stream(|m| m.private_dirty).unwrap_or(0.0),
                self.per_stream(|m| m.anonymous).unwrap_or(0.0)
            );
        }
        if let Some(e) = self.mem_end {
            if self.run.completed && self.mem_before.is_some() {
                let _ = writeln!(
                    s,
                    "  server RSS at end of hold {} bytes; per stream: rss={:.1} private_dirty={:.1} anonymous={:.1} bytes",
                    e.rss,
                    self.per_stream_end(|m| m.rss).unwrap_or(0.0),
                    self.per_stream_end(|m| m.private_dirty).unwrap_or(0.0),
                    self.per_stream_end(|m| m.anonymous).unwrap_or(0.0)
                );
            }
        }
        if let Some(slab) = self.kernel_per_conn(|k| k.slab) {
            let _ = writeln!(
                s,
                "  kernel (system-wide, both ends) per connection: slab={:.1} sunreclaim={:.1} tcp_mem={:.1} bytes",
                slab,
                self.kernel_per_conn(|k| k.sunreclaim).unwrap_or(0.0),
                self.kernel_per_conn(|k| k.tcp_mem).unwrap_or(0.0)
            );
        }
        s
    }

    /// HdrHistogram-style percentile distribution (microseconds), for plotting.
    pub fn percentile_distribution(&self) -> String {
        crate::latency::percentile_distribution(&self.run.latency_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::Failures;

    fn report(target: String, conns: u64, rate: u64, hold_secs: f64, pids: Vec<u32>) -> HoldReport {
        HoldReport {
            target,
            conns,
            rate,
            hold_secs,
            transport: "chunked",
            codec: "json",
            run: EngineReport::new(),
            pids,
            mem_before: None,
            mem_after: None,
            mem_end: None,
            kernel_before: None,
            kernel_after: None,
            kernel_end: None,
        }
    }

    fn sample() -> HoldReport {
        let mut r = report("127.0.0.1:8000".into(), 4, 5000, 2.0, vec![42]);
        r.run.attempted = 4;
        r.run.connected = 3;
        r.run.held_at_settle = 3;
        r.run.held_at_end = 2;
        r.run.failures.status = 1;
        r.run.failures.closed_while_held = 1;
        r.run.status_codes.insert(503, 1);
        for us in [100, 200, 300] {
            r.run.latency_us.record(us).unwrap();
        }
        r.run.ramp_secs = 0.5;
        r.run.messages = 7;
        r.run.heartbeats = 2;
        r.mem_before = Some(Mem {
            rss: 1_000_000,
            pss: 900_000,
            private_dirty: 500_000,
            anonymous: 400_000,
        });
        r.mem_after = Some(Mem {
            rss: 1_003_000,
            pss: 902_000,
            private_dirty: 503_000,
            anonymous: 401_500,
        });
        r.run.completed = true;
        r
    }

    #[test]
    fn json_report() {
        let j = sample().to_json();
        assert_eq!(j["scenario"], "hold");
        assert_eq!(j["conns"], 4);
        assert_eq!(j["connected"], 3);
        assert_eq!(j["failed"], 2);
        assert_eq!(j["failures"]["status"], 1);
        assert_eq!(j["failures"]["closed_while_held"], 1);
        assert_eq!(j["failures"]["refused"], 0);
        assert_eq!(j["status_codes"]["503"], 1);
        assert_eq!(j["connect_latency_us"]["count"], 3);
        assert_eq!(j["connect_latency_us"]["p50"], 200);
        assert_eq!(j["connect_latency_us"]["max"], 300);
        assert!(j["connect_latency_us"]["p99_9"].is_u64());
        assert_eq!(j["connects_per_sec"], 6.0);
        assert_eq!(j["messages_received"], 7);
        assert_eq!(j["heartbeats_received"], 2);
        assert_eq!(j["close_frames_received"], 0);
        assert_eq!(j["transport"], "chunked");
        assert_eq!(j["codec"], "json");
        assert_eq!(j["server_rss_bytes_before"], 1_000_000);
        assert_eq!(j["server_rss_bytes_after"], 1_003_000);
        assert_eq!(j["server_rss_bytes_per_stream"], 1000.0);
        assert_eq!(j["server_anonymous_bytes_per_stream"], 500.0);
        assert!(j["server_rss_bytes_end"].is_null());
        assert_eq!(j["success"], false);
        // Round-trips as JSON text.
        let text = serde_json::to_string(&j).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn json_without_pids_or_samples() {
        let r = report("h:1".into(), 0, 1, 0.0, vec![]);
        let j = r.to_json();
        assert_eq!(j["connect_latency_us"], json!({"count": 0}));
        assert!(j["server_rss_bytes_per_stream"].is_null());
        assert_eq!(j["connects_per_sec"], 0.0);
    }

    #[test]
    fn success_and_text() {
        let mut r = sample();
        assert!(!r.success());
        r.run.failures = Failures::default();
        r.run.held_at_end = 4;
        assert!(r.success());
        let t = r.to_text();
        assert!(t.contains("-> OK"), "{t}");
        assert!(t.contains("per stream: rss=1000.0"), "{t}");
        assert!(r.percentile_distribution().contains("Total count = 3"));
    }
}
