//! `tailgate stage NAME --config FILE`: one stage of the reference pipeline as a process of
//! its own, for a deployment (docker compose, Kubernetes, a shell per stage) in which a
//! `tailgate run` with `[stages] external = true` drives the load and does the accounting.
//!
//! The stage reads the same scenario file a run does (its `[broker]`, `[connector]`,
//! `[agent]`, `[streamjob]`, `[gateway]`, `[edge_cache]`, `[telemetry]` and client settings), creates the
//! topics if they are missing, says `ready` on stderr once its consumer group has
//! partitions, and runs until SIGINT or SIGTERM, after which it stops as a run's stages do:
//! in-flight events are finished, offsets committed, the agent's store marked clean.
//!
//! Replicas of the agent, the stream job and the gateway share their stage's consumer group,
//! so running more of them spreads the partitions. The connector reads one source and so
//! runs once; it scales with `[connector] tasks`.

use crate::run::{self, RunError, base_kafka, create_topics, describe_exit, failed, stage_kafka, tagged};
use crate::scenario::{Scenario, SourceKind};
use pipeline::connector::{ConnectorConfig, Source};
use pipeline::context_sink::SinkCounters;
use pipeline::gateway::GatewayState;
use pipeline::io::cache::{CacheAt, EdgeCache};
use pipeline::runtime::{self, StageContext, StageCounters};
use pipeline::{KafkaSettings, agent, connector, gateway, streamjob};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a starting stage waits for its broker (compose may start it first).
pub const BROKER_WAIT: Duration = Duration::from_secs(60);

/// The stages that can run as processes of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageName {
    /// Change capture from the source to `story.actions`, and the edge-cache sink.
    Connector,
    /// Session state, context, prompt and model call: `story.actions` to `story.beats`.
    Agent,
    /// Windows per session: `story.beats` to `story.updates`.
    Streamjob,
    /// `story.updates` to HTTP clients over Server-Sent Events.
    Gateway,
}

impl StageName {
    /// The name stamps, groups and metrics use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connector => connector::NAME,
            Self::Agent => agent::NAME,
            Self::Streamjob => streamjob::NAME,
            Self::Gateway => gateway::NAME,
        }
    }
}

/// What `tailgate stage` was asked to do.
#[derive(Debug, Clone)]
pub struct StageOptions {
    pub stage: StageName,
    /// The scenario file the stage takes its settings from.
    pub config: PathBuf,
    /// Over the scenario's `[broker] bootstrap`.
    pub bootstrap: Option<String>,
    /// The gateway's HTTP server (`/events`, `/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    /// Serve `GET /metrics` here (the gateway serves it on `listen` as well).
    pub metrics: Option<String>,
    /// The gateway's gRPC server [default: the scenario's `gateway.grpc`].
    pub grpc: Option<String>,
    /// The agent's local state store.
    pub state_dir: PathBuf,
    /// Client settings of this profile of the scenario [default: the scenario's own].
    pub profile: Option<String>,
}

fn bad(e: impl std::fmt::Display) -> RunError {
    RunError::BadInput(e.to_string())
}

