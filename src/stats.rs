//! Per-core counters (plain `Cell`s, no atomics) and latency histograms (HDR, one per measured
//! span), and their merged, `Send` snapshots; every metric name lives here. Both are written by
//! their core's thread and read by /stats and /metrics.

use std::cell::{Cell, RefCell};
use std::num::NonZeroU32;
use std::time::Instant;

use hdrhistogram::Histogram;

macro_rules! counters {
    ($($name:ident : $help:literal),* $(,)?) => {
        /// One core's counters; only that core's thread touches them.
        #[derive(Default)]
        pub struct Counters { $(pub $name: Cell<u64>,)* }

        /// A copy of counters that can cross threads and be summed.
        #[derive(Default, Clone, Debug, PartialEq, Eq)]
        pub struct Snapshot { $(pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.get(),)* }
            }
        }

        impl Snapshot {
            /// (name, help) of every counter, in declaration order; the Prometheus names are
            /// `ipush_<name>`.
            pub const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($name), $help),)*];

            pub fn add(&mut self, o: &Snapshot) {
                $(self.$name += o.$name;)*
            }

            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name,)*]
            }
        }
    };
}

counters! {
    auth_fail: "connects refused by authentication",
    bad_request: "malformed requests and streams ended for bad input",
    error: "internal errors (storage failures, I/O errors other than peer resets)",
    redirect: "connects answered 303 to another node",
    recv_ack: "acks received from clients",
    recv_cmsg: "channel messages received from clients",
    recv_hb: "heartbeats received from clients",
    recv_msg: "user messages received from clients",
    recv_sub: "subscribes received from clients",
    recv_unsub: "unsubscribes received from clients",
    recv_bytes: "payload bytes received from clients",
    recv_number: "messages received from clients",
    send_bytes: "payload bytes sent to clients",
    send_number: "messages sent to clients",
    send_writes: "socket writes to client streams (each carries one or more messages)",
    send_blocked: "writes that found a client's socket full (the rest waits until it drains)",
    user_connect: "streams opened",
    user_disconnect: "streams closed",
    user_reconnect: "streams replaced by a newer connect of the same uid",
    user_number: "streams open now (gauge)",
    req_connect: "/connect requests",
    req_pub: "admin /pub requests",
    req_sub: "admin /sub requests",
    req_unsub: "admin /unsub requests",
    req_msg: "admin /msg requests",
    req_shard: "admin /shard requests",
    req_stats: "admin /stats requests",
    req_metrics: "admin /metrics requests",
    req_health: "admin /health requests",
    req_disconnect: "admin /disconnect requests",
    req_dashboard: "admin dashboard page requests",
    req_demo: "client-port /demo page requests",
    req_send: "client-port /send requests",
    req_other: "requests to unknown paths",
    slow_disconnect: "streams closed because their send queue overflowed",
    moved: "streams ended with the move signal (their client reconnects to another node)",
    stored: "message deliveries persisted (one per recipient)",
    replayed: "offline messages sent on connect",
    purged: "expired messages removed from storage",
    handoff: "connections handed to their owner core",
    mesh_full: "cross-core sends that found the channel full and waited",
    mesh_dropped: "cross-core messages dropped (receiver gone)",
    storage_error: "storage operations that failed",
    limit_refused: "connects refused by --max_connections (503)",
    users_resident: "users whose state (seq, last ack) is in memory now (gauge)",
    users_evicted: "idle users dropped from memory (their state stays stored)",
    idem_replayed: "publishes answered from an earlier one with the same idempotency key",
    idem_refused: "publishes refused: idempotency key reused with another request (422)",
    idem_full: "publishes refused: --idempotency_max_keys keys in their window (429)",
}

impl Snapshot {
    /// Whether counter `name` is a gauge (a level now) rather than a running total.
    pub fn is_gauge(name: &str) -> bool {
        matches!(name, "user_number" | "users_resident")
    }
}

/// A span whose duration every core records in a histogram of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lat {
    /// A publish reaching its owner core until the store has it (or its core's part, for a
    /// channel).
    PubDurable,
    /// A publish reaching its owner core until a stream's socket took the message.
    PubWritten,
    /// A `/connect` head read and authenticated until its stream is live (registered, head
    /// sent, offline replay queued).
    ConnectStreaming,
    /// One store append: issued until the backend answers.
    StoreCommit,
}

impl Lat {
    pub const ALL: [Lat; 4] = [
        Lat::PubDurable,
        Lat::PubWritten,
        Lat::ConnectStreaming,
        Lat::StoreCommit,
    ];

