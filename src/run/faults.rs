//! The scenario's `[[faults]]` on schedule: the embedded broker's fault hooks and its
//! restart, and the relays in front of PostgreSQL and Redis, on a task of their own; stage
//! kills and restarts through the watch, which owns the pipeline. Each fault applied is
//! recorded with when it began and ended; what it cost (latency while it lasted, recovery)
//! is added once the run is measured.

use super::broker::Broker;
use super::relay::{self, Relay};
use super::{RunError, failed};
use crate::scenario::{FaultKind, FaultSection, Scenario};
use pipeline::assemble::{PipelineConfig, Stop};
use reports::result::FaultRecord;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The faults applied so far.
pub(super) type Applied = Arc<Mutex<Vec<FaultRecord>>>;

/// The relays the stages reach PostgreSQL and Redis through, where a fault is scheduled on
/// them.
#[derive(Debug, Default, Clone)]
pub(super) struct Relays {
    postgres: Vec<Relay>,
    redis: Vec<Relay>,
}

/// Puts a relay between the stages and each database a scheduled fault acts on, and
/// points the stages' configuration at it. The load's own writes go to the server itself.
pub(super) async fn relays(
    scenario: &Scenario,
    config: &mut PipelineConfig,
    cancel: &CancellationToken,
) -> Result<Relays, RunError> {
    let wants = |k: FaultKind| scenario.faults.iter().any(|f| f.kind == k);
    let mut relays = Relays::default();
    if wants(FaultKind::PostgresRestart) {
        let source = (config.connector.source == pipeline::connector::config::SourceKind::Postgres)
            .then_some(config.connector.postgres.as_mut())
            .flatten();
        let enrich = config.streamjob.enrich.as_mut().and_then(|e| e.url.as_mut());
        for url in source.into_iter().chain(enrich).filter(|u| u.starts_with("postgres")) {
            relays.postgres.push(install(url, 5432, cancel).await?);
        }
    }
    if wants(FaultKind::RedisStall)
        && let Some(url) = config.edge_cache.url.as_mut().filter(|u| u.starts_with("redis"))
    {
        relays.redis.push(install(url, 6379, cancel).await?);
    }
    Ok(relays)
}

/// Starts a relay to the server `url` names and rewrites `url` to go through it.
async fn install(url: &mut String, default_port: u16, cancel: &CancellationToken) -> Result<Relay, RunError> {
    let shown = pipeline::io::secrets::redact_url(url);
    let probe: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let (_, target) = relay::through(url, probe, default_port)
        .ok_or_else(|| RunError::BadInput(format!("{shown}: a fault on this database needs a URL with host:port")))?;
    let r = Relay::start(target, cancel.clone()).await.map_err(failed)?;
    if let Some((through, _)) = relay::through(url, r.addr(), default_port) {
        *url = through;
    }
    Ok(r)
}

/// A stage fault, for the watch to apply at its time.
#[derive(Debug, Clone)]
pub(super) struct StageFault {
    pub stage: &'static str,
    pub at: tokio::time::Instant,
    pub how: Stop,
    pub down: Duration,
    /// The `[[faults]]` entry it comes from (none for `restart_at`).
    pub section: Option<FaultSection>,
}

/// The stage faults: each `[[faults]]` stage entry, and the stages' own `restart_at`.
pub(super) fn stage_faults(scenario: &Scenario, start_ns: u64) -> Vec<StageFault> {
    let load_began = tokio::time::Instant::now() + Duration::from_nanos(start_ns.saturating_sub(probes::now_ns()));
    let restart_at = [
        (pipeline::topology::AGENT, scenario.agent.restart_at),
        (pipeline::topology::STREAMJOB, scenario.streamjob.restart_at),
    ];
    let own = restart_at.into_iter().filter_map(|(stage, at)| {
        Some(StageFault { stage, at: load_began + at?, how: Stop::Kill, down: Duration::ZERO, section: None })
    });
    let listed = scenario.faults.iter().filter(|f| f.kind.on_stage()).filter_map(|f| {
        let stage = crate::scenario::RESTARTABLE.into_iter().find(|s| f.stage.as_deref() == Some(*s))?;
        let how = if f.kind == FaultKind::StageKill { Stop::Kill } else { Stop::InOrder };
        let down = f.duration.unwrap_or_default();
        Some(StageFault { stage, at: load_began + f.at, how, down, section: Some(f.clone()) })
    });
    own.chain(listed).collect()
}

