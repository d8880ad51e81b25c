//! Scenario files: what to run (load, pipeline, broker, client settings) and the SLA to
//! judge it by. TOML, strictly validated: unknown fields are refused, durations are human
//! ("250ms", "30s"), and every problem is reported at once with file, line and field.

use loadgen::{Arrival, KeyDist};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in run directory names (`[a-z0-9_.-]`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub load: Load,
    #[serde(default)]
    pub broker: Broker,
    #[serde(default)]
    pub pipeline: Pipeline,
    #[serde(default)]
    pub kafka: Kafka,
    /// SLA objectives (`[[sla]]`).
    #[serde(default)]
    pub sla: Vec<Objective>,
}

/// The workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Events per second.
    pub rate: f64,
    #[serde(default)]
    pub arrival: Arrival,
    #[serde(default = "default_sessions")]
    pub sessions: u64,
    /// `uniform` or `zipf`.
    #[serde(default)]
    pub key_distribution: KeyKind,
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
    #[serde(default = "default_warmup", deserialize_with = "duration")]
    pub warmup: Duration,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Longest wait after the last send for events still in flight.
    #[serde(default = "default_drain", deserialize_with = "duration")]
    pub drain: Duration,
    #[serde(default)]
    pub seed: u64,
}

/// Session key distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    #[default]
    Uniform,
    Zipf,
}

const fn default_sessions() -> u64 {
    64
}
const fn default_zipf_exponent() -> f64 {
    1.0
}
const fn default_payload_bytes() -> usize {
    256
}
const fn default_warmup() -> Duration {
    Duration::from_secs(5)
}
const fn default_drain() -> Duration {
    Duration::from_secs(10)
}
const fn default_partitions() -> i32 {
    3
}

impl Load {
    /// The key distribution as the load generator takes it.
    pub fn keys(&self) -> KeyDist {
        match self.key_distribution {
            KeyKind::Uniform => KeyDist::Uniform,
            KeyKind::Zipf => KeyDist::Zipf { exponent: self.zipf_exponent },
        }
    }
}

/// Which broker to use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// `host:port` of an external Kafka cluster; absent means the embedded broker.
    pub bootstrap: Option<String>,
    /// Partitions per topic.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
}

impl Default for Broker {
    fn default() -> Self {
        Self { bootstrap: None, partitions: default_partitions() }
    }
}

/// How the reference pipeline's stages behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Simulated model call time per beat.
    #[serde(default, deserialize_with = "duration")]
    pub model_latency: Duration,
    /// Recent choices an agent prompt recalls.
    #[serde(default = "default_history")]
    pub history: usize,
    /// Stream job tumbling window.
    #[serde(default = "default_window", deserialize_with = "duration")]
    pub window: Duration,
    /// Stream job watermark lag.
    #[serde(default = "default_out_of_orderness", deserialize_with = "duration")]
    pub out_of_orderness: Duration,
    /// Connector's wait before looking for new rows again.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
}

const fn default_history() -> usize {
    3
}
const fn default_window() -> Duration {
    Duration::from_secs(1)
}
const fn default_out_of_orderness() -> Duration {
    Duration::from_millis(200)
}
const fn default_poll_interval() -> Duration {
    Duration::from_micros(500)
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            model_latency: Duration::ZERO,
            history: default_history(),
            window: default_window(),
            out_of_orderness: default_out_of_orderness(),
            poll_interval: default_poll_interval(),
        }
    }
}

/// librdkafka settings for every stage, over tailgate's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    #[serde(default, deserialize_with = "settings")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer: BTreeMap<String, String>,
}

/// One SLA objective: a metric of `result.json` and its bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// A path into `result.json`, such as `end_to_end.p99_ms` or `hops.agent.p99_ms`.
    pub metric: String,
    pub max: Option<f64>,
    pub min: Option<f64>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. \"250ms\" or \"30s\""))
    })
}

fn settings<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let m = BTreeMap::<String, V>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                V::S(s) => s,
                V::I(i) => i.to_string(),
                V::F(f) => f.to_string(),
                V::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

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

/// Statistics every latency metric has in `result.json`.
pub const STATS: [&str; 8] = ["count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"];
/// Counters in `result.json`'s `counts`.
pub const COUNTS: [&str; 5] = ["sent", "delivered", "dead_lettered", "lost", "duplicates"];

/// The hop names of the reference pipeline, in path order.
pub fn hop_names() -> Vec<String> {
    let mut names = Vec::new();
    let mut prev = crate::result::SOURCE;
    for stage in pipeline::STAGES {
        names.push(probes::hops::transit_name(prev, stage));
        names.push(stage.to_owned());
        prev = stage;
    }
    names.push(probes::hops::transit_name(prev, crate::result::SINK));
    names
}

