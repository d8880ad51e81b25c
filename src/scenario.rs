//! Scenario files: what to run (load, pipeline, broker, client settings) and the SLA to
//! judge it by. TOML, strictly validated: unknown fields are refused, durations are human
//! ("250ms", "30s"), and every problem is reported at once with file, line and field.

use loadgen::{Arrival, KeyDist};
pub use reports::result::StageClients;
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
    #[serde(default)]
    pub connector: Connector,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub edge_cache: EdgeCacheSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub stages: StagesSection,
    #[serde(default)]
    pub streamjob: StreamJobSection,
    #[serde(default)]
    pub gateway: GatewaySection,
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

/// A tuning profile: overrides over `[broker]` and `[kafka]` for every stage, and for one
/// stage where it needs its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub description: String,
    /// Partitions per topic, over `broker.partitions`.
    pub partitions: Option<i32>,
    #[serde(default, deserialize_with = "settings")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer: BTreeMap<String, String>,
    /// Topic settings the topics are created with (`compression.type`, `segment.bytes`...).
    #[serde(default, deserialize_with = "settings")]
    pub topic: BTreeMap<String, String>,
    /// Per-stage client settings (`[profiles.NAME.stages.agent.producer]`).
    #[serde(default)]
    pub stages: BTreeMap<String, StageKafka>,
}

/// One stage's own client settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageKafka {
    #[serde(default, deserialize_with = "settings")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer: BTreeMap<String, String>,
}

/// The settings one run of a scenario uses: `[broker]` and `[kafka]` with a profile over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The profile's name (`default` without profiles).
    pub name: String,
    pub description: String,
    pub partitions: i32,
    pub producer: BTreeMap<String, String>,
    pub consumer: BTreeMap<String, String>,
    pub topic: BTreeMap<String, String>,
    /// Stage name to its own settings (over `producer` and `consumer`).
    pub stages: BTreeMap<String, StageClients>,
}

/// The profile name of a scenario without profiles.
pub const DEFAULT_PROFILE: &str = "default";

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

/// Where the connector captures from and what it does to each record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// `sqlite` (a file in the run directory), `postgres` (logical decoding) or `http`
    /// (the gateway's `POST /sessions/{id}/actions`).
    #[serde(default)]
    pub source: SourceKind,
    /// `postgres://user:password@host:port/db`, for `source = "postgres"`.
    pub postgres: Option<String>,
    /// The SQLite source file, for `source = "sqlite"`; absent: `source.sqlite` in the run
    /// directory. Needed when the connector runs as a process of its own, which reads the
    /// file the run writes.
    pub sqlite: Option<PathBuf>,
    /// The replication slot (created when missing).
    #[serde(default = "default_slot")]
    pub slot: String,
    /// Parallel workers (`tasks.max`).
    #[serde(default = "default_one")]
    pub tasks: usize,
    /// `http` source: requests the players keep in flight at once.
    #[serde(default = "default_http_in_flight")]
    pub http_in_flight: usize,
    /// How story events are written on every pipeline topic.
    #[serde(default)]
    pub converter: pipeline::convert::Converter,
    /// Single message transforms, in order.
    #[serde(default)]
    pub transforms: Vec<pipeline::connector::transforms::TransformSpec>,
}

impl Default for Connector {
    fn default() -> Self {
        Self {
            source: SourceKind::Sqlite,
            postgres: None,
            sqlite: None,
            slot: default_slot(),
            tasks: 1,
            http_in_flight: default_http_in_flight(),
            converter: Default::default(),
            transforms: Vec::new(),
        }
    }
}

/// Connector sources a scenario may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Sqlite,
    Postgres,
    /// `POST /sessions/{id}/actions` on the gateway.
    Http,
}

const fn default_http_in_flight() -> usize {
    256
}

fn default_slot() -> String {
    "tailgate".into()
}
const fn default_one() -> usize {
    1
}
const fn default_true() -> bool {
    true
}

/// The agent's pools, prefetch, model and a scheduled restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Workers processing different sessions in parallel.
    #[serde(default = "default_one")]
    pub concurrency: usize,
    /// Fetch a session's context ahead.
    #[serde(default = "default_true")]
    pub prefetch: bool,
    /// Stop the agent abruptly this long after the load starts, and start it again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub restart_at: Option<Duration>,
    /// The model; absent: simulated with `pipeline.model_latency`.
    pub model: Option<ModelSpec>,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self { concurrency: 1, prefetch: true, restart_at: None, model: None }
    }
}