    /// (Prometheus name without `ipush_`, help).
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Lat::PubDurable => (
                "publish_durable_seconds",
                "publish at the owner core to stored (one per unicast, one per core part of a channel message)",
            ),
            Lat::PubWritten => (
                "publish_written_seconds",
                "publish at the owner core to written to a stream's socket (one per live delivery)",
            ),
            Lat::ConnectStreaming => (
                "connect_streaming_seconds",
                "/connect head read and authenticated to stream live (registered, response head sent, offline replay queued)",
            ),
            Lat::StoreCommit => (
                "store_commit_seconds",
                "one store append, issued to answered by the backend",
            ),
        }
    }
}

/// The fixed Prometheus bucket bounds of every latency histogram, in seconds (`+Inf` follows).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Largest latency a histogram tells apart (longer ones count as this): 60 s in µs.
const LATENCY_MAX_US: u64 = 60_000_000;

/// A moment as microseconds since its core's `Latencies` began, wrapping every ~71 minutes: 4
/// bytes in a queued message where an `Instant` is 16 (no span measured here lasts that long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(NonZeroU32);

/// One core's latency histograms. Recording is a clock read, a `RefCell` flag and an array
/// increment: no lock, no allocation (the histograms are sized once, values are clamped).
pub struct Latencies {
    origin: Instant,
    hists: [RefCell<Histogram<u64>>; 4],
    sums_us: [Cell<u64>; 4],
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            origin: Instant::now(),
            hists: std::array::from_fn(|_| RefCell::new(new_histogram())),
            sums_us: Default::default(),
        }
    }
}

/// 1 µs to 60 s at 2 significant digits (1% resolution): ~20 KiB per histogram.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("constant histogram bounds are valid")
}

impl Latencies {
    /// Now, as a `Stamp` for `since_stamp`.
    pub fn stamp(&self) -> Stamp {
        let us = self.origin.elapsed().as_micros() as u32;
        Stamp(NonZeroU32::new(us).unwrap_or(NonZeroU32::MIN))
    }

    /// Records the span from `t0` to now.
    pub fn since(&self, lat: Lat, t0: Instant) {
        self.record_us(lat, t0.elapsed().as_micros() as u64);
    }

    /// Records the span from `t0` (this core's stamp) to now.
    pub fn since_stamp(&self, lat: Lat, t0: Stamp) {
        self.between(lat, t0, self.stamp());
    }

    /// Records the span from `t0` to `now` (both this core's stamps; one clock read serves a
    /// batch).
    pub fn between(&self, lat: Lat, t0: Stamp, now: Stamp) {
        self.record_us(lat, u64::from(now.0.get().wrapping_sub(t0.0.get())));
    }

    fn record_us(&self, lat: Lat, us: u64) {
        let i = lat as usize;
        self.hists[i].borrow_mut().saturating_record(us);
        self.sums_us[i].set(self.sums_us[i].get() + us);
    }

    /// A copy that can cross threads and be merged.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            spans: std::array::from_fn(|i| (self.hists[i].borrow().clone(), self.sums_us[i].get())),
        }
    }
}

/// Latency histograms (and exact sums, µs) of one or more cores.
#[derive(Debug, Clone)]
pub struct LatencySnapshot {
    spans: [(Histogram<u64>, u64); 4],
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        LatencySnapshot {
            spans: std::array::from_fn(|_| (new_histogram(), 0)),
        }
    }
}

/// One latency histogram in Prometheus terms.
#[derive(Debug, Clone, PartialEq)]
pub struct PromHistogram {
    /// Cumulative count of each bound of `LATENCY_BUCKETS` (to within 1%: a value is counted
    /// with the bound its HDR bucket reaches).
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencySnapshot {
    /// Adds another core's histograms to these.
    pub fn add(&mut self, o: &LatencySnapshot) {
        for (mine, theirs) in self.spans.iter_mut().zip(&o.spans) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.0.add(&theirs.0);
            mine.1 += theirs.1;
        }
    }

    pub fn prom(&self, lat: Lat) -> PromHistogram {
        let (h, sum_us) = &self.spans[lat as usize];
        PromHistogram {
            buckets: LATENCY_BUCKETS
                .iter()
                .map(|le| h.count_between(0, (le * 1e6) as u64))
                .collect(),
            count: h.len(),
            sum_seconds: *sum_us as f64 / 1e6,
        }
    }
}

/// Node-wide per-second maxima, sampled once a second on core 0.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Rates {
    pub max_recv_bytes_per_second: u64,
    pub max_recv_number_per_second: u64,
    pub max_send_bytes_per_second: u64,
    pub max_send_number_per_second: u64,
    pub max_user_number: u64,
    pub max_user_growth_per_second: u64,
    pub max_user_reduce_per_second: u64,
}

