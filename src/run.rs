//! One run of a scenario: bring up the broker (embedded unless a bootstrap address is
//! given), create the topics, start the four stages, drive the open-loop load, drain,
//! account for every event, and write the run directory.

use crate::result::{BrokerInfo, Counts, Machine, RunResult, SINK, SOURCE};
use crate::scenario::SourceKind;
use crate::scenario::{Resolved, Scenario, valid_bootstrap};
use dashboard::{Budget, Feed, FeedSender, Meta, Progress, Sample, StageLag};
use loadgen::{Audience, Driver, Schedule, SystemClock, Tally};
use pipeline::KafkaSettings;
use pipeline::agent::{self, AgentStats};
use pipeline::connector::{self, ActionRow, ConnectorConfig, Source, SourceWriter};
use pipeline::context_sink::SinkCounters;
use pipeline::gateway::{self, GatewayState};
use pipeline::io::cache::{CacheAt, EdgeCache};
use pipeline::runtime::{self, StageContext, StageCounters};
use pipeline::streamjob::{StreamJob, StreamJobStats};
use probes::{HopSet, TraceContext};
use reports::result::{PipelineInfo, StateRestore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a broker has to answer before the run gives up on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the stages have to join their consumer groups.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Run directory; default `runs/<scenario>-<UTC timestamp>`.
    pub out: Option<PathBuf>,
    pub bootstrap: Option<String>,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub warmup: Option<Duration>,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// A live view to feed (samples, progress, the header).
    pub feed: Option<FeedSender>,
    /// Set from outside (a live view's quit) to stop the load early; results are written.
    pub stop: Option<Arc<AtomicBool>>,
    /// Only these profiles (all when empty).
    pub profiles: Vec<String>,
}

/// Why a run did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario or the flags are wrong (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// Something failed while running (exit 3).
    #[error("{0}")]
    Runtime(String),
}

impl RunError {
    /// The documented exit code.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) => crate::exit::EXIT_BAD_INPUT,
            Self::Runtime(_) => crate::exit::EXIT_RUNTIME,
        }
    }
}

/// A runtime failure (exit 3) that says `e`.
pub(crate) fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::Runtime(e.to_string())
}

/// One profile's finished run: its results and where they were written.
#[derive(Debug)]
pub struct ProfileRun {
    pub result: RunResult,
    pub dir: PathBuf,
    /// A stage that failed during the run (the results are written all the same).
    pub failure: Option<String>,
}

/// A finished run of a scenario: one run per profile.
#[derive(Debug)]
pub struct Outcome {
    /// The run directory, or the sweep directory holding one per profile.
    pub dir: PathBuf,
    /// Whether the scenario has profiles (`dir` is a sweep directory).
    pub sweep: bool,
    pub runs: Vec<ProfileRun>,
}

/// Loads the scenario and applies the command-line overrides.
pub fn prepare(opts: &RunOptions) -> Result<Scenario, RunError> {
    let mut s = Scenario::load(&opts.scenario).map_err(|e| RunError::BadInput(e.to_string()))?;
    if let Some(rate) = opts.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(RunError::BadInput(format!("--rate must be a positive number, not {rate}")));
        }
        s.load.rate = rate;
    }
    if let Some(d) = opts.duration {
        if d.is_zero() {
            return Err(RunError::BadInput("--duration must be longer than zero".into()));
        }
        s.load.duration = d;
    }
    if let Some(w) = opts.warmup {
        s.load.warmup = w;
    }
    if let Some(b) = &opts.bootstrap {
        if !valid_bootstrap(b) {
            return Err(RunError::BadInput(format!("--bootstrap `{b}` is not host:port[,host:port...]")));
        }
        s.broker.bootstrap = Some(b.clone());
    }
    Ok(s)
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(probes::now_ns());
    h.finish()
}

fn timestamp_for_path(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

/// Applies the scenario's `[[faults]]` to the embedded broker on schedule (`start_ns` is
/// when the load starts); what took effect, and when, is gathered in the returned list.
fn apply_faults(
    scenario: &Scenario,
    broker: &Broker,
    start_ns: u64,
    stages: &mut JoinSet<(&'static str, pipeline::Result<()>)>,
    cancel: &CancellationToken,
    say: bool,
) -> Arc<std::sync::Mutex<Vec<reports::result::FaultRecord>>> {
    let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
    #[cfg(feature = "embedded")]
    if let Some(b) = broker.embedded.as_ref().filter(|_| !scenario.faults.is_empty()) {
        let plan =
            pipeline::embedded::Plan { faults: scenario.faults.iter().map(|f| (f.at, f.broker_fault())).collect() };
        let sections = scenario.faults.clone();
        let (hooks, cancel, list) = (Arc::clone(b.broker().faults()), cancel.clone(), Arc::clone(&applied));
        let start = tokio::time::Instant::now() + Duration::from_nanos(start_ns.saturating_sub(probes::now_ns()));
        stages.spawn(tagged("faults", async move {
            let run = plan.run(&hooks, start, |i, began| {
                let (f, fault) = (&sections[i], &plan.faults[i].1);
                if say {
                    eprintln!("fault: {} at {:.1}s: {fault}", f.kind.name(), began.as_secs_f64());
                }
                if let Ok(mut list) = list.lock() {
                    list.push(reports::result::FaultRecord {
                        kind: f.kind.name().into(),
                        at_s: f.at.as_secs_f64(),
                        began_at_s: began.as_secs_f64(),
                        duration_s: f.duration.map(|d| d.as_secs_f64()),
                        topic: f.topic.clone(),
                        latency_ms: f.latency.map(|d| d.as_secs_f64() * 1e3),
                        what: fault.to_string(),
                    });
                }
            });
            tokio::select! {
                () = cancel.cancelled() => {}
                () = run => cancel.cancelled().await,
            }
            Ok(())
        }));
    }
    #[cfg(not(feature = "embedded"))]
    let _ = (scenario, broker, start_ns, stages, cancel, say);
    applied
}

struct Broker {
    #[cfg(feature = "embedded")]
    embedded: Option<pipeline::embedded::EmbeddedBroker>,
    info: BrokerInfo,
}

impl Broker {
    /// What `result.json` says of the broker, with what its fault hooks did when the run
    /// scheduled faults.
    fn figures(&self, faults_scheduled: bool) -> BrokerInfo {
        let info = self.info.clone();
        #[cfg(feature = "embedded")]
        if let Some(b) = self.embedded.as_ref().filter(|_| faults_scheduled) {
            let c = b.broker().faults().counts();
            let faults = reports::result::FaultEffects {
                stalled_responses: c.stalled_responses,
                delayed_fetches: c.delayed_fetches,
                dropped_connections: c.dropped_connections,
            };
            return BrokerInfo { faults: Some(faults), ..info };
        }
        #[cfg(not(feature = "embedded"))]
        let _ = faults_scheduled;
        info
    }
}

async fn start_broker(scenario: &Scenario, profile: &Resolved, kafka: &mut KafkaSettings) -> Result<Broker, RunError> {
    let (producer, consumer) = (kafka.effective_producer(), kafka.effective_consumer());
    let info = |kind: &str, version: &str, bootstrap: &str, storage: &str| BrokerInfo {
        kind: kind.into(),
        version: version.into(),
        bootstrap: bootstrap.into(),
        storage: storage.into(),
        producer: producer.clone(),
        consumer: consumer.clone(),
        partitions: profile.partitions,
        topic: profile.clients.topic.clone(),
        stages: profile
            .clients
            .stages
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    reports::result::StageClients { producer: v.producer.clone(), consumer: v.consumer.clone() },
                )
            })
            .collect(),
        faults: None,
    };
    if let Some(b) = &scenario.broker.bootstrap {
        kafka.bootstrap.clone_from(b);
        return Ok(Broker {
            #[cfg(feature = "embedded")]
            embedded: None,
            info: info("external", "unknown", b, "the cluster's own"),
        });
    }
    #[cfg(feature = "embedded")]
    {
        use pipeline::embedded::{EmbeddedBroker, KIND, VERSION};
        let broker = EmbeddedBroker::start().await.map_err(failed)?;
        kafka.bootstrap = broker.bootstrap().to_owned();
        let info = info(KIND, VERSION, broker.bootstrap(), &format!("{} (in-process)", broker.storage()));
        Ok(Broker { embedded: Some(broker), info })
    }
    #[cfg(not(feature = "embedded"))]
    Err(RunError::BadInput(
        "this build has no embedded broker (feature `embedded`); give --bootstrap HOST:PORT or broker.bootstrap".into(),
    ))
}

