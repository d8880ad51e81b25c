//! The drive phase when the load comes from workers on other hosts (`[workers]`): a plan
//! per worker on the control topic, and their reports from the results topic merged into
//! the same [`Following`] and [`Players`] a local drive gives, so that the phases after it
//! (the watch, the drain, the accounting) are the same for both.

use super::drive::{Following, Players, Times};
use super::{RunError, failed};
use crate::scenario::{AudienceKind, Scenario};
use crate::workers::clock::{from_end, producer, send};
use crate::workers::coordinator::{Collector, Following as Audience, Registered, measure_clock};
use crate::workers::{CONTROL_TOPIC, Control, END_TO_END, Followed, Plan, RESULTS_TOPIC, Report};
use dashboard::{Feed, FeedSender, Sample};
use loadgen::Schedule;
use loadgen::clocks::Estimate;
use pipeline::KafkaSettings;
use rdkafka::Message as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A worker not heard from for this long is taken for lost (it reports every second).
const SILENCE: Duration = Duration::from_secs(5);
/// How long the last reports may take once the workers are told to stop.
const LAST_REPORTS: Duration = Duration::from_secs(15);

/// What the workers did, once the audience is stopped.
pub(super) struct Done {
    pub collector: Collector,
    /// Each worker's clock measured again after the load (`None`: it did not answer).
    pub after: Vec<Option<Estimate>>,
}

/// The workers' drive: as a local one, plus what the workers report when it is over.
pub(super) struct Remote {
    pub following: Following,
    pub players: Players,
    pub done: Arc<Mutex<Option<Done>>>,
    /// Actions the gateway refused the workers after every retry (lost).
    pub refused: Arc<AtomicU64>,
}

/// Waits for the scenario's workers to say hello and measures their clocks.
pub(super) async fn register(
    kafka: &KafkaSettings,
    w: &crate::scenario::WorkersSection,
    progress: bool,
) -> Result<Vec<Registered>, RunError> {
    if progress {
        eprintln!(
            "waiting up to {} for {} workers: `tailgate worker --bootstrap {}` on each load host",
            humantime::format_duration(w.register_timeout),
            w.count,
            kafka.bootstrap
        );
    }
    let n = usize::try_from(w.count).unwrap_or(usize::MAX);
    let workers = crate::workers::coordinator::register(kafka, n, w.register_timeout).await.map_err(failed)?;
    if progress {
        for r in &workers {
            let c = &r.clock;
            let (offset, bound) = (c.offset_ns as f64 / 1e6, c.bound_ns as f64 / 1e6);
            eprintln!(
                "worker {}: clock {offset:+.3} ms ± {bound:.3} ms ({}, {} exchanges)",
                r.name, c.method, c.samples
            );
        }
    }
    Ok(workers)
}

/// Waits until the gateway has every worker's audience as a subscriber, or the load is
/// due; a late one misses its first events, which then count as lost.
pub(super) async fn wait_for_audiences(pipeline: &pipeline::assemble::Pipeline, n: usize, start_ns: u64) {
    while pipeline.gateway().subscribers() < n && probes::now_ns() < start_ns {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if pipeline.gateway().subscribers() < n {
        eprintln!(
            "warning: {} of {n} workers' audiences subscribed before the load began",
            pipeline.gateway().subscribers()
        );
    }
}

/// Events the pipeline took in beyond what the workers reported sending: a lost worker's
/// sends after its last report (0 when no worker was lost).
pub(super) fn unreported(done: &Done, figures: &pipeline::assemble::PipelineFigures) -> u64 {
    if done.collector.lost().is_empty() {
        return 0;
    }
    let c = figures.stage(pipeline::topology::CONNECTOR);
    (c.forwarded + c.dead_lettered + c.filtered).saturating_sub(done.collector.sent())
}

/// The workers' part of `result`: their figures, their clocks, and the verdict on the
/// clock uncertainty (its objective added unless the scenario allows any). `unreported`:
/// what [`unreported`] found, already in the counts.
pub(super) fn judge(
    result: &mut crate::result::RunResult,
    scenario: &Scenario,
    done: &Done,
    workers: &[Registered],
    unreported: u64,
) {
    let w = scenario.workers.clone().unwrap_or_else(|| crate::scenario::WorkersSection::of(workers.len() as u64));
    let mut info = done.collector.info(workers, audience(scenario), unreported);
    let bound = scenario
        .sla
        .iter()
        .filter(|o| o.metric.starts_with("end_to_end.") && o.metric.ends_with("_ms"))
        .filter_map(|o| o.max)
        .min_by(f64::total_cmp);
    info.max_uncertainty_ms = bound.filter(|_| !w.allow_uncertain).map(|b| b * w.max_uncertainty);
    for lost in info.workers.iter().filter(|f| f.state == "lost") {
        eprintln!(
            "warning: worker {} was lost: {}; {} of its events (and {} it sent unreported) count as lost or in              flight",
            lost.name,
            lost.lost.as_deref().unwrap_or("?"),
            lost.sent.saturating_sub(lost.delivered),
            lost.unreported_sent
        );
    }
    for note in done.collector.notes() {
        eprintln!("note: {note}");
    }
    let mut objectives = scenario.sla.clone();
    if let Some(max) = info.max_uncertainty_ms {
        objectives.push(crate::scenario::Objective {
            metric: "workers.clock_uncertainty_ms".into(),
            max: Some(max),
            min: None,
        });
    }
    result.clocks = crate::workers::coordinator::clock_offsets(workers, &done.after);
    result.workers = Some(info);
    result.evaluate(&objectives);
}

/// Each worker's interval logs, under `workers/` in the run directory.
pub(super) fn write_logs(dir: &std::path::Path, done: &Done) -> std::io::Result<()> {
    let at = dir.join("workers");
    std::fs::create_dir_all(&at)?;
    for (file, log) in done.collector.worker_logs() {
        std::fs::write(at.join(file), log)?;
    }
    Ok(())
}

/// What the plans are made of.
pub(super) struct Setup<'a> {
    pub scenario: &'a Scenario,
    pub kafka: &'a KafkaSettings,
    pub workers: &'a [Registered],
    pub run: u64,
    pub times: Times,
    /// The gateway's base URL, reachable from the workers.
    pub gateway: String,
    pub players: String,
    pub sent: Arc<AtomicU64>,
    pub feed: Option<FeedSender>,
    pub progress: bool,
}

