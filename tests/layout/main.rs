//! The workspace's layout rule: no module cycles inside a crate. Sibling
//! modules (the children of a crate root, or of a directory module such as
//! `approval-core/src/gate/`) may use each other in one direction only, so
//! each concern can be read, and replaced, without the others.
//!
//! A dependency is a path in code (not in comments or tests): from a child of
//! the crate root, `crate::other`; from a file directly in `dir/`,
//! `super::other` or `crate::dir::other`; brace groups (`crate::{a, b}`)
//! count each name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module name -> the sibling module names it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_a_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cycles = Vec::new();
    let mut levels = 0;
    for entry in fs::read_dir(root).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.join("lib.rs").is_file() && !src.join("main.rs").is_file() {
            continue;
        }
        for (level, mut graph) in module_levels(&src) {
            levels += 1;
            // Each cycle found loses its closing edge, so the next shows.
            while let Some(cycle) = find_cycle(&graph) {
                cycles.push(format!("{}: {}", level.display(), cycle.join(" -> ")));
                let [.., from, to] = &cycle[..] else {
                    unreachable!("a cycle has an edge")
                };
                graph.get_mut(from).unwrap().remove(to);
            }
        }
    }
    // The walk must have seen the workspace (a wrong root would pass).
    assert!(
        levels >= 10,
        "only {levels} module levels found under {}",
        root.display()
    );
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph = graph(&[
        ("gate", &["private", "error"]),
        ("private", &["gate"]),
        ("error", &[]),
    ]);
    assert_eq!(
        find_cycle(&graph),
        Some(strings(&["gate", "private", "gate"]))
    );
    let acyclic = graph_without_cycle();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn paths_in_code_count_and_comments_do_not() {
    let siblings = strings(&["ballot_box", "table", "limits", "error"])
        .into_iter()
        .collect();
    let text = "use super::{ballot_box::Box, table};\n\
                // crate::gate::limits is only mentioned here\n\
                /// [`crate::error`] in a doc comment\n\
                fn f() { crate::gate::limits::check(); }\n\
                #[cfg(test)]\nmod tests { use super::error; }\n";
    let reexports = reexports(
        "pub use error::{ApprovalError, Fault};\nmod table;",
        &siblings,
    );
    let used = uses(text, Some("gate"), &siblings, &reexports);
    assert_eq!(
        used,
        strings(&["ballot_box", "limits", "table"])
            .into_iter()
            .collect()
    );
    let used = uses(
        "use super::{Fault, lock};",
        Some("gate"),
        &siblings,
        &reexports,
    );
    assert_eq!(
        used,
        strings(&["error"]).into_iter().collect(),
        "through the parent's re-export"
    );
}

/// Every level of `src`: the crate root's children, then each directory
/// module's children, as (directory, graph).
fn module_levels(src: &Path) -> Vec<(PathBuf, Graph)> {
    let mut levels = Vec::new();
    let mut dirs = vec![(src.to_path_buf(), None::<String>)];
    while let Some((dir, name)) = dirs.pop() {
        let children = child_modules(&dir);
        let siblings: BTreeSet<String> = children.keys().cloned().collect();
        let reexports = parent_file(&dir)
            .map(|file| reexports(&fs::read_to_string(file).unwrap(), &siblings))
            .unwrap_or_default();
        let mut graph = Graph::new();
        for (child, files) in &children {
            let mut used = BTreeSet::new();
            for file in files {
                let text = fs::read_to_string(file).unwrap();
                // Only files directly in `dir` reach siblings through `super`.
                let direct = file.parent() == Some(dir.as_path())
                    && file.file_name().is_some_and(|f| f != "mod.rs");
                let via_super = if direct { name.as_deref() } else { None };
                used.extend(uses_at(
                    &text,
                    name.as_deref(),
                    via_super,
                    &siblings,
                    &reexports,
                ));
            }
            used.remove(child);
            graph.insert(child.clone(), used);
            if dir.join(child).is_dir() {
                dirs.push((dir.join(child), Some(path_of(name.as_deref(), child))));
            }
        }
        levels.push((dir, graph));
    }
    levels
}