/// `[agent.model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `simulated` or `http`.
    pub kind: ModelKind,
    /// simulated: `fixed`, `uniform` or `lognormal`.
    pub latency: Option<LatencyKind>,
    /// fixed: the latency.
    #[serde(default, deserialize_with = "opt_duration")]
    pub value: Option<Duration>,
    /// uniform: the bounds.
    #[serde(default, deserialize_with = "opt_duration")]
    pub min: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub max: Option<Duration>,
    /// lognormal: the median and the log's standard deviation.
    #[serde(default, deserialize_with = "opt_duration")]
    pub median: Option<Duration>,
    pub sigma: Option<f64>,
    /// http: the API base (`http://host:port/v1`), model name, timeout, calls in flight.
    pub url: Option<String>,
    #[serde(default = "default_model_name")]
    pub model: String,
    #[serde(default = "default_model_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_model_in_flight")]
    pub max_in_flight: usize,
}

fn default_model_name() -> String {
    "story-model".into()
}
const fn default_model_timeout() -> Duration {
    Duration::from_secs(5)
}
const fn default_model_in_flight() -> usize {
    16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Simulated,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyKind {
    Fixed,
    Uniform,
    Lognormal,
}

impl AgentSection {
    /// The model to call, or (field, why) it is not fully described.
    pub fn model(&self, fallback: Duration) -> Result<pipeline::agent::model::ModelConfig, (&'static str, String)> {
        use pipeline::agent::model::{Latency, ModelConfig};
        let Some(m) = &self.model else { return Ok(ModelConfig::Simulated(Latency::Fixed(fallback))) };
        let need = |v: Option<Duration>, field: &'static str, kind: &str| {
            v.ok_or((field, format!("a {kind} latency needs `{field}`")))
        };
        match m.kind {
            ModelKind::Simulated => Ok(ModelConfig::Simulated(match m.latency.unwrap_or(LatencyKind::Fixed) {
                LatencyKind::Fixed => Latency::Fixed(m.value.unwrap_or(fallback)),
                LatencyKind::Uniform => {
                    let (min, max) = (need(m.min, "min", "uniform")?, need(m.max, "max", "uniform")?);
                    if max < min {
                        return Err(("max", format!("must not be below min ({min:?})")));
                    }
                    Latency::Uniform { min, max }
                }
                LatencyKind::Lognormal => {
                    let median = need(m.median, "median", "lognormal")?;
                    let sigma = m.sigma.ok_or(("sigma", "a lognormal latency needs `sigma`".to_owned()))?;
                    if !(sigma.is_finite() && (0.0..=5.0).contains(&sigma)) {
                        return Err(("sigma", format!("must be between 0 and 5, not {sigma}")));
                    }
                    Latency::Lognormal { median, sigma }
                }
            })),
            ModelKind::Http => {
                let url = m
                    .url
                    .clone()
                    .ok_or(("url", "an http model needs `url` (e.g. \"http://127.0.0.1:8000/v1\")".to_owned()))?;
                if !url.starts_with("http://") {
                    return Err(("url", format!("`{url}` must start with http://")));
                }
                if m.max_in_flight == 0 {
                    return Err(("max_in_flight", "must be at least 1".into()));
                }
                Ok(ModelConfig::Http {
                    url,
                    model: m.model.clone(),
                    timeout: m.timeout,
                    max_in_flight: m.max_in_flight,
                })
            }
        }
    }
}

/// `[edge_cache]`: where the agent's context lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeCacheSection {
    /// `redis://host:port[/db]`, or the path of a SQLite file; absent: SQLite in the run
    /// directory.
    pub url: Option<String>,
}

/// `[streamjob]`: window sliding and the patterns to detect (the window length and the
/// watermark's bound are `[pipeline] window` and `out_of_orderness`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamJobSection {
    /// How often a window starts; absent: windows tumble (slide = window).
    #[serde(default, deserialize_with = "opt_duration")]
    pub slide: Option<Duration>,
    /// `[[streamjob.patterns]]`: signals to emit per session.
    #[serde(default)]
    pub patterns: Vec<PatternSection>,
    /// `[[streamjob.rules]]`: pattern changes the run publishes to `story.rules` while the
    /// load goes, for every stream job instance to apply without a restart.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Keep window state in `story.streamjob-changelog` to survive restarts (default true).
    pub changelog: Option<bool>,
    /// Stop the stream job abruptly this long after the load starts, and start it again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub restart_at: Option<Duration>,
    /// `[streamjob.enrich]`: look each beat's session profile up in a database.
    pub enrich: Option<EnrichSection>,
}

/// `[streamjob.enrich]`: async I/O enrichment (see `pipeline::enrich`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSection {
    /// `postgres://...`, or the path of a SQLite file; absent: SQLite in the run directory.
    pub url: Option<String>,
    /// One parameter (the session id), one text column; absent: `story_profiles`.
    pub query: Option<String>,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// `ordered` (default) or `unordered`.
    #[serde(default)]
    pub order: pipeline::enrich::ResultOrder,
    #[serde(default = "default_enrich_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Profiles the LRU cache holds; 0 turns it off.
    #[serde(default = "default_enrich_cache")]
    pub cache: usize,
    #[serde(default = "default_connections")]
    pub connections: usize,
}

