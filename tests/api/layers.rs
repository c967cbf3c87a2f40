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
    // 1: settings, data read at start.
    ("config", 1),
    // 2: wire, identity, the audit vocabulary, the simulator.
    ("protocol", 2),
    ("auth", 2),
    ("audit", 2),
    ("sim", 2),
    ("notify", 2),
    // 3: persistence.
    ("store", 3),
    ("series", 3),
    // 4: engines.
    ("poller", 4),
    ("tariff", 4),
    ("export", 4),
    ("schedule", 4),
    ("retention", 4),
    ("live", 4),
    ("import", 4),
    ("insights", 4),
    ("alerts", 4),
    ("backup", 4),
    ("bills", 4),
    ("push", 4),
    // 5: faces and integrations.
    ("api", 5),
    ("mqtt", 5),
    ("metrics", 5),
    ("mdns", 5),
    ("sdnotify", 5),
    ("admin", 5),
    // 6: the top.
    ("app", 6),
    ("cli", 6),
    ("telemetry", 6),
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

/// Every `.rs` file under `dir`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module named by a `crate::` path in the code of `text` (also inside
/// `use crate::{…}`); comments, doc links included, are not imports.
fn targets(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = code.as_str();
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
        .unwrap_or_else(|| {
            panic!("src/{m} is in no layer: add it to LAYERS (and docs/development.md)")
        })
}

/// The arrows that run up a layer or against a never, one line each.
fn violations(arrows: BTreeMap<(String, String), BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for ((from, to), files) in arrows {
        let up = layer(to.as_str()) > layer(from.as_str());
        let never = NEVER
            .iter()
            .any(|(f, ts)| *f == from && ts.contains(&to.as_str()));
        if up || never {
            bad.push(format!(
                "{from} -> {to} ({})",
                files.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    bad
}

#[test]
fn no_import_runs_up_a_layer_or_against_a_never() {
    let bad = violations(arrows());
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
    let t = targets(
        "use crate::{a, b::c};\nlet x = crate::store::Store::open();\n/// [`crate::api`]\n",
    );
    assert_eq!(
        t,
        ["a", "b", "store"].iter().map(|s| s.to_string()).collect()
    );
    let arrow = |f: &str, t: &str| {
        (
            (f.to_owned(), t.to_owned()),
            BTreeSet::from([format!("{f}/x.rs")]),
        )
    };
    // Up a layer, against a never at the same layer, and a harmless downward one.
    let found = violations(BTreeMap::from([
        arrow("store", "api"),
        arrow("export", "tariff"),
        arrow("tariff", "export"),
        arrow("api", "store"),
    ]));
    assert_eq!(
        found,
        [
            "store -> api (store/x.rs)",
            "tariff -> export (tariff/x.rs)"
        ]
    );
}

/// Lines of each function in `text` (by its `fn` line and braces; strings, characters and
/// comments are skipped), with its name.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // Braces of a line outside strings, character literals and comments.
    let braces = |l: &str| -> Vec<char> {
        let (mut out, mut in_str, mut chars) = (Vec::new(), false, l.chars().peekable());
        let mut prev = ' ';
        while let Some(c) = chars.next() {
            match (in_str, c) {
                (true, '\\') => {
                    chars.next();
                }
                (true, '"') => in_str = false,
                (true, _) => {}
                (false, '"') => in_str = true,
                (false, '/') if chars.peek() == Some(&'/') => break,
                (false, '\'') if !prev.is_alphanumeric() => {
                    // A character literal ('{', '\'') — not a lifetime ('a).
                    let rest: String = chars.clone().take(3).collect();
                    if rest.chars().nth(1) == Some('\'') {
                        chars.nth(1);
                    } else if rest.starts_with('\\') && rest.chars().nth(2) == Some('\'') {
                        chars.nth(2);
                    }
                }
                (false, '{' | '}') => out.push(c),
                _ => {}
            }
            prev = c;
        }
        out
    };
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        let words_ok = head.split_whitespace().all(|w| {
            [
                "pub",
                "pub(crate)",
                "pub(super)",
                "async",
                "const",
                "unsafe",
            ]
            .contains(&w)
        });
        if !words_ok || t.starts_with("//") {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i32, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let b = braces(l);
            if !opened && b.is_empty() && l.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            for c in b {
                depth += if c == '{' { 1 } else { -1 };
                opened = true;
            }
            if opened && depth == 0 {
                out.push((name.clone(), j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn files_and_functions_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut big = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        if rel == "main.rs" && lines > 80 {
            big.push(format!("src/main.rs has {lines} lines (at most 80)"));
        }
        if lines > 900 {
            big.push(format!("src/{rel} has {lines} lines (at most 900)"));
        }
        for (name, n) in function_lengths(&text) {
            if n > 120 {
                big.push(format!("src/{rel}: fn {name} has {n} lines (at most 120)"));
            }
        }
    }
    assert!(big.is_empty(), "too big:\n  {}", big.join("\n  "));
}

#[test]
fn the_size_check_measures_functions_by_their_braces() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '{';\n    // }\n}\n\npub(crate) async fn b<'x>(v: &'x str) -> &'x str {\n    v\n}\nfn c();\n";
    assert_eq!(
        function_lengths(text),
        [("a".to_owned(), 5), ("b".to_owned(), 3)]
    );
}
