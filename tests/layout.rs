//! The layout of the tree, checked: the sans-IO core crate (`core/`) never
//! depends on Spin or on the component, no module imports another that
//! imports it back (directly or through others), and no source file grows
//! past about 600 lines unless its module doc says why (a `//! Length:`
//! line). Each check is also run on a deliberately broken copy, so a check
//! that cannot fail does not pass unnoticed.
//!
//! The import reader is a small hand parser over the source with comments
//! and literals removed: it follows use trees (nested groups, `self`,
//! `as`), `super::` at any depth, names bound by `use` and `mod`, and
//! names a module root re-exports (`pub use part::*`) back to the part
//! that defines them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a source file may have without a `//! Length:` reason.
const MAX_LINES: usize = 600;

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

/// A module path from the crate root: `ingest/plan.rs` → `["ingest", "plan"]`.
type ModPath = Vec<String>;

/// The module a file defines: `lib.rs` → `[]`, `cosmos/mod.rs` →
/// `["cosmos"]`, `ingest/plan.rs` → `["ingest", "plan"]`.
fn module_path(rel: &Path) -> ModPath {
    let mut parts: ModPath = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// `text` without comments (line, block — nested — and doc comments) and
/// with the contents of string and character literals removed (a string
/// becomes `""`), so that neither can name a module.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !ident(c[i - 1]) || c[i - 1] == 'b')
            && c[i + 1..]
                .iter()
                .find(|&&x| x != '#')
                .is_some_and(|&x| x == '"')
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str(" \"\" ");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str(" \"\" ");
        } else if c[i] == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 3;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str(" '' ");
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str(" '' ");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The tokens of stripped source: identifiers, `::`, `""`, and single
/// punctuation characters.
fn tokens(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let s = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[s..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c[i] == '"' && c.get(i + 1) == Some(&'"') {
            out.push("\"\"".into());
            i += 2;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// What names mean in one module scope: `mod x;` and `use a::b as x;`
/// make `x` a path (`None` when it leads outside the crate, `use std::fmt`).
type Aliases = BTreeMap<String, Option<ModPath>>;

/// What a source file says about modules.
#[derive(Default)]
struct FileInfo {
    /// The module the file defines.
    module: ModPath,
    /// Every crate path it names (in `use` or in code), resolved against
    /// the file's own module (so `super::`, `self::` and its imports are
    /// gone), before re-exports are followed.
    refs: Vec<ModPath>,
    /// Its module-level names (imports and child modules).
    aliases: Aliases,
    /// The modules it glob-imports (`pub use part::*`).
    globs: Vec<ModPath>,
    /// The items it defines publicly at the top level.
    items: BTreeSet<String>,
}

/// One scope while reading a file: its module path, the brace depth that
/// closes it, and its names.
struct Scope {
    module: ModPath,
    depth: usize,
    aliases: Aliases,
}

/// A leaf of a use tree: the path it names (`None` outside the crate),
/// the name it binds (`None` for a glob).
type Leaf = (Option<ModPath>, Option<String>);

fn lookup(scopes: &[Scope], name: &str) -> Option<Option<ModPath>> {
    scopes
        .iter()
        .rev()
        .find_map(|s| s.aliases.get(name).cloned())
}

fn parent(p: &ModPath) -> ModPath {
    p[..p.len().saturating_sub(1)].to_vec()
}

/// Reads a use tree (or a plain path) at `t[i]`; `prefix` is the path so
/// far (`None` outside the crate) and `first` whether `t[i]` opens the path.
fn use_tree(
    t: &[String],
    mut i: usize,
    prefix: Option<ModPath>,
    first: bool,
    scopes: &[Scope],
    out: &mut Vec<Leaf>,
) -> usize {
    let Some(tok) = t.get(i) else { return i };
    match tok.as_str() {
        "{" => {
            i += 1;
            while i < t.len() && t[i] != "}" {
                let before = i;
                i = use_tree(t, i, prefix.clone(), first, scopes, out);
                // Past a `,` and past anything unreadable.
                if t.get(i).is_some_and(|x| x == ",") || i == before {
                    i += 1;
                }
            }
            i + 1
        }
        "*" => {
            out.push((prefix, None));
            i + 1
        }
        "::" if first => use_tree(t, i + 1, None, false, scopes, out),
        name if name.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            let module = &scopes.last().unwrap().module;
            let (path, bind) = match (first, name) {
                (true, "crate") => (Some(Vec::new()), None),
                (true, "super") => (Some(parent(module)), None),
                (true, "self") => (Some(module.clone()), None),
                (true, _) => (lookup(scopes, name).flatten(), Some(name.to_owned())),
                (false, "super") => (prefix.as_ref().map(parent), None),
                (false, "self") => (
                    prefix.clone(),
                    prefix.as_ref().and_then(|p| p.last().cloned()),
                ),
                (false, _) => (
                    prefix.clone().map(|mut p| {
                        p.push(name.to_owned());
                        p
                    }),
                    Some(name.to_owned()),
                ),
            };
            i += 1;
            if t.get(i).is_some_and(|x| x == "::") {
                return use_tree(t, i + 1, path, false, scopes, out);
            }
            let mut bind = bind;
            if t.get(i).is_some_and(|x| x == "as") {
                bind = t.get(i + 1).cloned();
                i += 2;
            }
            out.push((path, Some(bind.unwrap_or_default())));
            i
        }
        _ => i,
    }
}

const ITEM_KINDS: [&str; 9] = [
    "fn", "struct", "enum", "type", "const", "static", "trait", "union", "mod",
];

/// Reads one file: its imports, the crate paths it names, its public items.
fn file_info(rel: &Path, text: &str) -> FileInfo {
    let module = module_path(rel);
    let t = tokens(&strip(text));
    let mut base = Aliases::new();
    // Child modules are names from anywhere in the file.
    for w in t.windows(3) {
        if w[0] == "mod" && (w[2] == ";" || w[2] == "{") {
            let mut p = module.clone();
            p.push(w[1].clone());
            base.insert(w[1].clone(), Some(p));
        }
    }
    let mut scopes = vec![Scope {
        module: module.clone(),
        depth: 0,
        aliases: base,
    }];
    let mut info = FileInfo {
        module: module.clone(),
        ..FileInfo::default()
    };
    let mut depth = 0;
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    while i < t.len() {
        let tok = t[i].as_str();
        let prev = if i > 0 { t[i - 1].as_str() } else { "" };
        let next = t.get(i + 1).map(String::as_str).unwrap_or("");
        match tok {
            "{" => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    let mut m = scopes.last().unwrap().module.clone();
                    m.push(name);
                    scopes.push(Scope {
                        module: m,
                        depth,
                        aliases: Aliases::new(),
                    });
                }
                i += 1;
            }
            "}" => {
                if scopes.len() > 1 && scopes.last().unwrap().depth == depth {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            "mod" if t.get(i + 2).is_some_and(|x| x == "{") => {
                pending_mod = Some(next.to_owned());
                i += 2;
            }
            "use" if prev != "::" => {
                let mut leaves = Vec::new();
                i = use_tree(&t, i + 1, None, true, &scopes, &mut leaves);
                let top = scopes.len() == 1;
                for (path, bind) in leaves {
                    match bind {
                        Some(name) if !name.is_empty() && name != "_" => {
                            scopes
                                .last_mut()
                                .unwrap()
                                .aliases
                                .insert(name, path.clone());
                        }
                        None if top => info.globs.extend(path.clone()),
                        _ => {}
                    }
                    info.refs.extend(path);
                }
            }
            "pub" if scopes.len() == 1 && depth == 0 => {
                let mut j = i + 1;
                if t.get(j).is_some_and(|x| x == "(") {
                    while j < t.len() && t[j] != ")" {
                        j += 1;
                    }
                    j += 1;
                }
                while t.get(j).is_some_and(|x| {
                    ["async", "unsafe", "extern", "\"\""].contains(&x.as_str())
                        || (x == "const" && t.get(j + 1).is_some_and(|y| y == "fn"))
                }) {
                    j += 1;
                }
                if t.get(j).is_some_and(|k| ITEM_KINDS.contains(&k.as_str())) {
                    if let Some(name) = t.get(j + 1) {
                        info.items.insert(name.clone());
                    }
                }
                i += 1;
            }
            _ if next == "::"
                && prev != "::"
                && prev != "."
                && (["crate", "super", "self"].contains(&tok)
                    || lookup(&scopes, tok).is_some()) =>
            {
                let mut leaves = Vec::new();
                i = use_tree(&t, i, None, true, &scopes, &mut leaves);
                info.refs.extend(leaves.into_iter().filter_map(|(p, _)| p));
            }
            _ => i += 1,
        }
    }
    info.aliases = scopes.swap_remove(0).aliases;
    info
}

/// `path` with re-exports followed: a name a module root imports
/// (`pub use part::{Plan}`) or glob-imports (`pub use part::*`, found
/// through the parts' public items) becomes the path where it is defined.
fn resolve(mut path: ModPath, by_module: &BTreeMap<ModPath, &FileInfo>) -> ModPath {
    'again: for _ in 0..16 {
        for i in 0..path.len() {
            let Some(root) = by_module.get(&path[..i]) else {
                continue;
            };
            if by_module.contains_key(&path[..=i]) {
                continue;
            }
            let name = &path[i];
            if let Some(Some(target)) = root.aliases.get(name) {
                if *target != path[..=i] {
                    let mut p = target.clone();
                    p.extend_from_slice(&path[i + 1..]);
                    path = p;
                    continue 'again;
                }
            }
            for g in &root.globs {
                if by_module.get(g).is_some_and(|f| f.items.contains(name)) && *g != path[..i] {
                    let mut p = g.clone();
                    p.extend_from_slice(&path[i..]);
                    path = p;
                    continue 'again;
                }
            }
            break 'again;
        }
        break;
    }
    path
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph among the modules one level below `prefix`: `a → b`
/// when a file of `a` names a path into `b` (after re-exports are
/// followed to where the name is defined).
fn graph(files: &[FileInfo], prefix: &[String]) -> Graph {
    let by_module: BTreeMap<ModPath, &FileInfo> =
        files.iter().map(|f| (f.module.clone(), f)).collect();
    let below = |p: &ModPath| -> Option<String> {
        (p.len() > prefix.len() && p[..prefix.len()] == *prefix).then(|| p[prefix.len()].clone())
    };
    let children: BTreeSet<String> = files.iter().filter_map(|f| below(&f.module)).collect();
    let mut g = Graph::new();
    for f in files {
        let Some(m) = below(&f.module) else { continue };
        let deps = g.entry(m.clone()).or_default();
        for r in &f.refs {
            let r = resolve(r.clone(), &by_module);
            if let Some(n) = below(&r) {
                if n != m && children.contains(&n) {
                    deps.insert(n);
                }
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
    let files: Vec<FileInfo> = sources(src)
        .iter()
        .map(|(p, text)| file_info(p, text))
        .collect();
    let mut prefixes: BTreeSet<ModPath> = BTreeSet::new();
    for f in &files {
        for i in 0..f.module.len() {
            prefixes.insert(f.module[..i].to_vec());
        }
    }
    let mut found = Vec::new();
    for prefix in prefixes {
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
    // The reader sees the real imports: the ingest folder's parts and
    // the core's top-level modules name each other.
    let core = root().join("core/src");
    let files: Vec<FileInfo> = sources(&core)
        .iter()
        .map(|(p, t)| file_info(p, t))
        .collect();
    let top = graph(&files, &[]);
    assert!(top["ingest"].contains("events"), "{top:?}");
    let ingest = graph(&files, &["ingest".to_owned()]);
    assert!(ingest["seal"].contains("plan"), "{ingest:?}");
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

/// Core files, other than the two allowed ones, that read a clock, draw
/// randomness or keep global state (tests aside).
fn impure_core_files(src: &Path) -> Vec<String> {
    const ALLOWED: [&str; 2] = ["time.rs", "tally.rs"];
    const IMPURE: [&str; 9] = [
        "SystemTime",
        "Instant",
        "UnixTime::now",
        "thread_local",
        "static mut",
        "OnceLock",
        "Mutex",
        "OsRng",
        "thread_rng",
    ];
    sources(src)
        .into_iter()
        .filter(|(p, _)| {
            !ALLOWED.iter().any(|a| p == Path::new(a))
                && !p.iter().any(|c| c == "tests" || c == "tests.rs")
        })
        .filter_map(|(p, text)| {
            let code = strip(&text);
            IMPURE
                .iter()
                .find(|w| code.contains(*w))
                .map(|w| format!("{}: {w}", p.display()))
        })
        .collect()
}

#[test]
fn only_time_and_tally_read_a_clock_or_keep_state_in_the_core() {
    let found = impure_core_files(&root().join("core/src"));
    assert_eq!(found, Vec::<String>::new());
    // Broken copy: a decision that reads the clock itself.
    let dir = scratch(
        "clock",
        &[
            ("time.rs", "pub fn now() { std::time::SystemTime::now(); }"),
            (
                "hsm.rs",
                "/// Not `UnixTime::now()`.\nfn f() { let _ = crate::time::UnixTime::now(); }",
            ),
            (
                "hsm/tests.rs",
                "static C: std::sync::OnceLock<u8> = std::sync::OnceLock::new();",
            ),
        ],
    );
    assert_eq!(impure_core_files(&dir), ["hsm.rs: UnixTime::now"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// The packages the core crate builds with (its normal dependencies,
/// transitively), from `cargo metadata` over the committed lockfile.
fn core_dependencies() -> BTreeSet<String> {
    core_dependencies_in(&root(), &["--locked"])
}

/// The normal dependencies, transitively, of the `cmk-core` package in the
/// workspace at `dir`, resolved offline.
fn core_dependencies_in(dir: &Path, args: &[&str]) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(args)
        .current_dir(dir)
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
/// macro and bindings (every `spin-` crate; the unrelated `spin` lock
/// crate, without the dash, is allowed), the WASI bindings and the
/// generator behind them, an OS random source, and the component crate.
fn forbidden(deps: &BTreeSet<String>) -> Vec<&String> {
    deps.iter()
        .filter(|d| {
            d.starts_with("spin-")
                || d.starts_with("wit-bindgen")
                || ["wasi", "getrandom", "cmk-ingest"].contains(&d.as_str())
        })
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

/// The loops found in a scratch crate made of `files`.
fn loops_in(name: &str, files: &[(&str, &str)]) -> Vec<String> {
    let dir = scratch(name, files);
    let found = loops(&dir);
    let _ = std::fs::remove_dir_all(dir);
    found
}

/// A folder module `ingest` whose part `seal` imports `plan` by name,
/// with `plan.rs` (and any further files) as given.
fn folder_with(plan: &str, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = [
        ("lib.rs", "pub mod ingest;"),
        (
            "ingest.rs",
            "mod outcome; mod plan; mod seal;\npub use outcome::*;\npub use plan::*;\npub use seal::*;",
        ),
        ("ingest/outcome.rs", "pub struct Outcome;"),
        ("ingest/seal.rs", "use super::plan::Plan;\npub struct Sealed;\npub fn seal(_: &Plan) {}"),
    ]
    .iter()
    .chain(more)
    .map(|(p, t)| (p.to_string(), t.to_string()))
    .collect();
    files.push(("ingest/plan.rs".into(), format!("pub struct Plan;\n{plan}")));
    files
}

fn folder_loops(name: &str, plan: &str, more: &[(&str, &str)]) -> Vec<String> {
    let files = folder_with(plan, more);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    loops_in(name, &files)
}

#[test]
fn a_loop_through_a_nested_use_group_is_found() {
    let files = |a: &'static str| {
        [
            ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
            ("a.rs", a),
            ("b.rs", "pub struct B;"),
            (
                "c.rs",
                "pub struct X; pub struct Y; fn f(_: crate::a::A) {}",
            ),
        ]
    };
    let found = loops_in(
        "nested",
        &files("pub struct A;\nuse crate::{c::{X, Y}, b::B};"),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("a → c → a"), "{found:?}");
    // Without `c` in the group there is none.
    assert_eq!(
        loops_in("nested-ok", &files("pub struct A;\nuse crate::{b::{B}};")),
        Vec::<String>::new()
    );
}

#[test]
fn a_loop_through_a_name_the_folder_root_re_exports_is_found() {
    // `plan` names `Sealed` through the folder root's `pub use seal::*`.
    let found = folder_loops("glob", "fn f(_: super::Sealed) {}", &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("plan → seal → plan"), "{found:?}");
    let found = folder_loops("glob-crate", "use crate::ingest::Sealed;", &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    // An explicit re-export under another name, too.
    let root = [(
        "ingest.rs",
        "mod outcome; mod plan; mod seal;\npub use plan::Plan;\npub use seal::{seal, Sealed as Closed};",
    )];
    let found = folder_loops("explicit", "fn f(_: super::Closed) {}", &root);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("plan → seal → plan"), "{found:?}");
    // A name defined by another part is no loop.
    assert_eq!(
        folder_loops("glob-ok", "fn f(_: super::Outcome) {}", &[]),
        Vec::<String>::new()
    );
}

#[test]
fn a_loop_through_super_super_is_found() {
    let deep = [("ingest/plan/deep.rs", "use super::super::seal::Sealed;")];
    let found = folder_loops("super", "mod deep;", &deep);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("plan → seal → plan"), "{found:?}");
    // `super::` alone from there is `plan` itself.
    let shallow = [("ingest/plan/deep.rs", "use super::Plan;")];
    assert_eq!(
        folder_loops("super-ok", "mod deep;", &shallow),
        Vec::<String>::new()
    );
}

#[test]
fn a_loop_through_a_crate_path_into_the_folder_is_found() {
    let found = folder_loops("group", "use crate::ingest::{outcome::Outcome, seal};", &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("plan → seal → plan"), "{found:?}");
    // The folder imported by name, then a part through it.
    let found = folder_loops(
        "named",
        "use crate::ingest;\nfn f(_: ingest::seal::Sealed) {}",
        &[],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("plan → seal → plan"), "{found:?}");
}

#[test]
fn comments_and_strings_do_not_import() {
    let plan = "/// Sealed later by [`super::seal::Sealed`].\n\
                //! See crate::ingest::seal.\n\
                /* use super::seal; /* nested */ super::seal::x */\n\
                const S: &str = \"super::seal::Sealed\";\n\
                const R: &str = r#\"crate::ingest::seal\"#;\n\
                const C: char = '\"';\n\
                const Q: [char; 2] = ['\\'', '\"'];\n\
                const L: &str = \"'\";\n\
                fn f() {}";
    assert_eq!(folder_loops("doc", plan, &[]), Vec::<String>::new());
    // The same line as code is an import.
    let found = folder_loops(
        "doc-code",
        &format!("{plan}\nuse super::seal::Sealed;"),
        &[],
    );
    assert_eq!(found.len(), 1, "{found:?}");
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
    for d in [
        "spin-sdk",
        "spin-executor",
        "wit-bindgen-rt",
        "wasi",
        "getrandom",
        "cmk-ingest",
    ] {
        deps.insert(d.into());
    }
    deps.insert("spin".into());
    assert_eq!(forbidden(&deps).len(), 6, "{:?}", forbidden(&deps));
}

#[test]
fn a_spin_dependency_in_a_copy_of_the_core_manifest_is_found() {
    // The core's manifest (without its examples), with a path dependency
    // on a small crate named `spin-sdk`, in a workspace of its own that
    // starts from the committed lockfile: the same metadata walk as above.
    let manifest = std::fs::read_to_string(root().join("core/Cargo.toml")).unwrap();
    // Its path dev-dependency (the component's heap, for the benches)
    // points at a stand-in beside it.
    let manifest = manifest[..manifest.find("[[example]]").unwrap_or(manifest.len())]
        .replace(
            "[dependencies]\n",
            "[dependencies]\nspin-sdk = { path = \"spin-sdk\" }\n",
        )
        .replace("path = \"../heap\"", "path = \"heap\"");
    assert!(manifest.contains("spin-sdk = { path"), "{manifest}");
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let dir = scratch(
        "manifest",
        &[
            ("Cargo.toml", &format!("{manifest}\n[workspace]\n")),
            ("Cargo.lock", &lock),
            ("src/lib.rs", ""),
            (
                "spin-sdk/Cargo.toml",
                "[package]\nname = \"spin-sdk\"\nversion = \"0.0.0\"\nedition = \"2021\"\n",
            ),
            ("spin-sdk/src/lib.rs", ""),
            (
                "heap/Cargo.toml",
                "[package]\nname = \"cmk-heap\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("heap/src/lib.rs", ""),
        ],
    );
    let deps = core_dependencies_in(&dir, &[]);
    assert!(deps.contains("aes-gcm"), "{deps:?}");
    assert_eq!(forbidden(&deps), ["spin-sdk"]);
    let _ = std::fs::remove_dir_all(dir);
}
