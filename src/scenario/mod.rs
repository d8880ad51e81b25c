//! Scenario files: what to run (load, broker, client settings, the stages' own sections)
//! and the SLA to judge it by. TOML, strictly validated: unknown fields are refused,
//! durations are human ("250ms", "30s"), and every problem is reported at once with file,
//! line and field. Each stage declares, defaults and checks its own section
//! (`pipeline::{connector,agent,streamjob,gateway}::config`); this module locates what they
//! find.

mod faults;
mod problems;
mod profiles;
mod schedule;
mod sections;
mod sla;
pub mod workers;

pub use faults::{FaultKind, FaultSection, RESTARTABLE};
pub use pipeline::agent::config::AgentSection;
pub use pipeline::config::valid_bootstrap;
pub use pipeline::connector::config::{ConnectorSection, SourceKind};
pub use pipeline::context_sink::EdgeCacheSection;
pub use pipeline::gateway::config::GatewaySection;
pub use pipeline::io::clients::ClientSettings;
pub use pipeline::streamjob::config::StreamJobSection;
pub use problems::{Problem, ScenarioError};
pub use profiles::{DEFAULT_PROFILE, Profile, Resolved};
pub use schedule::{ScheduleKind, ScheduleSection};
pub use sections::{SearchSection, StagesSection, TelemetrySection};
pub use sla::{Objective, hop_names, known_metric, load_sla};
pub use workers::{AudienceKind, WorkersSection};

use loadgen::{Arrival, KeyDist, Shape};
use pipeline::config::{Around, NAME_RULE, Problems, duration, valid_name};
use serde::{Deserialize, Deserializer};
use std::path::Path;
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
    /// librdkafka and topic settings for every stage (`[kafka]`).
    #[serde(default)]
    pub kafka: ClientSettings,
    #[serde(default)]
    pub connector: ConnectorSection,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub edge_cache: EdgeCacheSection,
    #[serde(default)]
    pub streamjob: StreamJobSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub stages: StagesSection,
    /// `[search]`: the run is a capacity search (as with `--find-max-rate`), done so.
    pub search: Option<SearchSection>,
    /// `[workers]`: the load comes from `tailgate worker` processes on other hosts.
    pub workers: Option<WorkersSection>,
    /// SLA objectives (`[[sla]]`).
    #[serde(default)]
    pub sla: Vec<Objective>,
    /// Faults the run applies while the load goes (`[[faults]]`).
    #[serde(default)]
    pub faults: Vec<FaultSection>,
    /// Tuning profiles (`[profiles.NAME]`), run in the order written; none means one run
    /// with the `[kafka]` settings, named `default`.
    #[serde(default, deserialize_with = "ordered")]
    pub profiles: Vec<(String, Profile)>,
}