const fn default_in_flight() -> usize {
    64
}
const fn default_enrich_timeout() -> Duration {
    Duration::from_millis(20)
}
fn default_fallback() -> String {
    "unknown".into()
}
const fn default_enrich_cache() -> usize {
    10_000
}
const fn default_connections() -> usize {
    4
}

impl EnrichSection {
    /// Where the profiles live: the URL, or `default` (a SQLite file the run seeds).
    pub fn at(&self, default: &std::path::Path) -> pipeline::enrich::EnrichAt {
        match &self.url {
            Some(url) => pipeline::enrich::EnrichAt::parse(url),
            None => pipeline::enrich::EnrichAt::Sqlite(default.to_path_buf()),
        }
    }

    /// The enrichment settings with the database at `at`.
    pub fn config(&self, at: pipeline::enrich::EnrichAt) -> pipeline::enrich::EnrichConfig {
        pipeline::enrich::EnrichConfig {
            at,
            query: self.query.clone(),
            max_in_flight: self.max_in_flight,
            order: self.order,
            timeout: self.timeout,
            fallback: self.fallback.clone(),
            cache: self.cache,
            connections: self.connections,
        }
    }
}

/// What a `[[faults]]` entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Every response of the embedded broker held back for `duration`.
    BrokerStall,
    /// Every client connection to the embedded broker closed.
    ConnectionsDrop,
    /// `latency` added to every fetch of `topic` by the embedded broker, for `duration`
    /// (absent: until the run ends).
    TopicLatency,
}

impl FaultKind {
    /// The name written in scenarios and results.
    pub fn name(self) -> &'static str {
        match self {
            Self::BrokerStall => "broker_stall",
            Self::ConnectionsDrop => "connections_drop",
            Self::TopicLatency => "topic_latency",
        }
    }
}

/// A fault: at `at` into the load (warm-up included), one of [`FaultKind`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    pub kind: FaultKind,
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// `topic_latency`: which topic's fetches.
    pub topic: Option<String>,
    /// `topic_latency`: how much each fetch is delayed.
    #[serde(default, deserialize_with = "opt_duration")]
    pub latency: Option<Duration>,
}

impl FaultSection {
    /// The broker fault hook this entry uses.
    #[cfg(feature = "embedded")]
    pub fn broker_fault(&self) -> pipeline::embedded::Fault {
        use pipeline::embedded::Fault;
        match self.kind {
            FaultKind::BrokerStall => Fault::Stall(self.duration.unwrap_or_default()),
            FaultKind::ConnectionsDrop => Fault::DropConnections,
            FaultKind::TopicLatency => Fault::FetchLatency {
                topic: self.topic.clone().unwrap_or_default(),
                latency: self.latency.unwrap_or_default(),
                lasts: self.duration,
            },
        }
    }
}

/// A rule change: at `at` into the load, publish pattern `name` (or disable it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    pub name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_times")]
    pub times: u32,
    #[serde(default = "default_within", deserialize_with = "duration")]
    pub within: Duration,
    pub contains: Option<String>,
}

const fn default_times() -> u32 {
    2
}
const fn default_within() -> Duration {
    Duration::from_secs(1)
}

impl RuleSection {
    /// The rule as `story.rules` carries it, published now.
    pub fn rule(&self) -> pipeline::streamjob::Rule {
        let pattern = pipeline::streamjob::Pattern {
            name: self.name.clone(),
            times: self.times,
            within: self.within,
            contains: self.contains.clone(),
        };
        pipeline::streamjob::Rule::of(&pattern, self.enabled)
    }
}

/// One pattern: `times` actions (containing `contains`, if given) within `within`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSection {
    /// The signal's name, e.g. `binge`.
    pub name: String,
    pub times: u32,
    #[serde(deserialize_with = "duration")]
    pub within: Duration,
    pub contains: Option<String>,
}

impl Scenario {
    /// The stream job's settings.
    pub fn streamjob_config(&self) -> pipeline::streamjob::StreamJobConfig {
        let p = &self.pipeline;
        pipeline::streamjob::StreamJobConfig {
            window: p.window,
            slide: self.streamjob.slide.unwrap_or(p.window),
            out_of_orderness: p.out_of_orderness,
            changelog: self.streamjob.changelog.unwrap_or(true),
            patterns: self
                .streamjob
                .patterns
                .iter()
                .map(|q| pipeline::streamjob::Pattern {
                    name: q.name.clone(),
                    times: q.times,
                    within: q.within,
                    contains: q.contains.clone(),
                })
                .collect(),
        }
    }

