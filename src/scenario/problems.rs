//! Where a scenario's problems are: each found by dotted field, located by file and line
//! in the text it came from, and all reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// Everything wrong with one scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.field.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": `{}`: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

impl ScenarioError {
    /// One problem with the file as a whole.
    pub fn whole(file: &Path, message: String) -> Self {
        Self { file: file.to_owned(), problems: vec![Problem { line: None, field: String::new(), message }] }
    }

    /// The file could not be read.
    pub fn unreadable(file: &Path, e: &std::io::Error) -> Self {
        Self::whole(file, format!("cannot read: {e}"))
    }

    /// What the TOML parser (and serde) refused, at its line.
    pub fn parse(file: &Path, text: &str, e: &toml::de::Error) -> Self {
        let line = e.span().map(|s| line_of(text, s.start));
        Self {
            file: file.to_owned(),
            problems: vec![Problem {
                line,
                field: line.map(|l| field_at(text, l)).unwrap_or_default(),
                message: e.message().trim_end().to_owned(),
            }],
        }
    }
}

/// The problems sections found by dotted field, each located in `text`.
pub fn locate_all(text: &str, found: pipeline::config::Problems) -> Vec<Problem> {
    found
        .0
        .into_iter()
        .map(|p| Problem { line: locate(text, &p.table, p.index, &p.key), field: p.field(), message: p.message })
        .collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The dotted field set on 1-based `line` (`load.duration`, `sla[1].max`), or "" when the
/// line sets none.
pub fn field_at(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate().take(line) {
        let l = raw.trim();
        if l.starts_with("[[") {
            let name = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            let i = arrays.entry(name.clone()).and_modify(|i| *i += 1).or_insert(0);
            table = format!("{name}[{i}]");
        } else if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
        } else if n + 1 == line
            && !l.starts_with('#')
            && let Some((key, _)) = l.split_once('=')
        {
            let key = key.trim().trim_matches('"');
            return if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") };
        }
    }
    String::new()
}

/// The 1-based line where `key` is set in `[table]` (the `index`-th `[[table]]` for arrays,
/// the top level for `""`), or the table's header line when the key is not written there.
pub fn locate(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut seen = 0usize;
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim();
            current = name.to_owned();
            if line.starts_with("[[") && name == table {
                seen += 1;
            }
            let here = name == table && index.is_none_or(|i| seen == i + 1);
            // `[a.b.c]` locates table `a.b` when `a.b` itself has no header.
            let nested = index.is_none() && name.strip_prefix(table).is_some_and(|rest| rest.starts_with('.'));
            if here || (nested && header_line.is_none()) {
                header_line = Some(n + 1);
            }
            continue;
        }
        let in_table = current == table && index.is_none_or(|i| seen == i + 1);
        if in_table {
            let k = line.split('=').next().unwrap_or_default().trim().trim_matches('"');
            if k == key && line.contains('=') {
                return Some(n + 1);
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_in_arrays_of_tables_too() {
        let text =
            "name = \"t\"\n[load]\nrate = 1\nduration = \"1s\"\n[[sla]]\nmetric = \"x\"\n[[sla]]\nmax = \"high\"\n";
        assert_eq!(field_at(text, 8), "sla[1].max");
        assert_eq!(field_at(text, 3), "load.rate");
        assert_eq!(field_at(text, 1), "name");
        assert_eq!(field_at(text, 2), "");
    }

    #[test]
    fn a_key_is_found_in_its_table_or_the_table_is() {
        let text = "[a]\nx = 1\n[[b]]\ny = 1\n[[b]]\ny = 2\n[c.d.e]\nz = 1\n";
        assert_eq!(locate(text, "a", None, "x"), Some(2));
        assert_eq!(locate(text, "b", Some(1), "y"), Some(6));
        assert_eq!(locate(text, "a", None, "w"), Some(1));
        assert_eq!(locate(text, "c.d", None, "e"), Some(7));
    }
}
