//! The summary a run prints when it ends: what ran and on what, how the pipeline was set
//! up and what it reported, the latency table (end to end, each hop, schedule lag) and the
//! verdict.

use crate::result::{PipelineInfo, RunResult, StreamJobInfo, TelemetryInfo};
use probes::Summary;
use std::collections::BTreeMap;
use std::fmt::Write as _;

impl RunResult {
    /// The summary printed at the end of a run.
    pub fn render(&self, run_dir: &std::path::Path) -> String {
        let mut s = String::new();
        self.setup(&mut s);
        if let Some(p) = &self.pipeline {
            pipeline(&mut s, p);
        }
        if let Some(t) = &self.telemetry {
            traces(&mut s, t);
        }
        self.latency(&mut s);
        if let Some(w) = &self.workers {
            w.render(&self.clocks, &mut s);
        }
        self.verdict(&mut s, run_dir);
        s
    }

    /// The run, the broker, faults, client settings, load and accounting.
    fn setup(&self, s: &mut String) {
        let b = &self.broker;
        match &self.watch {
            Some(_) => _ = writeln!(s, "tailgate {}, run {:x}", self.scenario, self.run_id),
            None => {
                _ = writeln!(s, "tailgate run `{}` (profile {}), run {:x}", self.scenario, self.profile, self.run_id)
            }
        }
        let _ = writeln!(s, "broker    {} {} at {} (storage: {})", b.kind, b.version, b.bootstrap, b.storage);
        for f in &self.faults {
            let _ = writeln!(s, "fault     {} at {:.1}s: {}", f.kind, f.began_at_s, f.what);
            let cost = f.during.map(|d| {
                format!("events intended during it: {}, p99 {:.2} ms, max {:.2} ms", d.count, d.p99_ms, d.max_ms)
            });
            let recovery = match (f.recovery_s, f.recovery_bound_ms) {
                (Some(r), Some(b)) => Some(format!("p99 back under {b:.0} ms {r:.1}s after it ended")),
                (None, Some(b)) => Some(format!("p99 not back under {b:.0} ms before the run ended")),
                _ => None,
            };
            let said: Vec<String> = cost.into_iter().chain(recovery).collect();
            if !said.is_empty() {
                let _ = writeln!(s, "          {}", said.join("; "));
            }
        }
        if let Some(e) = &b.faults {
            let _ = writeln!(s, "          the broker {}", e.describe());
        }
        // A setting the run left unset is the client library's own default.
        let setting = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_else(|| "default".into());
        let _ = writeln!(
            s,
            "clients   linger.ms={} acks={} fetch.wait.max.ms={} fetch.min.bytes={}",
            setting(&b.producer, "linger.ms"),
            setting(&b.producer, "acks"),
            setting(&b.consumer, "fetch.wait.max.ms"),
            setting(&b.consumer, "fetch.min.bytes"),
        );
        let c = &self.counts;
        if let Some(w) = &self.watch {
            let _ = writeln!(
                s,
                "watched   {} for {:.1}s: {} events timed ({:.1}/s), {} foreign records counted, {} off the first path{}",
                w.topics.join(", "),
                self.duration_s,
                w.events,
                self.achieved_rate,
                w.foreign,
                w.off_path,
                if self.interrupted { "  (stopped early)" } else { "" }
            );
            return;
        }
        let _ = writeln!(
            s,
            "load      target {:.0}/s{}, achieved {:.1}/s over {:.1}s measured (+{:.1}s warm-up)",
            self.target_rate,
            self.schedule.as_ref().map(|d| format!(" (mean of {d})")).unwrap_or_default(),
            self.achieved_rate,
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(
            s,
            "events    sent {}  delivered {}  dead-lettered {}  filtered {}  lost {}  duplicates {}  reordered {}{}",
            c.sent,
            c.delivered,
            c.dead_lettered,
            c.filtered,
            c.lost,
            c.duplicates,
            c.reordered,
            if self.interrupted { "  (interrupted)" } else { "" }
        );
        if let Some(cpu) = &self.cpu {
            let agent = cpu.agent_process_s.map(|a| format!(" + Faust agent {a:.2}s")).unwrap_or_default();
            let _ = writeln!(
                s,
                "cpu       tailgate {:.2}s{agent} = {:.3} CPU-s per 1,000 events sent",
                cpu.tailgate_s, cpu.per_1k_events_s
            );
        }
    }

    /// The latency table.
    fn latency(&self, s: &mut String) {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<24} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let row = |s: &mut String, name: &str, m: &Summary| {
            let _ = writeln!(
                s,
                "{name:<24} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                m.count, m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms, m.max_ms, m.mean_ms
            );
        };
        row(s, "end to end", &self.end_to_end);
        for h in &self.hops {
            let kind = match h.kind {
                probes::HopKind::Transit => "~",
                probes::HopKind::Service => " ",
            };
            row(s, &format!("  {kind} {}", h.name), &h.stats);
        }
        row(s, "schedule lag", &self.schedule_lag);
        let hop_mean: f64 = self.hops.iter().map(|h| h.stats.mean_ms).sum();
        let _ = writeln!(
            s,
            "  (~ transit between stages, otherwise service inside a stage; hop means sum to {hop_mean:.3} ms)"
        );
    }

