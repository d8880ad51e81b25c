//! `watch` without a terminal: a monitor and a gate. It taps the topics for a set time (or
//! until Ctrl-C or SIGTERM), serves `/metrics` and exports OTLP while it runs, prints a
//! line of JSON a second when asked, and then writes a run directory as `tailgate run`
//! does (`result.json` with `mode = "watch"`, the `.hlog` interval logs, the report) and
//! judges the SLA: exit 0, or 1 when an objective failed.
//!
//! Memory stays bounded however long it runs: every histogram is of fixed size, and the
//! interval logs are appended to their files in the run directory as each second closes,
//! never kept in memory.

use super::WatchOptions;
use crate::exit::{EXIT_PASS, EXIT_RUNTIME, EXIT_SLA_FAILED};
use crate::result::{BrokerInfo, Counts, Machine, Objective, RunResult};
use hdrhistogram::Histogram;
use pipeline::KafkaSettings;
use pipeline::metrics::Metrics;
use probes::recorder::{Summary, new_histogram};
use probes::{HopSet, LatencyRecorder, StampIter};
use reports::result::{MODE_WATCH, WatchInfo};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

use super::correlate::Correlator;

/// How long, and how many, records a correlating tap remembers while it waits for their
/// match, per topic.
const CORRELATION_WINDOW: Duration = Duration::from_secs(60);
const CORRELATION_CAPACITY: usize = 200_000;

/// Where hops end in a watch's results: the tap that read them.
const SINK: &str = pipeline::tap::NAME;

/// What the tap has seen, shared between the tap (which records) and the ticker.
struct Seen {
    dir: PathBuf,
    started: SystemTime,
    base_ns: u64,
    /// The path's recorders, made from the first event's stamps.
    hops: Option<HopSet>,
    /// End to end over the current second, for `--json`.
    window: Histogram<u64>,
    /// Records with tailgate's headers.
    events: u64,
    /// Records without them (or with headers that do not parse).
    foreign: u64,
    /// Events whose stamps named another path than the first event's (end to end only).
    off_path: u64,
    /// The interval logs could not be written to disk (then they are kept in memory).
    spill_error: Option<String>,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
    export: Option<Arc<telemetry::metrics::MetricsExport>>,
    /// With `--correlate traceparent`: the matcher, which times the hops instead.
    correlator: Option<Correlator>,
}

impl Seen {
    /// One record of a pipeline timed by trace context alone.
    fn correlate(&mut self, r: pipeline::tap::TappedRecord<'_>) {
        let Some(c) = &mut self.correlator else { return };
        if c.record(r.topic, r.traceparent, r.timestamp, probes::now_ns()) {
            self.events += 1;
        }
    }

    fn record(&mut self, intended_ns: u64, stamps: &str, received_ns: u64) {
        // The path is learnt from the first event whose stamps parse.
        if self.hops.is_none() && StampIter::validate(stamps.as_bytes()).is_err() {
            self.foreign += 1;
            return;
        }
        let hops = self.hops.get_or_insert_with(|| {
            let stages: Vec<String> = StampIter::new(stamps.as_bytes())
                .map(|it| it.filter_map(Result::ok).map(|s| s.stage.to_owned()).collect())
                .unwrap_or_default();
            let names: Vec<&str> = stages.iter().map(String::as_str).collect();
            let mut set = HopSet::new(probes::hops::SOURCE, &names, SINK, self.base_ns, Duration::from_secs(1));
            let spilled = spill(&mut set.end_to_end, &self.dir, reports::END_TO_END_TAG, false).and_then(|()| {
                set.hops_mut().iter_mut().try_for_each(|h| spill(&mut h.recorder, &self.dir, &h.name, true))
            });
            self.spill_error = spilled.err().map(|e| e.to_string());
            let sent = Arc::new(AtomicU64::new(0));
            let _ = self.metrics.set(Arc::new(Metrics::for_path(probes::hops::SOURCE, &stages, SINK, sent)));
            set
        });
        if hops.record(intended_ns, stamps.as_bytes(), received_ns).is_err() {
            self.foreign += 1;
            return;
        }
        self.events += 1;
        self.off_path = hops.off_path;
        self.window.saturating_record(received_ns.saturating_sub(intended_ns) / 1_000);
        if let Some(m) = self.metrics.get() {
            m.observe(intended_ns, stamps, received_ns);
        }
        if let Some(e) = &self.export {
            e.observe(intended_ns, stamps, received_ns);
        }
    }
}

