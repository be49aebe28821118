//! Which cluster node owns a uid, by the server's own placement crate (`ipush-placement`), so
//! a load generator can connect every uid straight to its owner instead of paying a 303 per
//! stream. `perf/c1m.sh` checks it against `/shard`.

/// The owner of a uid among the node names of `--nodes`, in order.
pub use ipush_placement::Rendezvous as Ring;

/// A `--nodes` spec `n1=HOST:CPORT:APORT:BPORT,...` → (name, client `HOST:CPORT`, admin
/// `HOST:APORT`) per node.
pub fn parse_nodes(spec: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, addr) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("node {part:?}: want NAME=HOST:CPORT:APORT:BPORT"))?;
        let f: Vec<&str> = addr.split(':').collect();
        anyhow::ensure!(
            f.len() == 4 && f[1..].iter().all(|p| p.parse::<u16>().is_ok()),
            "node {part:?}: want NAME=HOST:CPORT:APORT:BPORT"
        );
        out.push((
            name.to_string(),
            format!("{}:{}", f[0], f[1]),
            format!("{}:{}", f[0], f[2]),
        ));
    }
    anyhow::ensure!(!out.is_empty(), "no nodes in {spec:?}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_single() {
        let names: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
        let r = Ring::new(&names);
        let mut count = [0u32; 4];
        for i in 0..4000 {
            count[r.owner(&format!("u{i}"))] += 1;
        }
        assert!(count.iter().all(|&c| c > 800), "{count:?}");
        assert_eq!(Ring::new(&names[..1]).owner("x"), 0);
        // Stable: the same inputs always give the same owner.
        assert_eq!(r.owner("user1"), Ring::new(&names).owner("user1"));
    }

    #[test]
    fn nodes_spec() {
        let v = parse_nodes("n1=127.0.0.1:9000:9001:9002, n2=127.0.0.2:9000:9001:9002").unwrap();
        assert_eq!(
            v[1],
            (
                "n2".into(),
                "127.0.0.2:9000".into(),
                "127.0.0.2:9001".into()
            )
        );
        assert!(parse_nodes("n1=127.0.0.1:9000").is_err());
        assert!(parse_nodes("").is_err());
    }
}
