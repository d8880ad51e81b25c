//! A run's results: `result.json` (the contract later tools read) and the SLA verdict. The
//! summary printed at the end of a run is [`crate::summary`]'s.

use probes::Summary;
use probes::hops::HopSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use probes::hops::{SINK, SOURCE};

/// Statistics every latency metric has in `result.json`.
pub const STATS: [&str; 8] = ["count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"];
/// Counters in `result.json`'s `counts`.
pub const COUNTS: [&str; 8] =
    ["sent", "delivered", "dead_lettered", "filtered", "lost", "duplicates", "client_duplicates", "reordered"];
/// Numbers at the top of `result.json`.
pub const RATES: [&str; 4] = ["achieved_rate", "target_rate", "duration_s", "warmup_s"];
/// Latency metrics besides the hops: `end_to_end.p99_ms`, `schedule_lag.max_ms`.
pub const LATENCIES: [&str; 2] = ["end_to_end", "schedule_lag"];

/// The hop names of a pipeline whose stages are `stages` (in path order): the transit into
/// each stage, the stage itself, and the transit to the client.
pub fn hop_names(stages: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    let mut prev = SOURCE;
    for stage in stages {
        names.push(probes::hops::transit_name(prev, stage));
        names.push((*stage).to_owned());
        prev = stage;
    }
    names.push(probes::hops::transit_name(prev, SINK));
    names
}

/// Whether `metric` names a number in `result.json` of a pipeline with `stages`.
pub fn known_metric(metric: &str, stages: &[&str]) -> bool {
    let parts: Vec<&str> = metric.split('.').collect();
    match parts.as_slice() {
        [rate] => RATES.contains(rate),
        ["counts", c] => COUNTS.contains(c),
        [latency, s] => LATENCIES.contains(latency) && STATS.contains(s),
        ["hops", hop, s] => STATS.contains(s) && hop_names(stages).iter().any(|h| h == hop),
        _ => false,
    }
}

/// Which broker produced the figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrokerInfo {
    /// `tailgate` (the embedded broker) or `external`.
    pub kind: String,
    /// The broker's version where known.
    pub version: String,
    pub bootstrap: String,
    /// The broker's storage where known (the embedded broker: `memory`, or `disk:DIR`).
    pub storage: String,
    /// Effective producer settings every stage used.
    pub producer: BTreeMap<String, String>,
    /// Effective consumer settings every stage used.
    pub consumer: BTreeMap<String, String>,
    /// Partitions of each topic.
    #[serde(default)]
    pub partitions: i32,
    /// Topic settings the run created its topics with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic: BTreeMap<String, String>,
    /// A stage's own client settings, where the profile gives it some (over `producer` and
    /// `consumer`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, StageClients>,
    /// How often the embedded broker's fault hooks took effect, when the run used them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<FaultEffects>,
    /// How the clients connected: the security protocol (`PLAINTEXT`, `SASL_SSL`...) and,
    /// for the embedded broker, the SASL mechanisms its listener offered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listener: String,
    /// What the run put before the name of every topic and group it made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic_prefix: String,
}

/// How often the broker's fault hooks took effect over a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultEffects {
    /// Responses held back by a stall.
    pub stalled_responses: u64,
    /// Fetch responses delayed by a topic's added latency.
    pub delayed_fetches: u64,
    /// Client connections closed.
    pub dropped_connections: u64,
}

impl FaultEffects {
    /// What the hooks did, as the summary and the report say it.
    pub fn describe(&self) -> String {
        format!(
            "held back {} responses, delayed {} fetches and dropped {} connections",
            self.stalled_responses, self.delayed_fetches, self.dropped_connections
        )
    }
}

