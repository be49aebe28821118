//! Renders merged per-core counters as the seed's /stats object and as Prometheus text with a
//! `shard` label; pure functions called on the core serving the request.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::ids::ShardId;
use crate::router::Router;
use crate::shard::Shard;
use crate::stats::{Lat, LatencySnapshot, Rates, Snapshot, LATENCY_BUCKETS};

/// The /stats `result` object, key for key as in the seed document, summed over cores.
pub fn stats_json(shard: &Shard, per_core: &[(ShardId, Snapshot)], rates: &Rates) -> Value {
    let mut t = Snapshot::default();
    for (_, s) in per_core {
        t.add(s);
    }
    let secs = shard.uptime_secs().max(1);
    json!({
        "auth_fail_number": t.auth_fail,
        "bad_request_number": t.bad_request,
        "error_number": t.error,
        "recv_type": {
            "ack": t.recv_ack,
            "cmsg": t.recv_cmsg,
            "hb": t.recv_hb,
            "msg": t.recv_msg,
            "sub": t.recv_sub,
            "unsub": t.recv_unsub,
        },
        "redirect_number": t.redirect,
        "request": {
            "Connect": t.req_connect,
            "Dashboard": t.req_dashboard,
            "Demo": t.req_demo,
            "Disconnect": t.req_disconnect,
            "Health": t.req_health,
            "Metrics": t.req_metrics,
            "Msg": t.req_msg,
            "Other": t.req_other,
            "Pub": t.req_pub,
            "Send": t.req_send,
            "Shard": t.req_shard,
            "Stats": t.req_stats,
            "Sub": t.req_sub,
            "Unsub": t.req_unsub,
        },
        "server_start_datetime": crate::stats::format_datetime(shard.started_unix_us() / 1_000_000),
        "server_start_timestamp": shard.started_unix_us(),
        "throughput": {
            "avg_recv_bytes_per_second": t.recv_bytes / secs,
            "avg_recv_number_per_second": t.recv_number / secs,
            "avg_send_bytes_per_second": t.send_bytes / secs,
            "avg_send_number_per_second": t.send_number / secs,
            "max_recv_bytes_per_second": rates.max_recv_bytes_per_second,
            "max_recv_number_per_second": rates.max_recv_number_per_second,
            "max_send_bytes_per_second": rates.max_send_bytes_per_second,
            "max_send_number_per_second": rates.max_send_number_per_second,
            "total_recv_bytes": t.recv_bytes,
            "total_recv_number": t.recv_number,
            "total_send_bytes": t.send_bytes,
            "total_send_number": t.send_number,
        },
        "user": {
            "connect": t.user_connect,
            "disconnect": t.user_disconnect,
            "max_user_growth_per_second": rates.max_user_growth_per_second,
            "max_user_number": rates.max_user_number.max(t.user_number),
            "max_user_reduce_per_second": rates.max_user_reduce_per_second,
            "reconnect": t.user_reconnect,
            "user_number": t.user_number,
        },
    })
}

/// Prometheus text exposition: every counter per core (`shard` label), node maxima unlabelled.
pub fn prometheus(per_core: &[(ShardId, Snapshot)], rates: &Rates, extra: &str) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let values: Vec<(ShardId, Vec<u64>)> =
        per_core.iter().map(|(id, s)| (*id, s.values())).collect();
    for (i, (name, help)) in Snapshot::FIELDS.iter().enumerate() {
        let kind = if Snapshot::is_gauge(name) {
            "gauge"
        } else {
            "counter"
        };
        let _ = writeln!(
            out,
            "# HELP ipush_{name} {help}\n# TYPE ipush_{name} {kind}"
        );
        for (id, v) in &values {
            let _ = writeln!(out, "ipush_{name}{{shard=\"{id}\"}} {}", v[i]);
        }
    }
    let maxima = [
        ("max_recv_bytes_per_second", rates.max_recv_bytes_per_second),
        (
            "max_recv_number_per_second",
            rates.max_recv_number_per_second,
        ),
        ("max_send_bytes_per_second", rates.max_send_bytes_per_second),
        (
            "max_send_number_per_second",
            rates.max_send_number_per_second,
        ),
        ("max_user_number", rates.max_user_number),
        (
            "max_user_growth_per_second",
            rates.max_user_growth_per_second,
        ),
        (
            "max_user_reduce_per_second",
            rates.max_user_reduce_per_second,
        ),
    ];
    for (name, v) in maxima {
        let _ = writeln!(
            out,
            "# HELP ipush_{name} node-wide per-second maximum since start\n# TYPE ipush_{name} gauge\nipush_{name} {v}"
        );
    }
    out.push_str(extra);
    out
}

