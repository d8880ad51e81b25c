//! The outcome phase: the pipeline's figures, the audience's tally and the accounting
//! turned into `result.json`'s [`RunResult`], with the notes a user should see.

use super::drain::Accounting;
use crate::result::{Counts, Machine, RunResult};
use crate::scenario::{Resolved, Scenario};
use loadgen::{DriveReport, Tally};
use pipeline::assemble::{PipelineConfig, PipelineFigures, StreamJobFigures};
use reports::result::{GatewayInfo, PipelineInfo, RuleChange, StateRestore, StreamJobInfo};

/// Everything the result is made of.
pub(super) struct Made<'a> {
    pub scenario: &'a Scenario,
    pub profile: &'a Resolved,
    pub config: &'a PipelineConfig,
    pub run_id: u64,
    pub started: std::time::SystemTime,
    /// When the load started, epoch ns (times in the result are from here).
    pub start_ns: u64,
    pub report: &'a DriveReport,
    pub tally: &'a Tally,
    pub accounting: Accounting,
    pub figures: &'a PipelineFigures,
    pub source: String,
    pub edge_cache: String,
    /// How the external stages were found, when they are.
    pub external: Option<String>,
    pub interrupted: bool,
    /// CPU seconds of this process while the pipeline ran.
    pub cpu_s: Option<f64>,
}