/// A fault the run applied (`[[faults]]`), and what it cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultRecord {
    /// One of the `[[faults]]` kinds: `broker_stall`, `broker_restart`, `connections_drop`,
    /// `topic_latency`, `stage_kill`, `stage_restart`, `postgres_restart`, `redis_stall`.
    pub kind: String,
    /// When the scenario asked for it, seconds after the load started (warm-up included).
    pub at_s: f64,
    /// When it took effect, on the same clock.
    pub began_at_s: f64,
    /// When it was over (the broker serving again, the stage started again, the database
    /// reachable again); absent for a latency that lasts to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_s: Option<f64>,
    /// How long it lasted, where it has a length (absent for a latency: to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The stage it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// End-to-end latency of the events intended while it lasted (its first second, for a
    /// fault without a length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during: Option<Summary>,
    /// Seconds from its end until the first second whose p99 (by arrival) was back under
    /// `recovery_bound_ms`; absent when that never happened before the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<f64>,
    /// What recovery was measured against: the scenario's `end_to_end.p99` objective, or
    /// without one, twice the p99 of the measured seconds before the first fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_bound_ms: Option<f64>,
    /// What it did, in words.
    pub what: String,
}

/// One stage's own client settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageClients {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer: BTreeMap<String, String>,
}

/// Every event accounted for: `sent = delivered + dead_lettered + filtered + lost`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Counts {
    pub sent: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Dropped on purpose by a connector filter transform.
    #[serde(default)]
    pub filtered: u64,
    pub lost: u64,
    /// Repeat deliveries of an event already delivered (at-least-once); not in `delivered`.
    pub duplicates: u64,
    /// Of those, the ones that reached a client (the gateway keeps the rest away); 0 when
    /// every client saw every event once.
    #[serde(default)]
    pub client_duplicates: u64,
    /// Deliveries that overtook an earlier event of their session (order broken).
    #[serde(default)]
    pub reordered: u64,
    /// Of `sent`, those intended during warm-up (counted here, not in the statistics).
    pub warmup_sent: u64,
}

/// One SLA objective: a metric of `result.json` and its bound.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// A path into `result.json`, such as `end_to_end.p99_ms` or `hops.agent.p99_ms`.
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

impl Objective {
    /// `<= max` or `>= min`.
    pub fn bound(&self) -> String {
        match (self.max, self.min) {
            (Some(m), _) => format!("<= {m}"),
            (_, Some(m)) => format!(">= {m}"),
            _ => String::new(),
        }
    }

    /// Whether `actual` meets the bound (no value never does).
    pub fn met_by(&self, actual: Option<f64>) -> bool {
        actual.is_some_and(|a| self.max.is_none_or(|m| a <= m) && self.min.is_none_or(|m| a >= m))
    }
}

/// One objective's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectiveResult {
    pub metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The measured value (absent when the run produced none, which fails the objective).
    pub actual: Option<f64>,
    pub passed: bool,
}

impl ObjectiveResult {
    /// The objective this is the outcome of.
    pub fn objective(&self) -> Objective {
        Objective { metric: self.metric.clone(), max: self.max, min: self.min }
    }
}

/// The SLA verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Sla {
    pub objectives: Vec<ObjectiveResult>,
    pub passed: bool,
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
}

impl Machine {
    pub fn this() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// The CPU time a run used from the pipeline's start to its stop: the `tailgate` process
/// (the embedded broker, the stages it hosts, the load and the audience) and the stages it
/// ran as child processes (the Faust agent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    /// User plus system seconds of the `tailgate` process.
    pub tailgate_s: f64,
    /// User plus system seconds of the Faust agent's processes (absent for the Rust agent,
    /// which is inside `tailgate_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_process_s: Option<f64>,
    /// Both together, per thousand events sent.
    pub per_1k_events_s: f64,
}

impl CpuUse {
    /// All the CPU seconds counted.
    pub fn total_s(&self) -> f64 {
        self.tailgate_s + self.agent_process_s.unwrap_or(0.0)
    }
}