/// Runs the stage until SIGINT or SIGTERM (`Ok`) or until it fails.
pub async fn serve(opts: StageOptions) -> Result<(), RunError> {
    let name = opts.stage.as_str();
    let scenario = Scenario::load(&opts.config).map_err(bad)?;
    let profiles = scenario.resolve(&opts.profile.clone().into_iter().collect::<Vec<_>>()).map_err(bad)?;
    let profile = &profiles[0];
    let bootstrap = opts.bootstrap.clone().or_else(|| scenario.broker.bootstrap.clone()).ok_or_else(|| {
        bad(format!(
            "stage {name} needs a broker: give --bootstrap HOST:PORT or [broker] bootstrap in {} \
             (`tailgate broker` serves one)",
            opts.config.display()
        ))
    })?;
    if !crate::scenario::valid_bootstrap(&bootstrap) {
        return Err(bad(format!("--bootstrap `{bootstrap}` is not host:port[,host:port...]")));
    }
    let mut kafka = stage_kafka(&base_kafka(profile), profile, name);
    kafka.check_settings().map_err(|e| bad(format!("{}: stage {name}: {e}", opts.config.display())))?;
    // Everything the stage needs from its settings is checked before the broker is asked.
    let connector = match opts.stage {
        StageName::Connector => Some((connector_source(&scenario, &opts)?, edge_cache(&scenario, &opts)?)),
        _ => None,
    };
    let agent_config = scenario.agent.config(opts.state_dir.clone(), None).map_err(bad)?;
    kafka.bootstrap = bootstrap;
    kafka.converter = scenario.connector.converter;
    wait_for_broker(&kafka, name).await?;
    create_topics(&kafka, profile).await?;
    let tracer = run::start_tracer(&scenario)?;
    kafka.spans = tracer.clone().map(|t| t as Arc<dyn probes::spans::SpanSink>);

    let cancel = CancellationToken::new();
    let counters = Arc::new(StageCounters::default());
    let metrics = Arc::new(pipeline::metrics::Metrics::new(
        crate::result::SOURCE,
        vec![(name.to_owned(), Arc::clone(&counters))],
        crate::result::SINK,
        Arc::new(AtomicU64::new(0)),
    ));
    let mut tasks: JoinSet<(&'static str, pipeline::Result<()>)> = JoinSet::new();
    if let Some(addr) = opts.metrics.as_ref().or(scenario.telemetry.metrics.as_ref()) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| failed(format!("cannot serve /metrics on {addr}: {e}; try another --metrics address")))?;
        eprintln!("stage {name}: metrics at http://{addr}/metrics");
        tasks.spawn(tagged("metrics", pipeline::metrics::serve(listener, Arc::clone(&metrics), cancel.clone())));
    }
    let (ready_tx, mut ready) = watch::channel(false);
    let mut described = format!("group {}", pipeline::topology::group_of(name));
    match opts.stage {
        StageName::Connector => {
            let ((source, what), cache_at) = connector.ok_or_else(|| bad("the connector's settings"))?;
            if let Source::Postgres { url, slot } = &source {
                // The table, publication and slot, made when missing; kept when present.
                pipeline::io::postgres::prepare(url, slot, false).await.map_err(failed)?;
            }
            let cache = EdgeCache::open(&cache_at).await.map_err(failed)?;
            let mut cfg = ConnectorConfig::new(source);
            cfg.tasks = scenario.connector.tasks;
            cfg.transforms = scenario.connector.transforms.clone();
            described = format!("source {what}, edge cache {}", cache_at.describe());
            let sink_kafka = stage_kafka(&kafka, profile, pipeline::context_sink::SINK);
            let ctx = StageContext { ready: ready_tx, cancel: cancel.clone(), ..StageContext::new(sink_kafka) };
            let sink = pipeline::context_sink::ContextSink::new(cache, Arc::new(SinkCounters::default()));
            tasks.spawn(tagged(pipeline::context_sink::SINK, runtime::run(sink, ctx)));
            tasks.spawn(tagged(
                connector::NAME,
                connector::run(kafka.clone(), cfg, Arc::clone(&counters), cancel.clone()),
            ));
        }
        StageName::Agent => {
            let cache = match &scenario.edge_cache.url {
                Some(url) => Some(EdgeCache::open(&CacheAt::parse(url)).await.map_err(failed)?),
                None => None,
            };
            let config = agent_config;
            described = format!("{described}, state in {}", opts.state_dir.display());
            let stats = Arc::new(agent::AgentStats::default());
            let watched = Arc::clone(&stats);
            let ctx = StageContext {
                kafka: kafka.clone(),
                counters: Arc::clone(&counters),
                ready: ready_tx,
                cancel: cancel.clone(),
            };
            tasks.spawn(tagged(agent::NAME, runtime::run(agent::Agent::new(config, cache, stats), ctx)));
            tasks.spawn(tagged("restores", report_restores(watched, cancel.clone())));
        }
        StageName::Streamjob => {
            let (rules_tx, rules_rx) = watch::channel(streamjob::RuleSet::default());
            tasks.spawn(tagged("rules", streamjob::follow_rules(kafka.clone(), rules_tx, cancel.clone())));
            let mut job = streamjob::StreamJob::new(scenario.streamjob.config()).with_rules(rules_rx);
            if let Some(section) = &scenario.streamjob.enrich {
                let config = section.config(&opts.state_dir.join("profiles.sqlite"));
                if config.query.is_none() {
                    pipeline::streamjob::enrich::prepare(&config.at).await.map_err(failed)?;
                }
                let enricher = pipeline::streamjob::enrich::Enricher::open(&config).await.map_err(failed)?;
                described = format!("{described}, enriching from {}", config.at.describe());
                job = job.with_enricher(enricher);
            }
            let ctx = StageContext {
                kafka: kafka.clone(),
                counters: Arc::clone(&counters),
                ready: ready_tx,
                cancel: cancel.clone(),
            };
            tasks.spawn(tagged(streamjob::NAME, runtime::run(job, ctx)));
        }
        StageName::Gateway => {
            let listener = tokio::net::TcpListener::bind(&opts.listen)
                .await
                .map_err(|e| failed(format!("cannot listen on {}: {e}; try another --listen address", opts.listen)))?;
            let addr = listener.local_addr().map_err(failed)?;
            let mut state = GatewayState::with_fanout(ready.clone(), cancel.clone(), scenario.gateway.fanout())
                .with_metrics(Arc::clone(&metrics));
            if let Some(auth) = scenario.gateway.auth() {
                state = state.with_auth(auth);
                described = format!("{described}, bearer tokens required");
            }
            described = format!("{described}, serving http://{addr}/events");
            let ctx = StageContext {
                kafka: kafka.clone(),
                counters: Arc::clone(&counters),
                ready: ready_tx,
                cancel: cancel.clone(),
            };
            tasks.spawn(tagged(gateway::NAME, runtime::run(gateway::Gateway::new(state.clone()), ctx)));
            if let Some(at) = opts.grpc.as_ref().or(scenario.gateway.grpc.as_ref()) {
                let grpc = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| failed(format!("cannot listen on {at}: {e}; try another --grpc address")))?;
                let addr = grpc.local_addr().map_err(failed)?;
                described = format!("{described} and gRPC {addr}");
                tasks
                    .spawn(tagged("gateway-grpc", pipeline::gateway::grpc::serve(grpc, state.clone(), cancel.clone())));
            }
            tasks.spawn(tagged("gateway-http", gateway::serve(listener, state, cancel.clone())));
        }
    }
    let group = match opts.stage {
        StageName::Connector => pipeline::topology::group_of(pipeline::context_sink::SINK),
        _ => pipeline::topology::group_of(name),
    };
    let lags = pipeline::metrics::follow_group_lags(
        kafka.clone(),
        vec![group],
        Arc::clone(&metrics),
        Duration::from_secs(5),
        cancel.clone(),
    );
    tasks.spawn(tagged("group-lags", lags));
    eprintln!("stage {name}: starting on {} ({described})", kafka.bootstrap);

    let started = Instant::now();
    let mut failure = None;
    let mut said_ready = false;
    let mut term = terminate_signal()?;
    loop {
        tokio::select! {
            r = ready.wait_for(|r| *r), if !said_ready => {
                if r.is_err() {
                    continue;
                }
                said_ready = true;
                eprintln!("stage {name}: ready in {:.1}s", started.elapsed().as_secs_f64());
            }
            Some(done) = tasks.join_next() => {
                failure = Some(describe_exit(done));
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    cancel.cancel();
    let stopping = async {
        while let Some(done) = tasks.join_next().await {
            if let Ok((task, Err(e))) = &done {
                failure.get_or_insert_with(|| format!("{task}: {e}"));
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), stopping).await.is_err() {
        failure.get_or_insert_with(|| format!("stage {name} did not stop within 20s"));
    }
    if let Some(t) = tracer {
        let stats = tokio::task::spawn_blocking(move || t.stop(Duration::from_secs(10))).await.unwrap_or_default();
        eprintln!(
            "stage {name}: spans exported {}, dropped {}, failed {}",
            stats.exported, stats.dropped, stats.failed
        );
    }
    let c = &counters;
    eprintln!(
        "stage {name}: stopped; forwarded {}, dead-lettered {}, filtered {}, duplicates {}",
        c.forwarded.load(Ordering::Relaxed),
        c.dead_lettered.load(Ordering::Relaxed),
        c.filtered.load(Ordering::Relaxed),
        c.duplicates.load(Ordering::Relaxed)
    );
    match failure {
        Some(why) => Err(RunError::Runtime(format!("stage {name}: {why}"))),
        None => Ok(()),
    }
}

/// Waits until the broker answers, saying so while it does not.
async fn wait_for_broker(kafka: &KafkaSettings, name: &str) -> Result<(), RunError> {
    let deadline = Instant::now() + BROKER_WAIT;
    loop {
        match kafka.check_reachable(run::CONNECT_TIMEOUT.min(Duration::from_secs(5))).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(failed(e)),
            Err(_) => {
                eprintln!("stage {name}: waiting for a broker at {}", kafka.bootstrap);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The connector's source, which the run that drives the load must write to as well.
fn connector_source(scenario: &Scenario, opts: &StageOptions) -> Result<(Source, String), RunError> {
    let c = &scenario.connector;
    match c.source {
        SourceKind::Postgres => {
            let url = c.postgres.clone().ok_or_else(|| bad("connector.postgres is missing"))?;
            let what = format!("postgres {} slot {}", pipeline::io::postgres::redact(&url), c.slot);
            Ok((Source::Postgres { url, slot: c.slot.clone() }, what))
        }
        SourceKind::Sqlite => {
            let db = c.sqlite.clone().ok_or_else(|| {
                bad(format!(
                    "{}: stage connector needs [connector] sqlite = \"PATH\" (a file the run writes as well), \
                     or source = \"postgres\"",
                    opts.config.display()
                ))
            })?;
            Ok((c.sqlite_source(&db), format!("sqlite {}", db.display())))
        }
        SourceKind::Http => Err(bad(format!(
            "{}: the http source is the gateway of an in-process run; a connector process reads sqlite or postgres",
            opts.config.display()
        ))),
    }
}

/// Where the connector's sink keeps the edge cache the agents read.
fn edge_cache(scenario: &Scenario, opts: &StageOptions) -> Result<CacheAt, RunError> {
    scenario.edge_cache.url.as_deref().map(CacheAt::parse).ok_or_else(|| {
        bad(format!(
            "{}: stage connector runs the edge-cache sink and needs [edge_cache] url (redis://HOST:PORT, or a \
             SQLite path the agents read as well)",
            opts.config.display()
        ))
    })
}

/// Prints each of the agent's state restores as it happens (start and every rebalance).
async fn report_restores(stats: Arc<agent::AgentStats>, cancel: CancellationToken) -> pipeline::Result<()> {
    let mut shown = 0;
    loop {
        let restores = stats.restores.lock().map(|r| r.clone()).unwrap_or_default();
        for r in restores.iter().skip(shown) {
            eprintln!(
                "stage agent: partitions {:?} assigned; state from the {} ({} sessions, {} changelog records) in {:.1} ms",
                r.partitions, r.from, r.sessions, r.records, r.warm_start_ms
            );
        }
        shown = restores.len();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn terminate_signal() -> Result<tokio::signal::unix::Signal, RunError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(failed)
}