/// The workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Events per second, throughout; `[load.schedule]` instead for a rate that changes.
    pub rate: Option<f64>,
    /// A rate that changes over the load (`[load.schedule]`): a ramp or steps.
    pub schedule: Option<ScheduleSection>,
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
    /// Every `poison_every`-th event is written unreadable (a broken `traceparent`), to
    /// exercise the dead-letter path; 0: none.
    #[serde(default)]
    pub poison_every: u64,
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
/// The most partitions a topic may have: what OpenMessaging Benchmark's workloads use at
/// most, and what the embedded broker serves.
pub const MAX_PARTITIONS: i32 = 10_000;

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

    /// How long the load goes, warm-up included.
    pub fn ends(&self) -> Duration {
        self.warmup.saturating_add(self.duration)
    }

    /// The target rate over time, from the start of the load (warm-up included).
    pub fn shape(&self) -> Shape {
        match (&self.schedule, self.rate) {
            (Some(s), _) => s.shape(),
            (None, rate) => Shape::Constant { rate: rate.unwrap_or_default() },
        }
    }

    /// `rate` events per second throughout, in place of the scenario's rate or schedule.
    pub fn set_rate(&mut self, rate: f64) {
        self.rate = Some(rate);
        self.schedule = None;
    }

    /// The mean target rate of the measured period.
    pub fn measured_rate(&self) -> f64 {
        let (shape, from, to) = (self.shape(), self.warmup.as_secs_f64(), self.ends().as_secs_f64());
        (shape.events_by(to) - shape.events_by(from)) / (to - from).max(f64::EPSILON)
    }

    /// Its problems; `searching`: a capacity search sets the rate of each step, so none
    /// need be given.
    fn validate(&self, searching: bool, p: &mut Problems) {
        match (self.rate, &self.schedule) {
            (Some(_), Some(_)) => p.bad(
                "load",
                None,
                "rate",
                "a constant rate and [load.schedule] both given; keep one (a schedule sets its own rates)",
            ),
            (None, None) if !searching => {
                p.bad("load", None, "rate", "missing: give `rate` (events per second) or a [load.schedule]");
            }
            (Some(rate), None) if !(rate.is_finite() && rate > 0.0) => {
                p.bad("load", None, "rate", format!("must be a positive number of events per second, not {rate}"));
            }
            _ => {}
        }
        if let Some(s) = &self.schedule {
            s.validate(p);
        }
        if self.sessions == 0 {
            p.bad("load", None, "sessions", "must be at least 1");
        }
        if self.key_distribution == KeyKind::Zipf && !(self.zipf_exponent.is_finite() && self.zipf_exponent > 0.0) {
            p.bad("load", None, "zipf_exponent", format!("must be positive, not {}", self.zipf_exponent));
        }
        if self.duration.is_zero() {
            p.bad("load", None, "duration", "must be longer than zero");
        }
        if self.payload_bytes > 1_000_000 {
            p.bad("load", None, "payload_bytes", "must be at most 1000000");
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
    /// Replicas per topic the run creates; absent: three where the cluster has three
    /// brokers or more, else every broker (the embedded broker: one).
    pub replication: Option<i32>,
    /// The embedded broker's listener: `PLAINTEXT` (the default), `SSL`, `SASL_PLAINTEXT`
    /// or `SASL_SSL`. The run's clients connect as `[kafka.client]` says.
    pub security_protocol: Option<String>,
    /// The embedded broker's TLS certificate chain and key (PEM), for the `SSL` listeners.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// The embedded broker's SASL users and their passwords (`"${ENV}"` takes one from the
    /// environment), for the `SASL` listeners.
    #[serde(default, deserialize_with = "pipeline::config::settings")]
    pub users: std::collections::BTreeMap<String, String>,
    /// Put before the name of every topic and consumer group the run makes, so that runs
    /// sharing a cluster do not collide (`team-a.` makes `team-a.story.actions`).
    pub topic_prefix: Option<String>,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            bootstrap: None,
            partitions: default_partitions(),
            replication: None,
            security_protocol: None,
            tls_cert: None,
            tls_key: None,
            users: std::collections::BTreeMap::new(),
            topic_prefix: None,
        }
    }
}