    fn validate_streamjob(&self, bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
        if let Some(slide) = self.streamjob.slide
            && (slide.is_zero() || slide > self.pipeline.window)
        {
            bad(
                "streamjob",
                None,
                "slide",
                format!("must be longer than zero and at most the window ({:?})", self.pipeline.window),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.streamjob.patterns.iter().enumerate() {
            if !valid_name(&p.name) {
                bad(
                    "streamjob.patterns",
                    Some(i),
                    "name",
                    "must be non-empty and use only a-z, 0-9, `_`, `.`, `-`".into(),
                );
            } else if !names.insert(p.name.as_str()) {
                bad("streamjob.patterns", Some(i), "name", format!("`{}` is named twice", p.name));
            }
            if p.times < 2 {
                bad("streamjob.patterns", Some(i), "times", format!("must be at least 2, not {}", p.times));
            }
            if p.within.is_zero() {
                bad("streamjob.patterns", Some(i), "within", "must be longer than zero".into());
            }
        }
        for (i, r) in self.streamjob.rules.iter().enumerate() {
            if !valid_name(&r.name) {
                bad(
                    "streamjob.rules",
                    Some(i),
                    "name",
                    "must be non-empty and use only a-z, 0-9, `_`, `.`, `-`".into(),
                );
            }
            if r.enabled && r.times < 2 {
                bad("streamjob.rules", Some(i), "times", format!("must be at least 2, not {}", r.times));
            }
            if r.enabled && r.within.is_zero() {
                bad("streamjob.rules", Some(i), "within", "must be longer than zero".into());
            }
            if r.at >= self.load.warmup + self.load.duration {
                bad("streamjob.rules", Some(i), "at", format!("{:?} is after the load ends", r.at));
            }
        }
        if let Some(at) = self.streamjob.restart_at {
            if at >= self.load.warmup + self.load.duration {
                bad("streamjob", None, "restart_at", format!("{at:?} is after the load ends"));
            }
            if self.stages.external {
                bad(
                    "streamjob",
                    None,
                    "restart_at",
                    "restarts the in-process stream job; with external stages, restart its process".into(),
                );
            }
        }
        if let Some(e) = &self.streamjob.enrich {
            if e.max_in_flight == 0 {
                bad("streamjob.enrich", None, "max_in_flight", "must be at least 1".into());
            }
            if e.connections == 0 || e.connections > e.max_in_flight.max(1) {
                bad("streamjob.enrich", None, "connections", "must be between 1 and max_in_flight".into());
            }
            if e.timeout.is_zero() {
                bad("streamjob.enrich", None, "timeout", "must be longer than zero".into());
            }
            if e.url.is_none() && self.stages.external {
                bad(
                    "streamjob.enrich",
                    None,
                    "url",
                    "external stages need the database the stream job process reads, e.g. \
                     url = \"/shared/profiles.sqlite\" or a postgres:// URL"
                        .into(),
                );
            }
        }
    }
}

/// `[gateway]`: who may read and post.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// `[[gateway.tokens]]`: bearer tokens; none means the gateway is open.
    #[serde(default)]
    pub tokens: Vec<TokenSection>,
    /// Updates each client may have queued (default 4096).
    pub client_buffer: Option<usize>,
    /// `drop_oldest` (default: the client is told `lagged N`) or `disconnect`.
    #[serde(default)]
    pub slow_client: pipeline::gateway::fanout::SlowClient,
    /// Updates kept for long-poll clients (default 10000).
    pub retain: Option<usize>,
    /// Also serve the gRPC `Updates` stream here (`host:port`).
    pub grpc: Option<String>,
}

/// One bearer token and the sessions it may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub token: String,
    /// `"all"` (and the firehose), or a list of session ids.
    pub sessions: SessionsScope,
}

/// `sessions = "all"` or `sessions = [1, 2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SessionsScope {
    Named(String),
    Ids(Vec<u64>),
}

impl GatewaySection {
    /// The gateway's token check, when tokens are configured.
    pub fn auth(&self) -> Option<pipeline::gateway::Auth> {
        use pipeline::gateway::Scope;
        (!self.tokens.is_empty()).then(|| {
            pipeline::gateway::Auth::new(self.tokens.iter().map(|t| {
                let scope = match &t.sessions {
                    SessionsScope::Ids(ids) => Scope::Sessions(ids.iter().copied().collect()),
                    SessionsScope::Named(_) => Scope::All,
                };
                (t.token.clone(), scope)
            }))
        })
    }

    /// The clients' buffering.
    pub fn fanout(&self) -> pipeline::gateway::fanout::FanoutConfig {
        let d = pipeline::gateway::fanout::FanoutConfig::default();
        pipeline::gateway::fanout::FanoutConfig {
            buffer: self.client_buffer.unwrap_or(d.buffer),
            policy: self.slow_client,
            retain: self.retain.unwrap_or(d.retain),
        }
    }

