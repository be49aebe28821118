//! Configuration from a file (`--flagfile=PATH`, `config::parse_args`) and the `--nodes` list
//! (`config::parse_nodes`) on arbitrary text: never panics (clap's help and version requests
//! come back as errors, not exits); a node list it accepts has unique, non-empty names and
//! ports from 1 up, and every uid is placed on one of those nodes; a config it accepts has at
//! least one core.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ipush::cluster::Membership;
use ipush::config::{parse_args, parse_nodes};
use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process, rewritten for each input.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("ipush-fuzz-{}.conf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).expect("temp dir writable");
    let flagfile = format!("--flagfile={}", path().display());
    if let Ok(cfg) = parse_args(["ipush_server".to_string(), flagfile]) {
        assert!(cfg.cores >= 1);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(nodes) = parse_nodes(text) {
        let mut names = std::collections::HashSet::new();
        for n in &nodes {
            assert!(!n.name.is_empty() && names.insert(n.name.as_str()));
            assert!(n.client_port >= 1 && n.admin_port >= 1 && n.bus_port >= 1);
        }
        if !nodes.is_empty() {
            let len = nodes.len();
            let owner = Membership::new(nodes, 0, 4).locate(text);
            assert!(usize::from(owner.node.0) < len && owner.core.0 < 4);
        }
    }
});
