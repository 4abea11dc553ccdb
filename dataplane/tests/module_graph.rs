//! The house rule on layering, checked on the source: no two modules import each other
//! (directly or around a cycle), and the share layer, NFS and the I/O paths import no HTTP
//! module. Runs on the dataplane, the operator and the CSI driver.
//!
//! A "module" here is a file's module path cut to two levels (`http::plan`, `io::sendfile`):
//! `http::plan::route` belongs to `http::plan`. NFS and the share layer count as one module
//! each: NFS's `Exporter` is one type whose execute halves live in `nfs3.rs` and `mount.rs`,
//! so its files use each other by design, and `share` re-exports its parts. Code under
//! `#[cfg(test)]` is ignored: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[path = "support/sources.rs"]
mod sources;
use sources::rust_files;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules whose files are counted as one.
const WHOLE: &[&str] = &["nfs", "share"];

fn unit(path: &[String]) -> String {
    match path {
        [] => String::new(),
        [first, ..] if WHOLE.contains(&first.as_str()) => first.clone(),
        [first] => first.clone(),
        [first, second, ..] => format!("{first}::{second}"),
    }
}

/// The module path of a source file relative to `src/` (`http/plan/mod.rs` → `[http, plan]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Source text without comments and without everything from the first `#[cfg(test)]`.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names through `crate::`, `super::` or `self::`, resolved to an
/// absolute path (a `use crate::{a, b::c}` group gives `a` and `b::c`).
fn references(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let rest = &code[i..];
        let anchor = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|a| starts_word && rest.starts_with(a));
        let Some(anchor) = anchor else {
            i += 1;
            continue;
        };
        // The module the path starts from.
        let mut base: Vec<String> = match anchor {
            "crate::" => Vec::new(),
            _ => here.to_vec(),
        };
        if anchor == "super::" {
            base.pop();
        }
        let mut j = i + anchor.len();
        // Further `super::` hops.
        while code[j..].starts_with("super::") {
            base.pop();
            j += "super::".len();
        }
        if code[j..].starts_with('{') {
            let end = code[j..].find('}').map_or(code.len(), |e| j + e);
            for item in code[j + 1..end].split(',') {
                let segs: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty() && s.bytes().all(is_ident))
                    .collect();
                if !segs.is_empty() {
                    out.push([base.clone(), segs].concat());
                }
            }
            i = end;
            continue;
        }
        let mut segs = Vec::new();
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            if j > start {
                segs.push(code[start..j].to_owned());
            }
            if code[j..].starts_with("::") && code[j + 2..].starts_with(|c: char| c != '{') {
                j += 2;
            } else {
                break;
            }
        }
        out.push([base, segs].concat());
        i = j.max(i + 1);
    }
    out
}

/// The import graph of the crate whose sources are in `src`, between units.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let known: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_path(f.strip_prefix(src).expect("under src")))
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let rel = file.strip_prefix(src).expect("under src");
        let here = module_path(rel);
        let from = unit(&here);
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for target in references(&code_of(&text), &here) {
            // The longest prefix that names a module (the rest are items).
            let Some(module) = (0..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            let to = unit(&module);
            // A unit's own files, the crate root, and a parent declaring its children.
            if to.is_empty() || to == from || from.is_empty() {
                continue;
            }
            graph.entry(from.clone()).or_default().insert(to);
        }
    }
    graph
}

/// Every unit `from` imports, directly or through others.
fn reach(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(n) = stack.pop() {
        for next in graph.get(&n).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

/// Every cycle's members (strongly connected components of more than one unit).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph
        .keys()
        .chain(graph.values().flat_map(|s| s.iter()))
        .collect();
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(graph, n))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for n in &nodes {
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        if component.len() > 1 {
            found.insert(component);
        }
    }
    found.into_iter().collect()
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn describe(graph: &Graph, members: &[String]) -> String {
    members
        .iter()
        .map(|m| {
            let inside: Vec<&String> = graph
                .get(m)
                .into_iter()
                .flatten()
                .filter(|t| members.contains(t))
                .collect();
            format!("{m} -> {inside:?}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn no_two_modules_import_each_other() {
    for krate in ["dataplane", "operator", "csi"] {
        let graph = graph(&crate_src(krate));
        assert!(
            graph.len() >= 3,
            "{krate}: the graph looks empty: {graph:?}"
        );
        let found = cycles(&graph);
        let text: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
        assert!(found.is_empty(), "{krate} has import cycles: {text:#?}");
    }
}

#[test]
fn the_share_layer_nfs_and_io_import_no_http_module() {
    let graph = graph(&crate_src("dataplane"));
    for lower in [
        "share",
        "nfs",
        "sftp",
        "identity",
        "usage",
        "metrics",
        "io::sendfile",
        "io::splice",
        "io::small",
    ] {
        let http: Vec<String> = reach(&graph, lower)
            .into_iter()
            .filter(|m| m == "http" || m.starts_with("http::"))
            .collect();
        assert!(http.is_empty(), "{lower} depends on {http:?}");
    }
    // SFTP stands on the share and identity layers, not on another protocol.
    let sftp_reaches = reach(&graph, "sftp");
    assert!(
        !sftp_reaches.iter().any(|m| m == "nfs"),
        "sftp depends on nfs: {sftp_reaches:?}"
    );
    assert!(
        graph["http::frontend"].contains("http::service"),
        "the checker lost track of the front end's imports: {graph:?}"
    );
}

#[test]
fn the_checker_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("net")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod net;\npub mod store;\n").expect("write");
    std::fs::write(src.join("net/mod.rs"), "pub mod wire;\n").expect("write");
    std::fs::write(
        src.join("net/wire.rs"),
        "use crate::store::{Disk, cache::Entry};\n// use crate::other;\n",
    )
    .expect("write");
    std::fs::write(
        src.join("store.rs"),
        "pub struct Disk;\nfn f() { let _ = super::net::wire::X; }\n#[cfg(test)]\nmod t { use crate::lib; }\n",
    )
    .expect("write");
    assert_eq!(
        cycles(&graph(src)),
        vec![vec!["net::wire".to_owned(), "store".to_owned()]]
    );
    std::fs::write(src.join("store.rs"), "pub struct Disk;\n").expect("write");
    assert!(cycles(&graph(src)).is_empty());
}