/// Runs every selected profile of a scenario, in turn, each on fresh topics (a fresh
/// embedded broker), and writes the run directory (or the sweep directory with one run
/// directory per profile).
pub async fn run(opts: RunOptions) -> Result<Outcome, RunError> {
    let scenario = prepare(&opts)?;
    let profiles = scenario.resolve(&opts.profiles).map_err(RunError::BadInput)?;
    // Every client setting of every profile and stage is checked before anything starts.
    for p in &profiles {
        for stage in pipeline::STAGES {
            stage_kafka(&base_kafka(p), p, stage).check_settings().map_err(|e| {
                RunError::BadInput(format!("{}: profile `{}`, stage {stage}: {e}", opts.scenario.display(), p.name))
            })?;
        }
    }
    if !scenario.faults.is_empty() && scenario.broker.bootstrap.is_some() {
        return Err(RunError::BadInput(format!(
            "{}: [[faults]] use the embedded broker's fault hooks; against `tailgate broker`, give that process \
             its --stall, --drop-connections or --fetch-latency flags",
            opts.scenario.display()
        )));
    }
    if scenario.stages.external && scenario.broker.bootstrap.is_none() {
        return Err(RunError::BadInput(format!(
            "{}: [stages] external = true runs against the stages' cluster: give --bootstrap HOST:PORT or \
             [broker] bootstrap",
            opts.scenario.display()
        )));
    }
    let started = std::time::SystemTime::now();
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(format!("{}-{}", scenario.name, timestamp_for_path(started))));
    let sweep = !scenario.profiles.is_empty();
    if sweep && scenario.broker.bootstrap.is_some() && profiles.len() > 1 {
        eprintln!(
            "note: on an external cluster the profiles share the topics; partitions and topic settings apply \
             only where the topics do not exist yet"
        );
    }
    let mut runs = Vec::new();
    for (i, profile) in profiles.iter().enumerate() {
        let run_dir = if sweep { dir.join(&profile.name) } else { dir.clone() };
        if sweep && opts.progress {
            eprintln!("profile {} ({} of {}): {}", profile.name, i + 1, profiles.len(), profile.description);
        }
        let stop = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        if stop {
            break;
        }
        match run_profile(&scenario, profile, &run_dir, &opts).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                // The profiles that did run keep their index, so they can still be reported.
                if sweep && !runs.is_empty() {
                    let _ = write_sweep_file(&dir, &scenario, &runs);
                }
                return Err(match e {
                    RunError::Runtime(why) if sweep => RunError::Runtime(format!("profile {}: {why}", profile.name)),
                    other => other,
                });
            }
        }
    }
    if sweep {
        write_sweep_file(&dir, &scenario, &runs).map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
    }
    Ok(Outcome { dir, sweep, runs })
}

/// The sweep's index: which profiles ran, in which order, and where.
fn write_sweep_file(dir: &Path, scenario: &Scenario, runs: &[ProfileRun]) -> std::io::Result<()> {
    let index = serde_json::json!({
        "scenario": scenario.name,
        "description": scenario.description,
        "profiles": runs.iter().map(|r| serde_json::json!({
            "name": r.result.profile,
            "dir": r.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "passed": r.result.sla.passed,
            "failure": r.failure,
        })).collect::<Vec<_>>(),
    });
    let json = serde_json::to_string_pretty(&index).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(reports::SWEEP_FILE), json + "\n")
}

/// Client settings of `profile` for every stage.
pub(crate) fn base_kafka(profile: &Resolved) -> KafkaSettings {
    profile.clients.kafka("", profile.partitions)
}

/// Client settings of `profile` for `stage` (its own over everyone's).
pub(crate) fn stage_kafka(base: &KafkaSettings, profile: &Resolved, stage: &str) -> KafkaSettings {
    profile.clients.for_stage(base, stage)
}

/// Creates the pipeline's topics that are missing, with the profile's topic settings (the
/// compacted ones compacted).
pub(crate) async fn create_topics(kafka: &KafkaSettings, profile: &Resolved) -> Result<(), RunError> {
    kafka.ensure_pipeline_topics(&profile.clients.topic_settings()).await.map_err(failed)
}