/// `result.json`. `Default` is for constructors to leave the parts they have none of.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub tailgate_version: String,
    /// `run`: tailgate drove the load through the pipeline; `watch`: it tapped a pipeline
    /// it did not start, and knows only what reached the tapped topics.
    #[serde(default = "run_mode")]
    pub mode: String,
    pub scenario: String,
    pub profile: String,
    pub run_id: u64,
    pub broker: BrokerInfo,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Measured seconds (warm-up excluded).
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Events per second the schedule asked for over the measured period (its mean, for a
    /// schedule whose rate changes).
    pub target_rate: f64,
    /// The load's schedule when its rate changes (`200/s to 3000/s over 45s`); absent for
    /// a constant rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Events due in each second since the load began, warm-up included: the target rate,
    /// second by second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_per_s: Vec<f64>,
    /// Payload size of each event the load generator wrote.
    #[serde(default)]
    pub payload_bytes: u64,
    /// Events per second delivered during the measured period.
    pub achieved_rate: f64,
    pub counts: Counts,
    pub end_to_end: Summary,
    /// The end-to-end time split into transit and service hops, in path order.
    pub hops: Vec<HopSummary>,
    /// Actual minus intended send time of the load generator.
    pub schedule_lag: Summary,
    pub sla: Sla,
    /// The run was stopped before its schedule ended (Ctrl-C or a failure).
    pub interrupted: bool,
    pub machine: Machine,
    /// The CPU time the run used, while the pipeline ran (absent for synthetic runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUse>,
    /// How the reference pipeline was set up and what it reported (absent for runs that
    /// did not run it, such as synthetic ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineInfo>,
    /// Span export, when it was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryInfo>,
    /// The faults the run applied, in the order they took effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultRecord>,
    /// Why the counts do not add up (`sent = delivered + dead_lettered + filtered + lost`
    /// failed): the run's accounting cannot be trusted, and the run fails (exit 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting_error: Option<String>,
    /// What a watch tapped and saw (`mode = "watch"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchInfo>,
    /// The load workers, when the load came from several hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::workers::WorkersInfo>,
    /// Each worker's clock offset from the coordinator, which every latency that crosses
    /// hosts is corrected by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clocks: Vec<crate::workers::ClockOffset>,
}

/// What a watch tapped: a pipeline tailgate did not start, so there is nothing it sent to
/// account for; it counts what reached the topics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WatchInfo {
    pub topics: Vec<String>,
    /// Records with tailgate's headers, timed (also `counts.delivered`).
    pub events: u64,
    /// Records without tailgate's headers, or with headers that do not parse: counted,
    /// never timed.
    pub foreign: u64,
    /// Events whose stamps named another path than the first one's: in end to end only.
    pub off_path: u64,
    /// Where the interval logs were kept while the watch ran.
    pub interval_logs: String,
    /// Latency from trace context alone (`--correlate traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
}

/// What `--correlate traceparent` matched across the tapped topics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Correlation {
    /// Records per topic, in path order, and which timestamp each topic's records carry
    /// (`CreateTime` or `LogAppendTime`).
    pub topics: Vec<CorrelatedTopic>,
    /// Records with no `traceparent` (or one that does not parse): counted, never timed.
    pub foreign: u64,
    /// Records whose trace was not seen on the topic before: missing upstream, or
    /// upstream longer ago than the tap's window.
    pub unmatched: u64,
    /// Traces forgotten before their window ended, to keep the tap's memory bounded.
    pub evicted: u64,
    /// Second records of a trace on one topic (a fan-out): counted, timed by the first.
    #[serde(default)]
    pub repeated: u64,
    /// How long the tap keeps a trace open for its records on the other topics, and how many
    /// traces it keeps open at most.
    pub window_s: f64,
    pub capacity: u64,
}

/// One tapped topic of a correlation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CorrelatedTopic {
    pub topic: String,
    pub records: u64,
    /// `CreateTime`, `LogAppendTime`, or both when its records differ.
    pub timestamp: String,
}

fn run_mode() -> String {
    MODE_RUN.into()
}

/// [`RunResult::mode`] of a run tailgate drove.
pub const MODE_RUN: &str = "run";
/// [`RunResult::mode`] of a watch of a pipeline tailgate did not start.
pub const MODE_WATCH: &str = "watch";

/// Where the run's spans went and how many made it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TelemetryInfo {
    /// The OTLP collector.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Fraction of events traced where they start.
    pub sample_ratio: f64,
    /// Events slower than this end to end were traced whatever the ratio.
    pub breach_ms: Option<f64>,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans dropped because the export queue was full.
    pub spans_dropped: u64,
    /// Spans in exports the collector refused or did not answer in time.
    pub spans_failed: u64,
    /// Unsampled traces kept because they broke the SLA.
    pub breach_traces: u64,
    pub last_error: Option<String>,
    /// Metric exports (every 5 s and at the end) the collector refused or did not answer.
    #[serde(default)]
    pub metric_exports_failed: u64,
}