/// What the run says when a fault begins, and the record it keeps.
pub(super) struct Recorder {
    pub applied: Applied,
    pub start_ns: u64,
    pub say: bool,
    /// The live view, which marks each fault.
    pub feed: Option<dashboard::FeedSender>,
}

impl Recorder {
    /// Seconds since the load started.
    fn now_s(&self) -> f64 {
        probes::now_ns().saturating_sub(self.start_ns) as f64 / 1e9
    }

    /// `f` began at `began_s` and ended at `ended_s` (`None`: it lasts to the run's end).
    fn record(&self, f: &FaultSection, began_s: f64, ended_s: Option<f64>, what: String) {
        self.mark(f.kind, began_s, ended_s);
        if let Ok(mut list) = self.applied.lock() {
            list.push(FaultRecord {
                kind: f.kind.name().into(),
                at_s: f.at.as_secs_f64(),
                began_at_s: began_s,
                ended_at_s: ended_s,
                duration_s: f.duration.map(|d| d.as_secs_f64()),
                topic: f.topic.clone(),
                latency_ms: f.latency.map(|d| d.as_secs_f64() * 1e3),
                stage: f.stage.clone(),
                what,
                ..FaultRecord::default()
            });
        }
    }

    fn begins(&self, f: &FaultSection, what: &str) -> f64 {
        let began = self.now_s();
        if self.say {
            eprintln!("fault: {} at {began:.1}s: {what}", f.kind.name());
        }
        self.mark(f.kind, began, None);
        began
    }

    /// Marks the fault on the live view (seconds since the load started).
    fn mark(&self, kind: FaultKind, began_s: f64, ended_s: Option<f64>) {
        let ns = |s: f64| self.start_ns + (s * 1e9) as u64;
        if let Some(feed) = &self.feed {
            let mark =
                dashboard::FaultMark { kind: kind.name().into(), began_ns: ns(began_s), ended_ns: ended_s.map(ns) };
            feed.deliver(dashboard::Feed::Fault(mark));
        }
    }

    /// A stage fault, applied by the watch: recorded as over once the stage is started
    /// again (`down` after it stopped).
    pub(super) fn stage(&self, f: &StageFault) {
        let Some(section) = &f.section else { return };
        let how = if f.how == Stop::Kill { "stopped abruptly" } else { "stopped in order" };
        let what = format!("the {} {how}, started again {}", f.stage, after(f.down));
        let began = self.begins(section, &what);
        self.record(section, began, Some(began + f.down.as_secs_f64()), what);
    }
}

/// Applies every fault that is not a stage's, each at its time after the load starts, on
/// a task of the pipeline's; returns when the last is over.
pub(super) fn start(
    scenario: &Scenario,
    broker: &Broker,
    relays: Relays,
    recorder: Arc<Recorder>,
    pipeline: &mut pipeline::assemble::Pipeline,
) {
    let faults: Vec<FaultSection> = scenario.faults.iter().filter(|f| !f.kind.on_stage()).cloned().collect();
    if faults.is_empty() {
        return;
    }
    let start = tokio::time::Instant::now() + Duration::from_nanos(recorder.start_ns.saturating_sub(probes::now_ns()));
    let (target, cancel) = (broker.target(), pipeline.cancel());
    pipeline.spawn_task("faults", async move {
        let mut each = tokio::task::JoinSet::new();
        for f in faults {
            let (target, relays, recorder) = (target.clone(), relays.clone(), Arc::clone(&recorder));
            each.spawn(async move {
                tokio::time::sleep_until(start + f.at).await;
                apply(&f, &target, &relays, &recorder).await
            });
        }
        let all = async {
            while let Some(done) = each.join_next().await {
                done.map_err(|e| pipeline::Error::Config(format!("a fault's task failed: {e}")))??;
            }
            Ok::<(), pipeline::Error>(())
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            r = all => { r?; cancel.cancelled().await }
        }
        Ok(())
    });
}

/// "at once", or "after 1s".
fn after(down: Duration) -> String {
    if down.is_zero() { "at once".into() } else { format!("after {down:?}") }
}

