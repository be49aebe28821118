//! The report of the message scenarios (`fanout`, `unicast`, `chat`): delivery counts
//! and checks, throughput, HDR latency histograms; rendered as JSON, text, or an HDR
//! percentile distribution for plotting.

use crate::sys::Mem;
use crate::tally::new_histogram;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Percentiles of a µs histogram as JSON.
pub fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// One line `p50 … max` in µs.
pub fn hist_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "(none)".into();
    }
    format!(
        "p50={} p90={} p99={} p99.9={} max={} µs (n={})",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    )
}

/// HdrHistogram "percentile distribution" text (value in µs), the format plotters read.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut s = String::from("       Value_us   Percentile   TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        return s;
    }
    let mut total = 0u64;
    for v in h.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        total += v.count_since_last_iteration();
        let inv = if q < 1.0 {
            format!("{:.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{:15} {:12.6} {:12} {:>14}",
            v.value_iterated_to(),
            q,
            total,
            inv
        );
    }
    let _ = writeln!(
        s,
        "#[Mean = {:.3}, StdDeviation = {:.3}]\n#[Max = {}, Total count = {}]",
        h.mean(),
        h.stdev(),
        h.max(),
        h.len()
    );
    s
}

#[derive(Debug)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub target: String,
    pub transport: &'static str,
    /// `ipush` or `generic` (URL templates).
    pub mode: &'static str,
    pub streams: u64,
    pub messages: u64,
    pub rate: Option<f64>,
    pub seed: u64,
    // Streams.
    pub connected: u64,
    pub redirects: u64,
    /// Move signals followed (dynamic cluster).
    pub moves: u64,
    pub connect_failed: u64,
    pub connect_secs: f64,
    pub connect_latency_us: Histogram<u64>,
    pub failures: BTreeMap<String, u64>,
    /// Streams that ended (EOF, reset, close frame, error chunk) after their head.
    pub closed_unexpectedly: u64,
    /// `{"error":…}` messages received on streams, by reason.
    pub stream_errors: BTreeMap<String, u64>,
    pub subscribed: u64,
    pub subscribe_failed: u64,
    pub subscribe_secs: f64,
    // Publishing.
    pub published: u64,
    pub publish_failed: u64,
    pub publish_statuses: BTreeMap<u16, u64>,
    pub publish_secs: f64,
    pub publish_latency_us: Histogram<u64>,
    /// Chat: sends skipped because the sender's stream was gone.
    pub send_skipped: u64,
    // Deliveries.
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub misdelivered: u64,
    /// Per-member seq `s` not previous + 1 (ipush only).
    pub seq_errors: u64,
    /// Messages replayed after a move (seq already seen), dropped, same message as before.
    pub replayed: u64,
    /// Replayed seqs older than the stream remembers ([`crate::scenario_wire::SEQ_LOG`]).
    pub replayed_unchecked: u64,
    /// Replayed seqs that carried another message than the first time: an error.
    pub replay_mismatch: u64,
    /// Messages that did not parse (not JSON, no `lt:` body).
    pub unparsed: u64,
    pub heartbeats: u64,
    /// Deliveries of messages whose publish failed (not counted as expected).
    pub unacked_delivered: u64,
    pub latency_us: Histogram<u64>,
    /// First publish → last delivery.
    pub delivery_secs: f64,
    pub drain_timed_out: bool,
    pub timed_out: bool,
    pub elapsed_secs: f64,
    pub mem_before: Option<Mem>,
    pub mem_connected: Option<Mem>,
    pub mem_end: Option<Mem>,
    pub hold_secs: f64,
}