/// The audience mode as the coordinator takes it.
pub(super) fn audience(scenario: &Scenario) -> Audience {
    match scenario.workers.as_ref().map(|w| w.audience) {
        Some(AudienceKind::Crossed) => Audience::Crossed,
        _ => Audience::Own,
    }
}

/// Each worker's plan: `1/n` of the rate, ids `k + i * n`, the start on the coordinator's
/// clock, its own offset and the one of the worker whose events it follows.
fn plans(s: &Setup<'_>) -> Vec<Plan> {
    let (load, n) = (&s.scenario.load, s.workers.len());
    let following = audience(s.scenario);
    let shape = load.shape().scaled(1.0 / n as f64);
    let seed = |k: usize| load.seed.wrapping_add(k as u64);
    let expected = |k: usize| Schedule::new(load.arrival, shape.clone(), load.ends(), seed(k)).expected_events();
    (0..n)
        .map(|k| {
            let f = following.of(k, n);
            Plan {
                to: s.workers[k].name.clone(),
                run: s.run,
                index: k as u64,
                workers: n as u64,
                gateway: s.gateway.clone(),
                players: s.players.clone(),
                audience_token: s.scenario.gateway.run_token(),
                in_flight: s.scenario.connector.http_in_flight,
                arrival: load.arrival,
                shape: shape.clone(),
                length_ns: u64::try_from(load.ends().as_nanos()).unwrap_or(u64::MAX),
                start_ns: s.times.start_ns,
                measure_from_ns: s.times.measure_from_ns,
                keys: load.keys(),
                sessions: load.sessions,
                payload_bytes: load.payload_bytes,
                seed: seed(k),
                poison_every: load.poison_every,
                offset_ns: s.workers[k].clock.offset_ns,
                follows: Followed {
                    index: f as u64,
                    name: s.workers[f].name.clone(),
                    offset_ns: s.workers[f].clock.offset_ns,
                    expected: expected(f),
                },
            }
        })
        .collect()
}