/// The node's latency histograms (every core's merged) as Prometheus histograms in seconds,
/// with the fixed bounds of `LATENCY_BUCKETS`.
pub fn latency_lines(lat: &LatencySnapshot) -> String {
    let mut out = String::with_capacity(4 * 1024);
    for l in Lat::ALL {
        let (name, help) = l.describe();
        let h = lat.prom(l);
        let _ = writeln!(
            out,
            "# HELP ipush_{name} {help}\n# TYPE ipush_{name} histogram"
        );
        for (le, n) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            let _ = writeln!(out, "ipush_{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "ipush_{name}_bucket{{le=\"+Inf\"}} {}\nipush_{name}_sum {}\nipush_{name}_count {}",
            h.count, h.sum_seconds, h.count
        );
    }
    out
}

/// The cluster bus: each peer's state and the bus's traffic counters (empty on one node).
pub fn bus_lines(router: &Router) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(bus) = router.bus() else {
        return String::new();
    };
    let view = router.view();
    let mut out = String::from("# HELP ipush_peer_up 1 when the peer node was heard from within 2 s\n# TYPE ipush_peer_up gauge\n");
    for n in view.peers() {
        let _ = writeln!(
            out,
            "ipush_peer_up{{peer=\"{}\"}} {}",
            view.node(n).name,
            u8::from(bus.state.is_up(n))
        );
    }
    if let Some(slots) = view.slots() {
        out.push_str("# HELP ipush_member_state the dynamic cluster's members: 1 for the state each is in\n# TYPE ipush_member_state gauge\n");
        for (_, spec, state) in view.members() {
            let _ = writeln!(
                out,
                "ipush_member_state{{member=\"{}\",state=\"{}\"}} 1",
                spec.name,
                state.as_str()
            );
        }
        let served = view.served_slots();
        let _ = writeln!(
            out,
            "# HELP ipush_slots_served slots this node serves now\n# TYPE ipush_slots_served gauge\nipush_slots_served {served}\n# HELP ipush_slots the keyspace's slot count\n# TYPE ipush_slots gauge\nipush_slots {slots}"
        );
    }
    for (name, help, v) in [
        ("bus_sent", "bus frames sent", bus.state.sent.load(Relaxed)),
        (
            "bus_received",
            "bus frames received",
            bus.state.received.load(Relaxed),
        ),
        (
            "bus_malformed",
            "bus frames dropped because they did not decode",
            bus.state.malformed.load(Relaxed),
        ),
        (
            "bus_send_failed",
            "bus frames NNG would not take",
            bus.state.send_failed.load(Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP ipush_{name} {help}\n# TYPE ipush_{name} counter\nipush_{name} {v}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_has_a_line_per_core() {
        let a = Snapshot {
            recv_ack: 3,
            ..Default::default()
        };
        let text = prometheus(
            &[(ShardId(0), a.clone()), (ShardId(1), a)],
            &Rates::default(),
            "",
        );
        assert!(text.contains("ipush_recv_ack{shard=\"0\"} 3\n"));
        assert!(text.contains("ipush_recv_ack{shard=\"1\"} 3\n"));
        assert!(text.contains("# TYPE ipush_user_number gauge"));
        assert!(text.contains("ipush_max_user_number 0\n"));
        assert!(text.contains("# TYPE ipush_users_resident gauge"));
    }

    #[test]
    fn latency_histograms_in_seconds() {
        let text = latency_lines(&LatencySnapshot::default());
        assert!(text.contains("# TYPE ipush_store_commit_seconds histogram\n"));
        assert!(text.contains("ipush_store_commit_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("ipush_publish_written_seconds_bucket{le=\"10\"} 0\n"));
        assert!(text.contains("ipush_connect_streaming_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains(
            "ipush_publish_durable_seconds_sum 0\nipush_publish_durable_seconds_count 0\n"
        ));
    }
}