/// The reference pipeline's setup and its own figures for one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PipelineInfo {
    /// The connector's source (`sqlite FILE`, `postgres URL slot S`).
    pub source: String,
    /// The value format on every pipeline topic.
    pub converter: String,
    /// Connector tasks.
    pub tasks: usize,
    /// Transform types, in order.
    #[serde(default)]
    pub transforms: Vec<String>,
    /// Where the context lives (`SQLite FILE`, `Redis URL`).
    pub edge_cache: String,
    /// The agent's implementation: `rust`, or `faust` with what it ran on
    /// (`faust: faust-streaming 0.15.3, Python 3.11.2`).
    #[serde(default)]
    pub agent: String,
    pub agent_concurrency: usize,
    pub prefetch: bool,
    pub model: String,
    /// Context lookups that found / did not find / failed.
    pub context_hits: u64,
    pub context_misses: u64,
    pub context_errors: u64,
    /// Events the agent saw again after a restart.
    pub replays: u64,
    /// One entry per partition assignment to the agent (the first on start, then on every
    /// restart or partition move): how its sessions' state was rebuilt.
    #[serde(default, alias = "agent_starts")]
    pub agent_restores: Vec<StateRestore>,
    /// Set when the stages ran as processes of their own (`tailgate stage`): where the run
    /// found them. The agent's figures above are then not known to the run (zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// What the stream job decided (absent for external stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamjob: Option<StreamJobInfo>,
    /// How the gateway's clients were served (absent for external stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayInfo>,
}

/// The gateway's fan-out over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GatewayInfo {
    pub client_buffer: u64,
    /// `drop_oldest` or `disconnect`.
    pub slow_client: String,
    pub peak_clients: u64,
    /// Updates dropped from slow clients' queues.
    pub dropped: u64,
    pub disconnected: u64,
    /// Times the consumer paused because every client's queue was full, and for how long.
    pub pauses: u64,
    pub paused_ms: f64,
}

/// The stream job's windows, late events and pattern signals over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamJobInfo {
    pub window_ms: u64,
    pub slide_ms: u64,
    pub out_of_orderness_ms: u64,
    pub windows_fired: u64,
    /// Events that came after every window they fall in had fired (copied to `story.late`).
    pub late: u64,
    /// Matches per pattern (signals on `story.signals`).
    #[serde(default)]
    pub signals: BTreeMap<String, u64>,
    /// Decisions written to `story.audit`.
    pub audit_records: u64,
    /// Rule changes from `story.rules`, when each was published and took effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleChange>,
    /// Async enrichment, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrich: Option<EnrichInfo>,
    /// Whether window state was kept in `story.streamjob-changelog`, sessions rebuilt from
    /// it, and redelivered events it had already counted.
    #[serde(default)]
    pub changelog: bool,
    #[serde(default)]
    pub restored: u64,
    #[serde(default)]
    pub replayed: u64,
}

/// The stream job's async enrichment over a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EnrichInfo {
    /// Which database answered, e.g. `PostgreSQL postgres://tailgate:***@127.0.0.1:5432/tailgate`.
    pub database: String,
    /// `ordered` or `unordered`.
    pub order: String,
    pub max_in_flight: u64,
    pub timeout_ms: f64,
    /// Events enriched, and how: from the cache, from the database, or the fallback.
    pub events: u64,
    pub cache_hits: u64,
    pub db_hits: u64,
    pub timeouts: u64,
    pub missing: u64,
    pub errors: u64,
    /// The most lookups in flight at once (never above `max_in_flight`).
    pub peak_in_flight: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// One broadcast rule change, as the stream job applied it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleChange {
    pub name: String,
    pub enabled: bool,
    /// Seconds after the load began.
    pub published_at_s: f64,
    pub took_effect_at_s: f64,
    /// From publication to the first event processed under it.
    pub delay_ms: f64,
}

/// One rebuild of the agent's state, for the partitions it was assigned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StateRestore {
    /// Seconds after the load began (0 before it).
    pub at_s: f64,
    /// `local store` (the last stop was clean) or `changelog` (it was not).
    pub from: String,
    /// The input partitions assigned.
    #[serde(default)]
    pub partitions: Vec<i32>,
    /// Sessions whose state was restored.
    pub sessions: u64,
    /// Changelog records read.
    pub records: u64,
    /// Time spent restoring, before processing resumed.
    pub warm_start_ms: f64,
}