/// Sends the plans and follows the reports on a task of its own until the audience is
/// cancelled; then tells the workers to stop and takes their last reports.
pub(super) async fn start(s: Setup<'_>) -> Result<Remote, RunError> {
    // Reading before the plans go, so that no report comes before the reader.
    let results = from_end(s.kafka, RESULTS_TOPIC, "coordinator-results").await.map_err(failed)?;
    let producer = producer(s.kafka).map_err(failed)?;
    let control = s.kafka.names.of(CONTROL_TOPIC).into_owned();
    for plan in plans(&s) {
        send(&producer, &control, &Control::Plan(Box::new(plan))).await.map_err(failed)?;
    }
    let collector = Collector::new(s.run, s.times.start_ns, s.times.measure_from_ns, s.workers);
    let (delivered, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let done = Arc::new(Mutex::new(None));
    let follow = Follow {
        kafka: s.kafka.clone(),
        workers: s.workers.to_vec(),
        run: s.run,
        base_ns: s.times.measure_from_ns,
        sent: s.sent,
        delivered: Arc::clone(&delivered),
        refused: Arc::clone(&refused),
        feed: s.feed,
        progress: s.progress,
        done: Arc::clone(&done),
    };
    let task = tokio::spawn(follow.run(collector, results, producer, control, done_tx, cancel.clone()));
    let players = Players { done: done_rx, lag_live: Arc::default() };
    Ok(Remote { following: Following { task, delivered, cancel }, players, done, refused })
}

/// The task that follows the workers' reports.
struct Follow {
    kafka: KafkaSettings,
    workers: Vec<Registered>,
    run: u64,
    base_ns: u64,
    sent: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    feed: Option<FeedSender>,
    progress: bool,
    done: Arc<Mutex<Option<Done>>>,
}

type LoadOver = tokio::sync::oneshot::Sender<Result<loadgen::DriveReport, String>>;

impl Follow {
    async fn run(
        self,
        mut collector: Collector,
        results: rdkafka::consumer::StreamConsumer,
        producer: rdkafka::producer::FutureProducer,
        control: String,
        load_over: LoadOver,
        cancel: tokio_util::sync::CancellationToken,
    ) -> loadgen::Result<loadgen::Tally> {
        let mut load_over = Some(load_over);
        let mut after = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                m = results.recv() => match m {
                    Ok(m) => self.take(&mut collector, m.payload()),
                    Err(e) => eprintln!("warning: reading {RESULTS_TOPIC}: {e}"),
                },
                _ = tick.tick() => {
                    for name in collector.mark_silent(SILENCE) {
                        eprintln!("warning: worker {name} stopped reporting; its events are lost or in flight");
                    }
                }
            }
            if collector.loads_over()
                && let Some(tx) = load_over.take()
            {
                let _ = tx.send(Ok(collector.drive_report()));
                // Measured again while the pipeline drains: how far each clock moved.
                after = self.clocks_again(&collector).await;
            }
        }
        let _ = send(&producer, &control, &Control::Stop { run: self.run }).await;
        let until = Instant::now() + LAST_REPORTS;
        while !collector.all_last() && Instant::now() < until {
            if let Ok(Ok(m)) = tokio::time::timeout(until - Instant::now(), results.recv()).await {
                self.take(&mut collector, m.payload());
            }
            collector.mark_silent(SILENCE);
        }
        let tally = collector.tally();
        if let Ok(mut d) = self.done.lock() {
            *d = Some(Done { collector, after });
        }
        Ok(tally)
    }

    /// Takes one message of the results topic; the live counts and the view follow it.
    fn take(&self, collector: &mut Collector, payload: Option<&[u8]>) {
        let Some(Ok(report)) = payload.map(serde_json::from_slice::<Report>) else { return };
        let lines: Vec<String> = report.logs.iter().filter(|(m, _)| m == END_TO_END).map(|(_, l)| l.clone()).collect();
        if let Some(load) = report.load.as_ref().filter(|_| report.last.is_none())
            && self.progress
        {
            eprintln!("worker {}: load over, {} sent", report.from, load.sent);
        }
        if collector.take(report) {
            self.sent.store(collector.sent(), Ordering::Relaxed);
            self.delivered.store(collector.delivered(), Ordering::Relaxed);
            self.refused.store(collector.refused(), Ordering::Relaxed);
            if let Some(feed) = &self.feed {
                offer(feed, self.base_ns, &lines);
            }
        }
    }

    async fn clocks_again(&self, collector: &Collector) -> Vec<Option<Estimate>> {
        let lost = collector.lost();
        let mut out = Vec::new();
        for w in &self.workers {
            let e = if lost.contains(&w.name.as_str()) {
                None
            } else {
                measure_clock(&self.kafka, &w.name, None).await.ok()
            };
            out.push(e);
        }
        out
    }
}

/// The live view gets the merged second as samples: each bucket's value, as often as it
/// was recorded (at most a bounded number per report).
fn offer(feed: &FeedSender, base_ns: u64, lines: &[String]) {
    const MOST: u64 = 50_000;
    let mut given = 0;
    for l in lines {
        let Ok(series) = reports::hlog::Series::parse(l.as_bytes()) else { continue };
        for i in &series.intervals {
            let received_ns = base_ns + (i.start_s * 1e9) as u64 + 500_000_000;
            for &(us, n) in &i.counts {
                for _ in 0..n {
                    if given >= MOST {
                        return;
                    }
                    given += 1;
                    let intended_ns = received_ns.saturating_sub(u64::from(us) * 1_000);
                    feed.offer(Feed::Sample(Sample { intended_ns, received_ns, stamps: String::new() }));
                }
            }
        }
    }
}