    /// The token the run's own clients (the audience, the HTTP players) use: the first
    /// all-sessions one.
    pub fn run_token(&self) -> Option<String> {
        self.tokens
            .iter()
            .find(|t| matches!(&t.sessions, SessionsScope::Named(n) if n == "all"))
            .map(|t| t.token.clone())
    }
}

/// `[stages]`: where the pipeline's stages run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagesSection {
    /// The four stages run as `tailgate stage` processes (compose, Kubernetes, by hand) on
    /// the cluster named by `--bootstrap` or `[broker] bootstrap`. The run writes the source,
    /// follows the gateway and accounts for every event; it starts no stage itself.
    #[serde(default)]
    pub external: bool,
    /// The gateway's base URL (`http://host:port`), whose `/events` the audience follows.
    pub gateway: Option<String>,
    /// The stages' `/metrics` URLs: live per-stage progress, and the connector's filtered
    /// count, which Kafka does not show. Summed over replicas.
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// `[telemetry]`: span export over OTLP. Off unless an endpoint is named here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; fields left out here come from the `OTEL_*` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// The collector (`http://127.0.0.1:4317` for gRPC, `http://127.0.0.1:4318` for HTTP).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// Fraction of events traced (0 to 1; default 1).
    pub sample_ratio: Option<f64>,
    /// Also trace every event slower than this end to end; default: the SLA's
    /// `end_to_end.p99_ms` bound, if there is one.
    #[serde(default, deserialize_with = "opt_duration")]
    pub breach: Option<Duration>,
    /// Also serve `GET /metrics` (Prometheus text) on this `host:port` during the run.
    pub metrics: Option<String>,
}

impl TelemetrySection {
    /// What the scenario asks of the exporter, with the breach threshold defaulted from
    /// `sla`.
    pub fn requested(&self, sla: &[Objective]) -> Result<telemetry::Requested, (&'static str, String)> {
        let protocol = match &self.protocol {
            Some(p) => Some(telemetry::Protocol::parse(p).map_err(|e| ("protocol", e.to_string()))?),
            None => None,
        };
        if let Some(r) = self.sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(("sample_ratio", format!("must be between 0 and 1, not {r}")));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(("endpoint", format!("`{e}` is not an http:// or https:// URL")));
        }
        let from_sla = sla.iter().find(|o| o.metric == "end_to_end.p99_ms").and_then(|o| o.max);
        let breach_ns = match (self.breach, from_sla) {
            (Some(d), _) => Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            (None, Some(ms)) => Some((ms * 1e6) as u64),
            (None, None) => None,
        };
        Ok(telemetry::Requested {
            endpoint: self.endpoint.clone(),
            protocol,
            sample_ratio: self.sample_ratio,
            breach_ns,
        })
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
    /// Topic settings the topics are created with.
    #[serde(default, deserialize_with = "settings")]
    pub topic: BTreeMap<String, String>,
    /// Per-stage client settings (`[kafka.stages.agent.producer]`).
    #[serde(default)]
    pub stages: BTreeMap<String, StageKafka>,
}

pub use reports::result::Objective;

/// A map that keeps the order its entries are written in.
fn ordered<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<(String, T)>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. \"250ms\" or \"30s\""))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
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
pub const COUNTS: [&str; 7] = ["sent", "delivered", "dead_lettered", "filtered", "lost", "duplicates", "reordered"];

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
                (t, None) if key.is_empty() => t.to_owned(),
                (t, Some(i)) => format!("{t}[{i}].{key}"),
                (t, None) => format!("{t}.{key}"),
            };
            problems.push(Problem { line: locate(text, table, index, key), field, message });
        };
        if !valid_name(&self.name) {
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
        self.validate_pipeline(&mut bad);
        self.validate_faults(&mut bad);
        self.validate_clients(&mut bad);
        validate_objectives(&self.sla, &mut bad);
        problems
    }
}

