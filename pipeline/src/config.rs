//! What every stage's own `config.rs` shares: serde helpers for the scenario's human forms
//! (durations such as "250ms", client settings whose values may be numbers), and the
//! [`Problems`] a section's `validate` reports by dotted field, which the scenario then
//! locates by file and line.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// One problem with a section: `table` (`connector`, `streamjob.patterns`), the entry's
/// index in an array of tables, the key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub table: String,
    pub index: Option<usize>,
    pub key: String,
    pub message: String,
}

impl Problem {
    /// The dotted field: `connector.tasks`, `streamjob.patterns[1].within`, `name`.
    pub fn field(&self) -> String {
        match (self.table.as_str(), self.index) {
            ("", _) => self.key.clone(),
            (t, None) if self.key.is_empty() => t.to_owned(),
            (t, Some(i)) => format!("{t}[{i}].{}", self.key),
            (t, None) => format!("{t}.{}", self.key),
        }
    }
}

/// The problems found so far, in the order found.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records that `key` of `table` (its `index`-th entry, for an array of tables) is wrong.
    pub fn bad(&mut self, table: &str, index: Option<usize>, key: &str, message: impl Into<String>) {
        self.0.push(Problem { table: table.into(), index, key: key.into(), message: message.into() });
    }

    /// Whether none were found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a stage's checks need to know of the rest of the scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct Around {
    /// How long the load goes, warm-up included: whatever is scheduled must come before.
    pub load_ends: Duration,
    /// The stages run as processes of their own (`[stages] external`).
    pub external: bool,
}

/// Whether `name` uses only `a-z`, `0-9`, `_`, `.`, `-` (and is not empty).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// What [`valid_name`] asks, said to the user.
pub const NAME_RULE: &str = "must be non-empty and use only a-z, 0-9, `_`, `.`, `-`";

/// Whether `s` looks like `host:port[,host:port...]`.
pub fn valid_bootstrap(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|hp| {
            hp.rsplit_once(':')
                .is_some_and(|(h, p)| !h.trim().is_empty() && p.trim().parse::<u16>().is_ok_and(|p| p > 0))
        })
}

/// A human duration: "250ms", "30s", "1m".
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let d = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. \"250ms\" or \"30s\""))
    })?;
    if d > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "`{s}` is longer than a year, the longest duration a scenario takes"
        )));
    }
    Ok(d)
}

/// The longest duration a scenario takes (a year): sums of durations cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A human duration that may be left out (use with `#[serde(default)]`).
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// librdkafka settings: names to values, where TOML numbers and booleans are taken as the
/// strings librdkafka wants.
pub fn settings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let m = BTreeMap::<String, V>::deserialize(d)?;
    m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                V::S(s) => from_env(&s).map_err(|e| serde::de::Error::custom(format!("`{k}`: {e}")))?,
                V::I(i) => i.to_string(),
                V::F(f) => f.to_string(),
                V::B(b) => b.to_string(),
            };
            Ok((k, v))
        })
        .collect()
}

/// `value` with every `${NAME}` replaced by the environment variable `NAME`, so that
/// secrets need not be written in a file; an unset variable is an error naming it.
pub fn from_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("`${{` without its closing `}}` in {value:?}"))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{name}}}` is not an environment variable's name"));
        }
        let found = std::env::var(name).map_err(|_| format!("the environment variable {name} is not set"))?;
        out.push_str(&found);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_dotted_with_their_index() {
        let mut p = Problems::default();
        p.bad("streamjob.patterns", Some(1), "within", "x");
        p.bad("connector", None, "tasks", "x");
        p.bad("", None, "name", "x");
        p.bad("profiles.fast", None, "", "x");
        let fields: Vec<String> = p.0.iter().map(Problem::field).collect();
        assert_eq!(fields, ["streamjob.patterns[1].within", "connector.tasks", "name", "profiles.fast"]);
    }

    #[test]
    fn bootstrap_lists_need_a_host_and_a_port_each() {
        assert!(valid_bootstrap("a:9092,b:9093"));
        for bad in ["", "a", "a:0", ":9092", "a:9092,", "a:x"] {
            assert!(!valid_bootstrap(bad), "{bad}");
        }
    }
}
