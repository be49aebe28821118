//! The latency histograms of /metrics: after known publishes and connects, the text parses as
//! Prometheus exposition, every histogram's buckets are cumulative with `+Inf` = `_count`, and
//! the counts are exactly what was done.
mod common;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;

/// One histogram as read back: (le, cumulative count) in the order given, `_sum`, `_count`.
#[derive(Debug, Default)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// Parses the exposition text strictly enough to fail on a malformed line: `# HELP`/`# TYPE`
/// comments, and `name{labels} value` or `name value` samples. Returns the histograms by name.
fn parse_histograms(text: &str) -> BTreeMap<String, Hist> {
    let mut types = BTreeMap::new();
    let mut hists: BTreeMap<String, Hist> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kind, name, what) = (w.next(), w.next(), w.next());
            assert!(
                matches!(kind, Some("HELP" | "TYPE")) && name.is_some() && what.is_some(),
                "bad comment line {line:?}"
            );
            if kind == Some("TYPE") {
                let t = what.unwrap();
                assert!(
                    matches!(t, "counter" | "gauge" | "histogram"),
                    "type {t:?} in {line:?}"
                );
                types.insert(name.unwrap().to_string(), t.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).map(|b| (b, *s)))
            .filter(|(b, _)| types.get(*b).is_some_and(|t| t == "histogram"));
        let Some((base, part)) = base else {
            assert!(
                types.contains_key(name),
                "sample {name} before its # TYPE line"
            );
            continue;
        };
        let h = hists.entry(base.to_string()).or_default();
        match part {
            "_bucket" => {
                let le = labels
                    .strip_prefix("le=\"")
                    .and_then(|l| l.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("bucket without le in {line:?}"));
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                h.buckets.push((le, value));
            }
            "_sum" => h.sum = Some(value),
            _ => h.count = Some(value),
        }
    }
    for (name, t) in &types {
        if t == "histogram" {
            let h = &hists[name];
            assert!(h.buckets.len() > 1, "{name}: no buckets");
            for w in h.buckets.windows(2) {
                assert!(w[0].0 < w[1].0, "{name}: le not ascending: {:?}", h.buckets);
                assert!(w[0].1 <= w[1].1, "{name}: not cumulative: {:?}", h.buckets);
            }
            let (le, last) = *h.buckets.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{name}: last bucket is not +Inf");
            assert_eq!(Some(last), h.count, "{name}: +Inf != _count");
            assert!(h.sum.is_some_and(|s| s >= 0.0), "{name}: _sum");
        }
    }
    hists
}

fn metrics(s: &Server) -> BTreeMap<String, Hist> {
    let (st, body) = s.try_request("GET", "/metrics", b"").expect("metrics");
    assert_eq!(st, 200, "{body}");
    parse_histograms(&body)
}

fn count(h: &BTreeMap<String, Hist>, name: &str) -> f64 {
    h.get(name)
        .and_then(|h| h.count)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn histograms_parse_and_count_what_was_done() {
    let s = Server::start(&[]);
    let before = metrics(&s);
    for name in [
        "ipush_publish_durable_seconds",
        "ipush_publish_written_seconds",
        "ipush_connect_streaming_seconds",
        "ipush_store_commit_seconds",
    ] {
        assert_eq!(count(&before, name), 0.0, "{name} before anything happened");
    }
    // 3 connects; 10 publishes to a connected user, read; 4 to a user who is offline.
    let mut online = s.connect("lat-on");
    let _a = s.connect("lat-x");
    let _b = s.connect("lat-y");
    for i in 0..10 {
        let (st, v) = s.post("/pub?to=lat-on&from=op", &format!("m{i}"));
        assert_eq!((st, v), (200, json!({"result":"ok"})));
    }
    for i in 0..4 {
        let (st, _) = s.post("/pub?to=lat-off&from=op", &format!("o{i}"));
        assert_eq!(st, 200);
    }
    for i in 0..10 {
        assert_eq!(online.recv()["b"], json!(format!("m{i}")));
    }
    // A stream's span ends just after its head is sent: the client may read the head first.
    wait_until(
        std::time::Duration::from_secs(10),
        "3 connects recorded",
        || count(&metrics(&s), "ipush_connect_streaming_seconds") == 3.0,
    );
    let after = metrics(&s);
    assert_eq!(count(&after, "ipush_connect_streaming_seconds"), 3.0);
    assert_eq!(count(&after, "ipush_publish_durable_seconds"), 14.0);
    assert_eq!(count(&after, "ipush_store_commit_seconds"), 14.0);
    assert_eq!(count(&after, "ipush_publish_written_seconds"), 10.0);
    // Loopback on a loaded box: every span well under the 10 s bound.
    let durable = &after["ipush_publish_durable_seconds"];
    let (le, n) = durable.buckets[durable.buckets.len() - 2];
    assert_eq!((le, n), (10.0, 14.0), "{durable:?}");
}

#[test]
fn the_parser_rejects_broken_histograms() {
    let good = "# HELP x_seconds t\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"0.1\"} 1\nx_seconds_bucket{le=\"+Inf\"} 2\nx_seconds_sum 0.3\nx_seconds_count 2\n";
    assert_eq!(parse_histograms(good)["x_seconds"].count, Some(2.0));
    let not_cumulative = good.replace("le=\"0.1\"} 1", "le=\"0.1\"} 3");
    assert!(std::panic::catch_unwind(|| parse_histograms(&not_cumulative)).is_err());
    let inf_not_count = good.replace("x_seconds_count 2", "x_seconds_count 5");
    assert!(std::panic::catch_unwind(|| parse_histograms(&inf_not_count)).is_err());
}