impl Scenario {
    fn validate_faults(&self, bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
        let topics = pipeline::topology::every_topic;
        for (i, f) in self.faults.iter().enumerate() {
            let kind = f.kind.name();
            if f.at >= self.load.warmup + self.load.duration {
                bad("faults", Some(i), "at", format!("{:?} is after the load ends", f.at));
            }
            if self.broker.bootstrap.is_some() {
                bad(
                    "faults",
                    Some(i),
                    "kind",
                    format!(
                        "`{kind}` uses the embedded broker's fault hooks; against `tailgate broker`, give that \
                         process its --stall, --drop-connections or --fetch-latency flags"
                    ),
                );
            }
            match f.kind {
                FaultKind::BrokerStall if f.duration.is_none_or(|d| d.is_zero()) => {
                    bad("faults", Some(i), "duration", format!("`{kind}` needs a duration longer than zero"));
                }
                FaultKind::TopicLatency => {
                    match &f.topic {
                        None => bad("faults", Some(i), "topic", format!("`{kind}` needs the topic to slow down")),
                        Some(t) if !topics().any(|k| k == t) => {
                            let names: Vec<&str> = topics().collect();
                            bad(
                                "faults",
                                Some(i),
                                "topic",
                                format!("`{t}` is not a topic of the run; one of {}", names.join(", ")),
                            );
                        }
                        Some(_) => {}
                    }
                    if f.latency.is_none_or(|d| d.is_zero()) {
                        bad("faults", Some(i), "latency", format!("`{kind}` needs a latency longer than zero"));
                    }
                    if f.duration.is_some_and(|d| d.is_zero()) {
                        bad("faults", Some(i), "duration", "must be longer than zero (or absent: to the end)".into());
                    }
                }
                _ => {}
            }
            let takes: &[&str] = match f.kind {
                FaultKind::BrokerStall => &["duration"],
                FaultKind::ConnectionsDrop => &[],
                FaultKind::TopicLatency => &["duration", "topic", "latency"],
            };
            for (key, given) in
                [("duration", f.duration.is_some()), ("topic", f.topic.is_some()), ("latency", f.latency.is_some())]
            {
                if given && !takes.contains(&key) {
                    bad("faults", Some(i), key, format!("`{kind}` takes no {key}"));
                }
            }
        }
    }