/// Folds one per-second sample into the maxima.
#[derive(Default)]
pub struct Sampler {
    last: Option<Snapshot>,
    pub rates: Rates,
}

impl Sampler {
    pub fn sample(&mut self, now: &Snapshot) {
        let r = &mut self.rates;
        r.max_user_number = r.max_user_number.max(now.user_number);
        if let Some(last) = &self.last {
            let d = |a: u64, b: u64| a.saturating_sub(b);
            r.max_recv_bytes_per_second = r
                .max_recv_bytes_per_second
                .max(d(now.recv_bytes, last.recv_bytes));
            r.max_recv_number_per_second = r
                .max_recv_number_per_second
                .max(d(now.recv_number, last.recv_number));
            r.max_send_bytes_per_second = r
                .max_send_bytes_per_second
                .max(d(now.send_bytes, last.send_bytes));
            r.max_send_number_per_second = r
                .max_send_number_per_second
                .max(d(now.send_number, last.send_number));
            r.max_user_growth_per_second = r
                .max_user_growth_per_second
                .max(d(now.user_number, last.user_number));
            r.max_user_reduce_per_second = r
                .max_user_reduce_per_second
                .max(d(last.user_number, now.user_number));
        }
        self.last = Some(now.clone());
    }
}

/// Unix time in seconds.
/// Wall clock, unix microseconds.
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY/MM/DD HH:MM:SS` in UTC, the seed's `server_start_datetime` format.
pub fn format_datetime(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime() {
        assert_eq!(format_datetime(0), "1970/01/01 00:00:00");
        assert_eq!(format_datetime(1_429_204_917), "2015/04/16 17:21:57");
        assert_eq!(format_datetime(1_709_251_199), "2024/02/29 23:59:59");
    }

    #[test]
    fn sampler_tracks_maxima() {
        let mut s = Sampler::default();
        let mut snap = Snapshot::default();
        s.sample(&snap);
        snap.send_number = 10;
        snap.user_number = 5;
        s.sample(&snap);
        snap.send_number = 13;
        snap.user_number = 2;
        s.sample(&snap);
        assert_eq!(s.rates.max_send_number_per_second, 10);
        assert_eq!(s.rates.max_user_growth_per_second, 5);
        assert_eq!(s.rates.max_user_reduce_per_second, 3);
        assert_eq!(s.rates.max_user_number, 5);
    }

    #[test]
    fn latency_buckets_are_cumulative_and_merge() {
        let a = Latencies::default();
        for us in [50, 300, 300, 2_000, 70_000_000] {
            a.record_us(Lat::StoreCommit, us);
        }
        let b = Latencies::default();
        b.record_us(Lat::StoreCommit, 80);
        b.record_us(Lat::PubWritten, 5);
        let mut merged = a.snapshot();
        merged.add(&b.snapshot());
        let p = merged.prom(Lat::StoreCommit);
        assert_eq!(p.count, 6);
        // le=0.0001: 50 and 80; le=0.0005: and both 300s; le=0.0025: and 2000; the 70 s one
        // only in +Inf (clamped to 60 s, above the last bound).
        assert_eq!(&p.buckets[..5], &[2, 2, 4, 4, 5]);
        assert_eq!(*p.buckets.last().unwrap(), 5);
        assert!(p.buckets.windows(2).all(|w| w[0] <= w[1]));
        assert!((p.sum_seconds - 70.00273).abs() < 1e-9, "{}", p.sum_seconds);
        assert_eq!(merged.prom(Lat::PubWritten).count, 1);
        assert_eq!(merged.prom(Lat::PubDurable).count, 0);
    }

    #[test]
    fn stamps_measure_across_the_wrap() {
        let l = Latencies::default();
        let t0 = Stamp(NonZeroU32::new(u32::MAX - 9).unwrap());
        let now = Stamp(NonZeroU32::new(11).unwrap());
        l.between(Lat::PubWritten, t0, now);
        assert_eq!(l.snapshot().prom(Lat::PubWritten).sum_seconds, 21e-6);
        let s = l.stamp();
        assert!(s.0.get() < 60_000_000, "a fresh core's stamp is small");
    }

    #[test]
    fn snapshots_sum() {
        let mut a = Snapshot {
            recv_ack: 1,
            ..Default::default()
        };
        a.add(&Snapshot {
            recv_ack: 2,
            error: 1,
            ..Default::default()
        });
        assert_eq!((a.recv_ack, a.error), (3, 1));
        assert_eq!(a.values().len(), Snapshot::FIELDS.len());
    }
}
