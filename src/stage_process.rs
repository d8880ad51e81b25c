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

use crate::run::{self, RunError, base_kafka, create_topics, describe_exit, failed};
use crate::scenario::{Resolved, Scenario, SourceKind};
use pipeline::assemble::{Env, Pipeline};
use pipeline::{KafkaSettings, agent, connector, gateway, streamjob};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Which agent `tailgate stage agent --kind` runs, over the scenario's `agent.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentImpl {
    /// The Rust stage, in this process.
    Rust,
    /// The Faust worker (Python), as a child of this process.
    Faust,
}

impl From<AgentImpl> for pipeline::agent::config::AgentKind {
    fn from(a: AgentImpl) -> Self {
        match a {
            AgentImpl::Rust => Self::Rust,
            AgentImpl::Faust => Self::Faust,
        }
    }
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
    /// The agent's implementation, over the scenario's (and the profile's).
    pub kind: Option<AgentImpl>,
}

fn bad(e: impl std::fmt::Display) -> RunError {
    RunError::BadInput(e.to_string())
}

/// Runs the stage until SIGINT or SIGTERM (`Ok`) or until it fails.
pub async fn serve(opts: StageOptions) -> Result<(), RunError> {
    let name = opts.stage.as_str();
    let (scenario, profile, mut kafka) = settings(&opts)?;
    wait_for_broker(&kafka, name).await?;
    create_topics(&kafka, &profile).await?;
    let tracer = run::start_tracer(&scenario)?;
    kafka.spans = tracer.clone().map(|t| t as Arc<dyn probes::spans::SpanSink>);
    let mut config = scenario.pipeline_config();
    if let Some(kind) = opts.kind.map(Into::into).or(profile.agent) {
        config.agent.kind = kind;
    }
    if opts.kind.is_some() && opts.stage != StageName::Agent {
        return Err(bad("--kind chooses the agent's implementation; it applies to `tailgate stage agent` only"));
    }
    prepare(&config, opts.stage, &opts.state_dir).await?;
    let listener = match opts.stage {
        StageName::Gateway => Some(
            tokio::net::TcpListener::bind(&opts.listen)
                .await
                .map_err(|e| failed(format!("cannot listen on {}: {e}; try another --listen address", opts.listen)))?,
        ),
        _ => None,
    };
    let env = Env {
        kafka: kafka.clone(),
        clients: profile.clients.clone(),
        dir: opts.state_dir.clone(),
        state_dir: opts.state_dir.clone(),
        run: None,
        hosts: vec![name],
        sent: Arc::default(),
        exemplars: None,
        listener,
        grpc: opts.grpc.clone(),
        players: None,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let mut pipeline = Pipeline::build(&config, env);
    if let Some(addr) = opts.metrics.as_ref().or(scenario.telemetry.metrics.as_ref()) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| failed(format!("cannot serve /metrics on {addr}: {e}; try another --metrics address")))?;
        eprintln!("stage {name}: metrics at http://{addr}/metrics");
        pipeline.spawn_task(
            "metrics",
            pipeline::metrics::serve(listener, Arc::clone(pipeline.metrics()), pipeline.cancel()),
        );
    }
    let described = pipeline.spawn(name).await.map_err(|e| failed(format!("stage {name}: {e}")))?;
    let group = match opts.stage {
        StageName::Connector => pipeline::topology::group_of(pipeline::context_sink::SINK),
        _ => pipeline::topology::group_of(name),
    };
    let metrics = Arc::clone(pipeline.metrics());
    let lags = pipeline::metrics::follow_group_lags(
        kafka.clone(),
        vec![group],
        metrics,
        Duration::from_secs(5),
        pipeline.cancel(),
    );
    pipeline.spawn_task("group-lags", lags);
    eprintln!("stage {name}: starting on {} ({described})", kafka.bootstrap);
    let failure = wait(&mut pipeline, name).await?;
    let failure = failure.or(pipeline.shutdown(Duration::from_secs(20)).await);
    if let Some(t) = tracer {
        let stats = tokio::task::spawn_blocking(move || t.stop(Duration::from_secs(10))).await.unwrap_or_default();
        eprintln!(
            "stage {name}: spans exported {}, dropped {}, failed {}",
            stats.exported, stats.dropped, stats.failed
        );
    }
    let c = pipeline.figures().stage(name);
    eprintln!(
        "stage {name}: stopped; forwarded {}, dead-lettered {}, filtered {}, duplicates {}",
        c.forwarded, c.dead_lettered, c.filtered, c.duplicates
    );
    match failure {
        Some(why) => Err(RunError::Runtime(format!("stage {name}: {why}"))),
        None => Ok(()),
    }
}

