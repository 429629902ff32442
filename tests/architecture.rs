//! The architecture invariants that a reviewer cannot see in a diff, checked
//! on the source tree itself:
//! - no file of `src/` or `testbed/src/` is longer than 600 lines (unit
//!   tests live in their own files);
//! - the module dependency graph has no cycle except the one ARCHITECTURE.md
//!   allows (an action and the Sub closure that pushes actions: `task` and
//!   `plan`).
//!
//! Dependencies are read from the source text: every `crate::a::b` path
//! (in `use` or inline) and every `super::` path, resolved to the longest
//! module that exists. The nodes are the top-level modules of the crate,
//! except that `transport`'s children are nodes of their own (they are the
//! layers a newcomer must keep apart).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
/// The strongly connected components allowed to have more than one module.
const ALLOWED_CYCLES: &[&[&str]] = &[&["plan", "task"]];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path: `src/transport/ssh/mod.rs` -> `["transport", "ssh"]`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The graph node a module belongs to.
fn node(module: &[String]) -> Option<String> {
    match module {
        [] => None,
        [t, child, ..] if t == "transport" => Some(format!("transport::{child}")),
        [first, ..] => Some(first.clone()),
    }
}

/// Whether a file is a unit-test module (`tests.rs` or under `tests/`).
fn is_test_file(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "tests.rs") || file.iter().any(|p| p == "tests")
}

/// The paths a file names: `crate::x::y` and `super::...` resolved against
/// the file's own module. Comments are skipped.
fn referenced_modules(text: &str, own: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (start, prefix) in code
            .match_indices("crate::")
            .map(|(i, _)| (i, "crate"))
            .chain(code.match_indices("super::").map(|(i, _)| (i, "super")))
        {
            // Skip `super::` that is part of a longer path (`super::super::` is handled below).
            if start > 0 && code[..start].ends_with("::") {
                continue;
            }
            let rest = &code[start..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut base: Vec<String> = if prefix == "crate" {
                Vec::new()
            } else {
                // In `foo/mod.rs` (or `foo.rs`), `super` is foo's parent.
                let mut b = own.to_vec();
                if !is_mod_file || !b.is_empty() {
                    b.pop();
                }
                b
            };
            let mut segs = path.iter().skip(1).peekable();
            while segs.peek() == Some(&&"super") {
                base.pop();
                segs.next();
            }
            base.extend(segs.map(|s| s.to_string()));
            found.push(base);
        }
    }
    found
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("testbed/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| {
            let n = fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(root).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn the_only_import_cycle_is_between_an_action_and_the_sub_that_pushes_actions() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let own = module_of(&src, file);
        let Some(from) = node(&own) else { continue };
        edges.entry(from.clone()).or_default();
        let is_mod_file = file.file_name().is_some_and(|n| n == "mod.rs");
        let text = fs::read_to_string(file).unwrap();
        // `#[cfg(test)] mod tests { ... }` inline blocks: stop at them.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for path in referenced_modules(text, &own, is_mod_file) {
            // The longest prefix that is a module of the crate.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(to) = target.as_deref().and_then(node) {
                if to != from {
                    edges.get_mut(&from).unwrap().insert(to);
                }
            }
        }
    }
    // Strongly connected components by reachability (the graph is small).
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_owned()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = edges.keys().map(|n| (n, reach(n))).collect();
    let mut components: BTreeSet<Vec<String>> = BTreeSet::new();
    for (n, r) in &reaches {
        let mut comp: Vec<String> = r
            .iter()
            .filter(|m| reaches.get(m).is_some_and(|back| back.contains(*n)))
            .cloned()
            .collect();
        if comp.len() > 1 || (comp.len() == 1 && &comp[0] != *n) {
            if !comp.contains(n) {
                comp.push((*n).clone());
            }
            comp.sort();
            components.insert(comp);
        }
    }
    let bad: Vec<&Vec<String>> = components
        .iter()
        .filter(|c| {
            !ALLOWED_CYCLES
                .iter()
                .any(|a| a.iter().map(|s| s.to_string()).collect::<Vec<_>>() == **c)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "import cycles between modules: {bad:?}\nedges: {edges:#?}"
    );
}