impl ScenarioReport {
    pub fn new(scenario: &'static str) -> Self {
        ScenarioReport {
            scenario,
            target: String::new(),
            transport: "chunked",
            mode: "ipush",
            streams: 0,
            messages: 0,
            rate: None,
            seed: 0,
            connected: 0,
            redirects: 0,
            moves: 0,
            connect_failed: 0,
            connect_secs: 0.0,
            connect_latency_us: new_histogram(),
            failures: BTreeMap::new(),
            closed_unexpectedly: 0,
            stream_errors: BTreeMap::new(),
            subscribed: 0,
            subscribe_failed: 0,
            subscribe_secs: 0.0,
            published: 0,
            publish_failed: 0,
            publish_statuses: BTreeMap::new(),
            publish_secs: 0.0,
            publish_latency_us: new_histogram(),
            send_skipped: 0,
            expected: 0,
            received: 0,
            unique: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            misdelivered: 0,
            seq_errors: 0,
            replayed: 0,
            replayed_unchecked: 0,
            replay_mismatch: 0,
            unparsed: 0,
            heartbeats: 0,
            unacked_delivered: 0,
            latency_us: new_histogram(),
            delivery_secs: 0.0,
            drain_timed_out: false,
            timed_out: false,
            elapsed_secs: 0.0,
            mem_before: None,
            mem_connected: None,
            mem_end: None,
            hold_secs: 0.0,
        }
    }

    pub fn delivered_per_sec(&self) -> f64 {
        if self.delivery_secs > 0.0 {
            self.unique as f64 / self.delivery_secs
        } else {
            0.0
        }
    }

    pub fn published_per_sec(&self) -> f64 {
        if self.publish_secs > 0.0 {
            self.published as f64 / self.publish_secs
        } else {
            0.0
        }
    }

    pub fn connects_per_sec(&self) -> f64 {
        if self.connect_secs > 0.0 {
            self.connected as f64 / self.connect_secs
        } else {
            0.0
        }
    }

    /// Server memory per connected stream (RSS growth / connected).
    pub fn rss_per_stream(&self) -> Option<f64> {
        let (a, b) = (self.mem_before?, self.mem_connected?);
        if self.connected == 0 {
            return None;
        }
        Some((b.rss as f64 - a.rss as f64) / self.connected as f64)
    }

    /// Everything delivered exactly once, in order, to the right stream; no failure.
    pub fn success(&self) -> bool {
        !self.timed_out
            && self.connect_failed == 0
            && self.closed_unexpectedly == 0
            && self.subscribe_failed == 0
            && self.publish_failed == 0
            && self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.misdelivered == 0
            && self.seq_errors == 0
            && self.replay_mismatch == 0
            && self.received == self.expected
    }

