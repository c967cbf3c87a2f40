//! The layers of the house, checked from the code: every `crate::…` path of every file
//! under `src/` is an arrow from its top-level module to another. None may run up a layer
//! (docs/development.md draws them), none of the named forbidden ones may exist, and the
//! top-level modules may not import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, from the bottom up.
const LAYERS: &[(&str, u8)] = &[
    // 0: leaves — plain types, pure rules, small shared helpers.
    ("domain", 0),
    ("clock", 0),
    ("random", 0),
    ("tls", 0),
    ("localtime", 0),
    ("numfmt", 0),
    ("cron", 0),
    ("config", 0),
    // 1: wire, identity, the audit vocabulary, the simulator.
    ("protocol", 1),
    ("auth", 1),
    ("audit", 1),
    ("sim", 1),
    // 2: persistence.
    ("store", 2),
    ("series", 2),
    // 3: engines.
    ("poller", 3),
    ("tariff", 3),
    ("export", 3),
    ("schedule", 3),
    ("retention", 3),
    ("live", 3),
    ("import", 3),
    ("backup", 3),
    // 4: faces and integrations.
    ("api", 4),
    ("mqtt", 4),
    ("metrics", 4),
    ("mdns", 4),
    ("sdnotify", 4),
    ("healthcheck", 4),
    // 5: the top.
    ("app", 5),
    ("cli", 5),
    ("telemetry", 5),
];

/// Arrows the design names as never (besides every arrow that runs up a layer).
const NEVER: &[(&str, &[&str])] = &[
    ("store", &["export", "schedule", "tariff", "poller"]),
    ("protocol", &["auth", "schedule", "store"]),
    ("schedule", &["api"]),
    ("tariff", &["export"]),
    ("domain", &["store", "api", "auth"]),
    ("export", &["api"]),
];

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

/// The top-level module a file belongs to (`src/store/users.rs` → `store`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module named by a `crate::` path in `text` (also inside `use crate::{…}`).
fn targets(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for item in inner.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The arrows between top-level modules, with the files that make each.
fn arrows() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let from = module_of(&src, &f);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for to in targets(&text) {
            if to != from {
                out.entry((from.clone(), to))
                    .or_default()
                    .insert(f.strip_prefix(&src).unwrap().display().to_string());
            }
        }
    }
    out
}

fn layer(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("src/{m} is in no layer: add it to LAYERS (and docs/development.md)"))
}

#[test]
fn no_import_runs_up_a_layer_or_against_a_never() {
    let mut bad = Vec::new();
    for ((from, to), files) in arrows() {
        let up = layer(to.as_str()) > layer(from.as_str());
        let never = NEVER
            .iter()
            .any(|(f, ts)| *f == from && ts.contains(&to.as_str()));
        if up || never {
            bad.push(format!("{from} -> {to} ({})", files.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    assert!(bad.is_empty(), "forbidden imports:\n  {}", bad.join("\n  "));
}

#[test]
fn top_level_modules_import_each_other_in_no_circle() {
    let arrows = arrows();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in arrows.keys() {
        next.entry(from.as_str()).or_default().push(to.as_str());
    }
    // Depth-first search for a back edge; the path names the circle.
    fn visit<'a>(
        m: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut c = path[i..].to_vec();
            c.push(m);
            return Some(c.join(" -> "));
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for t in next.get(m).into_iter().flatten() {
            if let Some(c) = visit(t, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in next.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(m, &next, &mut path, &mut done) {
            panic!("import circle: {c}");
        }
    }
}

#[test]
fn the_checker_reads_use_groups_and_paths() {
    let t = targets("use crate::{a, b::c};\nlet x = crate::store::Store::open();\n");
    assert_eq!(t, ["a", "b", "store"].iter().map(|s| s.to_string()).collect());
}