    /// Each objective and the verdict.
    fn verdict(&self, s: &mut String, run_dir: &std::path::Path) {
        let _ = writeln!(s);
        let _ = writeln!(s, "SLA");
        for o in &self.sla.objectives {
            let bound = o.objective().bound();
            let actual = o.actual.map_or_else(|| "no value".to_owned(), |a| format!("{a:.3}"));
            let _ = writeln!(s, "  {} {} = {actual} (limit {bound})", if o.passed { "PASS" } else { "FAIL" }, o.metric);
        }
        let _ = writeln!(s, "verdict   {}", if self.sla.passed { "PASS" } else { "FAIL" });
        let _ = writeln!(s, "results   {}", run_dir.display());
    }
}

/// How the reference pipeline was set up and what its stages reported.
fn pipeline(s: &mut String, p: &PipelineInfo) {
    let transforms = if p.transforms.is_empty() { "none".to_owned() } else { p.transforms.join(", ") };
    let _ = writeln!(
        s,
        "pipeline  source {} · converter {} · {} task(s) · transforms {transforms}",
        p.source, p.converter, p.tasks
    );
    if let Some(ext) = &p.external {
        // The stages' own settings and figures are theirs; the run knows what it wrote.
        let _ = writeln!(s, "stages    {ext} (agent figures are in the stages' own output and /metrics)");
    } else {
        let kind = if p.agent.is_empty() { String::new() } else { format!("{} · ", p.agent) };
        let _ = writeln!(
            s,
            "agent     {kind}concurrency {} · prefetch {} · model {} · cache {} (hits {}, misses {}, errors {})",
            p.agent_concurrency,
            if p.prefetch { "on" } else { "off" },
            p.model,
            p.edge_cache,
            p.context_hits,
            p.context_misses,
            p.context_errors
        );
    }
    for a in &p.agent_restores {
        let _ = writeln!(
            s,
            "          agent state at {:.1}s, partitions {:?}: from the {} ({} sessions, {} changelog records) in {:.1} ms",
            a.at_s, a.partitions, a.from, a.sessions, a.records, a.warm_start_ms
        );
    }
    if let Some(j) = &p.streamjob {
        streamjob(s, j);
    }
    if let Some(g) = &p.gateway {
        let _ = writeln!(
            s,
            "gateway   {} clients at most · buffer {} per client, slow clients: {} · dropped {} · disconnected {} · paused {} times ({:.1} ms)",
            g.peak_clients, g.client_buffer, g.slow_client, g.dropped, g.disconnected, g.pauses, g.paused_ms
        );
    }
}

/// The stream job's windows, state, rules and enrichment.
fn streamjob(s: &mut String, j: &StreamJobInfo) {
    let signals = if j.signals.is_empty() {
        "none".to_owned()
    } else {
        j.signals.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    let kind =
        if j.slide_ms == j.window_ms { "tumbling".to_owned() } else { format!("sliding every {} ms", j.slide_ms) };
    let _ = writeln!(
        s,
        "streamjob windows {} ms {kind} · watermark {} ms behind · {} fired · {} late · signals {signals} · {} audit records",
        j.window_ms, j.out_of_orderness_ms, j.windows_fired, j.late, j.audit_records
    );
    if j.changelog {
        let _ = writeln!(
            s,
            "          state in story.streamjob-changelog · {} sessions restored · {} redeliveries not counted twice",
            j.restored, j.replayed
        );
    }
    for r in &j.rules {
        let _ = writeln!(
            s,
            "          rule {} {} at {:.1}s, in effect {:.1} ms later",
            r.name,
            if r.enabled { "published" } else { "disabled" },
            r.published_at_s,
            r.delay_ms
        );
    }
    if let Some(e) = &j.enrich {
        let _ = writeln!(
            s,
            "          enrich from {} · {} · {} in flight at most (bound {}) · timeout {} ms · cache {} · db {} · timeout {} · missing {} · error {}",
            e.database,
            e.order,
            e.peak_in_flight,
            e.max_in_flight,
            e.timeout_ms,
            e.cache_hits,
            e.db_hits,
            e.timeouts,
            e.missing,
            e.errors
        );
        if let Some(first) = &e.first_error {
            let _ = writeln!(s, "          first enrichment error: {first}");
        }
    }
}

/// Where the spans went.
fn traces(s: &mut String, t: &TelemetryInfo) {
    let breach = t.breach_ms.map_or(String::new(), |b| format!(" and every event over {b} ms"));
    let _ = writeln!(
        s,
        "traces    OTLP {} to {} · {:.0}% of events{breach} · spans exported {}, dropped {}, failed {} · {} over-SLA traces · metric exports failed {}",
        t.protocol,
        t.endpoint,
        t.sample_ratio * 100.0,
        t.spans_exported,
        t.spans_dropped,
        t.spans_failed,
        t.breach_traces,
        t.metric_exports_failed
    );
    if let Some(e) = &t.last_error {
        let _ = writeln!(s, "          last export error: {e}");
    }
}
