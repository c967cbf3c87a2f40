//! The documentation holds together: the README fits on a few screens (≤ 200 lines of at most
//! 120 characters), the six pages behind it exist, and every relative link of the README and
//! of `docs/` points at a file that exists (and, with `#anchor`, at a heading of it).

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's anchor of a heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// Relative links `](target)` of a Markdown text (not http(s), not mailto).
fn links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            let t = &rest[..rest.find(')')?];
            (!t.starts_with("http") && !t.starts_with("mailto:")).then(|| t.to_owned())
        })
        .collect()
}

#[test]
fn the_readme_is_short_and_every_relative_link_resolves() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let n = readme.lines().count();
    assert!(n <= 200, "README has {n} lines");
    for (i, l) in readme.lines().enumerate() {
        assert!(
            l.chars().count() <= 120,
            "README line {} is {} characters",
            i + 1,
            l.chars().count()
        );
    }
    let pages = [
        "devices",
        "storage",
        "exports",
        "api",
        "operations",
        "development",
    ];
    let mut files: Vec<PathBuf> = vec![root().join("README.md")];
    for p in pages {
        let f = root().join("docs").join(format!("{p}.md"));
        assert!(f.exists(), "{} is missing", f.display());
        assert!(
            readme.contains(&format!("docs/{p}.md")),
            "the README does not link docs/{p}.md"
        );
        files.push(f);
    }
    let mut broken = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for link in links(&text) {
            let (path, frag) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                f.clone()
            } else {
                f.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}", f.display()));
            } else if let Some(a) = frag
                && target.extension().is_some_and(|e| e == "md")
                && !anchors(&target).contains(&a.to_owned())
            {
                broken.push(format!("{}: {link} (no such heading)", f.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn where_things_live_names_every_module() {
    let doc = root().join("docs/development.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let start = text
        .find("\n## Where things live")
        .expect("docs/development.md has no \"## Where things live\" section");
    let rest = &text[start + 1..];
    let section = rest.find("\n## ").map_or(rest, |end| &rest[..end]);
    let mut files = Vec::new();
    crate::layers::rust_files(&root().join("src"), &mut files);
    files.sort();
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .filter(|f| !section.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/development.md, \"Where things live\", does not name (as `path`):\n  {}",
        missing.join("\n  ")
    );
}

/// The section's text between `heading` and the next `## ` heading.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("docs/development.md has no {heading:?} section"));
    let rest = &text[start + 1..];
    rest[3..].find("\n## ").map_or(rest, |end| &rest[..end + 3])
}

#[test]
fn adding_a_kind_or_a_format_names_files_that_exist_and_every_kind_and_format() {
    let text = std::fs::read_to_string(root().join("docs/development.md")).unwrap();
    let s = section(&text, "## The export engine: adding a kind or a format");
    let named: Vec<&str> = s
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|p| p.starts_with("src/") || p.starts_with("tests/"))
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    for p in &named {
        assert!(root().join(p).exists(), "{p} is named but does not exist");
    }
    for dir in ["src/export/kind", "src/export/format"] {
        assert!(
            named.iter().any(|p| p.trim_end_matches('/') == dir),
            "{dir}"
        );
        for e in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if name != "mod" {
                assert!(
                    s.contains(&format!("`{name}`")),
                    "{dir}/{name}.rs is not named"
                );
            }
        }
    }
}
