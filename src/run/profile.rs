//! One profile's run, as a list of phases: open the broker and the topics; assemble the
//! pipeline and wait until it is ready; drive the load (rule changes and faults on
//! schedule) while watching it; drain; stop the pipeline and account for every event;
//! write the run directory.

use super::broker::{self, Broker};
use super::drain::{self, Look};
use super::drive::{self, Roots, Times};
use super::external::ExternalStages;
use super::faults;
use super::outcome::Made;
use super::remote;
use super::watch::{self, Live};
use super::{CONNECT_TIMEOUT, ProfileRun, READY_TIMEOUT, RunError, RunOptions, create_topics, describe_exit, failed};
use crate::result::{SINK, SOURCE};
use crate::scenario::{Resolved, Scenario};
use dashboard::{Budget, Feed, Meta};
use loadgen::Tally;
use pipeline::KafkaSettings;
use pipeline::assemble::{Env, Pipeline};
use probes::HopSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Runs one profile of a scenario to its end and writes its run directory.
pub(super) async fn run(
    scenario: &Scenario,
    profile: &Resolved,
    dir: &Path,
    opts: &RunOptions,
) -> Result<ProfileRun, RunError> {
    let started = std::time::SystemTime::now();
    let (broker, kafka, tracer) = open(scenario, profile, dir).await?;
    let run_id = random_u64() >> 12;
    let dead_letters_since = kafka.high_watermarks(pipeline::topics::DLQ).await.map_err(failed)?;
    let mut config = scenario.pipeline_config();
    if let Some(kind) = profile.agent {
        config.agent.kind = kind;
    }
    let external = scenario.stages.external.then(|| ExternalStages::new(&scenario.stages));
    // Workers on other hosts reach the gateway on the host the broker listens on.
    let host = scenario.workers.as_ref().map_or("127.0.0.1", |w| w.host());
    let listener = tokio::net::TcpListener::bind(format!("{host}:0"))
        .await
        .map_err(|e| failed(format!("cannot serve the gateway on {host}: {e}")))?;
    let gateway_addr = listener.local_addr().map_err(failed)?;
    // The run's players: they name their own actions' identity and time (HTTP source).
    let players = scenario.gateway.run_token().unwrap_or_else(|| format!("{:016x}", random_u64()));
    let (writer, source) = match &scenario.workers {
        Some(w) => (None, format!("http POST http://{gateway_addr}/sessions/{{id}}/actions from {} workers", w.count)),
        None => {
            let gateway = (gateway_addr, players.as_str());
            let (w, source) = drive::open_writer(scenario, &config, dir, gateway, external.is_some()).await?;
            (Some(w), source)
        }
    };
    if let Some(e) = config.enrich(dir) {
        // The run seeds a profile per session; an in-process stream job opens the database.
        pipeline::streamjob::profiles::seed(&e.at, scenario.load.sessions).await.map_err(failed)?;
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    // Stages reach a database a fault acts on through a relay; the load writes to it directly.
    let relays = faults::relays(scenario, &mut config, &cancel).await?;
    let sent_live = Arc::new(AtomicU64::new(0));
    let env = Env {
        kafka: kafka.clone(),
        clients: profile.clients.clone(),
        dir: dir.to_owned(),
        state_dir: dir.join("agent-state"),
        run: Some(run_id),
        // External stages are not spawned here, but their figures are shown (mirrored).
        hosts: pipeline::STAGES.to_vec(),
        sent: Arc::clone(&sent_live),
        exemplars: tracer.as_ref().map(|t| t.config().breach_ns.unwrap_or(u64::MAX)),
        listener: external.is_none().then_some(listener),
        grpc: None,
        players: Some(players.clone()),
        cancel,
    };
    let cpu_at_start = process_cpu_s();
    let mut pipeline = Pipeline::build(&config, env);
    start(&mut pipeline, scenario, external.as_ref(), &kafka).await?;

    let workers = match &scenario.workers {
        Some(w) => Some(remote::register(&kafka, w, opts.progress).await?),
        None => None,
    };
    // Plans take a moment to reach the workers, and their audiences to subscribe.
    let lead = if workers.is_some() { 2_000_000_000 } else { 100_000_000 };
    let start_ns = probes::now_ns() + lead;
    let times = Times { start_ns, measure_from_ns: start_ns + nanos(scenario.load.warmup) };
    publish_rule_changes(&mut pipeline, scenario, &kafka, start_ns)?;
    let recorder =
        Arc::new(faults::Recorder { applied: Arc::default(), start_ns, say: opts.progress, feed: opts.feed.clone() });
    faults::start(scenario, &broker, relays, Arc::clone(&recorder), &mut pipeline);
    if let Some(feed) = &opts.feed {
        feed.deliver(Feed::Meta(live_meta(scenario, &profile.name, &broker, start_ns)));
    }
    let otlp = super::tracing::start_metrics(tracer.as_ref(), pipeline.metrics()).await?;
    let url = external.as_ref().map_or_else(|| format!("http://{gateway_addr}"), |e| e.gateway.clone());
    let cx = Cx {
        scenario,
        opts,
        kafka: &kafka,
        run_id,
        external: external.as_ref(),
        sent: &sent_live,
        dead_letters_since: &dead_letters_since,
    };
    let stop = opts.stop.clone().unwrap_or_default();
    let http = writer.as_ref().and_then(drive::Writer::http);
    let load = match (&workers, writer) {
        (Some(workers), _) => Load::Workers { workers, players },
        (None, Some(writer)) => {
            let ratio = tracer.as_ref().map_or(1.0, |t| t.config().sample_ratio);
            let roots = Roots { spans: kafka.spans.clone(), ratio };
            Load::Here { writer: Box::new(writer), roots, otlp: otlp.clone() }
        }
        (None, None) => return Err(failed("no players: neither a writer nor workers")),
    };
    let (following, mut players, remote) = drive(&cx, &pipeline, load, (times, url), &stop).await?;
    let stage_faults = faults::stage_faults(scenario, start_ns);
    let live = Live {
        sent: &sent_live,
        delivered: &following.delivered,
        feed: opts.feed.as_ref(),
        progress: opts.progress,
        stop: &stop,
    };
    let mut watched = watch::watch(&mut pipeline, &mut players, stage_faults, &recorder, &live).await?;

    let refused = remote.as_ref().map(|(_, refused)| Arc::clone(refused));
    let refused = refused.or_else(|| http.as_ref().map(|h| Arc::clone(&h.refused))).unwrap_or_default();
    settle(&cx, &pipeline, &watched, &following, &refused).await;

    let stopped = pipeline.shutdown(Duration::from_secs(20)).await;
    let cpu_s = cpu_at_start.zip(process_cpu_s()).map(|(a, b)| (b - a).max(0.0));
    let failure = watched.failure.clone().or(stopped);
    let (mut tally, audit) = collect(&cx, following, watched.report.sent).await?;
    let broker_info = broker.figures(!scenario.faults.is_empty());
    drop(broker); // everything that talks to it is done

    let figures = pipeline.figures();
    let remote = remote.and_then(|(done, _)| done.lock().ok()?.take());
    // A lost worker's last sends were never reported, but the pipeline took them in.
    let unreported = remote.as_ref().map_or(0, |r| remote::unreported(r, &figures));
    watched.report.sent += unreported;
    let (accounting, accounting_error) = account(watched.report.sent, &tally, &audit, &figures);
    // The last metrics export carries the run's accounting.
    pipeline.metrics().set_lost(accounting.lost);
    let telemetry = super::tracing::stop(tracer, otlp).await;
    let made = Made {
        scenario,
        profile,
        config: &config,
        run_id,
        started,
        start_ns,
        report: &watched.report,
        tally: &tally,
        accounting,
        figures: &figures,
        source,
        edge_cache: config.edge_cache_at(dir).describe(),
        external: external.as_ref().map(ExternalStages::describe),
        interrupted: watched.interrupted,
        cpu_s,
    };
    let mut result = made.result(broker_info);
    if let (Some(r), Some(workers)) = (&remote, &workers) {
        remote::judge(&mut result, scenario, r, workers, unreported);
    }
    result.telemetry = telemetry;
    result.accounting_error.clone_from(&accounting_error);
    let failure = failure.or(accounting_error);
    notes(&figures, &tally, &audit, accounting.dead_lettered, http.as_ref());
    let logs = super::outcome::logs(&mut tally, &mut watched.report.schedule_lag);
    result.faults = recorder.applied.lock().map(|f| f.clone()).unwrap_or_default();
    faults::cost(&mut result.faults, scenario, &tally.windows, &logs.end_to_end);
    reports::runs::write_run(dir, &result, &logs).map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
    if let Some(r) = &remote {
        remote::write_logs(dir, r).map_err(|e| failed(format!("writing {}/workers: {e}", dir.display())))?;
    }
    Ok(ProfileRun { result, dir: dir.to_owned(), failure })
}

/// Who makes the load: players and an audience in this process, or the workers.
enum Load<'a> {
    Here { writer: Box<drive::Writer>, roots: Roots, otlp: Option<Arc<telemetry::metrics::MetricsExport>> },
    Workers { workers: &'a [crate::workers::coordinator::Registered], players: String },
}

/// What the workers report once the run is over, and their refused actions so far.
type FromWorkers = (Arc<std::sync::Mutex<Option<remote::Done>>>, Arc<AtomicU64>);

/// Starts the audience and the players (here, or the workers' through their plans).
async fn drive(
    cx: &Cx<'_>,
    pipeline: &Pipeline,
    load: Load<'_>,
    (times, url): (Times, String),
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<(drive::Following, drive::Players, Option<FromWorkers>), RunError> {
    match load {
        Load::Here { writer, roots, otlp } => {
            let following = follow(cx, pipeline, times, url, otlp).await?;
            let players = drive::start_players(cx.scenario, times, cx.run_id, *writer, roots, stop, cx.sent)?;
            Ok((following, players, None))
        }
        Load::Workers { workers, players } => {
            let setup = remote::Setup {
                scenario: cx.scenario,
                kafka: cx.kafka,
                workers,
                run: cx.run_id,
                times,
                gateway: url,
                players,
                sent: Arc::clone(cx.sent),
                feed: cx.opts.feed.clone(),
                progress: cx.opts.progress,
            };
            let r = remote::start(setup).await?;
            remote::wait_for_audiences(pipeline, workers.len(), times.start_ns).await;
            Ok((r.following, r.players, Some((r.done, r.refused))))
        }
    }
}

/// Stops the audience and takes its tally (only ids the run sent count as delivered), and
/// reads back the run's dead letters.
async fn collect(
    cx: &Cx<'_>,
    following: drive::Following,
    sent: u64,
) -> Result<(Tally, pipeline::runtime::DeadLetterAudit), RunError> {
    following.cancel.cancel();
    let mut tally = following.task.await.map_err(failed)?.map_err(failed)?;
    tally.settle(sent);
    let since = cx.dead_letters_since;
    let audit = pipeline::runtime::audit_dead_letters(cx.kafka, cx.run_id, since, Duration::from_secs(10))
        .await
        .map_err(failed)?;
    Ok((tally, audit))
}

/// `sent = delivered + dead_lettered + filtered + lost`, from what the audience received
/// and the dead-letter topic holds of the run; when the terms do not add up, the reason
/// (and the terms as they stand, `lost` 0).
fn account(
    sent: u64,
    tally: &Tally,
    audit: &pipeline::runtime::DeadLetterAudit,
    figures: &pipeline::assemble::PipelineFigures,
) -> (drain::Accounting, Option<String>) {
    let delivered_too = audit.ids.iter().filter(|id| tally.has(**id)).count() as u64;
    let in_topic = audit.ids.len() as u64;
    match drain::account(sent, tally.delivered, in_topic, delivered_too, figures.filtered()) {
        Ok(a) => (a, None),
        Err(why) => {
            let dead_lettered = in_topic - delivered_too;
            (drain::Accounting { dead_lettered, filtered: figures.filtered(), lost: 0 }, Some(why))
        }
    }
}

/// What the phases after the start share.
struct Cx<'a> {
    scenario: &'a Scenario,
    opts: &'a RunOptions,
    kafka: &'a KafkaSettings,
    run_id: u64,
    external: Option<&'a ExternalStages>,
    /// Events sent so far.
    sent: &'a Arc<AtomicU64>,
    /// The dead-letter topic's end before the run: its dead letters are after it.
    dead_letters_since: &'a std::collections::HashMap<i32, i64>,
}

/// Starts the audience on the gateway at `url` (and waits until an in-process gateway has
/// it as a subscriber).
async fn follow(
    cx: &Cx<'_>,
    pipeline: &Pipeline,
    times: Times,
    url: String,
    otlp: Option<Arc<telemetry::metrics::MetricsExport>>,
) -> Result<drive::Following, RunError> {
    let hops = HopSet::new(SOURCE, &pipeline::STAGES, SINK, times.measure_from_ns, Duration::from_secs(1));
    let mut tally = Tally::new(cx.run_id, times.measure_from_ns, hops);
    tally.spans = cx.kafka.spans.clone();
    tally.bound_by(Arc::clone(cx.sent));
    tally.warmup = Some(probes::LatencyRecorder::new(reports::WARMUP_TAG, times.start_ns, Duration::from_secs(1)));
    tally.windows = faults::windows(cx.scenario, times.start_ns);
    let (token, metrics, feed) =
        (cx.scenario.gateway.run_token(), Arc::clone(pipeline.metrics()), cx.opts.feed.clone());
    let following = drive::start_audience(tally, format!("{url}/events"), token, metrics, otlp, feed).await?;
    while cx.external.is_none() && pipeline.gateway().subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(following)
}

/// Drains: waits, up to the scenario's limit, for what is in flight. Actions the HTTP
/// ingress refused will never arrive.
async fn settle(
    cx: &Cx<'_>,
    pipeline: &Pipeline,
    watched: &watch::Watched,
    following: &drive::Following,
    refused: &AtomicU64,
) {
    let refused = || refused.load(Ordering::Relaxed);
    let look = || {
        let f = pipeline.figures();
        let delivered = following.delivered.load(Ordering::Relaxed) + refused();
        let (dead_lettered_live, filtered) = (f.dead_lettered(), f.filtered());
        Look { sent: watched.report.sent, delivered, dead_lettered_live, audited: 0, filtered }
    };
    let until = Instant::now() + cx.scenario.load.drain;
    let run = (cx.run_id, cx.dead_letters_since);
    drain::drain(cx.kafka, run, cx.external.is_some(), until, look, || watched.failure.is_some()).await;
}

/// The broker, its topics, the tracer and the run directory.
async fn open(
    scenario: &Scenario,
    profile: &Resolved,
    dir: &Path,
) -> Result<(Broker, KafkaSettings, Option<Arc<telemetry::Tracer>>), RunError> {
    let mut kafka = super::base_kafka(scenario, profile);
    let broker = broker::start(scenario, profile, &mut kafka, dir).await?;
    kafka.check_reachable(CONNECT_TIMEOUT).await.map_err(failed)?;
    create_topics(&kafka, profile).await?;
    let tracer = super::start_tracer(scenario)?;
    kafka.spans = tracer.clone().map(|t| t as Arc<dyn probes::spans::SpanSink>);
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create run directory {}: {e}", dir.display())))?;
    Ok((broker, kafka, tracer))
}

/// Spawns the stages (none when they are external), serves `/metrics` when asked, waits
/// until every consumer group has its partitions, and warms the edge cache.
async fn start(
    pipeline: &mut Pipeline,
    scenario: &Scenario,
    external: Option<&ExternalStages>,
    kafka: &KafkaSettings,
) -> Result<(), RunError> {
    if external.is_none() {
        pipeline.spawn_all().await.map_err(failed)?;
        if let Some(addr) = pipeline.grpc_addr() {
            eprintln!("gateway gRPC: {addr} (tailgate.gateway.v1.Updates)");
        }
    }
    if let Some(addr) = &scenario.telemetry.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| failed(format!("cannot serve /metrics on {addr} (telemetry.metrics): {e}")))?;
        eprintln!("metrics: http://{addr}/metrics");
        let serve = pipeline::metrics::serve(listener, Arc::clone(pipeline.metrics()), pipeline.cancel());
        pipeline.spawn_task("metrics", serve);
    }
    wait_ready(pipeline, external, kafka).await?;
    let lags = pipeline::metrics::follow_group_lags(
        kafka.clone(),
        pipeline::topology::stage_groups(),
        Arc::clone(pipeline.metrics()),
        Duration::from_secs(5),
        pipeline.cancel(),
    );
    pipeline.spawn_task("group-lags", lags);
    match external {
        Some(ext) => {
            // The connector process's sink keeps the edge cache; the agents count what they miss.
            pipeline::context_sink::seed(kafka, scenario.load.sessions).await.map_err(failed)?;
            let follow = ext.clone().follow(pipeline.mirror(), pipeline.cancel());
            pipeline.spawn_task("stage-metrics", follow);
            Ok(())
        }
        None => seed_context(pipeline, kafka, scenario.load.sessions).await,
    }
}