fn spill(r: &mut LatencyRecorder, dir: &Path, name: &str, hop: bool) -> std::io::Result<()> {
    r.spill_to(&dir.join(reports::hlog_file(name, hop)))
}

/// Watches headless; returns the exit code.
pub(super) async fn watch(opts: &WatchOptions, kafka: KafkaSettings, objectives: Vec<Objective>) -> u8 {
    match watched(opts, kafka, objectives).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
    }
}

async fn watched(opts: &WatchOptions, kafka: KafkaSettings, objectives: Vec<Objective>) -> Result<u8, String> {
    let started = SystemTime::now();
    let dir = opts.out.clone().unwrap_or_else(|| default_dir(started));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cancel = CancellationToken::new();
    let metrics: Arc<OnceLock<Arc<Metrics>>> = Arc::default();
    if let Some(addr) = &opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot serve /metrics on {addr} (--metrics): {e}"))?;
        eprintln!("metrics: http://{addr}/metrics");
        tokio::spawn(pipeline::metrics::serve_when_ready(listener, Arc::clone(&metrics), cancel.clone()));
    }
    let base_ns = probes::now_ns();
    let correlator = match &opts.correlate {
        None => None,
        Some(_) => {
            let mut c = Correlator::new(&opts.topics, CORRELATION_WINDOW, CORRELATION_CAPACITY, base_ns);
            let spilled = spill(&mut c.end_to_end, &dir, reports::END_TO_END_TAG, false)
                .and_then(|()| c.hops.iter_mut().try_for_each(|(name, r)| spill(r, &dir, name, true)));
            spilled.map_err(|e| format!("cannot write the interval logs into {}: {e}", dir.display()))?;
            Some(c)
        }
    };
    let seen = Arc::new(Mutex::new(Seen {
        dir: dir.clone(),
        started,
        base_ns,
        hops: None,
        window: new_histogram(),
        events: 0,
        foreign: 0,
        off_path: 0,
        spill_error: None,
        metrics: Arc::clone(&metrics),
        export: None,
        correlator,
    }));

    // The watch's time counts from its start: waiting for a topic is part of it.
    let ends = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let waited = {
        let waiting = pipeline::tap::wait_for_topics(
            &kafka,
            &opts.topics,
            |missing| eprintln!("waiting for {} to be created", missing.join(", ")),
            &cancel,
        );
        tokio::select! {
            w = waiting => Some(w.map_err(|e| e.to_string())?.unwrap_or_default()),
            () = sleep_until(ends) => None,
        }
    };
    let Some(missing) = waited else {
        eprintln!("the topics were not created within --for: nothing was watched");
        return finish(opts, &kafka, &seen, objectives, Ending { watched_s: 0.0, interrupted: false, exported: None });
    };
    let from_start = !missing.is_empty() && missing.len() == opts.topics.len();
    let (export, otlp_protocol) = match start_export(opts, &metrics).await? {
        Some((e, protocol)) => (Some(e), protocol),
        None => (None, String::new()),
    };
    lock(&seen).export.clone_from(&export);
    let began = Instant::now();
    eprintln!(
        "watching {} on {}{}",
        opts.topics.join(", "),
        kafka.bootstrap,
        opts.duration.map(|d| format!(" for {}", humantime::format_duration(d))).unwrap_or_default()
    );
    let tap = {
        let (on_event, on_foreign) = (Arc::clone(&seen), Arc::clone(&seen));
        let (kafka, topics, cancel) = (kafka.clone(), opts.topics.clone(), cancel.clone());
        let correlating = opts.correlate.is_some();
        tokio::spawn(async move {
            if correlating {
                let on_record = move |r: pipeline::tap::TappedRecord<'_>| lock(&on_event).correlate(r);
                return pipeline::tap::run_records(&kafka, &topics, from_start, on_record, cancel).await;
            }
            pipeline::tap::run(
                &kafka,
                &topics,
                from_start,
                move |intended, stamps: &str, received| lock(&on_event).record(intended, stamps, received),
                move || lock(&on_foreign).foreign += 1,
                cancel,
            )
            .await
        })
    };

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let mut interrupted = false;
    let mut seconds = 0u64;
    let mut tap = std::pin::pin!(tap);
    let tap_result = loop {
        tokio::select! {
            () = sleep_until(ends) => break None,
            _ = tokio::signal::ctrl_c() => { interrupted = true; break None },
            _ = term.recv() => { interrupted = true; break None },
            r = &mut tap => break Some(r),
            _ = tick.tick() => {
                seconds += 1;
                let mut s = lock(&seen);
                let window = Summary::of(&s.window);
                s.window.reset();
                if opts.json {
                    println!("{}", json_line(seconds, &window, &s));
                } else if seconds.is_multiple_of(10) {
                    eprintln!("{seconds:>6}s  events {:>9}  p99 {:>8.2} ms  foreign {:>6}", s.events, window.p99_ms, s.foreign);
                }
            },
        }
    };
    let watched_s = began.elapsed().as_secs_f64();
    cancel.cancel();
    let tapped = match tap_result {
        Some(r) => r,
        None => tap.await,
    };
    match tapped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(format!("the tap stopped: {e}")),
    }
    let exported = match export {
        Some(e) => Some((tokio::task::spawn_blocking(move || e.stop()).await.unwrap_or(0), otlp_protocol)),
        None => None,
    };
    finish(opts, &kafka, &seen, objectives, Ending { watched_s, interrupted, exported })
}

