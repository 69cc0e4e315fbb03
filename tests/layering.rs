//! The layering of `src/` (DESIGN.md, "Layout"): a top-level module imports only from its own
//! layer or the layers below, nothing imports the daemon, and there is no import cycle between
//! top-level modules. Read from the source files themselves, so a new `use` that points upward
//! fails here with the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of its own layer (without a cycle) or below.
const LAYERS: &[&[&str]] = &[
    &["types", "tls", "datadir", "util", "fault", "logging"],
    &["cluster", "kv", "rules", "config"],
    &["policy", "consensus", "heartbeat", "resource"],
    &["api"],
    &["daemon", "cli"],
];
/// Imported by nobody inside the library (only `main` starts it).
const TOP_ONLY: &[&str] = &["daemon"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// One `crate::X` reference: from module, to module, where.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    at: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// `crate::X` references outside comments. `crate::{` groups are refused: they would hide
/// edges from this check.
fn edges_of(src: &Path, file: &Path) -> Vec<Edge> {
    let Some(from) = module_of(src, file) else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        assert!(
            !code.contains("crate::{"),
            "{}:{}: `crate::{{...}}` groups hide the imported modules from tests/layering.rs; write one `use crate::module::...` per module",
            file.display(),
            n + 1
        );
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded_by_ident = rest[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !preceded_by_ident && !name.is_empty() && name != from {
                out.push(Edge {
                    from: from.clone(),
                    to: name,
                    at: format!("{}:{}", file.display(), n + 1),
                });
            }
            rest = after;
        }
    }
    out
}

/// Every violation of the layering in `edges`, in words.
fn violations(edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for e in edges {
        match (layer_of(&e.from), layer_of(&e.to)) {
            (Some(a), Some(b)) if b > a => out.push(format!(
                "{}: `{}` (layer {a}) imports `{}` (layer {b}), a higher layer",
                e.at, e.from, e.to
            )),
            (None, _) => out.push(format!(
                "{}: module `{}` has no layer; add it to LAYERS in tests/layering.rs and to DESIGN.md's layout",
                e.at, e.from
            )),
            (_, None) => out.push(format!(
                "{}: `{}` imports `{}`, which has no layer; add it to LAYERS in tests/layering.rs",
                e.at, e.from, e.to
            )),
            _ => {}
        }
        if TOP_ONLY.contains(&e.to.as_str()) {
            out.push(format!(
                "{}: `{}` imports `{}`, which only main may start",
                e.at, e.from, e.to
            ));
        }
    }
    out.extend(cycles(edges));
    out
}

/// Import cycles between top-level modules (each reported once, by one edge on it).
fn cycles(edges: &[Edge]) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(m) = stack.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for e in edges {
        if reaches(&e.to, &e.from) {
            let mut pair = [e.from.clone(), e.to.clone()];
            pair.sort();
            if reported.insert(pair) {
                out.push(format!(
                    "{}: `{}` imports `{}`, and `{}` reaches `{}` back: an import cycle",
                    e.at, e.from, e.to, e.to, e.from
                ));
            }
        }
    }
    out
}

#[test]
fn src_follows_the_layers_with_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let edges: Vec<Edge> = files.iter().flat_map(|f| edges_of(&src, f)).collect();
    assert!(
        edges.len() > 100,
        "found only {} imports under {}: the scan is broken",
        edges.len(),
        src.display()
    );
    let v = violations(&edges);
    assert!(v.is_empty(), "layering violations:\n{}", v.join("\n"));
    // Every top-level module is in LAYERS (a new one must be placed on purpose).
    for f in &files {
        if let Some(m) = module_of(&src, f) {
            assert!(
                layer_of(&m).is_some(),
                "module `{m}` ({}) has no layer; add it to LAYERS in tests/layering.rs and to DESIGN.md's layout",
                f.display()
            );
        }
    }
}

#[test]
fn the_checker_catches_an_upward_import_a_cycle_and_a_daemon_import() {
    let e = |from: &str, to: &str| Edge {
        from: from.into(),
        to: to.into(),
        at: "x.rs:1".into(),
    };
    assert!(violations(&[e("api", "policy"), e("policy", "rules")]).is_empty());
    let up = violations(&[e("config", "api")]);
    assert!(up.iter().any(|v| v.contains("a higher layer")), "{up:?}");
    let cyc = violations(&[e("policy", "consensus"), e("consensus", "policy")]);
    assert!(cyc.iter().any(|v| v.contains("import cycle")), "{cyc:?}");
    let d = violations(&[e("cli", "daemon")]);
    assert!(d.iter().any(|v| v.contains("only main")), "{d:?}");
}
