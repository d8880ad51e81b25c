//! The crate's modules depend on each other in one direction only: no top-level module
//! (a stage folder, `io::*`, the runtime, ...) reaches, through any chain of `crate::`
//! paths outside tests and comments, back to itself.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a file belongs to (`io` splits into its children).
fn module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [io, child, ..] if io == "io" && child != "mod" => format!("io::{child}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The modules `code` names through `crate::` paths (single or grouped).
fn named(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').map(str::trim).collect(),
            None => vec![rest],
        };
        for n in names {
            let word =
                |s: &str| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("").to_owned();
            let first = word(n);
            let full = match n.strip_prefix(&format!("{first}::")) {
                Some(after) if first == "io" => format!("io::{}", word(after)),
                _ => first,
            };
            if modules.contains(&full) {
                out.insert(full);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> =
        files.iter().map(|f| module_of(f.strip_prefix(&src).unwrap())).filter(|m| m != "lib" && m != "io").collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(f.strip_prefix(&src).unwrap());
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let to = named(&code, &modules);
        edges.entry(from.clone()).or_default().extend(to.into_iter().filter(|m| *m != from));
    }
    assert!(edges.get("io::postgres").is_some_and(|e| !e.contains("connector")), "io imports no stage");
    for start in edges.keys() {
        // Depth-first from `start`; reaching `start` again is a cycle.
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for next in edges.get(last).into_iter().flatten() {
                assert!(next != start, "import cycle: {} -> {next}", path.join(" -> "));
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push(p);
                }
            }
        }
    }
}