impl Made<'_> {
    /// The run's result, evaluated against the scenario's SLA.
    pub(super) fn result(self, broker: crate::result::BrokerInfo) -> RunResult {
        let (load, report, tally) = (&self.scenario.load, self.report, self.tally);
        let shape = load.shape();
        // Stopped early: the measured time is up to the next event due (none during warm-up).
        let measured = shape.time_of(report.sent as f64).map_or(0.0, |t| (t - load.warmup.as_secs_f64()).max(0.0));
        let duration_s =
            if report.stopped_early { measured.min(load.duration.as_secs_f64()) } else { load.duration.as_secs_f64() };
        let a = self.accounting;
        let counts = Counts {
            sent: report.sent,
            delivered: tally.delivered,
            dead_lettered: a.dead_lettered,
            filtered: a.filtered,
            lost: a.lost,
            duplicates: tally.duplicates + self.figures.stage(pipeline::topology::GATEWAY).duplicates,
            client_duplicates: tally.duplicates,
            reordered: tally.reordered,
            warmup_sent: report.warmup_sent,
        };
        let mut result = RunResult {
            tailgate_version: env!("CARGO_PKG_VERSION").into(),
            mode: reports::result::MODE_RUN.into(),
            scenario: self.scenario.name.clone(),
            profile: self.profile.name.clone(),
            run_id: self.run_id,
            broker,
            started_at: humantime::format_rfc3339_seconds(self.started).to_string(),
            duration_s,
            warmup_s: load.warmup.as_secs_f64(),
            target_rate: load.measured_rate(),
            schedule: load.schedule.is_some().then(|| shape.describe()),
            target_per_s: shape.per_second(load.ends()),
            payload_bytes: load.payload_bytes as u64,
            achieved_rate: if duration_s > 0.0 {
                tally.delivered.saturating_sub(tally.warmup_delivered) as f64 / duration_s
            } else {
                0.0
            },
            counts,
            end_to_end: tally.hops.end_to_end.summary(),
            hops: tally.hops.summaries(),
            schedule_lag: report.schedule_lag.summary(),
            sla: Default::default(),
            interrupted: self.interrupted || report.stopped_early,
            machine: Machine::this(),
            cpu: self.cpu_s.map(|tailgate_s| {
                let mut cpu = crate::result::CpuUse {
                    tailgate_s,
                    agent_process_s: self.figures.agent.process_cpu_s,
                    per_1k_events_s: 0.0,
                };
                cpu.per_1k_events_s = if report.sent > 0 { cpu.total_s() * 1e3 / report.sent as f64 } else { 0.0 };
                cpu
            }),
            pipeline: Some(self.pipeline_info()),
            telemetry: None,
            faults: Vec::new(),
            accounting_error: None,
            watch: None,
            workers: None,
            clocks: Vec::new(),
        };
        result.evaluate(&self.scenario.sla);
        result
    }

    fn pipeline_info(&self) -> PipelineInfo {
        let (c, f) = (self.config, self.figures);
        let secs = |ns: u64| ns.saturating_sub(self.start_ns) as f64 / 1e9;
        PipelineInfo {
            source: self.source.clone(),
            converter: c.connector.converter.name().into(),
            tasks: c.connector.tasks,
            transforms: c.connector.transforms.iter().map(|t| t.kind().to_owned()).collect(),
            edge_cache: self.edge_cache.clone(),
            agent: match &f.agent.runtime {
                Some(runs_on) => format!("{}: {runs_on}", c.agent.kind.name()),
                None => c.agent.kind.name().to_owned(),
            },
            agent_concurrency: c.agent.concurrency,
            prefetch: c.agent.prefetch,
            model: c.agent.model().map(|m| m.describe()).unwrap_or_default(),
            context_hits: f.agent.context_hits,
            context_misses: f.agent.context_misses,
            context_errors: f.agent.context_errors,
            replays: f.agent.replays,
            agent_restores: f
                .agent
                .restores
                .iter()
                .map(|r| StateRestore {
                    at_s: secs(r.at_ns),
                    from: r.from.clone(),
                    partitions: r.partitions.clone(),
                    sessions: r.sessions,
                    records: r.records,
                    warm_start_ms: r.warm_start_ms,
                })
                .collect(),
            external: self.external.clone(),
            gateway: f.gateway.map(|g| {
                let fanout = c.gateway.fanout();
                GatewayInfo {
                    client_buffer: fanout.buffer as u64,
                    slow_client: fanout.policy.name().into(),
                    peak_clients: g.peak_clients,
                    dropped: g.dropped,
                    disconnected: g.disconnected,
                    pauses: g.pauses,
                    paused_ms: g.paused_ms,
                }
            }),
            streamjob: f.streamjob.as_ref().map(|s| self.streamjob_info(s)),
        }
    }

    fn streamjob_info(&self, s: &StreamJobFigures) -> StreamJobInfo {
        let job = self.config.streamjob.config();
        let secs = |ns: u64| (ns as f64 - self.start_ns as f64) / 1e9;
        StreamJobInfo {
            window_ms: job.window.as_millis() as u64,
            slide_ms: job.slide.as_millis() as u64,
            out_of_orderness_ms: job.out_of_orderness.as_millis() as u64,
            windows_fired: s.windows_fired,
            late: s.late,
            signals: s.signals.clone(),
            audit_records: s.audit_records,
            rules: s
                .rules
                .iter()
                .map(|r| RuleChange {
                    name: r.name.clone(),
                    enabled: r.enabled,
                    published_at_s: secs(r.published_ns),
                    took_effect_at_s: secs(r.applied_ns),
                    delay_ms: r.applied_ns.saturating_sub(r.published_ns) as f64 / 1e6,
                })
                .collect(),
            enrich: s.enrich.as_ref().map(|e| reports::result::EnrichInfo {
                database: e.database.clone(),
                order: if e.ordered { "ordered" } else { "unordered" }.into(),
                max_in_flight: e.max_in_flight,
                timeout_ms: e.timeout_ms,
                events: e.events,
                cache_hits: e.cache_hits,
                db_hits: e.db_hits,
                timeouts: e.timeouts,
                missing: e.missing,
                errors: e.errors,
                peak_in_flight: e.peak_in_flight,
                first_error: e.first_error.clone(),
            }),
            changelog: job.changelog,
            restored: s.restored,
            replayed: s.replayed,
        }
    }
}

/// The run's interval logs, as the run directory keeps them.
pub(super) fn logs(tally: &mut Tally, schedule_lag: &mut probes::LatencyRecorder) -> reports::runs::RunLogs {
    reports::runs::RunLogs {
        end_to_end: tally.hops.end_to_end.interval_log(),
        warmup: tally.warmup.as_mut().map(probes::LatencyRecorder::interval_log),
        schedule_lag: schedule_lag.interval_log(),
        hops: tally.hops.hops_mut().iter_mut().map(|h| (h.name.clone(), h.recorder.interval_log())).collect(),
    }
}