/// Applies one fault and waits until it is over.
async fn apply(
    f: &FaultSection,
    target: &super::broker::Target,
    relays: &Relays,
    recorder: &Recorder,
) -> pipeline::Result<()> {
    let lasts = f.duration.unwrap_or_default();
    match f.kind {
        FaultKind::BrokerStall | FaultKind::ConnectionsDrop | FaultKind::TopicLatency => {
            #[cfg(feature = "embedded")]
            if let (Some(hooks), Some(fault)) = (target.hooks(), f.broker_fault()) {
                let what = fault.to_string();
                let began = recorder.begins(f, &what);
                // The plan lifts an added latency when its time is up; a stall lifts itself.
                let plan = pipeline::embedded::Plan { faults: vec![(Duration::ZERO, fault)] };
                plan.run(&hooks, tokio::time::Instant::now(), |_, _| {}).await;
                if f.kind == FaultKind::BrokerStall {
                    tokio::time::sleep(lasts).await;
                }
                let to_the_end = f.kind == FaultKind::TopicLatency && f.duration.is_none();
                recorder.record(f, began, (!to_the_end).then(|| recorder.now_s()), what);
            }
        }
        FaultKind::BrokerRestart => {
            let what = format!("the broker stopped as a crash would, started again from its log {}", after(lasts));
            let began = recorder.begins(f, &what);
            target.restart(lasts).await?;
            recorder.record(f, began, Some(recorder.now_s()), what);
        }
        FaultKind::PostgresRestart | FaultKind::RedisStall => {
            let restart = f.kind == FaultKind::PostgresRestart;
            let what = if restart {
                format!("every connection of the stages to PostgreSQL closed, new ones refused for {lasts:?}")
            } else {
                format!("nothing passed between the stages and Redis for {lasts:?}")
            };
            let began = recorder.begins(f, &what);
            let each = if restart { &relays.postgres } else { &relays.redis };
            let mut all = tokio::task::JoinSet::new();
            for r in each.clone() {
                all.spawn(async move { if restart { r.restart(lasts).await } else { r.stall(lasts).await } });
            }
            while all.join_next().await.is_some() {}
            recorder.record(f, began, Some(recorder.now_s()), what);
        }
        FaultKind::StageKill | FaultKind::StageRestart => {}
    }
    Ok(())
}

/// A window per fault over the events intended while it lasts (at least its first second),
/// by its scheduled times, for the audience's tally.
pub(super) fn windows(scenario: &Scenario, start_ns: u64) -> Vec<loadgen::IntendedWindow> {
    let ns = |d: Duration| start_ns + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let load_ends = scenario.load.ends();
    scenario
        .faults
        .iter()
        .map(|f| {
            let until = f.ends(load_ends).max(f.at + Duration::from_secs(1));
            loadgen::IntendedWindow::new(ns(f.at), ns(until))
        })
        .collect()
}

/// Adds what each fault cost: the latency of the events intended while it lasted (from the
/// tally's `windows`, in the scenario's order), and the recovery, read off the end-to-end
/// interval log (`e2e_log`, whose clock starts at the warm-up's end).
pub(super) fn cost(
    records: &mut [FaultRecord],
    scenario: &Scenario,
    windows: &[loadgen::IntendedWindow],
    e2e_log: &[u8],
) {
    if records.is_empty() {
        return;
    }
    let e2e = reports::hlog::Series::parse(e2e_log).map(|s| s.intervals).unwrap_or_default();
    let e2e = &e2e[..];
    let warmup_s = scenario.load.warmup.as_secs_f64();
    let first = records.iter().map(|r| r.began_at_s).fold(f64::INFINITY, f64::min);
    let bound = scenario
        .sla
        .iter()
        .find(|o| o.metric == "end_to_end.p99_ms")
        .and_then(|o| o.max)
        .or_else(|| reports::recovery::baseline_bound_ms(e2e, first - warmup_s));
    for r in records.iter_mut() {
        let i = scenario.faults.iter().position(|f| f.kind.name() == r.kind && f.at.as_secs_f64() == r.at_s);
        if let Some(w) = i.and_then(|i| windows.get(i)).filter(|w| !w.histogram.is_empty()) {
            r.during = Some(probes::Summary::of(&w.histogram));
        }
        if let Some(bound) = bound {
            let ended = r.ended_at_s.unwrap_or(r.began_at_s);
            r.recovery_s = reports::recovery::recovery_s(e2e, r.began_at_s - warmup_s, ended - warmup_s, bound);
            r.recovery_bound_ms = Some(bound);
        }
    }
}