    fn mem_json(m: &Option<Mem>) -> Value {
        match m {
            Some(m) => {
                json!({"rss": m.rss, "pss": m.pss, "private_dirty": m.private_dirty, "anonymous": m.anonymous})
            }
            None => Value::Null,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "mode": self.mode,
            "target": self.target,
            "transport": self.transport,
            "streams": self.streams,
            "messages": self.messages,
            "rate": self.rate,
            "seed": self.seed,
            "success": self.success(),
            "timed_out": self.timed_out,
            "elapsed_secs": self.elapsed_secs,
            "connect": {
                "connected": self.connected,
                "failed": self.connect_failed,
                "redirects": self.redirects,
                "moves": self.moves,
                "secs": self.connect_secs,
                "per_sec": self.connects_per_sec(),
                "latency_us": hist_json(&self.connect_latency_us),
                "failures": self.failures,
            },
            "hold_secs": self.hold_secs,
            "subscribe": {
                "subscribed": self.subscribed,
                "failed": self.subscribe_failed,
                "secs": self.subscribe_secs,
            },
            "publish": {
                "published": self.published,
                "failed": self.publish_failed,
                "statuses": self.publish_statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "secs": self.publish_secs,
                "per_sec": self.published_per_sec(),
                "latency_us": hist_json(&self.publish_latency_us),
                "send_skipped": self.send_skipped,
            },
            "delivery": {
                "expected": self.expected,
                "received": self.received,
                "unique": self.unique,
                "lost": self.lost,
                "duplicated": self.duplicated,
                "out_of_order": self.out_of_order,
                "misdelivered": self.misdelivered,
                "seq_errors": self.seq_errors,
                "replayed": self.replayed,
                "replayed_unchecked": self.replayed_unchecked,
                "replay_mismatch": self.replay_mismatch,
                "unparsed": self.unparsed,
                "unacked_delivered": self.unacked_delivered,
                "heartbeats": self.heartbeats,
                "closed_unexpectedly": self.closed_unexpectedly,
                "stream_errors": self.stream_errors,
                "secs": self.delivery_secs,
                "per_sec": self.delivered_per_sec(),
                "drain_timed_out": self.drain_timed_out,
                "latency_us": hist_json(&self.latency_us),
            },
            "memory": {
                "before": Self::mem_json(&self.mem_before),
                "connected": Self::mem_json(&self.mem_connected),
                "end": Self::mem_json(&self.mem_end),
                "rss_per_stream": self.rss_per_stream(),
            },
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({}, {}) against {}: {} streams, {} messages{}",
            self.scenario,
            self.mode,
            self.transport,
            self.target,
            self.streams,
            self.messages,
            match self.rate {
                Some(r) => format!(" at {r}/s"),
                None => " as fast as possible".into(),
            }
        );
        let _ = writeln!(
            s,
            "  streams:   connected {} ({} redirects, {} moves) in {:.2}s = {:.0}/s, failed {}, closed unexpectedly {}",
            self.connected,
            self.redirects,
            self.moves,
            self.connect_secs,
            self.connects_per_sec(),
            self.connect_failed,
            self.closed_unexpectedly
        );
        let _ = writeln!(s, "  connect:   {}", hist_line(&self.connect_latency_us));
        if !self.failures.is_empty() {
            let _ = writeln!(s, "  failures:  {:?}", self.failures);
        }
        if !self.stream_errors.is_empty() {
            let _ = writeln!(s, "  stream errors: {:?}", self.stream_errors);
        }
        if let Some(p) = self.rss_per_stream() {
            let _ = writeln!(s, "  server RSS per stream: {p:.0} B");
        }
        if self.subscribed + self.subscribe_failed > 0 {
            let _ = writeln!(
                s,
                "  subscribe: {} ok, {} failed in {:.2}s",
                self.subscribed, self.subscribe_failed, self.subscribe_secs
            );
        }
        if self.messages > 0 {
            let _ = writeln!(
                s,
                "  publish:   {} ok, {} failed, {} skipped in {:.2}s = {:.0}/s; statuses {:?}",
                self.published,
                self.publish_failed,
                self.send_skipped,
                self.publish_secs,
                self.published_per_sec(),
                self.publish_statuses
            );
            if !self.publish_latency_us.is_empty() {
                let _ = writeln!(s, "  publish RTT: {}", hist_line(&self.publish_latency_us));
            }
            let _ = writeln!(
                s,
                "  delivered: {} of {} expected ({} received) in {:.2}s = {:.0} msgs/s",
                self.unique,
                self.expected,
                self.received,
                self.delivery_secs,
                self.delivered_per_sec()
            );
            let _ = writeln!(
                s,
                "  checks:    lost {} dup {} out-of-order {} misdelivered {} seq-errors {} replay-mismatch {} unparsed {} unacked-delivered {}{}",
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.misdelivered,
                self.seq_errors,
                self.replay_mismatch,
                self.unparsed,
                self.unacked_delivered,
                if self.drain_timed_out { " (drain timed out)" } else { "" }
            );
            let _ = writeln!(s, "  latency:   {}", hist_line(&self.latency_us));
        }
        let _ = writeln!(
            s,
            "  result:    {}{} after {:.2}s",
            if self.success() { "OK" } else { "FAILED" },
            if self.timed_out { " (timed out)" } else { "" },
            self.elapsed_secs
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_and_json() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let d = percentile_distribution(&h);
        assert!(d.contains("Total count = 1000"));
        let last = d.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert!(last.contains("1000"), "{last}");
        let j = hist_json(&h);
        assert_eq!(j["count"], 1000);
        assert_eq!(j["p50"], 500);
        let mut r = ScenarioReport::new("fanout");
        r.expected = 4;
        r.received = 4;
        r.unique = 4;
        r.delivery_secs = 2.0;
        assert!(r.success());
        assert_eq!(r.delivered_per_sec(), 2.0);
        r.lost = 1;
        assert!(!r.success());
        assert_eq!(r.to_json()["delivery"]["lost"], 1);
        assert!(r.to_text().contains("FAILED"));
    }

    #[test]
    fn merged_histograms() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        a.record(10).unwrap();
        b.record(1000).unwrap();
        a.add(&b).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.max(), 1000);
    }
}
