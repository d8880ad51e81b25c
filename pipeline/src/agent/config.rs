//! `[agent]` and `[agent.model]`: the agent's pool, prefetch, prompt memory, model and a
//! scheduled restart, with their defaults and checks.

use super::model::{Latency, ModelConfig};
use crate::config::{Around, Problems, duration, opt_duration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// `rust` (in the process) or `faust` (a Faust worker in Python, `faust`).
    #[serde(default)]
    pub kind: AgentKind,
    /// The Faust agent's interpreter (default: `TAILGATE_PYTHON`, else `.venv/bin/python`).
    pub python: Option<PathBuf>,
    /// Workers processing different sessions in parallel.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Fetch a session's context ahead.
    #[serde(default = "default_prefetch")]
    pub prefetch: bool,
    /// Recent choices a prompt recalls.
    #[serde(default = "default_history")]
    pub history: usize,
    /// The simulated model's call time per beat, when `[agent.model]` is absent.
    #[serde(default, deserialize_with = "duration")]
    pub model_latency: Duration,
    /// Stop the agent abruptly this long after the load starts, and start it again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub restart_at: Option<Duration>,
    /// The model; absent: simulated with `model_latency`.
    pub model: Option<ModelSpec>,
}

const fn default_concurrency() -> usize {
    1
}
const fn default_prefetch() -> bool {
    true
}
const fn default_history() -> usize {
    3
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            kind: AgentKind::Rust,
            python: None,
            concurrency: default_concurrency(),
            prefetch: default_prefetch(),
            history: default_history(),
            model_latency: Duration::ZERO,
            restart_at: None,
            model: None,
        }
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

/// Which agent runs: the Rust stage, or the Faust worker ([`super::faust`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    #[default]
    Rust,
    Faust,
}

impl AgentKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Faust => "faust",
        }
    }
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
    /// Every problem of the section (`around` for what depends on the rest of the scenario).
    pub fn validate(&self, around: &Around, p: &mut Problems) {
        if !(1..=256).contains(&self.concurrency) {
            p.bad("agent", None, "concurrency", format!("must be 1 to 256, not {}", self.concurrency));
        }
        if self.kind == AgentKind::Faust && self.concurrency != 1 {
            p.bad(
                "agent",
                None,
                "concurrency",
                "the Faust agent runs one actor per partition (isolated_partitions): raise broker.partitions instead",
            );
        }
        if let Err((field, why)) = self.model() {
            p.bad("agent.model", None, field, why);
        }
        if let Some(at) = self.restart_at {
            if at >= around.load_ends {
                p.bad("agent", None, "restart_at", format!("{at:?} is after the load ends"));
            }
            if around.external {
                p.bad(
                    "agent",
                    None,
                    "restart_at",
                    "restarts the in-process agent; with external stages, restart the agent process",
                );
            }
        }
    }

    /// The agent's settings, with its state kept in `state_dir` (and only run `run`'s
    /// sessions restored, for a run's own agent).
    pub fn config(&self, state_dir: PathBuf, run: Option<u64>) -> Result<super::AgentConfig, String> {
        let model = self.model().map_err(|(f, why)| format!("agent.model.{f}: {why}"))?;
        Ok(super::AgentConfig {
            history: self.history,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            model,
            state_dir,
            run,
        })
    }

    /// The Faust agent's settings, with its script and log in `state_dir`, reading context
    /// from `edge_cache`.
    pub fn faust(
        &self,
        state_dir: PathBuf,
        run: Option<u64>,
        edge_cache: String,
    ) -> Result<super::faust::FaustConfig, String> {
        let model = self.model().map_err(|(f, why)| format!("agent.model.{f}: {why}"))?;
        Ok(super::faust::FaustConfig {
            python: super::faust::python(self.python.as_deref()),
            history: self.history,
            prefetch: self.prefetch,
            model,
            edge_cache,
            state_dir,
            run,
        })
    }

    /// The model to call, or (field, why) it is not fully described.
    pub fn model(&self) -> Result<ModelConfig, (&'static str, String)> {
        let fallback = self.model_latency;
        let Some(m) = &self.model else { return Ok(ModelConfig::Simulated(Latency::Fixed(fallback))) };
        match m.kind {
            ModelKind::Simulated => m.simulated(fallback).map(ModelConfig::Simulated),
            ModelKind::Http => m.http(),
        }
    }
}

impl ModelSpec {
    fn simulated(&self, fallback: Duration) -> Result<Latency, (&'static str, String)> {
        let need = |v: Option<Duration>, field: &'static str, kind: &str| {
            v.ok_or((field, format!("a {kind} latency needs `{field}`")))
        };
        Ok(match self.latency.unwrap_or(LatencyKind::Fixed) {
            LatencyKind::Fixed => Latency::Fixed(self.value.unwrap_or(fallback)),
            LatencyKind::Uniform => {
                let (min, max) = (need(self.min, "min", "uniform")?, need(self.max, "max", "uniform")?);
                if max < min {
                    return Err(("max", format!("must not be below min ({min:?})")));
                }
                Latency::Uniform { min, max }
            }
            LatencyKind::Lognormal => {
                let median = need(self.median, "median", "lognormal")?;
                let sigma = self.sigma.ok_or(("sigma", "a lognormal latency needs `sigma`".to_owned()))?;
                if !(sigma.is_finite() && (0.0..=5.0).contains(&sigma)) {
                    return Err(("sigma", format!("must be between 0 and 5, not {sigma}")));
                }
                Latency::Lognormal { median, sigma }
            }
        })
    }

    fn http(&self) -> Result<ModelConfig, (&'static str, String)> {
        let url = self
            .url
            .clone()
            .ok_or(("url", "an http model needs `url` (e.g. \"http://127.0.0.1:8000/v1\")".to_owned()))?;
        if !url.starts_with("http://") {
            return Err(("url", format!("`{url}` must start with http://")));
        }
        if self.max_in_flight == 0 {
            return Err(("max_in_flight", "must be at least 1".into()));
        }
        Ok(ModelConfig::Http {
            url,
            model: self.model.clone(),
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
        })
    }
}