impl Broker {
    fn validate(&self, p: &mut Problems) {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            p.bad("broker", None, "partitions", format!("must be 1 to {MAX_PARTITIONS}, not {}", self.partitions));
        }
        if let Some(b) = &self.bootstrap
            && !valid_bootstrap(b)
        {
            p.bad("broker", None, "bootstrap", format!("`{b}` is not host:port[,host:port...]"));
        }
        match self.replication {
            Some(r) if !(1..=16).contains(&r) => {
                p.bad("broker", None, "replication", format!("must be 1 to 16, not {r}"));
            }
            Some(r) if r > 1 && self.bootstrap.is_none() => p.bad(
                "broker",
                None,
                "replication",
                "the embedded broker is one node: it keeps one replica (set `bootstrap` for a cluster)",
            ),
            _ => {}
        }
        self.validate_security(p);
        if let Some(prefix) = &self.topic_prefix
            && let Err(e) = valid_topic_prefix(prefix)
        {
            p.bad("broker", None, "topic_prefix", e);
        }
    }

    /// The embedded broker's listener, and the files and users it needs.
    fn validate_security(&self, p: &mut Problems) {
        let embedded_only = "applies to the embedded broker; for a cluster set `security.protocol` in [kafka.client]";
        for (field, set) in [
            ("security_protocol", self.security_protocol.is_some()),
            ("tls_cert", self.tls_cert.is_some()),
            ("tls_key", self.tls_key.is_some()),
            ("users", !self.users.is_empty()),
        ] {
            if set && self.bootstrap.is_some() {
                p.bad("broker", None, field, embedded_only);
            }
        }
        #[cfg(not(feature = "embedded"))]
        if self.security_protocol.is_some() && self.bootstrap.is_none() {
            p.bad("broker", None, "security_protocol", "this build has no embedded broker (feature `embedded`)");
        }
        #[cfg(feature = "embedded")]
        {
            let protocol = match self.protocol() {
                Ok(protocol) => protocol,
                Err(e) => return p.bad("broker", None, "security_protocol", e),
            };
            let name = protocol.name();
            if protocol.tls() {
                for (field, path) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
                    match path {
                        None => p.bad("broker", None, field, format!("a {name} listener needs it (a PEM file)")),
                        Some(f) if !f.is_file() => p.bad("broker", None, field, format!("no file at {}", f.display())),
                        Some(_) => {}
                    }
                }
            }
            if protocol.sasl() && self.users.is_empty() {
                p.bad("broker", None, "users", format!("a {name} listener needs at least one user"));
            }
        }
    }

    /// The embedded broker's security protocol (`PLAINTEXT` unless set), parsed as the
    /// broker itself names them.
    #[cfg(feature = "embedded")]
    pub fn protocol(&self) -> Result<pipeline::embedded::security::Protocol, String> {
        self.security_protocol.as_deref().map_or(Ok(pipeline::embedded::security::Protocol::Plaintext), str::parse)
    }
}

/// Whether `prefix` can go before a topic's name: Kafka's legal characters (letters,
/// digits, `.`, `_`, `-`), and short enough to leave the longest of the pipeline's names
/// within Kafka's 249 characters.
pub fn valid_topic_prefix(prefix: &str) -> Result<(), String> {
    let longest = pipeline::topology::every_topic().map(str::len).max().unwrap_or(0);
    if prefix.is_empty() {
        return Err("must not be empty (leave it out for no prefix)".into());
    }
    if let Some(c) = prefix.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("`{prefix}` has {c:?}; a topic's name takes letters, digits, `.`, `_` and `-`"));
    }
    if prefix.len() + longest > 249 {
        return Err(format!("`{prefix}` is too long: with it the longest topic's name passes Kafka's 249 characters"));
    }
    Ok(())
}

/// Where each key of the old `[pipeline]` section lives now.
const MOVED: [(&str, &str); 5] = [
    ("model_latency", "[agent] model_latency"),
    ("history", "[agent] history"),
    ("window", "[streamjob] window"),
    ("out_of_orderness", "[streamjob] out_of_orderness"),
    ("poll_interval", "[connector] poll_interval"),
];

