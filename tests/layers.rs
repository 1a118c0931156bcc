//! The module graph of src/ points down: no import cycle between the top-level modules of the
//! library, and reading a checkpoint (`model/`) never depends on the GPU (`gpu/`). Both are read
//! from the source text, so a new `use` that breaks them fails here, in CI, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
}

/// The source without comments (line comments, doc comments and block comments), so that prose
/// naming a module is not taken for a dependency. String literals are kept: no path in them
/// resolves to a module.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if let Some(after) = rest.strip_prefix('"') {
            // Skip the literal whole, so that a "//" inside it does not start a comment.
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.push('"');
            out.push_str(&after[..end]);
            rest = &after[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The top-level modules of the library, as lib.rs declares them (`mod x;` / `pub mod x;`).
fn top_level_modules() -> BTreeSet<String> {
    let lib = code(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            line.strip_prefix("mod ")?.strip_suffix(';').map(|name| name.trim().to_string())
        })
        .collect()
}

/// The module path of a file under src/: src/a.rs and src/a/mod.rs are [a], src/a/b.rs is [a, b].
fn module_path(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).unwrap().with_extension("");
    let mut path: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segments of the paths that follow `prefix` in `code`: `crate::a::b` gives a, and a
/// group `crate::{a::x, b}` gives a and b.
fn first_segments<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(|c| is_ident_char(c) || c == ':') {
            continue; // part of a longer identifier or path
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && is_ident_char(c) => {
                        let end = group[i..].find(|c: char| !is_ident_char(c)).map_or(group.len(), |n| i + n);
                        found.push(&group[i..end]);
                        item_start = false;
                    }
                    c if !c.is_whitespace() => item_start = false,
                    _ => {}
                }
            }
        } else {
            let end = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
            found.push(&rest[..end]);
        }
    }
    found
}

/// For each top-level module, the other top-level modules its files name through `crate::`
/// (or through `super::` chains that climb to the crate root).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_level_modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in files {
        let path = module_path(&file);
        let Some(top) = path.first().filter(|m| modules.contains(*m)) else { continue };
        let code = code(&std::fs::read_to_string(&file).unwrap());
        let mut named: Vec<&str> = first_segments(&code, "crate::");
        // `super::` from a file directly under src/ reaches the crate root; deeper files climb
        // to the root only with as many `super::` as they are deep.
        let root_super = "super::".repeat(path.len());
        named.extend(first_segments(&code, &root_super));
        for name in named {
            if name != top && modules.contains(name) {
                graph.get_mut(top).unwrap().insert(name.to_string());
            }
        }
    }
    graph
}

/// Every cycle's modules, as the strongly connected components of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in &graph[&m] {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reaches(m))).collect();
    let mut components: Vec<Vec<String>> = Vec::new();
    for m in graph.keys() {
        if components.iter().any(|c| c.contains(m)) {
            continue;
        }
        let component: Vec<String> = graph.keys().filter(|o| *o == m || (reach[m].contains(*o) && reach[*o].contains(m))).cloned().collect();
        if component.len() > 1 {
            components.push(component);
        }
    }
    components
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = dependencies();
    assert!(graph.contains_key("model") && graph.contains_key("gpu"), "lib.rs was not read: {graph:?}");
    let found = cycles(&graph);
    // Each cycle as its modules and, for each, the modules of the cycle it uses.
    let show = |cycle: &Vec<String>| -> String {
        let uses = |m: &String| graph[m].iter().filter(|d| cycle.contains(d)).cloned().collect::<Vec<_>>().join(", ");
        cycle.iter().map(|m| format!("{m} -> {{{}}}", uses(m))).collect::<Vec<_>>().join("; ")
    };
    let shown: Vec<String> = found.iter().map(show).collect();
    assert!(found.is_empty(), "import cycles between src/ modules: {}", shown.join(" | "));
}

#[test]
fn reading_a_checkpoint_does_not_depend_on_the_gpu() {
    let graph = dependencies();
    assert!(!graph["model"].contains("gpu"), "src/model/ uses crate::gpu");
    // Also by name, whatever path reaches it (`super::super::gpu`, a `use` of a re-export).
    let mut files = Vec::new();
    rust_files(&src().join("model"), &mut files);
    assert!(files.len() > 3, "src/model/ was not read");
    for file in files {
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for (n, line) in code.lines().enumerate() {
            assert!(!line.contains("gpu::"), "{}:{}: model code uses the GPU module: {}", file.display(), n + 1, line.trim());
        }
    }
}

/// The checks themselves: a cycle, a grouped import and a `super::` path are all seen.
#[test]
fn the_cycle_check_finds_cycles() {
    let code = code("use crate::{a::x, b}; // crate::c\nlet s = \"// not a comment\"; super::d::f(); /* crate::e */");
    assert_eq!(first_segments(&code, "crate::"), ["a", "b"]);
    assert_eq!(first_segments(&code, "super::"), ["d"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(m, deps)| (m.to_string(), deps.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycles(&graph), [vec!["a".to_string(), "b".into(), "c".into()]]);
}
