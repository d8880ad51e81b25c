//! Which module of a crate imports which: the `crate::` paths of each top-level module
//! (outside tests and comments), and the first import cycle among them, for the layout
//! tests that keep every crate's modules depending on each other in one direction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a file belongs to (a folder of `split` splits into its children).
fn module_of(rel: &Path, split: &[&str]) -> String {
    let parts: Vec<String> = rel.with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [dir, child, ..] if split.contains(&dir.as_str()) && child != "mod" => format!("{dir}::{child}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The modules `code` names through `crate::` paths (single or grouped).
fn named(code: &str, modules: &BTreeSet<String>, split: &[&str]) -> BTreeSet<String> {
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
                Some(after) if split.contains(&first.as_str()) => format!("{first}::{}", word(after)),
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
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Each top-level module of the crate at `src` and the modules it imports (a folder named
/// in `split` counts as one module per child: `io::kafka`, `io::postgres`).
pub fn imports(src: &Path, split: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let rel = |f: &std::path::PathBuf| f.strip_prefix(src).map(|r| r.to_owned()).unwrap_or_default();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&rel(f), split))
        .filter(|m| !["lib", "main"].contains(&m.as_str()) && !split.contains(&m.as_str()))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&rel(f), split);
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let to = named(&code, &modules, split);
        edges.entry(from.clone()).or_default().extend(to.into_iter().filter(|m| *m != from));
    }
    edges
}

/// The first import cycle among `edges`, as `a -> b -> a`.
pub fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    for start in edges.keys() {
        // Depth-first from `start`; reaching `start` again is a cycle.
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last()?;
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    return Some(format!("{} -> {next}", path.join(" -> ")));
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push(p);
                }
            }
        }
    }
    None
}