    fn validate_pipeline(&self, bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
        let c = &self.connector;
        match (&c.source, &c.postgres) {
            (SourceKind::Postgres, None) => bad(
                "connector",
                None,
                "postgres",
                "source = \"postgres\" needs `postgres = \"postgres://user:password@host:port/db\"`".into(),
            ),
            (_, Some(url)) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                bad(
                    "connector",
                    None,
                    "postgres",
                    format!("`{}` is not a postgres:// URL", pipeline::io::postgres::redact(url)),
                );
            }
            _ => {}
        }
        if !(1..=65_536).contains(&c.http_in_flight) {
            bad("connector", None, "http_in_flight", format!("must be 1 to 65536, not {}", c.http_in_flight));
        }
        if !(1..=64).contains(&c.tasks) {
            bad("connector", None, "tasks", format!("must be 1 to 64, not {}", c.tasks));
        }
        if c.slot.is_empty() || !c.slot.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_') {
            bad("connector", None, "slot", format!("`{}` is not a slot name (a-z, 0-9, _)", c.slot));
        }
        for (i, t) in c.transforms.iter().enumerate() {
            for p in t.problems() {
                bad("connector.transforms", Some(i), "type", format!("{}: {p}", t.kind()));
            }
        }
        if !(1..=256).contains(&self.agent.concurrency) {
            bad("agent", None, "concurrency", format!("must be 1 to 256, not {}", self.agent.concurrency));
        }
        if let Err((field, why)) = self.agent.model(self.pipeline.model_latency) {
            bad("agent.model", None, field, why);
        }
        if let Some(at) = self.agent.restart_at
            && at >= self.load.warmup + self.load.duration
        {
            bad("agent", None, "restart_at", format!("{at:?} is after the load ends"));
        }
        if let Some(url) = &self.edge_cache.url
            && url.contains("://")
            && !url.starts_with("redis://")
        {
            bad(
                "edge_cache",
                None,
                "url",
                format!(
                    "`{url}` is neither a redis:// URL nor a SQLite path (omit it for SQLite in the run directory)"
                ),
            );
        }
        self.validate_stages(bad);
        self.validate_streamjob(bad);
        for (i, t) in self.gateway.tokens.iter().enumerate() {
            if t.token.trim().is_empty() || t.token.chars().any(char::is_whitespace) {
                bad("gateway.tokens", Some(i), "token", "must be non-empty, without spaces".into());
            }
            if let SessionsScope::Named(n) = &t.sessions
                && n != "all"
            {
                bad(
                    "gateway.tokens",
                    Some(i),
                    "sessions",
                    format!("must be \"all\" or a list of session ids, not `{n}`"),
                );
            }
        }
        if let Some(b) = self.gateway.client_buffer
            && !(1..=1_000_000).contains(&b)
        {
            bad("gateway", None, "client_buffer", format!("must be 1 to 1000000, not {b}"));
        }
        if let Some(r) = self.gateway.retain
            && !(1..=1_000_000).contains(&r)
        {
            bad("gateway", None, "retain", format!("must be 1 to 1000000, not {r}"));
        }
        if let Some(g) = &self.gateway.grpc
            && (!valid_bootstrap(g) || g.contains(','))
        {
            bad("gateway", None, "grpc", format!("`{g}` is not host:port, e.g. \"127.0.0.1:50051\""));
        }
        if !self.gateway.tokens.is_empty() && self.gateway.run_token().is_none() {
            bad(
                "gateway.tokens",
                Some(0),
                "sessions",
                "the run's audience follows the firehose: one token needs sessions = \"all\"".into(),
            );
        }
        if let Err((field, why)) = self.telemetry.requested(&self.sla) {
            bad("telemetry", None, field, why);
        }
        if let Some(m) = &self.telemetry.metrics
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            bad("telemetry", None, "metrics", format!("`{m}` is not an address to listen on (ip:port)"));
        }
    }

    fn validate_stages(&self, bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
        let st = &self.stages;
        for url in st.gateway.iter().chain(&st.metrics) {
            if !url.starts_with("http://") {
                let field = if st.gateway.as_ref() == Some(url) { "gateway" } else { "metrics" };
                bad("stages", None, field, format!("`{url}` is not an http:// URL"));
            }
        }
        if !st.external {
            return;
        }
        if st.gateway.is_none() {
            bad(
                "stages",
                None,
                "gateway",
                "external stages need the gateway's URL, e.g. \"http://127.0.0.1:8080\"".into(),
            );
        }
        match self.connector.source {
            SourceKind::Http => bad(
                "connector",
                None,
                "source",
                "the http source lives in an in-process gateway; with external stages use sqlite or postgres".into(),
            ),
            SourceKind::Sqlite if self.connector.sqlite.is_none() => bad(
                "connector",
                None,
                "sqlite",
                "external stages need the source file the connector process reads, e.g. sqlite = \"/shared/source.sqlite\"".into(),
            ),
            _ => {}
        }
        if st.metrics.is_empty() && self.connector.transforms.iter().any(|t| t.kind() == "filter") {
            bad(
                "stages",
                None,
                "metrics",
                "the connector's filter drops events no topic shows; list the connector's /metrics URL so the run \
                 can count them"
                    .into(),
            );
        }
        if self.agent.restart_at.is_some() {
            bad(
                "agent",
                None,
                "restart_at",
                "restarts the in-process agent; with external stages, restart the agent process".into(),
            );
        }
    }

    /// The runs `only` selects (every profile when empty), in the order written.
    pub fn resolve(&self, only: &[String]) -> Result<Vec<Resolved>, String> {
        let names: Vec<&str> = self.profiles.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(unknown) =
            only.iter().find(|o| !(names.contains(&o.as_str()) || names.is_empty() && *o == DEFAULT_PROFILE))
        {
            return Err(if names.is_empty() {
                format!(
                    "--profile `{unknown}`: scenario `{}` has no profiles (its one run is `{DEFAULT_PROFILE}`)",
                    self.name
                )
            } else {
                format!("--profile `{unknown}`: scenario `{}` has the profiles {}", self.name, names.join(", "))
            });
        }
        let base = Resolved {
            name: DEFAULT_PROFILE.into(),
            description: String::new(),
            partitions: self.broker.partitions,
            producer: self.kafka.producer.clone(),
            consumer: self.kafka.consumer.clone(),
            topic: self.kafka.topic.clone(),
            stages: self.kafka.stages.iter().map(|(k, v)| (k.clone(), v.clients())).collect(),
        };
        if self.profiles.is_empty() {
            return Ok(vec![base]);
        }
        Ok(self
            .profiles
            .iter()
            .filter(|(name, _)| only.is_empty() || only.contains(name))
            .map(|(name, p)| {
                let mut r = base.clone();
                r.name.clone_from(name);
                r.description.clone_from(&p.description);
                r.partitions = p.partitions.unwrap_or(r.partitions);
                r.producer.extend(p.producer.clone());
                r.consumer.extend(p.consumer.clone());
                r.topic.extend(p.topic.clone());
                for (stage, k) in &p.stages {
                    let s = r.stages.entry(stage.clone()).or_default();
                    s.producer.extend(k.producer.clone());
                    s.consumer.extend(k.consumer.clone());
                }
                r
            })
            .collect())
    }

    /// Client settings librdkafka refuses, partitions out of range, unknown stages and
    /// profile names: each located where it is written.
    fn validate_clients(&self, bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
        let mut check = |table: &str, settings: &BTreeMap<String, String>, kind: pipeline::io::kafka::Client| {
            for (k, v) in settings {
                if let Err(e) = pipeline::io::kafka::check_setting(kind, k, v) {
                    bad(table, None, k, e);
                }
            }
        };
        let mut tables: Vec<(String, &BTreeMap<String, StageKafka>)> = vec![("kafka".into(), &self.kafka.stages)];
        check("kafka.producer", &self.kafka.producer, pipeline::io::kafka::Client::Producer);
        check("kafka.consumer", &self.kafka.consumer, pipeline::io::kafka::Client::Consumer);
        for (name, p) in &self.profiles {
            let t = format!("profiles.{name}");
            check(&format!("{t}.producer"), &p.producer, pipeline::io::kafka::Client::Producer);
            check(&format!("{t}.consumer"), &p.consumer, pipeline::io::kafka::Client::Consumer);
            tables.push((t, &p.stages));
        }
        for (t, stages) in tables {
            for (stage, k) in stages {
                check(&format!("{t}.stages.{stage}.producer"), &k.producer, pipeline::io::kafka::Client::Producer);
                check(&format!("{t}.stages.{stage}.consumer"), &k.consumer, pipeline::io::kafka::Client::Consumer);
            }
        }
        for (name, p) in &self.profiles {
            let t = format!("profiles.{name}");
            if !valid_name(name) {
                bad(&t, None, "", "a profile name uses only a-z, 0-9, `_`, `.`, `-`".into());
            }
            if let Some(n) = p.partitions
                && !(1..=1024).contains(&n)
            {
                bad(&t, None, "partitions", format!("must be 1 to 1024, not {n}"));
            }
            for stage in p.stages.keys() {
                if !pipeline::STAGES.contains(&stage.as_str()) {
                    bad(
                        &format!("{t}.stages"),
                        None,
                        stage,
                        format!("no stage `{stage}`; stages are {}", pipeline::STAGES.join(", ")),
                    );
                }
            }
        }
        for stage in self.kafka.stages.keys() {
            if !pipeline::STAGES.contains(&stage.as_str()) {
                bad(
                    "kafka.stages",
                    None,
                    stage,
                    format!("no stage `{stage}`; stages are {}", pipeline::STAGES.join(", ")),
                );
            }
        }
    }
}

