//! Per-core counters (plain `Cell`s, no atomics) and their merged, `Send` snapshots; every metric
//! name lives here. Counters are written by their core's thread and read by /stats and /metrics.

use std::cell::Cell;

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
    stored: "message deliveries persisted (one per recipient)",
    replayed: "offline messages sent on connect",
    purged: "expired messages removed from storage",
    handoff: "connections handed to their owner core",
    mesh_full: "cross-core sends that found the channel full and waited",
    mesh_dropped: "cross-core messages dropped (receiver gone)",
    storage_error: "storage operations that failed",
    limit_refused: "connects refused by --max_connections (503)",
    idem_replayed: "publishes answered from an earlier one with the same idempotency key",
    idem_refused: "publishes refused: idempotency key reused with another request (422)",
    idem_full: "publishes refused: --idempotency_max_keys keys in their window (429)",
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