/// The scenario, the profile and the stage's client settings, all checked before the
/// broker is asked.
fn settings(opts: &StageOptions) -> Result<(Scenario, Resolved, KafkaSettings), RunError> {
    let name = opts.stage.as_str();
    let scenario = Scenario::load(&opts.config).map_err(bad)?;
    let profile = scenario.resolve(&opts.profile.clone().into_iter().collect::<Vec<_>>()).map_err(bad)?.remove(0);
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
    let mut kafka = base_kafka(&scenario, &profile);
    let own = profile.clients.for_stage(&kafka, name);
    own.check_settings().map_err(|e| bad(format!("{}: stage {name}: {e}", opts.config.display())))?;
    if opts.stage == StageName::Connector {
        check_connector(&scenario, opts)?;
    }
    scenario.agent.config(opts.state_dir.clone(), None).map_err(bad)?;
    kafka.bootstrap = bootstrap;
    // Everyone's settings; the pipeline puts the stage's own over them.
    Ok((scenario, profile, kafka))
}

/// What the stage's process makes where it is missing and keeps where it is present: the
/// connector's table, publication and slot; the enrichment's profile table.
async fn prepare(
    config: &pipeline::assemble::PipelineConfig,
    stage: StageName,
    dir: &std::path::Path,
) -> Result<(), RunError> {
    match stage {
        StageName::Connector => {
            if let (SourceKind::Postgres, Some(url)) = (config.connector.source, &config.connector.postgres) {
                pipeline::io::postgres::prepare(url, &config.connector.slot, false).await.map_err(failed)?;
            }
        }
        StageName::Streamjob => {
            if let Some(e) = config.enrich(dir).filter(|e| e.query.is_none()) {
                pipeline::streamjob::profiles::prepare(&e.at).await.map_err(failed)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Runs until SIGINT, SIGTERM or a task's end (its failure), saying when the stage is ready
/// and each of the agent's state restores as it happens.
async fn wait(pipeline: &mut Pipeline, name: &str) -> Result<Option<String>, RunError> {
    let started = Instant::now();
    let mut ready = Box::pin(pipeline.ready());
    let mut said_ready = false;
    let mut term = terminate_signal()?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut shown = 0;
    loop {
        tokio::select! {
            r = &mut ready, if !said_ready => {
                said_ready = true;
                if r {
                    eprintln!("stage {name}: ready in {:.1}s", started.elapsed().as_secs_f64());
                }
            }
            Some(done) = pipeline.next_exit() => return Ok(Some(describe_exit(done))),
            _ = tick.tick() => {
                let restores = pipeline.figures().agent.restores;
                for r in restores.iter().skip(shown) {
                    eprintln!(
                        "stage agent: partitions {:?} assigned; state from the {} ({} sessions, {} changelog records) in {:.1} ms",
                        r.partitions, r.from, r.sessions, r.records, r.warm_start_ms
                    );
                }
                shown = restores.len();
            }
            _ = tokio::signal::ctrl_c() => return Ok(None),
            _ = term.recv() => return Ok(None),
        }
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

/// What a connector process needs from the scenario: a source the run writes as well
/// (a SQLite file both name, or PostgreSQL), and the edge cache the agents read.
fn check_connector(scenario: &Scenario, opts: &StageOptions) -> Result<(), RunError> {
    let (c, file) = (&scenario.connector, opts.config.display());
    match c.source {
        SourceKind::Postgres if c.postgres.is_none() => return Err(bad("connector.postgres is missing")),
        SourceKind::Sqlite if c.sqlite.is_none() => {
            return Err(bad(format!(
                "{file}: stage connector needs [connector] sqlite = \"PATH\" (a file the run writes as well), \
                 or source = \"postgres\""
            )));
        }
        SourceKind::Http => {
            return Err(bad(format!(
                "{file}: the http source is the gateway of an in-process run; a connector process reads sqlite or \
                 postgres"
            )));
        }
        _ => {}
    }
    if scenario.edge_cache.url.is_none() {
        return Err(bad(format!(
            "{file}: stage connector runs the edge-cache sink and needs [edge_cache] url (redis://HOST:PORT, or a \
             SQLite path the agents read as well)"
        )));
    }
    Ok(())
}

fn terminate_signal() -> Result<tokio::signal::unix::Signal, RunError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(failed)
}
