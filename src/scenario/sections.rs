//! The run's own sections: `[stages]` (where the pipeline's stages run) and `[telemetry]`
//! (span and metric export). The stages' sections are the stages' own
//! (`pipeline::*::config`).

use super::Objective;
use pipeline::config::{Problems, opt_duration};
use serde::Deserialize;
use std::time::Duration;

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

impl StagesSection {
    /// Every problem of the section; `filters`: the connector drops events on purpose.
    pub fn validate(&self, filters: bool, p: &mut Problems) {
        for url in self.gateway.iter().chain(&self.metrics) {
            if !url.starts_with("http://") {
                let field = if self.gateway.as_ref() == Some(url) { "gateway" } else { "metrics" };
                p.bad("stages", None, field, format!("`{url}` is not an http:// URL"));
            }
        }
        if !self.external {
            return;
        }
        if self.gateway.is_none() {
            p.bad("stages", None, "gateway", "external stages need the gateway's URL, e.g. \"http://127.0.0.1:8080\"");
        }
        if self.metrics.is_empty() && filters {
            p.bad(
                "stages",
                None,
                "metrics",
                "the connector's filter drops events no topic shows; list the connector's /metrics URL so the run \
                 can count them",
            );
        }
    }
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

    /// Every problem of the section.
    pub fn validate(&self, sla: &[Objective], p: &mut Problems) {
        if let Err((field, why)) = self.requested(sla) {
            p.bad("telemetry", None, field, why);
        }
        if let Some(m) = &self.metrics
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            p.bad("telemetry", None, "metrics", format!("`{m}` is not an address to listen on (ip:port)"));
        }
    }
}

/// `[search]`: how `tailgate run --find-max-rate` looks for the highest rate the pipeline
/// sustains (every objective held, 99% of the rate delivered, no backlog growing). Each
/// step is a run of its own at one constant rate: `warmup`, then `step` measured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    /// The first rate tried, events per second.
    #[serde(default = "default_search_start")]
    pub start: f64,
    /// Each step up (or down, when the first fails) multiplies (divides) the rate by this.
    #[serde(default = "default_search_factor")]
    pub factor: f64,
    /// Bisection stops when the lowest failing rate is within this share of the highest
    /// sustained one.
    #[serde(default = "default_search_precision")]
    pub precision: f64,
    /// The highest rate tried.
    #[serde(default = "default_search_ceiling")]
    pub ceiling: f64,
    /// At most this many steps.
    #[serde(default = "default_search_steps")]
    pub max_steps: usize,
    /// Each step's measured length.
    #[serde(default = "default_search_step", deserialize_with = "pipeline::config::duration")]
    pub step: Duration,
    /// Each step's warm-up, sent but kept out of its figures.
    #[serde(default = "default_search_warmup", deserialize_with = "pipeline::config::duration")]
    pub warmup: Duration,
}

impl Default for SearchSection {
    fn default() -> Self {
        Self {
            start: default_search_start(),
            factor: default_search_factor(),
            precision: default_search_precision(),
            ceiling: default_search_ceiling(),
            max_steps: default_search_steps(),
            step: default_search_step(),
            warmup: default_search_warmup(),
        }
    }
}

const fn default_search_start() -> f64 {
    500.0
}
const fn default_search_factor() -> f64 {
    2.0
}
const fn default_search_precision() -> f64 {
    0.05
}
const fn default_search_ceiling() -> f64 {
    200_000.0
}
const fn default_search_steps() -> usize {
    12
}
const fn default_search_step() -> Duration {
    Duration::from_secs(15)
}
const fn default_search_warmup() -> Duration {
    Duration::from_secs(3)
}

impl SearchSection {
    /// The search the load generator runs.
    pub fn search(&self) -> loadgen::search::Search {
        loadgen::search::Search {
            start: self.start,
            factor: self.factor,
            precision: self.precision,
            ceiling: self.ceiling,
            max_steps: self.max_steps,
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        let t = "search";
        if !(self.start.is_finite() && self.start >= 1.0) {
            p.bad(t, None, "start", format!("must be at least 1 event per second, not {}", self.start));
        }
        if !(self.factor.is_finite() && self.factor > 1.0 && self.factor <= 10.0) {
            p.bad(t, None, "factor", format!("must be above 1 and at most 10, not {}", self.factor));
        }
        if !(self.precision.is_finite() && self.precision > 0.0 && self.precision < 1.0) {
            p.bad(t, None, "precision", format!("must be between 0 and 1 (0.05: within 5%), not {}", self.precision));
        }
        if !(self.ceiling.is_finite() && self.ceiling >= self.start) {
            p.bad(t, None, "ceiling", format!("must be at least `start`, not {}", self.ceiling));
        }
        if !(1..=100).contains(&self.max_steps) {
            p.bad(t, None, "max_steps", format!("must be 1 to 100, not {}", self.max_steps));
        }
        if self.step.is_zero() {
            p.bad(t, None, "step", "must be longer than zero");
        }
    }
}