/// A map that keeps the order its entries are written in.
fn ordered<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<(String, T)>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of named profiles")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::unreadable(path, &e))?;
        Self::parse(path, &text)
    }

    /// Parses and validates scenario text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let moved = moved_keys(text);
        if !moved.is_empty() {
            return Err(ScenarioError { file: path.to_owned(), problems: moved });
        }
        let scenario: Self = toml::from_str(text).map_err(|e| ScenarioError::parse(path, text, &e))?;
        let problems = scenario.validate(text);
        if problems.is_empty() { Ok(scenario) } else { Err(ScenarioError { file: path.to_owned(), problems }) }
    }

    /// The stages' own sections, as the pipeline assembles itself from them.
    pub fn pipeline_config(&self) -> pipeline::assemble::PipelineConfig {
        pipeline::assemble::PipelineConfig {
            connector: self.connector.clone(),
            agent: self.agent.clone(),
            edge_cache: self.edge_cache.clone(),
            streamjob: self.streamjob.clone(),
            gateway: self.gateway.clone(),
        }
    }

    /// What the scenario's faults can act on.
    pub fn fault_targets(&self) -> faults::Targets {
        let pg = |url: &Option<String>| url.as_deref().is_some_and(|u| u.starts_with("postgres"));
        let enrich = self.streamjob.enrich.as_ref().is_some_and(|e| pg(&e.url));
        faults::Targets {
            external_broker: self.broker.bootstrap.is_some(),
            external_stages: self.stages.external,
            postgres: enrich
                || (self.connector.source == pipeline::connector::config::SourceKind::Postgres
                    && pg(&self.connector.postgres)),
            redis: self
                .edge_cache
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("redis://") || u.starts_with("rediss://")),
        }
    }

    /// What load from workers cannot be combined with: the workers post the actions to
    /// the gateway, so the connector's source is the gateway's HTTP ingress.
    pub fn workers_conflict(&self) -> Option<(&'static str, &'static str, &'static str)> {
        if self.connector.source == SourceKind::Postgres {
            return Some((
                "connector",
                "source",
                "workers post the actions to the gateway: use \"http\" (or leave it out)",
            ));
        }
        if self.stages.external {
            return Some(("stages", "external", "workers run against the run's own stages for now"));
        }
        if self.search.is_some() {
            return Some(("search", "", "a capacity search runs its steps from this host; leave out [workers]"));
        }
        None
    }

    fn validate_workers(&self, p: &mut Problems) {
        if let Some((section, field, why)) = self.workers_conflict() {
            p.bad(section, None, field, why);
        }
    }

    /// Every semantic problem, each located in `text` where the field is written.
    pub fn validate(&self, text: &str) -> Vec<Problem> {
        let mut p = Problems::default();
        if !valid_name(&self.name) {
            p.bad("", None, "name", NAME_RULE);
        }
        self.load.validate(self.search.is_some(), &mut p);
        self.broker.validate(&mut p);
        let around = Around { load_ends: self.load.ends(), external: self.stages.external };
        self.connector.validate(&around, &mut p);
        self.agent.validate(&around, &mut p);
        self.edge_cache.validate(&mut p);
        self.stages.validate(self.connector.filters(), &mut p);
        self.streamjob.validate(&around, &mut p);
        self.gateway.validate(&mut p);
        self.telemetry.validate(&self.sla, &mut p);
        if let Some(s) = &self.search {
            s.validate(&mut p);
        }
        if let Some(w) = &self.workers {
            w.validate(&mut p);
            self.validate_workers(&mut p);
        }
        faults::validate(&self.faults, self.load.ends(), self.fault_targets(), &mut p);
        profiles::validate(&self.kafka, &self.profiles, &mut p);
        for (name, profile) in &self.profiles {
            if profile.agent == Some(pipeline::agent::config::AgentKind::Faust) && self.agent.concurrency != 1 {
                let why = "runs the Faust agent, which has one actor per partition: set agent.concurrency = 1";
                p.bad(&format!("profiles.{name}"), None, "agent", why);
            }
        }
        sla::validate(&self.sla, &mut p);
        problems::locate_all(text, p)
    }
}