fn path_of(parent: Option<&str>, child: &str) -> String {
    match parent {
        Some(parent) => format!("{parent}::{child}"),
        None => child.to_owned(),
    }
}

/// Child modules of `dir` (`x.rs` and `x/`) with the non-test files of each.
fn child_modules(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut children: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        if path.is_dir() {
            children.entry(stem).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && !["lib", "main", "mod"].contains(&stem.as_str())
            && !is_test_file(&stem)
        {
            children.entry(stem).or_default().push(path);
        }
    }
    // `bin/` holds binaries, not modules of the library.
    children.remove("bin");
    children
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(is_test_file)
        {
            files.push(path);
        }
    }
    files
}

fn is_test_file(stem: &str) -> bool {
    stem == "tests" || stem.ends_with("_tests")
}

/// The siblings a file directly in module `level` uses.
fn uses(
    text: &str,
    level: Option<&str>,
    siblings: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    uses_at(text, level, level, siblings, reexports)
}

/// The file that declares the children of `dir`: `lib.rs`, `main.rs`,
/// `mod.rs` in it, or `dir.rs` beside it.
fn parent_file(dir: &Path) -> Option<PathBuf> {
    let beside = dir.with_extension("rs");
    [
        dir.join("lib.rs"),
        dir.join("main.rs"),
        dir.join("mod.rs"),
        beside,
    ]
    .into_iter()
    .find(|file| file.is_file())
}

/// Item -> the child it comes from, for the parent's `use child::{..}`
/// re-exports: a sibling naming `super::Item` uses that child.
fn reexports(parent: &str, siblings: &BTreeSet<String>) -> BTreeMap<String, String> {
    let code = code_only(parent);
    let mut items = BTreeMap::new();
    for statement in code.split(';') {
        let Some(at) = statement.find("use ") else {
            continue;
        };
        let path = statement[at + 4..].trim();
        let Some((child, rest)) = path.split_once("::") else {
            continue;
        };
        if !siblings.contains(child) {
            continue;
        }
        for item in names_after(rest) {
            items.insert(item.to_owned(), child.to_owned());
        }
    }
    items
}

/// The siblings `text` names: through `crate::LEVEL::x` (or `crate::x` at
/// the root) and, when `via_super` is set, `super::x`.
fn uses_at(
    text: &str,
    level: Option<&str>,
    via_super: Option<&str>,
    siblings: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let code = code_only(text);
    let mut prefixes = vec![match level {
        Some(level) => format!("crate::{level}::"),
        None => "crate::".to_owned(),
    }];
    if via_super.is_some() {
        prefixes.push("super::".to_owned());
    }
    let mut used = BTreeSet::new();
    for prefix in &prefixes {
        for (at, _) in code.match_indices(prefix.as_str()) {
            // `foo_crate::x` or `self::super::x` are other paths.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for name in names_after(&code[at + prefix.len()..]) {
                if siblings.contains(name) {
                    used.insert(name.to_owned());
                } else if let Some(child) = reexports.get(name) {
                    used.insert(child.clone());
                }
            }
        }
    }
    used
}

/// The first path segment after a prefix: one identifier, or each of a
/// brace group's members.
fn names_after(rest: &str) -> Vec<&str> {
    let ident_end = |s: &str| {
        s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    if let Some(group) = rest.strip_prefix('{') {
        let mut names = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(group[start..i].trim());
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(group[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        names
            .into_iter()
            .map(|n| &n[..ident_end(n)])
            .filter(|n| !n.is_empty())
            .collect()
    } else {
        vec![&rest[..ident_end(rest)]]
    }
}

/// `text` without comment lines and without its trailing test module.
fn code_only(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cycle as the names along it (first name repeated last), if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn graph(edges: &[(&str, &[&str])]) -> Graph {
    edges
        .iter()
        .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
        .collect()
}

fn graph_without_cycle() -> Graph {
    graph(&[
        ("gate", &["error"]),
        ("private", &["gate", "error"]),
        ("error", &[]),
    ])
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}
