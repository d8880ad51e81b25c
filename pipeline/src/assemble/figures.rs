//! What a running pipeline has done, as plain data: a snapshot of every stage's counters
//! and figures, taken by [`super::Pipeline::figures`], so that the runner reads numbers and
//! never an atomic or a lock.

use crate::agent::AgentStats;
use crate::agent::state::Restored;
use crate::context_sink::SinkCounters;
use crate::runtime::StageCounters;
use crate::streamjob::enrich::{EnrichConfig, Enricher};
use crate::streamjob::{RuleApplied, StreamJobStats};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

fn n(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// One stage's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageFigures {
    pub forwarded: u64,
    pub dead_lettered: u64,
    pub filtered: u64,
    pub duplicates: u64,
    /// Events it could neither pass on nor dead-letter (lost), and why the first could not.
    pub skipped: u64,
    pub first_skip: Option<String>,
}

impl StageFigures {
    pub(crate) fn of(c: &StageCounters) -> Self {
        Self {
            forwarded: n(&c.forwarded),
            dead_lettered: n(&c.dead_lettered),
            filtered: n(&c.filtered),
            duplicates: n(&c.duplicates),
            skipped: n(&c.skipped),
            first_skip: c.first_skip.get().cloned(),
        }
    }

    pub(crate) fn store(&self, c: &StageCounters) {
        c.forwarded.store(self.forwarded, Ordering::Relaxed);
        c.dead_lettered.store(self.dead_lettered, Ordering::Relaxed);
        c.filtered.store(self.filtered, Ordering::Relaxed);
        c.duplicates.store(self.duplicates, Ordering::Relaxed);
    }
}

/// The agent's context lookups, replays, model failures and state restores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFigures {
    pub context_hits: u64,
    pub context_misses: u64,
    pub context_errors: u64,
    pub replays: u64,
    pub model_failures: u64,
    pub restores: Vec<Restored>,
    /// The Faust agent: what it ran on and the CPU seconds its processes used.
    pub runtime: Option<String>,
    pub process_cpu_s: Option<f64>,
}

impl AgentFigures {
    pub(crate) fn of(s: &AgentStats) -> Self {
        let runtime = s.runtime.lock().ok().and_then(|r| r.clone());
        Self {
            context_hits: n(&s.context_hits),
            context_misses: n(&s.context_misses),
            context_errors: n(&s.context_errors),
            replays: n(&s.replays),
            model_failures: n(&s.model_failures),
            restores: s.restores.lock().map(|r| r.clone()).unwrap_or_default(),
            // Only a Faust agent, which says what it runs on, has processes of its own.
            process_cpu_s: runtime.as_ref().map(|_| n(&s.process_cpu_ns) as f64 / 1e9),
            runtime,
        }
    }
}

/// The stream job's decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamJobFigures {
    pub windows_fired: u64,
    pub late: u64,
    pub signals: BTreeMap<String, u64>,
    pub audit_records: u64,
    pub rules: Vec<RuleApplied>,
    pub restored: u64,
    pub replayed: u64,
    pub enrich: Option<EnrichFigures>,
}

impl StreamJobFigures {
    pub(crate) fn of(s: &StreamJobStats, enrich: Option<&(EnrichConfig, Enricher)>) -> Self {
        Self {
            windows_fired: n(&s.windows_fired),
            late: n(&s.late),
            signals: s.signals.lock().map(|m| m.clone()).unwrap_or_default(),
            audit_records: n(&s.audit_records),
            rules: s.rules.lock().map(|r| r.clone()).unwrap_or_default(),
            restored: n(&s.restored),
            replayed: n(&s.replayed),
            enrich: enrich.map(|(config, e)| EnrichFigures::of(config, e)),
        }
    }
}

/// The enrichment's lookups and where they were answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnrichFigures {
    pub database: String,
    pub ordered: bool,
    pub max_in_flight: u64,
    pub timeout_ms: f64,
    pub events: u64,
    pub cache_hits: u64,
    pub db_hits: u64,
    pub timeouts: u64,
    pub missing: u64,
    pub errors: u64,
    pub peak_in_flight: u64,
    pub first_error: Option<String>,
}

impl EnrichFigures {
    fn of(config: &EnrichConfig, e: &Enricher) -> Self {
        let s = e.stats();
        Self {
            database: config.at.describe(),
            ordered: config.order == crate::streamjob::enrich::ResultOrder::Ordered,
            max_in_flight: config.max_in_flight as u64,
            timeout_ms: config.timeout.as_secs_f64() * 1e3,
            events: n(&s.events),
            cache_hits: n(&s.cache_hits),
            db_hits: n(&s.db_hits),
            timeouts: n(&s.timeouts),
            missing: n(&s.missing),
            errors: n(&s.errors),
            peak_in_flight: n(&s.peak_in_flight),
            first_error: s.first_error.lock().ok().and_then(|f| f.clone()),
        }
    }
}

/// The gateway's clients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GatewayFigures {
    /// Streaming clients connected now.
    pub clients: u64,
    pub peak_clients: u64,
    pub dropped: u64,
    pub disconnected: u64,
    pub pauses: u64,
    pub paused_ms: f64,
}

impl GatewayFigures {
    pub(crate) fn of(g: &crate::gateway::GatewayState) -> Self {
        let s = g.fanout_stats();
        Self {
            clients: g.subscribers() as u64,
            peak_clients: n(&s.peak_clients),
            dropped: n(&s.dropped),
            disconnected: n(&s.disconnected),
            pauses: n(&s.pauses),
            paused_ms: n(&s.paused_ns) as f64 / 1e6,
        }
    }
}

/// A snapshot of the whole pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineFigures {
    /// The four stages in path order, named.
    pub stages: Vec<(&'static str, StageFigures)>,
    /// The context sink: records written to the edge cache, and records it could not read.
    pub sink_applied: u64,
    pub sink_skipped: u64,
    pub agent: AgentFigures,
    /// Present once the stream job has run here.
    pub streamjob: Option<StreamJobFigures>,
    /// Present when this process serves the gateway.
    pub gateway: Option<GatewayFigures>,
}

impl PipelineFigures {
    /// One stage's outcomes (zero for a stage not in the table).
    pub fn stage(&self, name: &str) -> StageFigures {
        self.stages.iter().find(|(s, _)| *s == name).map(|(_, f)| f.clone()).unwrap_or_default()
    }

    /// Events dead-lettered by any stage.
    pub fn dead_lettered(&self) -> u64 {
        self.stages.iter().map(|(_, f)| f.dead_lettered).sum()
    }

    /// Events the connector's filters dropped on purpose.
    pub fn filtered(&self) -> u64 {
        self.stage(crate::topology::CONNECTOR).filtered
    }

    pub(crate) fn sink(&mut self, s: &SinkCounters) {
        self.sink_applied = n(&s.applied);
        self.sink_skipped = n(&s.skipped);
    }
}
