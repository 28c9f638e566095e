//! The layout of the tree, checked: the sans-IO core crate (`core/`) never
//! depends on Spin or on the component, no module imports another that
//! imports it back (directly or through others), and no source file grows
//! past about 600 lines unless its module doc says why (a `//! Length:`
//! line). Each check is also run on a deliberately broken copy, so a check
//! that cannot fail does not pass unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a source file may have without a `//! Length:` reason.
const MAX_LINES: usize = 650;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, text).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

/// The module a file belongs to at one level below `prefix` (the crate's
/// top-level modules for an empty prefix): `cosmos/auth.rs` → `cosmos`.
/// `None` for the crate root and for files outside the prefix.
fn module_of(rel: &Path, prefix: &[&str]) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.len() <= prefix.len() || parts[..prefix.len()] != *prefix {
        return None;
    }
    let m = parts[prefix.len()].clone();
    if prefix.is_empty() && m == "lib" {
        return None;
    }
    if !prefix.is_empty() && m == "mod" {
        // The folder module itself, not one of its parts.
        return None;
    }
    Some(m)
}

/// Names that follow `pat` in `text` (`crate::` → `crate::config::X`
/// gives `config`; `crate::{a, b::c}` gives `a` and `b`).
fn names_after(text: &str, pat: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(pat) {
        let before = rest[..i].chars().last();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph among the modules one level below `prefix` (its
/// files name each other through `crate::<prefix>::<m>`, or `super::<m>`
/// inside a folder module).
fn graph(files: &[(PathBuf, String)], prefix: &[&str]) -> Graph {
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(p, _)| module_of(p, prefix))
        .collect();
    let mut g = Graph::new();
    for (p, text) in files {
        let Some(m) = module_of(p, prefix) else {
            continue;
        };
        let deps = g.entry(m.clone()).or_default();
        let mut names = Vec::new();
        let via_crate = if prefix.is_empty() {
            "crate::".to_owned()
        } else {
            format!("crate::{}::", prefix.join("::"))
        };
        names.extend(names_after(text, &via_crate));
        // `super::x` from a file directly in a folder module names a
        // sibling. (In a top-level file, `super::` appears only in its
        // `mod tests`, where it names the file's own module.)
        let depth = p.iter().count();
        if !prefix.is_empty() && depth == prefix.len() + 1 {
            names.extend(names_after(text, "super::"));
        }
        for n in names {
            if n != m && modules.contains(&n) {
                deps.insert(n);
            }
        }
    }
    g
}

/// A cycle in `g`, as the modules along it, if there is one.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == d).unwrap();
                    let mut c = path[start..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(g, d, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(g, n, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Every import loop in a crate's source: among its top-level modules,
/// and among the parts of each folder module.
fn loops(src: &Path) -> Vec<String> {
    let files = sources(src);
    let mut prefixes: BTreeSet<Vec<String>> = BTreeSet::new();
    prefixes.insert(Vec::new());
    for (p, _) in &files {
        let dirs: Vec<String> = p
            .parent()
            .into_iter()
            .flat_map(|d| d.iter())
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        for i in 1..=dirs.len() {
            prefixes.insert(dirs[..i].to_vec());
        }
    }
    let mut found = Vec::new();
    for prefix in prefixes {
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        if let Some(c) = cycle(&graph(&files, &prefix)) {
            found.push(format!("{}: {}", src.display(), c.join(" → ")));
        }
    }
    found
}

/// Files over [`MAX_LINES`] without a `//! Length:` line.
fn long_files(src: &Path) -> Vec<String> {
    sources(src)
        .into_iter()
        .filter(|(_, text)| {
            text.lines().count() > MAX_LINES
                && !text
                    .lines()
                    .take_while(|l| l.starts_with("//!") || l.is_empty())
                    .any(|l| l.starts_with("//! Length:"))
        })
        .map(|(p, text)| format!("{}: {} lines", p.display(), text.lines().count()))
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for src in [root().join("core/src"), root().join("src")] {
        let found = loops(&src);
        assert!(found.is_empty(), "import loops: {found:#?}");
    }
}

#[test]
fn no_source_file_is_long_without_a_reason() {
    for src in [
        root().join("core/src"),
        root().join("core/tests"),
        root().join("src"),
    ] {
        let found = long_files(&src);
        assert!(
            found.is_empty(),
            "over {MAX_LINES} lines without a `//! Length:` reason in the module doc: {found:#?}"
        );
    }
}

/// The packages the core crate builds with (its normal dependencies,
/// transitively), from `cargo metadata` over the committed lockfile.
fn core_dependencies() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let name_of = |id: &str| -> String {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let core_id = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cmk-core")
        .expect("the workspace has cmk-core")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seen = BTreeSet::new();
    let mut stack = vec![core_id];
    while let Some(id) = stack.pop() {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap().to_owned();
            if normal && seen.insert(pkg.clone()) {
                stack.push(pkg);
            }
        }
    }
    seen.iter().map(|id| name_of(id)).collect()
}

/// What the core must never build with: the Spin SDK and its executor,
/// and the component crate.
fn forbidden(deps: &BTreeSet<String>) -> Vec<&String> {
    deps.iter()
        .filter(|d| d.starts_with("spin-") || *d == "cmk-ingest")
        .collect()
}

#[test]
fn the_core_crate_depends_on_neither_spin_nor_the_component() {
    let deps = core_dependencies();
    assert!(
        deps.contains("http") && deps.contains("aes-gcm"),
        "{deps:?}"
    );
    assert_eq!(forbidden(&deps), Vec::<&String>::new());
}

// The checks above, on broken copies.

fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmk-layout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn a_loop_through_three_modules_is_found() {
    let dir = scratch(
        "loop",
        &[
            ("lib.rs", "pub mod access; pub mod api; pub mod config;"),
            ("access.rs", "use crate::api::ApiError;"),
            ("api.rs", "use crate::{config::ConfigError, time};"),
            (
                "config.rs",
                "fn f() { let _ = crate::access::Keys::parse(\"\"); }",
            ),
        ],
    );
    let found = loops(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with("access → api → config → access"),
        "{found:?}"
    );
    // Broken once more: without the closing edge there is no loop.
    std::fs::write(dir.join("config.rs"), "fn f() {}").unwrap();
    assert_eq!(loops(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_loop_between_the_parts_of_a_folder_module_is_found() {
    let dir = scratch(
        "folder",
        &[
            ("lib.rs", "pub mod ingest;"),
            ("ingest/mod.rs", "mod plan; mod seal;"),
            ("ingest/plan.rs", "use super::seal::Sealed;"),
            ("ingest/seal.rs", "use crate::ingest::plan::Plan;"),
        ],
    );
    let found = loops(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("plan → seal → plan"), "{found:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_long_file_needs_a_reason_in_its_module_doc() {
    let body = "fn f() {}\n".repeat(MAX_LINES + 1);
    let dir = scratch(
        "long",
        &[
            ("short.rs", "//! Short.\nfn f() {}\n"),
            ("long.rs", &format!("//! Long.\n{body}")),
            (
                "explained.rs",
                &format!("//! Long.\n//!\n//! Length: one table of known answers.\n{body}"),
            ),
        ],
    );
    let found = long_files(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("long.rs"), "{found:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_spin_dependency_of_the_core_would_be_refused() {
    let mut deps = core_dependencies();
    assert!(forbidden(&deps).is_empty());
    deps.insert("spin-sdk".into());
    deps.insert("cmk-ingest".into());
    assert_eq!(forbidden(&deps).len(), 2);
}
