//! The import graph of `src/` and `loadtest/src/` has no circle, and no module of the server
//! imports from a layer above its own (the layers are listed in `src/lib.rs`). Reads the
//! sources; a `use crate::…`, `super::…` or `crate::…` path anywhere in code is an import.
//! `IPUSH_LAYERS_SRC=<dir>` checks another tree instead (an old commit's `src/` fails).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The server's layers, bottom first: a module may import from its own layer's other modules
/// (as long as no circle forms) and from the layers below, never from above.
const LAYERS: &[&[&str]] = &[
    &[
        "ids", "protocol", "http", "config", "auth", "stats", "shutdown", "net", "lockfile",
        "diagnose", "fencing",
    ],
    &["storage"],
    &["shard", "msg"],
    &["cluster"],
    &["router"],
    &["transport", "admin"],
    &["server"],
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/transport/decode.rs` → `transport::decode`; `src/transport/mod.rs` → `transport`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Code without line comments (doc comments name paths too).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` and `super::a` path in `text`, as absolute module paths (possibly too
/// long: the caller keeps the longest prefix that is a module).
fn paths(text: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (start, kw) in ["crate::", "super::"]
        .iter()
        .flat_map(|kw| text.match_indices(kw).map(move |(i, _)| (i, *kw)))
    {
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let rest = &text[start + kw.len()..];
        let mut segs: Vec<String> = Vec::new();
        for seg in rest.split("::") {
            let ident: String = seg
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let whole = ident.len() == seg.len();
            if !ident.is_empty() {
                segs.push(ident);
            }
            if !whole || segs.is_empty() {
                break; // the path ended inside this segment
            }
        }
        let mut base: Vec<String> = if kw == "crate::" {
            Vec::new()
        } else {
            // `super` is the parent module (for `a/mod.rs`, module `a`, that is the crate).
            let mut b = me.to_vec();
            b.pop();
            b
        };
        base.extend(segs);
        out.push(base);
    }
    out
}

/// The file-level import graph of a crate rooted at `root` (module path → module paths).
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(root, f)).collect();
    let mut g = Graph::new();
    for f in &files {
        let me = module_of(root, f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        let entry = g.entry(me.join("::")).or_default();
        for mut p in paths(&text, &me) {
            while !p.is_empty() && !modules.contains(&p) {
                p.pop();
            }
            if !p.is_empty() && p != me {
                entry.insert(p.join("::"));
            }
        }
    }
    g
}

/// A circle in `g`, if any (depth-first search).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(g, m, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, n, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Edges between a directory module's `mod.rs` and its own files are how one type's `impl` is
/// split across files (`shard/streams.rs` extends `Shard`): not layering, left out.
fn without_parent_child(g: &Graph) -> Graph {
    g.iter()
        .map(|(from, to)| {
            let kept = to
                .iter()
                .filter(|t| {
                    let child_of = |a: &str, b: &str| {
                        a.strip_prefix(b)
                            .is_some_and(|r| r.starts_with("::") && !r[2..].contains("::"))
                    };
                    !child_of(t, from) && !child_of(from, t)
                })
                .cloned()
                .collect();
            (from.clone(), kept)
        })
        .collect()
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

fn layer(unit: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&unit))
}

fn src_root() -> PathBuf {
    std::env::var_os("IPUSH_LAYERS_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    )
}

#[test]
fn the_server_has_no_import_circle() {
    let g = without_parent_child(&graph(&src_root()));
    assert!(g.len() > 20, "read the sources: {:?}", g.keys());
    if let Some(c) = find_cycle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
    // Nor between top-level modules (a circle through two files of one module counts too).
    let mut units = Graph::new();
    for (from, to) in &g {
        for t in to {
            if top(from) != top(t) && !from.is_empty() {
                units
                    .entry(top(from).into())
                    .or_default()
                    .insert(top(t).into());
            }
        }
    }
    if let Some(c) = find_cycle(&units) {
        panic!("circle between modules: {}", c.join(" -> "));
    }
}

#[test]
fn no_module_imports_from_a_layer_above() {
    let g = graph(&src_root());
    let mut wrong = Vec::new();
    for (from, to) in &g {
        if from.is_empty() {
            continue; // lib.rs declares every module
        }
        let Some(lf) = layer(top(from)) else {
            wrong.push(format!(
                "{from} is in no layer (add it to LAYERS and src/lib.rs)"
            ));
            continue;
        };
        for t in to {
            let lt = layer(top(t)).unwrap_or(usize::MAX);
            if lt > lf {
                wrong.push(format!("{from} (layer {lf}) imports {t} (layer {lt})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_load_generator_has_no_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/src");
    let g = graph(&root);
    assert!(g.len() > 10, "read the sources: {:?}", g.keys());
    if let Some(c) = find_cycle(&g) {
        panic!("import circle in loadtest: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&g).is_none());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let me = vec!["shard".to_string(), "streams".to_string()];
    let p = paths("use super::conn::Out; crate::router::Router", &me);
    assert_eq!(p[0], ["router", "Router"]);
    assert_eq!(p[1], ["shard", "conn", "Out"]);
}