/// Runs one profile of a scenario to its end and writes its run directory.
async fn run_profile(
    scenario: &Scenario,
    profile: &Resolved,
    dir: &Path,
    opts: &RunOptions,
) -> Result<ProfileRun, RunError> {
    let started = std::time::SystemTime::now();
    let mut kafka = base_kafka(profile);
    let broker = start_broker(scenario, profile, &mut kafka).await?;
    kafka.check_reachable(CONNECT_TIMEOUT).await.map_err(failed)?;
    create_topics(&kafka, profile).await?;
    kafka.converter = scenario.connector.converter;
    let tracer = start_tracer(scenario)?;
    kafka.spans = tracer.clone().map(|t| t as Arc<dyn probes::spans::SpanSink>);
    std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create run directory {}: {e}", dir.display())))?;

    let run_id = random_u64() >> 12;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(failed)?;
    let gateway_addr = listener.local_addr().map_err(failed)?;
    let external = scenario.stages.external.then(|| ExternalStages::new(&scenario.stages));
    let (source, mut writer, source_name, ingress) =
        open_source(scenario, dir, gateway_addr, external.is_some()).await?;

    // The edge cache, kept from story.context (seeded with one context per session).
    let cache_at = match &scenario.edge_cache.url {
        Some(url) => CacheAt::parse(url),
        None => CacheAt::Sqlite(dir.join("edge-cache.sqlite")),
    };

    // The pipeline.
    let cancel = CancellationToken::new();
    let counters: [Arc<StageCounters>; 4] = Default::default();
    let agent_stats = Arc::new(AgentStats::default());
    let sink_counters = Arc::new(SinkCounters::default());
    let mut stages: JoinSet<(&'static str, pipeline::Result<()>)> = JoinSet::new();
    let (sink_ready, mut sink_rx) = watch::channel(false);
    let (agent_ready, mut agent_rx) = watch::channel(false);
    let (job_ready, mut job_rx) = watch::channel(false);
    let (gw_ready, gw_rx) = watch::channel(false);
    let sent_live = Arc::new(AtomicU64::new(0));
    let stage_counters = pipeline::STAGES.iter().map(|s| (*s).to_owned()).zip(counters.iter().cloned()).collect();
    let mut metrics = pipeline::metrics::Metrics::new(SOURCE, stage_counters, SINK, Arc::clone(&sent_live));
    if let Some(t) = &tracer {
        // Exemplars name only traces the collector gets.
        metrics = metrics.with_exemplars(t.config().breach_ns.unwrap_or(u64::MAX));
    }
    let metrics = Arc::new(metrics);
    let mut gw_state = GatewayState::with_fanout(gw_rx.clone(), cancel.clone(), scenario.gateway.fanout())
        .with_metrics(Arc::clone(&metrics));
    if let Some(auth) = scenario.gateway.auth() {
        gw_state = gw_state.with_auth(auth);
    }
    if let Some(tx) = ingress {
        gw_state = gw_state.with_ingress(tx);
    }
    if let Some(addr) = &scenario.telemetry.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| failed(format!("cannot serve /metrics on {addr} (telemetry.metrics): {e}")))?;
        eprintln!("metrics: http://{addr}/metrics");
        stages.spawn(tagged("metrics", pipeline::metrics::serve(listener, Arc::clone(&metrics), cancel.clone())));
    }
    let agent_config = scenario.agent.config(dir.join("agent-state"), Some(run_id)).map_err(failed)?;
    let cache = if external.is_none() { Some(EdgeCache::open(&cache_at).await.map_err(failed)?) } else { None };
    let agent_kafka = stage_kafka(&kafka, profile, agent::NAME);
    let spawn_agent = |stages: &mut JoinSet<_>, ready| {
        let ctx = StageContext {
            kafka: agent_kafka.clone(),
            counters: Arc::clone(&counters[1]),
            ready,
            cancel: cancel.clone(),
        };
        let agent = agent::Agent::new(agent_config.clone(), cache.clone(), Arc::clone(&agent_stats));
        stages.spawn(tagged(agent::NAME, runtime::run(agent, ctx)))
    };
    let job_config = scenario.streamjob.config();
    let mut job_stats: Option<Arc<StreamJobStats>> = None;
    // Async enrichment: the run seeds a profile per session; an in-process job opens it.
    let enrich = match &scenario.streamjob.enrich {
        Some(section) => {
            let config = section.config(&dir.join("profiles.sqlite"));
            pipeline::streamjob::enrich::seed(&config.at, scenario.load.sessions).await.map_err(failed)?;
            let enricher = if external.is_none() {
                Some(pipeline::streamjob::enrich::Enricher::open(&config).await.map_err(failed)?)
            } else {
                None
            };
            enricher.map(|e| (config, e))
        }
        None => None,
    };
    // Broadcast rules: every change on story.rules applies before the job's next event.
    let (rules_tx, rules_rx) = watch::channel(pipeline::streamjob::RuleSet::default());
    let shared_job_stats: Arc<StreamJobStats> = Arc::default();
    let job_kafka = stage_kafka(&kafka, profile, pipeline::streamjob::NAME);
    let spawn_job = |stages: &mut JoinSet<_>, ready| {
        let mut job = StreamJob::new(job_config.clone()).with_rules(rules_rx.clone());
        if let Some((_, e)) = &enrich {
            job = job.with_enricher(e.clone());
        }
        // A restarted job adds to the same figures.
        job.stats = Arc::clone(&shared_job_stats);
        let ctx = StageContext {
            kafka: job_kafka.clone(),
            counters: Arc::clone(&counters[2]),
            ready,
            cancel: cancel.clone(),
        };
        stages.spawn(tagged(pipeline::streamjob::NAME, runtime::run(job, ctx)))
    };
    let mut agent_task = None;
    let mut job_task = None;
    if let (None, Some(cache)) = (&external, &cache) {
        let ctx = StageContext {
            ready: sink_ready,
            cancel: cancel.clone(),
            ..StageContext::new(stage_kafka(&kafka, profile, pipeline::context_sink::SINK))
        };
        let sink = pipeline::context_sink::ContextSink::new(cache.clone(), Arc::clone(&sink_counters));
        stages.spawn(tagged(pipeline::context_sink::SINK, runtime::run(sink, ctx)));
        let mut cfg = ConnectorConfig::new(source);
        cfg.tasks = scenario.connector.tasks;
        cfg.transforms = scenario.connector.transforms.clone();
        stages.spawn(tagged(
            connector::NAME,
            connector::run(
                stage_kafka(&kafka, profile, connector::NAME),
                cfg,
                Arc::clone(&counters[0]),
                cancel.clone(),
            ),
        ));
        agent_task = Some(spawn_agent(&mut stages, agent_ready));
        let follow = pipeline::streamjob::follow_rules(kafka.clone(), rules_tx, cancel.clone());
        stages.spawn(tagged("rules", follow));
        job_stats = Some(Arc::clone(&shared_job_stats));
        job_task = Some(spawn_job(&mut stages, job_ready));
        let ctx = StageContext {
            kafka: stage_kafka(&kafka, profile, gateway::NAME),
            counters: Arc::clone(&counters[3]),
            ready: gw_ready,
            cancel: cancel.clone(),
        };
        stages.spawn(tagged(gateway::NAME, runtime::run(gateway::Gateway::new(gw_state.clone()), ctx)));
        if let Some(at) = &scenario.gateway.grpc {
            let grpc = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| failed(format!("cannot serve gRPC on {at} (gateway.grpc): {e}")))?;
            eprintln!("gateway gRPC: {} (tailgate.gateway.v1.Updates)", grpc.local_addr().map_err(failed)?);
            stages
                .spawn(tagged("gateway-grpc", pipeline::gateway::grpc::serve(grpc, gw_state.clone(), cancel.clone())));
        }
        stages.spawn(tagged("gateway-http", gateway::serve(listener, gw_state.clone(), cancel.clone())));
    }

    // Wait for every consumer group to have its partitions (for external stages, for the
    // gateway's /readyz).
    let mut gw_rx = gw_rx;
    let ready = async {
        if let Some(ext) = &external {
            ext.wait_ready().await;
            return Ok(());
        }
        sink_rx.wait_for(|r| *r).await.map(drop)?;
        agent_rx.wait_for(|r| *r).await.map(drop)?;
        job_rx.wait_for(|r| *r).await.map(drop)?;
        gw_rx.wait_for(|r| *r).await.map(drop)
    };
    tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, ready) => match r {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(failed("a stage stopped before it was ready")),
            Err(_) => return Err(failed(match &external {
                Some(ext) => format!("the gateway at {} was not ready within {READY_TIMEOUT:?}: are the `tailgate stage` processes up on {}?", ext.gateway, kafka.bootstrap),
                None => format!("the stages' consumer groups got no partitions within {READY_TIMEOUT:?} from {}", kafka.bootstrap),
            })),
        },
        Some(done) = stages.join_next() => {
            let why = describe_exit(done);
            return Err(failed(format!("a stage failed on start: {why}")));
        }
    }

    stages.spawn(tagged(
        "group-lags",
        pipeline::metrics::follow_group_lags(
            kafka.clone(),
            pipeline::topology::stage_groups(),
            Arc::clone(&metrics),
            Duration::from_secs(5),
            cancel.clone(),
        ),
    ));
    if let Some(ext) = &external {
        // The connector process's sink keeps the edge cache; the agents count what they miss.
        pipeline::context_sink::seed(&kafka, scenario.load.sessions).await.map_err(failed)?;
        stages.spawn(tagged("stage-metrics", ext.clone().follow(counters.clone(), cancel.clone())));
    } else {
        seed_context(&kafka, scenario.load.sessions, &sink_counters).await?;
    }

    // The audience, then the players.
    let load = &scenario.load;
    let start_ns = probes::now_ns() + 100_000_000;
    let measure_from_ns = start_ns + u64::try_from(load.warmup.as_nanos()).unwrap_or(u64::MAX);
    if !scenario.streamjob.rules.is_empty() {
        let mut changes = scenario.streamjob.rules.clone();
        changes.sort_by_key(|r| r.at);
        let publisher = pipeline::streamjob::RulePublisher::new(&kafka).map_err(failed)?;
        let cancel = cancel.clone();
        stages.spawn(tagged("rule-changes", async move {
            for r in changes {
                let wait =
                    (start_ns + u64::try_from(r.at.as_nanos()).unwrap_or(u64::MAX)).saturating_sub(probes::now_ns());
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_nanos(wait)) => {}
                }
                publisher.publish(&r.rule()).await?;
            }
            cancel.cancelled().await;
            Ok(())
        }));
    }
    let faults_applied = apply_faults(scenario, &broker, start_ns, &mut stages, &cancel, opts.progress);
    let hops = HopSet::new(SOURCE, &pipeline::STAGES, SINK, measure_from_ns, Duration::from_secs(1));
    let mut tally = Tally::new(run_id, measure_from_ns, hops);
    tally.spans = kafka.spans.clone();
    tally.warmup = Some(probes::LatencyRecorder::new(reports::WARMUP_TAG, start_ns, Duration::from_secs(1)));
    let feed = opts.feed.clone();
    if let Some(feed) = &feed {
        feed.deliver(Feed::Meta(live_meta(scenario, &profile.name, &broker.info, start_ns)));
    }
    let otlp_metrics = match &tracer {
        Some(t) => {
            // The exporter is built on a Tokio runtime of its own, which cannot start inside this one.
            let (config, m) = (t.config().clone(), Arc::clone(&metrics));
            let started = tokio::task::spawn_blocking(move || start_metrics_export(&config, m)).await;
            Some(Arc::new(started.map_err(failed)??))
        }
        None => None,
    };
    let observed = Arc::clone(&metrics);
    let otlp_observed = otlp_metrics.clone();
    tally.observe_with(Box::new(move |intended_ns, stamps, received_ns, traceparent| {
        let trace = TraceContext::parse(traceparent.as_bytes()).ok();
        observed.observe_traced(intended_ns, stamps, received_ns, trace.as_ref());
        if let Some(m) = &otlp_observed {
            m.observe(intended_ns, stamps, received_ns);
        }
        if let Some(feed) = &feed {
            feed.offer(Feed::Sample(Sample { intended_ns, received_ns, stamps: stamps.to_owned() }));
        }
    }));
    let delivered_live = tally.delivered_counter();
    let audience_cancel = CancellationToken::new();
    let gateway_url = external.as_ref().map_or_else(|| format!("http://{gateway_addr}"), |e| e.gateway.clone());
    let audience = Audience { url: format!("{gateway_url}/events"), tally, token: scenario.gateway.run_token() }
        .start(audience_cancel.clone())
        .await
        .map_err(failed)?;
    while external.is_none() && gw_state.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let stop = opts.stop.clone().unwrap_or_default();
    let schedule = Schedule::new(load.arrival, load.rate, load.warmup + load.duration, load.seed);
    let mut driver = Driver::new(schedule, load.keys(), load.sessions, load.payload_bytes, load.seed);
    driver.start_ns = start_ns;
    driver.measure_from_ns = measure_from_ns;
    let lag_live = Arc::clone(&driver.lag_live);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let poison_every = load.poison_every;
    let http_players = match &writer {
        Writer::Http(w, _) => Some(w.clone()),
        _ => None,
    };
    {
        let (stop, sent_live) = (Arc::clone(&stop), Arc::clone(&sent_live));
        let spans = kafka.spans.clone();
        let ratio = tracer.as_ref().map_or(1.0, |t| t.config().sample_ratio);
        std::thread::Builder::new()
            .name("tailgate-loadgen".into())
            .spawn(move || {
                let report = driver.run(&SystemClock, &stop, &sent_live, |e| {
                    let root = TraceContext::root_sampled(ratio);
                    let tp = root.encode();
                    let poisoned = poison_every > 0 && e.id % poison_every == poison_every - 1;
                    let traceparent =
                        if poisoned { POISON_TRACEPARENT } else { std::str::from_utf8(&tp).unwrap_or_default() };
                    let sending_ns = probes::now_ns();
                    let sent = writer.insert(ActionRow {
                        run: run_id,
                        event_id: e.id,
                        session: e.session,
                        intended_ns: e.intended_ns,
                        traceparent: traceparent.into(),
                        action: e.payload.into(),
                    });
                    if !poisoned {
                        probes::spans::record(&spans, &root, || {
                            telemetry::send_span(&root, e.id, sending_ns, probes::now_ns())
                        });
                    }
                    sent
                });
                let _ = done_tx.send(report);
            })
            .map_err(failed)?;
    }

    // Watch the run: progress, failures, Ctrl-C.
    let began = Instant::now();
    let dead_lettered_live = || counters.iter().map(|c| c.dead_lettered.load(Ordering::Relaxed)).sum::<u64>();
    // Events that will not reach the audience on purpose.
    let settled_live = || dead_lettered_live() + counters[0].filtered.load(Ordering::Relaxed);
    let mut failure: Option<String> = None;
    let mut interrupted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.tick().await;
    let mut ticks = 0u64;
    // Stages the scenario stops abruptly once, mid-run, and starts again.
    let load_began = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut restarts: Vec<Restart> =
        [(agent::NAME, scenario.agent.restart_at), (pipeline::streamjob::NAME, scenario.streamjob.restart_at)]
            .into_iter()
            .filter_map(|(stage, at)| Some(Restart { stage, at: load_began + at?, phase: RestartPhase::Pending }))
            .collect();
    let report = loop {
        let next_restart = restarts.iter().filter(|r| r.phase == RestartPhase::Pending).map(|r| r.at).min();
        tokio::select! {
            () = tokio::time::sleep_until(next_restart.unwrap_or_else(tokio::time::Instant::now)), if next_restart.is_some() => {
                let now = tokio::time::Instant::now();
                for r in restarts.iter_mut().filter(|r| r.phase == RestartPhase::Pending && r.at <= now) {
                    eprintln!("stopping the {} abruptly ({}.restart_at) and starting it again", r.stage, r.stage);
                    if let Some(t) = restartable(r.stage, &agent_task, &job_task) {
                        t.abort();
                    }
                    r.phase = RestartPhase::Stopping;
                }
            },

            r = &mut done_rx => break r.map_err(|_| failed("the load generator thread died"))?,
            _ = tick.tick() => {
                ticks += 1;
                let sent = sent_live.load(Ordering::Relaxed);
                let delivered = delivered_live.load(Ordering::Relaxed);
                let dl = dead_lettered_live();
                if let Some(feed) = &opts.feed {
                    let lag = lag_live.swap(0, Ordering::Relaxed);
                    feed.offer(Feed::Progress(Progress {
                        sent,
                        delivered,
                        dead_lettered: dl,
                        filtered: counters[0].filtered.load(Ordering::Relaxed),
                        duplicates: counters[3].duplicates.load(Ordering::Relaxed),
                        schedule_lag_ms: Some(lag as f64 / 1e6),
                        lags: stage_lags(sent, &counters),
                    }));
                }
                if opts.progress && ticks.is_multiple_of(4) {
                    eprintln!(
                        "{:>6.1}s  sent {sent:>8}  delivered {delivered:>8}  dead-lettered {dl:>5}  in flight {:>6}",
                        began.elapsed().as_secs_f64(),
                        sent.saturating_sub(delivered + settled_live())
                    );
                }
            },
            Some(done) = stages.join_next(), if failure.is_none() => {
                let stopped = match &done {
                    Err(e) if e.is_cancelled() => restarts.iter_mut().find(|r| {
                        r.phase == RestartPhase::Stopping
                            && restartable(r.stage, &agent_task, &job_task).is_some_and(|t| t.id() == e.id())
                    }),
                    _ => None,
                };
                if let Some(r) = stopped {
                    let (ready, _) = watch::channel(false);
                    if r.stage == agent::NAME {
                        agent_task = Some(spawn_agent(&mut stages, ready));
                    } else {
                        job_task = Some(spawn_job(&mut stages, ready));
                    }
                    r.phase = RestartPhase::Done;
                } else {
                    failure = Some(describe_exit(done));
                    stop.store(true, Ordering::Relaxed);
                }
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                eprintln!("interrupted: stopping the load and writing what was measured");
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
            },
        }
    };
    let report = report.map_err(|e| failed(format!("the source refused an event: {e}")))?;
    interrupted |= report.stopped_early && failure.is_none();

    // Drain: wait for what is in flight, up to the scenario's limit. Actions the HTTP
    // ingress refused will never arrive.
    let drain_until = Instant::now() + load.drain;
    let refused_live = || http_players.as_ref().map_or(0, |h| h.refused.load(Ordering::Relaxed));
    // External stages whose /metrics the run does not read (agent replicas inside a
    // network, say) dead-letter unseen: the dead-letter topic itself is read once a second.
    let (mut audited, mut next_audit) = (0, Instant::now());
    // Live dead-letter counts include records a stage sent but never got out (one stopped
    // abruptly, say): once they alone would end the drain, the topic is asked, and from
    // then on only what it holds counts.
    let mut trust_live = true;
    while failure.is_none() && Instant::now() < drain_until {
        if (external.is_some() || !trust_live) && Instant::now() >= next_audit {
            if let Ok(a) = runtime::audit_dead_letters(&kafka, run_id, Duration::from_secs(5)).await {
                audited = a.ids.len() as u64;
            }
            next_audit = Instant::now() + Duration::from_secs(1);
        }
        let filtered = counters[0].filtered.load(Ordering::Relaxed);
        let settled = if trust_live { settled_live().max(audited + filtered) } else { audited + filtered };
        let delivered = delivered_live.load(Ordering::Relaxed) + refused_live();
        if delivered + settled >= report.sent {
            if !trust_live || dead_lettered_live() == 0 {
                break;
            }
            let confirmed = runtime::audit_dead_letters(&kafka, run_id, Duration::from_secs(5)).await;
            match confirmed {
                Ok(a) if delivered + a.ids.len() as u64 + filtered >= report.sent => break,
                Ok(a) => (audited, trust_live) = (a.ids.len() as u64, false),
                Err(_) => break, // the final audit says what it can
            }
            next_audit = Instant::now() + Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cancel.cancel();
    let shutdown = async {
        while let Some(done) = stages.join_next().await {
            if let Ok((name, Err(e))) = &done {
                failure.get_or_insert_with(|| format!("{name}: {e}"));
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), shutdown).await.is_err() {
        failure.get_or_insert_with(|| "the stages did not stop within 20s".into());
    }
    audience_cancel.cancel();
    let mut tally = audience.await.map_err(failed)?.map_err(failed)?;
    let audit = runtime::audit_dead_letters(&kafka, run_id, Duration::from_secs(10)).await.map_err(failed)?;
    let broker_info = broker.figures(!scenario.faults.is_empty());
    drop(broker); // everything that talks to it is done

    let dead_lettered = audit.ids.iter().filter(|id| !tally.has(**id)).count() as u64;
    let filtered = counters[0].filtered.load(Ordering::Relaxed);
    let lost = report.sent.saturating_sub(tally.delivered + dead_lettered + filtered);
    // The last metrics export carries the run's accounting.
    metrics.set_lost(lost);
    let metric_exports_failed = match otlp_metrics {
        Some(m) => tokio::task::spawn_blocking(move || m.stop()).await.unwrap_or_default(),
        None => 0,
    };
    let telemetry_info = match tracer {
        Some(t) => Some(reports::result::TelemetryInfo { metric_exports_failed, ..stop_tracer(t).await }),
        None => None,
    };
    let counts = Counts {
        sent: report.sent,
        delivered: tally.delivered,
        dead_lettered,
        filtered,
        lost,
        duplicates: tally.duplicates + counters[3].duplicates.load(Ordering::Relaxed),
        reordered: tally.reordered,
        warmup_sent: report.warmup_sent,
    };
    let restores = agent_stats.restores.lock().map(|r| r.clone()).unwrap_or_default();
    let pipeline_info = PipelineInfo {
        source: source_name,
        converter: scenario.connector.converter.name().into(),
        tasks: scenario.connector.tasks,
        transforms: scenario.connector.transforms.iter().map(|t| t.kind().to_owned()).collect(),
        edge_cache: cache_at.describe(),
        agent_concurrency: agent_config.concurrency,
        prefetch: agent_config.prefetch,
        model: agent_config.model.describe(),
        context_hits: agent_stats.context_hits.load(Ordering::Relaxed),
        context_misses: agent_stats.context_misses.load(Ordering::Relaxed),
        context_errors: agent_stats.context_errors.load(Ordering::Relaxed),
        replays: agent_stats.replays.load(Ordering::Relaxed),
        agent_restores: restores
            .into_iter()
            .map(|r| StateRestore {
                at_s: r.at_ns.saturating_sub(start_ns) as f64 / 1e9,
                from: r.from,
                partitions: r.partitions,
                sessions: r.sessions,
                records: r.records,
                warm_start_ms: r.warm_start_ms,
            })
            .collect(),
        external: external.as_ref().map(ExternalStages::describe),
        gateway: external.is_none().then(|| {
            let f = gw_state.fanout_stats();
            let config = scenario.gateway.fanout();
            reports::result::GatewayInfo {
                client_buffer: config.buffer as u64,
                slow_client: config.policy.name().into(),
                peak_clients: f.peak_clients.load(Ordering::Relaxed),
                dropped: f.dropped.load(Ordering::Relaxed),
                disconnected: f.disconnected.load(Ordering::Relaxed),
                pauses: f.pauses.load(Ordering::Relaxed),
                paused_ms: f.paused_ns.load(Ordering::Relaxed) as f64 / 1e6,
            }
        }),
        streamjob: job_stats.map(|s| reports::result::StreamJobInfo {
            window_ms: job_config.window.as_millis() as u64,
            slide_ms: job_config.slide.as_millis() as u64,
            out_of_orderness_ms: job_config.out_of_orderness.as_millis() as u64,
            windows_fired: s.windows_fired.load(Ordering::Relaxed),
            late: s.late.load(Ordering::Relaxed),
            signals: s.signals.lock().map(|m| m.clone()).unwrap_or_default(),
            audit_records: s.audit_records.load(Ordering::Relaxed),
            rules: s
                .rules
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|r| reports::result::RuleChange {
                    name: r.name,
                    enabled: r.enabled,
                    published_at_s: (r.published_ns as f64 - start_ns as f64) / 1e9,
                    took_effect_at_s: (r.applied_ns as f64 - start_ns as f64) / 1e9,
                    delay_ms: r.applied_ns.saturating_sub(r.published_ns) as f64 / 1e6,
                })
                .collect(),
            enrich: enrich.as_ref().map(|(config, e)| enrich_info(config, e)),
            changelog: job_config.changelog,
            restored: s.restored.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
        }),
    };
    let measured = (report.sent - report.warmup_sent) as f64 / load.rate;
    let duration_s =
        if report.stopped_early { measured.min(load.duration.as_secs_f64()) } else { load.duration.as_secs_f64() };
    let mut result = RunResult {
        tailgate_version: env!("CARGO_PKG_VERSION").into(),
        scenario: scenario.name.clone(),
        profile: profile.name.clone(),
        run_id,
        broker: broker_info,
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        duration_s,
        warmup_s: load.warmup.as_secs_f64(),
        target_rate: load.rate,
        payload_bytes: load.payload_bytes as u64,
        achieved_rate: if duration_s > 0.0 {
            (tally.delivered - tally.warmup_delivered) as f64 / duration_s
        } else {
            0.0
        },
        counts,
        end_to_end: tally.hops.end_to_end.summary(),
        hops: tally.hops.summaries(),
        schedule_lag: report.schedule_lag.summary(),
        sla: Default::default(),
        interrupted: interrupted || report.stopped_early,
        machine: Machine::this(),
        pipeline: Some(pipeline_info),
        telemetry: telemetry_info,
        faults: faults_applied.lock().map(|f| f.clone()).unwrap_or_default(),
    };
    result.evaluate(&scenario.sla);
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
    if let Some(h) = &http_players
        && refused_live() > 0
    {
        let first = h.first_refusal.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        eprintln!(
            "note: the gateway refused {} actions after retries (counted as lost); first: {first}",
            refused_live()
        );
    }
    write_run_dir(dir, &result, &mut tally, report.schedule_lag)
        .map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
    Ok(ProfileRun { result, dir: dir.to_owned(), failure })
}

/// Starts span export when the scenario or the `OTEL_*` environment names a collector.
pub(crate) fn start_tracer(scenario: &Scenario) -> Result<Option<Arc<telemetry::Tracer>>, RunError> {
    let requested =
        scenario.telemetry.requested(&scenario.sla).map_err(|(f, why)| failed(format!("telemetry.{f}: {why}")))?;
    let Some(config) = telemetry::TelemetryConfig::resolve(&requested, |k| std::env::var(k).ok()).map_err(failed)?
    else {
        return Ok(None);
    };
    let shapes = pipeline::topology::PIPELINE
        .iter()
        .map(|s| telemetry::StageShape {
            stage: s.name.to_owned(),
            consumes: s.input.zip(s.group()).map(|(t, g)| (t.to_owned(), g)),
            produces: s.output.map(str::to_owned),
        })
        .collect();
    eprintln!(
        "tracing: OTLP {} to {}, {:.0}% of events",
        config.protocol.name(),
        config.endpoint,
        config.sample_ratio * 100.0
    );
    telemetry::Tracer::start(config, shapes).map(Some).map_err(failed)
}

/// Exports the run's metrics over OTLP to the collector spans go to, every 5 s and at the end.
fn start_metrics_export(
    config: &telemetry::TelemetryConfig,
    metrics: Arc<pipeline::metrics::Metrics>,
) -> Result<telemetry::metrics::MetricsExport, RunError> {
    let counts = Arc::new(move || metrics.snapshot());
    telemetry::metrics::MetricsExport::start(config, Duration::from_secs(5), SOURCE, SINK, counts).map_err(failed)
}

/// Exports what is left (waiting at most 10 s for the collector) and reports the counts.
async fn stop_tracer(tracer: Arc<telemetry::Tracer>) -> reports::result::TelemetryInfo {
    let t = Arc::clone(&tracer);
    let stats = tokio::task::spawn_blocking(move || t.stop(Duration::from_secs(10))).await.unwrap_or_default();
    let c = tracer.config();
    reports::result::TelemetryInfo {
        endpoint: c.endpoint.clone(),
        protocol: c.protocol.name().into(),
        sample_ratio: c.sample_ratio,
        breach_ms: c.breach_ns.map(|b| b as f64 / 1e6),
        spans_exported: stats.exported,
        spans_dropped: stats.dropped,
        spans_failed: stats.failed,
        breach_traces: stats.breach_traces,
        last_error: stats.last_error,
        metric_exports_failed: 0,
    }
}

/// What a poisoned event carries instead of a trace context.
const POISON_TRACEPARENT: &str = "poison: not a traceparent";

/// Where the load generator writes story actions.
enum Writer {
    Sqlite(SourceWriter),
    Postgres(pipeline::io::postgres::PgWriter, tokio::runtime::Handle),
    Http(loadgen::ingress::HttpIngress, tokio::runtime::Handle),
}

impl Writer {
    /// Inserts (and commits) one row, or starts posting it; called from the load
    /// generator's thread.
    fn insert(&mut self, row: ActionRow<'_>) -> Result<(), String> {
        match self {
            Self::Sqlite(w) => w.insert(&row).map_err(|e| e.to_string()),
            Self::Postgres(w, rt) => rt.block_on(w.insert(&row)),
            Self::Http(w, rt) => {
                let body = serde_json::json!({
                    "run": row.run,
                    "id": row.event_id,
                    "action": row.action,
                    "intended_ns": row.intended_ns,
                });
                w.send(rt, row.session, body.to_string(), &row.traceparent);
                Ok(())
            }
        }
    }
}

/// The connector's source and the load generator's writer for the scenario's source (and,
/// for `http`, the queue the gateway hands requests to the connector through).
async fn open_source(
    scenario: &Scenario,
    dir: &Path,
    gateway: std::net::SocketAddr,
    external: bool,
) -> Result<(Source, Writer, String, Option<tokio::sync::mpsc::Sender<connector::Ingress>>), RunError> {
    let c = &scenario.connector;
    match (c.source, &c.postgres) {
        (SourceKind::Postgres, Some(url)) => {
            // A run's own connector starts on an empty table and a new slot; a connector
            // process keeps its slot, which the run must not drop under it.
            pipeline::io::postgres::prepare(url, &c.slot, !external).await.map_err(failed)?;
            let writer = pipeline::io::postgres::PgWriter::open(url).await.map_err(failed)?;
            let name = format!("postgres {} slot {}", pipeline::io::postgres::redact(url), c.slot);
            let source = Source::Postgres { url: url.clone(), slot: c.slot.clone() };
            Ok((source, Writer::Postgres(writer, tokio::runtime::Handle::current()), name, None))
        }
        (SourceKind::Http, _) => {
            let (tx, rx) = tokio::sync::mpsc::channel(c.http_in_flight);
            let mut writer = loadgen::ingress::HttpIngress::new(format!("http://{gateway}"), c.http_in_flight);
            writer.token = scenario.gateway.run_token().map(Into::into);
            let name = format!("http POST http://{gateway}/sessions/{{id}}/actions");
            Ok((Source::Http(rx), Writer::Http(writer, tokio::runtime::Handle::current()), name, Some(tx)))
        }
        _ => {
            let db = c.sqlite.clone().unwrap_or_else(|| dir.join("source.sqlite"));
            let writer = SourceWriter::open(&db).map_err(failed)?;
            let source = c.sqlite_source(&db);
            Ok((source, Writer::Sqlite(writer), format!("sqlite {}", db.display()), None))
        }
    }
}

/// Stages that run as processes of their own (`tailgate stage`), as the run finds them.
#[derive(Debug, Clone)]
struct ExternalStages {
    /// The gateway's base URL.
    gateway: String,
    /// The stages' `/metrics` URLs.
    metrics: Vec<String>,
}

impl ExternalStages {
    fn new(section: &crate::scenario::StagesSection) -> Self {
        let gateway = section.gateway.clone().unwrap_or_default().trim_end_matches('/').to_owned();
        Self { gateway, metrics: section.metrics.clone() }
    }

    fn describe(&self) -> String {
        format!("separate processes; gateway {}, metrics from {} endpoints", self.gateway, self.metrics.len())
    }

    /// Waits until the gateway's `/readyz` answers 200 (its consumer has partitions).
    async fn wait_ready(&self) {
        let client = http_client();
        let url = format!("{}/readyz", self.gateway);
        let mut said = false;
        loop {
            let status = client.get(&url).send().await.map_or(0, |r| r.status().as_u16());
            if status == 200 {
                return;
            }
            if !said {
                eprintln!("waiting for the gateway at {} to be ready (it answers {status})", self.gateway);
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Mirrors the stages' outcome counters, as changed since this run began, into
    /// `counters` (pipeline order) every 200 ms, from their `/metrics`, until `cancel`. A
    /// stage that does not answer keeps its last figures.
    async fn follow(self, counters: [Arc<StageCounters>; 4], cancel: CancellationToken) -> pipeline::Result<()> {
        if self.metrics.is_empty() {
            cancel.cancelled().await;
            return Ok(());
        }
        let client = http_client();
        let mut at_start = None;
        loop {
            let mut now = pipeline::metrics::Outcomes::default();
            let mut answered = 0;
            for url in &self.metrics {
                let Ok(resp) = client.get(url).send().await else { continue };
                let Ok(body) = resp.text().await else { continue };
                now.add(&pipeline::metrics::Outcomes::parse(&body));
                answered += 1;
            }
            if answered == self.metrics.len() {
                let base = at_start.get_or_insert_with(|| now.clone());
                for (stage, c) in pipeline::STAGES.iter().zip(&counters) {
                    let d = |outcome| now.get(stage, outcome).saturating_sub(base.get(stage, outcome));
                    c.forwarded.store(d("forwarded"), Ordering::Relaxed);
                    c.dead_lettered.store(d("dead_lettered"), Ordering::Relaxed);
                    c.filtered.store(d("filtered"), Ordering::Relaxed);
                    c.duplicates.store(d("duplicate"), Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// A client for the stages' small HTTP answers (each request at most 2 s).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default()
}

/// Writes one context per session to `story.context` and waits until the sink has them in
/// the edge cache, so the run starts with a warm cache.
async fn seed_context(kafka: &KafkaSettings, sessions: u64, sink: &SinkCounters) -> Result<(), RunError> {
    let before = sink.applied.load(Ordering::Relaxed);
    pipeline::context_sink::seed(kafka, sessions).await.map_err(failed)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    while sink.applied.load(Ordering::Relaxed) < before + sessions {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the edge cache sink did not apply {sessions} contexts within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The dashboard's header for a run.
fn live_meta(scenario: &Scenario, profile: &str, broker: &BrokerInfo, start_ns: u64) -> Meta {
    let load = &scenario.load;
    Meta {
        title: scenario.name.clone(),
        profile: profile.into(),
        broker: format!("{} {} @ {}", broker.kind, broker.version, broker.bootstrap),
        started_ns: start_ns,
        planned: Some(load.warmup + load.duration),
        budgets: scenario.sla.iter().filter_map(|o| Some(Budget { metric: o.metric.clone(), max: o.max? })).collect(),
        sink: SINK.into(),
    }
}

/// Events waiting in front of each stage: what the hop before it passed on, less what it
/// passed on or dead-lettered.
fn stage_lags(sent: u64, counters: &[Arc<StageCounters>; 4]) -> Vec<StageLag> {
    let mut upstream = sent;
    pipeline::STAGES
        .iter()
        .zip(counters)
        .map(|(stage, c)| {
            let (fwd, dl) = (c.forwarded.load(Ordering::Relaxed), c.dead_lettered.load(Ordering::Relaxed));
            let lag = StageLag { stage: (*stage).to_owned(), events: upstream.saturating_sub(fwd + dl) };
            upstream = fwd;
            lag
        })
        .collect()
}

pub(crate) async fn tagged(
    name: &'static str,
    f: impl Future<Output = pipeline::Result<()>>,
) -> (&'static str, pipeline::Result<()>) {
    (name, f.await)
}

pub(crate) fn describe_exit(done: Result<(&'static str, pipeline::Result<()>), tokio::task::JoinError>) -> String {
    match done {
        Ok((name, Ok(()))) => format!("{name} stopped unexpectedly"),
        Ok((_, Err(e))) => e.to_string(),
        Err(e) => format!("a stage panicked: {e}"),
    }
}

fn hlog_name(metric: &str) -> String {
    format!("{}.hlog", metric.replace("->", "_to_"))
}

fn write_run_dir(
    dir: &Path,
    result: &RunResult,
    tally: &mut Tally,
    mut lag: probes::LatencyRecorder,
) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(result).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("result.json"), json + "\n")?;
    std::fs::write(dir.join(hlog_name("end_to_end")), tally.hops.end_to_end.interval_log())?;
    for h in tally.hops.hops_mut() {
        std::fs::write(dir.join(format!("hop-{}", hlog_name(&h.name))), h.recorder.interval_log())?;
    }
    std::fs::write(dir.join(hlog_name("schedule_lag")), lag.interval_log())?;
    if let Some(w) = &mut tally.warmup {
        std::fs::write(dir.join(hlog_name(reports::WARMUP_TAG)), w.interval_log())?;
    }
    Ok(())
}

/// The enrichment's figures for `result.json`.
fn enrich_info(
    config: &pipeline::streamjob::enrich::EnrichConfig,
    e: &pipeline::streamjob::enrich::Enricher,
) -> reports::result::EnrichInfo {
    let s = e.stats();
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    reports::result::EnrichInfo {
        database: config.at.describe(),
        order: match config.order {
            pipeline::streamjob::enrich::ResultOrder::Ordered => "ordered",
            pipeline::streamjob::enrich::ResultOrder::Unordered => "unordered",
        }
        .into(),
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

/// Where a scheduled restart of a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartPhase {
    Pending,
    /// Aborted; started again once its task has ended.
    Stopping,
    Done,
}

/// A stage (`agent` or `streamjob`) the scenario stops abruptly once, at `at`.
#[derive(Debug)]
struct Restart {
    stage: &'static str,
    at: tokio::time::Instant,
    phase: RestartPhase,
}

/// The task of a stage a scenario may restart (`agent` or `streamjob`).
fn restartable<'t>(
    stage: &str,
    agent: &'t Option<tokio::task::AbortHandle>,
    job: &'t Option<tokio::task::AbortHandle>,
) -> Option<&'t tokio::task::AbortHandle> {
    if stage == agent::NAME { agent.as_ref() } else { job.as_ref() }
}