/// How the watch ended.
struct Ending {
    watched_s: f64,
    /// By Ctrl-C or SIGTERM, before `--for` was up.
    interrupted: bool,
    /// The OTLP export's failed exports and its protocol, when there was one.
    exported: Option<(u64, String)>,
}

/// Writes the run directory, prints the summary and judges it: the exit code.
fn finish(
    opts: &WatchOptions,
    kafka: &KafkaSettings,
    seen: &Mutex<Seen>,
    mut objectives: Vec<Objective>,
    ending: Ending,
) -> Result<u8, String> {
    // A watch that timed nothing proves nothing: it fails unless an objective says
    // otherwise.
    if !objectives.iter().any(|o| o.metric == "counts.delivered") {
        objectives.push(Objective { metric: "counts.delivered".into(), max: None, min: Some(1.0) });
    }
    let mut s = lock(seen);
    if let Some(c) = &mut s.correlator {
        c.finish();
    }
    let mut result = result_of(opts, kafka, &s, &ending);
    if let (Some((failed, protocol)), Some(endpoint)) = (ending.exported, &opts.otlp) {
        result.telemetry = Some(reports::result::TelemetryInfo {
            endpoint: endpoint.clone(),
            protocol,
            metric_exports_failed: failed,
            ..Default::default()
        });
    }
    result.evaluate(&objectives);
    let logs = logs_of(&mut s);
    let dir = &s.dir.clone();
    drop(s);
    reports::runs::write_run(dir, &result, &logs).map_err(|e| format!("writing {}: {e}", dir.display()))?;
    // With --json, stdout is the scripts' lines only; the summary goes to stderr.
    let say = |text: &str| if opts.json { eprint!("{text}") } else { print!("{text}") };
    say(&result.render(dir));
    if !opts.no_report {
        match reports::report(&[dir.to_owned()], dir, None) {
            Ok((_, w)) => say(&format!("report    {}\n", w.dir.join(reports::render::HTML).display())),
            Err(e) => return Err(format!("writing the report: {e}")),
        }
    }
    Ok(if result.sla.passed { EXIT_PASS } else { EXIT_SLA_FAILED })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `runs/watch-YYYYMMDDTHHMMSSZ`.
fn default_dir(at: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(at).to_string().replace([':', '-'], "");
    PathBuf::from("runs").join(format!("watch-{stamp}"))
}

/// One second, as `--json` prints it.
fn json_line(second: u64, window: &Summary, s: &Seen) -> String {
    serde_json::json!({
        "t_s": second,
        "window": {
            "count": window.count,
            "p50_ms": window.p50_ms,
            "p99_ms": window.p99_ms,
            "p999_ms": window.p999_ms,
            "max_ms": window.max_ms,
        },
        "events": s.events,
        "foreign": s.foreign,
        "off_path": s.off_path,
    })
    .to_string()
}

/// Starts the OTLP metrics export when a collector is named; the export and its protocol.
async fn start_export(
    opts: &WatchOptions,
    metrics: &Arc<OnceLock<Arc<Metrics>>>,
) -> Result<Option<(Arc<telemetry::metrics::MetricsExport>, String)>, String> {
    let Some(endpoint) = &opts.otlp else { return Ok(None) };
    let req = telemetry::Requested { endpoint: Some(endpoint.clone()), ..Default::default() };
    let config = telemetry::TelemetryConfig::resolve(&req, |k| std::env::var(k).ok())
        .map_err(|e| format!("--otlp: {e}"))?
        .ok_or_else(|| format!("--otlp {endpoint}: no collector"))?;
    let protocol = config.protocol.name().to_owned();
    let cell = Arc::clone(metrics);
    let counts: telemetry::metrics::CountsFn = Arc::new(move || cell.get().map(|m| m.snapshot()).unwrap_or_default());
    let started = tokio::task::spawn_blocking(move || {
        telemetry::metrics::MetricsExport::start(&config, Duration::from_secs(5), probes::hops::SOURCE, SINK, counts)
    })
    .await
    .map_err(|e| format!("the OTLP export did not start: {e}"))?
    .map_err(|e| format!("the OTLP export did not start: {e}"))?;
    Ok(Some((Arc::new(started), protocol)))
}

/// The watch's `result.json`.
fn result_of(opts: &WatchOptions, kafka: &KafkaSettings, s: &Seen, ending: &Ending) -> RunResult {
    let Ending { watched_s, interrupted, .. } = *ending;
    let listener = kafka.client.get("security.protocol").cloned().unwrap_or_else(|| "PLAINTEXT".into());
    let broker = BrokerInfo {
        kind: "external".into(),
        version: "unknown".into(),
        bootstrap: kafka.bootstrap.clone(),
        storage: "the cluster's own".into(),
        producer: Default::default(),
        consumer: pipeline::io::secrets::redact_settings(&kafka.effective_consumer()),
        partitions: 0,
        topic: Default::default(),
        listener,
        ..BrokerInfo::default()
    };
    let (end_to_end, hops) = match (&s.correlator, &s.hops) {
        (Some(c), _) => (c.end_to_end.summary(), c.summaries()),
        (None, Some(h)) => (h.end_to_end.summary(), h.summaries()),
        (None, None) => (Summary::default(), Vec::new()),
    };
    let correlation = s.correlator.as_ref().map(Correlator::figures);
    // A correlating tap counts its foreign records itself.
    let foreign = correlation.as_ref().map_or(s.foreign, |c| c.foreign);
    RunResult {
        tailgate_version: env!("CARGO_PKG_VERSION").into(),
        mode: MODE_WATCH.into(),
        scenario: format!("watch {}", opts.topics.join(",")),
        profile: "watch".into(),
        run_id: probes::now_ns(),
        broker,
        started_at: humantime::format_rfc3339_seconds(s.started).to_string(),
        duration_s: watched_s,
        achieved_rate: if watched_s > 0.0 { s.events as f64 / watched_s } else { 0.0 },
        // A watch sends nothing: it counts what reached the tapped topics.
        counts: Counts { delivered: s.events, ..Counts::default() },
        end_to_end,
        hops,
        interrupted,
        machine: Machine::this(),
        watch: Some(WatchInfo {
            topics: opts.topics.clone(),
            events: s.events,
            foreign,
            off_path: s.off_path,
            interval_logs: match &s.spill_error {
                None => "on disk, appended each second".into(),
                Some(e) => format!("in memory ({e})"),
            },
            correlation,
        }),
        ..RunResult::default()
    }
}

fn logs_of(s: &mut Seen) -> reports::runs::RunLogs {
    let fresh = |tag: &str| LatencyRecorder::new(tag, s.base_ns, Duration::from_secs(1));
    let (end_to_end, hops) = match (&mut s.correlator, &mut s.hops) {
        (Some(c), _) => {
            (c.end_to_end.interval_log(), c.hops.iter_mut().map(|(name, r)| (name.clone(), r.interval_log())).collect())
        }
        (None, Some(h)) => (
            h.end_to_end.interval_log(),
            h.hops_mut().iter_mut().map(|h| (h.name.clone(), h.recorder.interval_log())).collect(),
        ),
        (None, None) => (fresh(reports::END_TO_END_TAG).interval_log(), Vec::new()),
    };
    reports::runs::RunLogs {
        end_to_end,
        warmup: None,
        schedule_lag: fresh(reports::SCHEDULE_LAG_TAG).interval_log(),
        hops,
    }
}