/// The keys of a `[pipeline]` section, each with where it lives now. The section held
/// settings of three stages; each stage's section has its own.
fn moved_keys(text: &str) -> Vec<Problem> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return Vec::new() };
    let Some(old) = table.get("pipeline") else { return Vec::new() };
    let keys: Vec<&String> = old.as_table().map(|t| t.keys().collect()).unwrap_or_default();
    let mut p = Problems::default();
    if keys.is_empty() {
        p.bad("pipeline", None, "", "`[pipeline]` is gone: its settings live in the stages' own sections");
    }
    for key in keys {
        let message = match MOVED.iter().find(|(k, _)| k == key) {
            Some((_, home)) => format!("moved: write it as `{home}`"),
            None => "`[pipeline]` is gone: its settings live in the stages' own sections".into(),
        };
        p.bad("pipeline", None, key, message);
    }
    problems::locate_all(text, p)
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
    fn a_ramp_or_steps_stand_in_for_the_rate() {
        let ramp = "name = \"t\"\n[load]\nwarmup = \"2s\"\nduration = \"8s\"\n[load.schedule]\nkind = \"ramp\"\nfrom = 100\nto = 500\nover = \"4s\"\n";
        let s = Scenario::parse(Path::new("s.toml"), ramp).unwrap();
        assert_eq!(s.load.shape(), Shape::Ramp { from: 100.0, to: 500.0, over_s: 4.0 });
        // Measured: seconds 2 to 10, 3,800 events due (350 and 450, then 500 a second for six).
        assert_eq!(s.load.measured_rate(), 3_800.0 / 8.0);
        let steps = "name = \"t\"\n[load]\nduration = \"6s\"\n[load.schedule]\nkind = \"step\"\nrates = [10, 20]\nevery = \"3s\"\n";
        let mut s = Scenario::parse(Path::new("s.toml"), steps).unwrap();
        assert_eq!(s.load.shape(), Shape::Step { rates: vec![10.0, 20.0], every_s: 3.0 });
        s.load.set_rate(7.0);
        assert_eq!(s.load.shape(), Shape::Constant { rate: 7.0 });
        let neither = errors("name = \"t\"\n[load]\nduration = \"6s\"\n");
        assert!(
            neither.contains("`load.rate`: missing: give `rate` (events per second) or a [load.schedule]"),
            "{neither}"
        );
        let incomplete = errors("name = \"t\"\n[load]\nduration = \"6s\"\n[load.schedule]\nkind = \"ramp\"\nto = 5\n");
        assert!(
            incomplete.contains("s.toml:4: `load.schedule.from`: missing: a ramp schedule needs from, to, over"),
            "{incomplete}"
        );
        assert!(incomplete.contains("`load.schedule.over`: missing"), "{incomplete}");
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
    fn every_semantic_problem_is_reported_at_once() {
        let text = "name = \"T T\"\n[load]\nrate = 0\nduration = \"1s\"\n[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = 1\n\
                    [[sla]]\nmetric = \"hops.agnet.p99_ms\"\nmax = 5\n";
        let e = Scenario::parse(Path::new("s.toml"), text).unwrap_err();
        let got: Vec<(Option<usize>, &str)> = e.problems.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(got, [(Some(1), "name"), (Some(3), "load.rate"), (Some(9), "sla[1].metric")]);
    }

    const PROFILES: &str = r#"
name = "t"
[load]
rate = 100
duration = "2s"
[broker]
partitions = 2
[kafka.producer]
"acks" = "all"
"linger.ms" = 3
[profiles.zeta]
partitions = 1
[profiles.zeta.producer]
"linger.ms" = 0
[profiles.alpha]
description = "batchy"
[profiles.alpha.producer]
"linger.ms" = 20
"compression.type" = "lz4"
[profiles.alpha.topic]
"compression.type" = "producer"
[profiles.alpha.stages.gateway.consumer]
"fetch.wait.max.ms" = 5
"#;

    #[test]
    fn profiles_run_in_the_order_written_over_the_base_settings() {
        let s = Scenario::parse(Path::new("s.toml"), PROFILES).unwrap();
        let all = s.resolve(&[]).unwrap();
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        let (zeta, alpha) = (&all[0], &all[1]);
        assert_eq!(zeta.partitions, 1);
        assert_eq!(zeta.clients.producer["linger.ms"], "0");
        assert_eq!(zeta.clients.producer["acks"], "all", "the base settings stay under the profile's");
        assert_eq!(alpha.partitions, 2);
        assert_eq!(alpha.clients.producer["compression.type"], "lz4");
        assert_eq!(alpha.clients.topic["compression.type"], "producer");
        assert_eq!(alpha.clients.stages["gateway"].consumer["fetch.wait.max.ms"], "5");
        let only = s.resolve(&["alpha".into()]).unwrap();
        assert_eq!(only.len(), 1);
        let e = s.resolve(&["beta".into()]).unwrap_err();
        assert_eq!(e, "--profile `beta`: scenario `t` has the profiles zeta, alpha");

        let plain = Scenario::parse(Path::new("s.toml"), GOOD).unwrap();
        let one = plain.resolve(&[]).unwrap();
        assert_eq!((one.len(), one[0].name.as_str()), (1, DEFAULT_PROFILE));
    }

    #[test]
    fn client_settings_librdkafka_refuses_are_named_with_their_line() {
        let text = PROFILES.replace("\"linger.ms\" = 20", "\"linger.mss\" = 20").replace("= \"lz4\"", "= \"zip\"");
        let e = errors(&text);
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(lines[0].starts_with("s.toml:19: `profiles.alpha.producer.compression.type`: "), "{e}");
        assert!(lines[0].contains("zip"), "{e}");
        assert!(
            lines[1].starts_with("s.toml:18: `profiles.alpha.producer.linger.mss`: No such configuration property"),
            "{e}"
        );
    }

    #[test]
    fn unknown_stages_and_bad_profiles_are_refused() {
        let text = PROFILES.replace("stages.gateway", "stages.gatway").replace("partitions = 1", "partitions = 0");
        let e = errors(&text);
        assert!(e.contains("`profiles.zeta.partitions`: must be 1 to 10000, not 0"), "{e}");
        assert!(e.contains("no stage `gatway`; stages are connector, agent, streamjob, gateway"), "{e}");
        let e = errors(&PROFILES.replace("[profiles.zeta]\npartitions = 1", "[profiles.zeta]\nlinger = 1"));
        assert!(e.contains("unknown field `linger`"), "{e}");
    }

    #[test]
    fn an_old_pipeline_key_is_told_its_new_home() {
        let text = "name = \"t\"\n[load]\nrate = 1\nduration = \"1s\"\n[pipeline]\nwindow = \"2s\"\nhistory = 5\n";
        assert_eq!(
            errors(text),
            "s.toml:6: `pipeline.window`: moved: write it as `[streamjob] window`\n\
             s.toml:7: `pipeline.history`: moved: write it as `[agent] history`"
        );
        let s = Scenario::parse(
            Path::new("s.toml"),
            &text.replace("[pipeline]", "[streamjob]").replace("history = 5\n", ""),
        )
        .unwrap();
        assert_eq!(s.streamjob.config().window, Duration::from_secs(2));
    }

    #[test]
    fn replication_is_for_clusters_and_within_bounds() {
        let with = |broker: &str| format!("name = \"t\"\n[load]\nrate = 1\nduration = \"1s\"\n[broker]\n{broker}\n");
        assert!(errors(&with("replication = 3")).contains("`broker.replication`: the embedded broker is one node"));
        assert!(errors(&with("replication = 0")).contains("must be 1 to 16, not 0"));
        let s = Scenario::parse(Path::new("s.toml"), &with("bootstrap = \"k:9092\"\nreplication = 3")).unwrap();
        assert_eq!(s.broker.replication, Some(3));
    }

    #[test]
    fn bootstrap_addresses_are_checked() {
        assert!(valid_bootstrap("localhost:9092"));
        assert!(valid_bootstrap("a:1,b:2"));
        assert!(!valid_bootstrap("localhost"));
        assert!(!valid_bootstrap("a:0"));
    }
}