/// Whether `metric` names a number in `result.json`.
pub fn known_metric(metric: &str) -> bool {
    let parts: Vec<&str> = metric.split('.').collect();
    match parts.as_slice() {
        ["achieved_rate" | "target_rate" | "duration_s" | "warmup_s"] => true,
        ["counts", c] => COUNTS.contains(c),
        ["end_to_end" | "schedule_lag", s] => STATS.contains(s),
        ["hops", hop, s] => STATS.contains(s) && hop_names().iter().any(|h| h == hop),
        _ => false,
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_owned(),
            problems: vec![Problem { line: None, field: String::new(), message: format!("cannot read: {e}") }],
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates scenario text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ScenarioError {
                file: path.to_owned(),
                problems: vec![Problem {
                    line,
                    field: line.map(|l| field_at(text, l)).unwrap_or_default(),
                    message: e.message().trim_end().to_owned(),
                }],
            }
        })?;
        let problems = scenario.validate(text);
        if problems.is_empty() { Ok(scenario) } else { Err(ScenarioError { file: path.to_owned(), problems }) }
    }

    /// Every semantic problem, each located in `text` where the field is written.
    pub fn validate(&self, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |table: &str, index: Option<usize>, key: &str, message: String| {
            let field = match (table, index) {
                ("", _) => key.to_owned(),
                (t, Some(i)) => format!("{t}[{i}].{key}"),
                (t, None) => format!("{t}.{key}"),
            };
            problems.push(Problem { line: locate(text, table, index, key), field, message });
        };
        let name_ok = !self.name.is_empty()
            && self.name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c));
        if !name_ok {
            bad("", None, "name", "must be non-empty and use only a-z, 0-9, `_`, `.`, `-`".into());
        }
        let l = &self.load;
        if !(l.rate.is_finite() && l.rate > 0.0) {
            bad("load", None, "rate", format!("must be a positive number of events per second, not {}", l.rate));
        }
        if l.sessions == 0 {
            bad("load", None, "sessions", "must be at least 1".into());
        }
        if l.key_distribution == KeyKind::Zipf && !(l.zipf_exponent.is_finite() && l.zipf_exponent > 0.0) {
            bad("load", None, "zipf_exponent", format!("must be positive, not {}", l.zipf_exponent));
        }
        if l.duration.is_zero() {
            bad("load", None, "duration", "must be longer than zero".into());
        }
        if l.payload_bytes > 1_000_000 {
            bad("load", None, "payload_bytes", "must be at most 1000000".into());
        }
        if !(1..=1024).contains(&self.broker.partitions) {
            bad("broker", None, "partitions", format!("must be 1 to 1024, not {}", self.broker.partitions));
        }
        if let Some(b) = &self.broker.bootstrap
            && !valid_bootstrap(b)
        {
            bad("broker", None, "bootstrap", format!("`{b}` is not host:port[,host:port...]"));
        }
        if self.pipeline.window.is_zero() {
            bad("pipeline", None, "window", "must be longer than zero".into());
        }
        for (i, o) in self.sla.iter().enumerate() {
            if !known_metric(&o.metric) {
                bad(
                    "sla",
                    Some(i),
                    "metric",
                    format!(
                        "`{}` is not a metric of result.json; use e.g. end_to_end.p99_ms, hops.agent.p99_ms \
                         (hops: {}), counts.lost or achieved_rate",
                        o.metric,
                        hop_names().join(", ")
                    ),
                );
            }
            match (o.max, o.min) {
                (None, None) => bad("sla", Some(i), "max", "an objective needs `max` or `min`".into()),
                (Some(_), Some(_)) => bad("sla", Some(i), "min", "give `max` or `min`, not both".into()),
                (Some(v), None) | (None, Some(v)) if !v.is_finite() => {
                    bad("sla", Some(i), "max", "the bound must be a finite number".into());
                }
                _ => {}
            }
        }
        problems
    }
}

/// Whether `s` looks like `host:port[,host:port...]`.
pub fn valid_bootstrap(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|hp| {
            hp.rsplit_once(':')
                .is_some_and(|(h, p)| !h.trim().is_empty() && p.trim().parse::<u16>().is_ok_and(|p| p > 0))
        })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The dotted field set on 1-based `line` (`load.duration`, `sla[1].max`), or "" when the
/// line sets none.
fn field_at(text: &str, line: usize) -> String {
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
fn locate(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
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
            if here {
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

    const GOOD: &str = r#"
name = "t"
[load]
rate = 100
duration = "2s"
[[sla]]
metric = "end_to_end.p99_ms"
max = 50
"#;

    fn errors(text: &str) -> String {
        Scenario::parse(Path::new("s.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_in() {
        let s = Scenario::parse(Path::new("s.toml"), GOOD).unwrap();
        assert_eq!(s.load.sessions, 64);
        assert_eq!(s.load.warmup, Duration::from_secs(5));
        assert_eq!(s.broker.partitions, 3);
        assert!(s.broker.bootstrap.is_none());
    }

    #[test]
    fn a_typo_names_file_line_and_field() {
        let e = errors("name = \"t\"\n[load]\nrate = 100\nduraton = \"2s\"\n");
        assert!(e.starts_with("s.toml:4: `load.duraton`: unknown field `duraton`"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_its_line() {
        let e = errors("name = \"t\"\n[load]\nrate = 100\nduration = \"2 fortnights\"\n");
        assert!(e.starts_with("s.toml:4: `load.duration`: `2 fortnights` is not a duration"), "{e}");
    }

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
    fn every_semantic_problem_is_reported_at_once() {
        let text = "name = \"T T\"\n[load]\nrate = 0\nduration = \"1s\"\n[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = 1\n\
                    [[sla]]\nmetric = \"hops.agnet.p99_ms\"\nmax = 5\n";
        let e = Scenario::parse(Path::new("s.toml"), text).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = e.problems.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(got, [(Some(1), "name"), (Some(3), "load.rate"), (Some(9), "sla[1].metric")]);
    }

    #[test]
    fn metrics_are_checked_against_result_json() {
        for m in
            ["end_to_end.p99_ms", "hops.agent.p999_ms", "hops.connector->agent.p50_ms", "counts.lost", "achieved_rate"]
        {
            assert!(known_metric(m), "{m}");
        }
        for m in ["end_to_end.p98_ms", "hops.model.p99_ms", "counts", "lost"] {
            assert!(!known_metric(m), "{m}");
        }
    }

    #[test]
    fn bootstrap_addresses_are_checked() {
        assert!(valid_bootstrap("localhost:9092"));
        assert!(valid_bootstrap("a:1,b:2"));
        assert!(!valid_bootstrap("localhost"));
        assert!(!valid_bootstrap("a:0"));
    }
}