impl RunResult {
    /// The number at a `metric` path (`end_to_end.p99_ms`, `hops.agent.p99_ms`, ...).
    pub fn metric(&self, metric: &str) -> Option<f64> {
        let value = serde_json::to_value(self).ok()?;
        let parts: Vec<&str> = metric.split('.').collect();
        let v = match parts.as_slice() {
            ["hops", hop, stat] => value["hops"].as_array()?.iter().find(|h| h["name"] == *hop)?.get(*stat)?,
            _ => parts.iter().try_fold(&value, |v, p| v.get(*p))?,
        };
        v.as_f64()
    }

    /// Evaluates `objectives` against this result. When none of them bounds `counts.lost`,
    /// `counts.lost <= 0` is added: a run that loses events does not pass.
    pub fn evaluate(&mut self, objectives: &[Objective]) {
        let mut all = objectives.to_vec();
        if !all.iter().any(|o| o.metric == "counts.lost") {
            all.push(Objective { metric: "counts.lost".into(), max: Some(0.0), min: None });
        }
        let results: Vec<ObjectiveResult> = all
            .iter()
            .map(|o| {
                let actual = self.metric(&o.metric);
                let passed = o.met_by(actual);
                ObjectiveResult { metric: o.metric.clone(), max: o.max, min: o.min, actual, passed }
            })
            .collect();
        let passed = results.iter().all(|r| r.passed);
        self.sla = Sla { objectives: results, passed };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> RunResult {
        let stats = Summary {
            count: 10,
            min_ms: 1.0,
            mean_ms: 2.0,
            p50_ms: 2.0,
            p90_ms: 3.0,
            p99_ms: 4.0,
            p999_ms: 5.0,
            max_ms: 6.0,
        };
        RunResult {
            tailgate_version: "0".into(),
            mode: MODE_RUN.into(),
            scenario: "t".into(),
            profile: "default".into(),
            run_id: 1,
            broker: BrokerInfo {
                kind: "tailgate".into(),
                version: "0.6.0".into(),
                bootstrap: "127.0.0.1:1".into(),
                storage: "memory".into(),
                producer: BTreeMap::new(),
                consumer: BTreeMap::new(),
                partitions: 1,
                topic: BTreeMap::new(),
                stages: BTreeMap::new(),
                ..BrokerInfo::default()
            },
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_s: 1.0,
            warmup_s: 0.0,
            target_rate: 10.0,
            schedule: None,
            target_per_s: Vec::new(),
            payload_bytes: 256,
            achieved_rate: 10.0,
            counts: Counts { sent: 10, delivered: 10, ..Counts::default() },
            end_to_end: stats,
            hops: vec![HopSummary { name: "connector->agent".into(), kind: probes::HopKind::Transit, stats }],
            schedule_lag: stats,
            machine: Machine::this(),
            ..RunResult::default()
        }
    }

    #[test]
    fn metrics_resolve_by_path() {
        let r = sample();
        assert_eq!(r.metric("end_to_end.p99_ms"), Some(4.0));
        assert_eq!(r.metric("hops.connector->agent.max_ms"), Some(6.0));
        assert_eq!(r.metric("counts.sent"), Some(10.0));
        assert_eq!(r.metric("achieved_rate"), Some(10.0));
        assert_eq!(r.metric("hops.nope.p99_ms"), None);
    }

    #[test]
    fn objectives_pass_and_fail_and_lost_is_always_checked() {
        let mut r = sample();
        let o = |metric: &str, max: Option<f64>, min: Option<f64>| Objective { metric: metric.into(), max, min };
        r.evaluate(&[o("end_to_end.p99_ms", Some(50.0), None), o("achieved_rate", None, Some(5.0))]);
        assert!(r.sla.passed);
        assert_eq!(r.sla.objectives.len(), 3);
        assert_eq!(r.sla.objectives[2].metric, "counts.lost");
        r.counts.lost = 1;
        r.evaluate(&[o("end_to_end.p99_ms", Some(3.0), None)]);
        assert!(!r.sla.passed);
        assert!(!r.sla.objectives[0].passed && !r.sla.objectives[1].passed);
        assert_eq!(r.sla.objectives[0].actual, Some(4.0));
    }
}