/// Waits for every consumer group to have its partitions (for external stages, for the
/// gateway's `/readyz`), or for a stage to fail first.
async fn wait_ready(
    pipeline: &mut Pipeline,
    external: Option<&ExternalStages>,
    kafka: &KafkaSettings,
) -> Result<(), RunError> {
    let ready = pipeline.ready();
    let ready = async {
        match external {
            Some(ext) => {
                ext.wait_ready().await;
                true
            }
            None => ready.await,
        }
    };
    tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, ready) => match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed("a stage stopped before it was ready")),
            Err(_) => Err(failed(match external {
                Some(ext) => format!("the gateway at {} was not ready within {READY_TIMEOUT:?}: are the `tailgate stage` processes up on {}?", ext.gateway, kafka.bootstrap),
                None => format!("the stages' consumer groups got no partitions within {READY_TIMEOUT:?} from {}", kafka.bootstrap),
            })),
        },
        Some(done) = pipeline.next_exit() => Err(failed(format!("a stage failed on start: {}", describe_exit(done)))),
    }
}

/// Writes one context per session to `story.context` and waits until the sink has them in
/// the edge cache, so the run starts with a warm cache.
async fn seed_context(pipeline: &Pipeline, kafka: &KafkaSettings, sessions: u64) -> Result<(), RunError> {
    let before = pipeline.figures().sink_applied;
    pipeline::context_sink::seed(kafka, sessions).await.map_err(failed)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while pipeline.figures().sink_applied < before + sessions {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the edge cache sink did not apply {sessions} contexts within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Publishes the scenario's rule changes to `story.rules`, each at its time into the load.
fn publish_rule_changes(
    pipeline: &mut Pipeline,
    scenario: &Scenario,
    kafka: &KafkaSettings,
    start_ns: u64,
) -> Result<(), RunError> {
    if scenario.streamjob.rules.is_empty() {
        return Ok(());
    }
    let mut changes = scenario.streamjob.rules.clone();
    changes.sort_by_key(|r| r.at);
    let publisher = pipeline::streamjob::RulePublisher::new(kafka).map_err(failed)?;
    let cancel = pipeline.cancel();
    pipeline.spawn_task("rule-changes", async move {
        for r in changes {
            let wait = (start_ns + nanos(r.at)).saturating_sub(probes::now_ns());
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_nanos(wait)) => {}
            }
            publisher.publish(&r.rule()).await?;
        }
        cancel.cancelled().await;
        Ok(())
    });
    Ok(())
}