impl StageKafka {
    fn clients(&self) -> StageClients {
        StageClients { producer: self.producer.clone(), consumer: self.consumer.clone() }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// Problems of SLA objectives: unknown metrics, missing or double bounds.
fn validate_objectives(sla: &[Objective], bad: &mut impl FnMut(&str, Option<usize>, &str, String)) {
    for (i, o) in sla.iter().enumerate() {
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
}

/// An SLA file for `tailgate check --sla` and `tailgate report --sla`: `[[sla]]` objectives
/// as in a scenario, validated the same way.
pub fn load_sla(path: &Path) -> Result<Vec<Objective>, ScenarioError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SlaFile {
        sla: Vec<Objective>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_owned(),
        problems: vec![Problem { line: None, field: String::new(), message: format!("cannot read: {e}") }],
    })?;
    let file: SlaFile = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start));
        ScenarioError {
            file: path.to_owned(),
            problems: vec![Problem {
                line,
                field: line.map(|l| field_at(&text, l)).unwrap_or_default(),
                message: e.message().trim_end().to_owned(),
            }],
        }
    })?;
    let mut problems = Vec::new();
    if file.sla.is_empty() {
        problems.push(Problem { line: None, field: "sla".into(), message: "no objectives; add [[sla]] tables".into() });
    }
    let mut bad = |table: &str, index: Option<usize>, key: &str, message: String| {
        let field = index.map_or_else(|| format!("{table}.{key}"), |i| format!("{table}[{i}].{key}"));
        problems.push(Problem { line: locate(&text, table, index, key), field, message });
    };
    validate_objectives(&file.sla, &mut bad);
    if problems.is_empty() { Ok(file.sla) } else { Err(ScenarioError { file: path.to_owned(), problems }) }
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
        assert_eq!(zeta.producer["linger.ms"], "0");
        assert_eq!(zeta.producer["acks"], "all", "the base settings stay under the profile's");
        assert_eq!(alpha.partitions, 2);
        assert_eq!(alpha.producer["compression.type"], "lz4");
        assert_eq!(alpha.topic["compression.type"], "producer");
        assert_eq!(alpha.stages["gateway"].consumer["fetch.wait.max.ms"], "5");
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
        assert!(e.contains("`profiles.zeta.partitions`: must be 1 to 1024, not 0"), "{e}");
        assert!(e.contains("no stage `gatway`; stages are connector, agent, streamjob, gateway"), "{e}");
        let e = errors(&PROFILES.replace("[profiles.zeta]\npartitions = 1", "[profiles.zeta]\nlinger = 1"));
        assert!(e.contains("unknown field `linger`"), "{e}");
    }

    #[test]
    fn bootstrap_addresses_are_checked() {
        assert!(valid_bootstrap("localhost:9092"));
        assert!(valid_bootstrap("a:1,b:2"));
        assert!(!valid_bootstrap("localhost"));
        assert!(!valid_bootstrap("a:0"));
    }
}