/// What a user should know besides the figures: events a stage had to skip, unreadable
/// updates, the first dead letter's reason, actions the gateway refused.
fn notes(
    figures: &pipeline::assemble::PipelineFigures,
    tally: &Tally,
    audit: &pipeline::runtime::DeadLetterAudit,
    dead_lettered: u64,
    http: Option<&loadgen::ingress::HttpIngress>,
) {
    for (stage, f) in figures.stages.iter().filter(|(_, f)| f.skipped > 0) {
        eprintln!(
            "warning: the {stage} could neither pass on nor dead-letter {} events (counted as lost); first: {}",
            f.skipped,
            f.first_skip.as_deref().unwrap_or("?")
        );
    }
    if tally.reconnects > 0 || tally.caught_up > 0 {
        eprintln!(
            "note: the audience's stream ended {} times; it subscribed again and read {} updates it had not had from the gateway's backlog",
            tally.reconnects, tally.caught_up
        );
    }
    if tally.missed > 0 {
        eprintln!(
            "warning: {} updates had left the gateway's backlog before the audience could read them after a gap ([gateway] retain): they count as lost",
            tally.missed
        );
    }
    if tally.unexpected > 0 {
        eprintln!("warning: {} updates carried ids this run never sent (not counted as delivered)", tally.unexpected);
    }
    if tally.unreadable > 0 {
        eprintln!(
            "warning: {} updates could not be read by the audience (first: {})",
            tally.unreadable,
            tally.first_unreadable.as_deref().unwrap_or("?")
        );
    }
    if let Some(reason) = &audit.first_reason {
        eprintln!("note: {dead_lettered} events were dead-lettered; first reason: {reason}");
    }
    if let Some(h) = http
        && h.refused.load(Ordering::Relaxed) > 0
    {
        let first = h.first_refusal.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        eprintln!(
            "note: the gateway refused {} actions after retries (counted as lost); first: {first}",
            h.refused.load(Ordering::Relaxed)
        );
    }
}

/// The dashboard's header for a run.
fn live_meta(scenario: &Scenario, profile: &str, broker: &Broker, start_ns: u64) -> Meta {
    let (load, b) = (&scenario.load, &broker.info);
    Meta {
        title: scenario.name.clone(),
        profile: profile.into(),
        broker: format!("{} {} @ {}", b.kind, b.version, b.bootstrap),
        started_ns: start_ns,
        planned: Some(load.warmup + load.duration),
        budgets: scenario.sla.iter().filter_map(|o| Some(Budget { metric: o.metric.clone(), max: o.max? })).collect(),
        sink: SINK.into(),
    }
}

/// User plus system CPU seconds this process has used (all its threads), from
/// `/proc/self/stat` in clock ticks of 1/100 s; `None` where there is no `/proc`.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses: state is the first,
    // utime the twelfth and stime the thirteenth.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let (utime, stime): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    Some((utime + stime) as f64 / 100.0)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(probes::now_ns());
    h.finish()
}
