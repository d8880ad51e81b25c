//! The pipeline assembles itself: [`Pipeline::build`] takes the stages' own sections
//! ([`PipelineConfig`]) and what the process gives them ([`Env`]: clients, directories,
//! listeners, which stages it hosts), and spawns, restarts, waits for, reads and stops the
//! stages. `tailgate run` hosts all four, `tailgate stage NAME` one; both go through here, so
//! they cannot drift.
//!
//! Resources (the edge cache, the enrichment database, the rules follower) are opened the
//! first time a stage needs them and kept across restarts; a restarted stage adds to the
//! same figures.

mod figures;

pub use figures::{AgentFigures, EnrichFigures, GatewayFigures, PipelineFigures, StageFigures, StreamJobFigures};

use crate::agent::config::{AgentKind, AgentSection};
use crate::agent::{Agent, AgentStats};
use crate::connector::config::{ConnectorSection, SourceKind};
use crate::connector::{self, Ingress, Source};
use crate::context_sink::{ContextSink, EdgeCacheSection, SinkCounters};
use crate::gateway::config::GatewaySection;
use crate::gateway::{Gateway, GatewayState};
use crate::io::cache::EdgeCache;
use crate::io::clients::ClientSettings;
use crate::io::kafka::KafkaSettings;
use crate::metrics::Metrics;
use crate::runtime::{self, StageContext, StageCounters};
use crate::streamjob::config::StreamJobSection;
use crate::streamjob::enrich::{EnrichConfig, Enricher};
use crate::streamjob::{RuleSet, StreamJob, StreamJobStats};
use crate::topology::{AGENT, CONNECTOR, CONTEXT_SINK, GATEWAY, STAGES, STREAMJOB};
use crate::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// The stages' own sections of a scenario.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    pub connector: ConnectorSection,
    pub agent: AgentSection,
    pub edge_cache: EdgeCacheSection,
    pub streamjob: StreamJobSection,
    pub gateway: GatewaySection,
}

impl PipelineConfig {
    /// The SQLite source file: the section's, or `source.sqlite` in `dir`.
    pub fn source_file(&self, dir: &Path) -> PathBuf {
        self.connector.sqlite.clone().unwrap_or_else(|| dir.join("source.sqlite"))
    }

    /// The enrichment settings, when the stream job enriches: the database at the section's
    /// URL, or `profiles.sqlite` in `dir`.
    pub fn enrich(&self, dir: &Path) -> Option<EnrichConfig> {
        self.streamjob.enrich.as_ref().map(|e| e.config(&dir.join("profiles.sqlite")))
    }

    /// Where the edge cache is: the section's URL, or `edge-cache.sqlite` in `dir`.
    pub fn edge_cache_at(&self, dir: &Path) -> crate::io::cache::CacheAt {
        self.edge_cache.at(&dir.join("edge-cache.sqlite"))
    }
}

/// What the process gives the pipeline.
#[derive(Debug)]
pub struct Env {
    /// Every stage's client settings (with the converter and the span sink).
    pub kafka: KafkaSettings,
    /// Per-stage client settings over `kafka`'s.
    pub clients: ClientSettings,
    /// Where default files live (the SQLite source, the edge cache, the profiles).
    pub dir: PathBuf,
    /// The agent's local store.
    pub state_dir: PathBuf,
    /// Only this run's sessions are restored (a run's own agent); `None`: every run's.
    pub run: Option<u64>,
    /// The stages this process runs (or, for stages in processes of their own, shows the
    /// figures of: see [`Pipeline::mirror`]), in path order; `/metrics` covers them.
    pub hosts: Vec<&'static str>,
    /// The run's live count of events sent, for `/metrics`.
    pub sent: Arc<AtomicU64>,
    /// Exemplars for the deliveries at least this slow (and sampled ones), when traces go
    /// to a collector.
    pub exemplars: Option<u64>,
    /// The gateway's HTTP listener, when it hosts the gateway.
    pub listener: Option<TcpListener>,
    /// The gateway's gRPC address, over `[gateway] grpc`.
    pub grpc: Option<String>,
    /// The bearer token of the players whose actions (HTTP source) keep their own run, id
    /// and event time; everyone else's get them from the gateway.
    pub players: Option<String>,
    pub cancel: CancellationToken,
}

/// How [`Pipeline::stop_and_start`] stops a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its task aborted: nothing drained, nothing committed (a crash, or SIGKILL).
    Kill,
    /// Cancelled: it drains, commits what it acknowledged, leaves its group and closes.
    InOrder,
}

/// A task that ended: its name and how.
pub type Exit = std::result::Result<(&'static str, Result<()>), JoinError>;

/// A pipeline's stages, running or ready to.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    env: Env,
    counters: HashMap<&'static str, Arc<StageCounters>>,
    ready: HashMap<&'static str, watch::Sender<bool>>,
    metrics: Arc<Metrics>,
    gateway: GatewayState,
    ingress: Option<mpsc::Receiver<Ingress>>,
    grpc_addr: Option<std::net::SocketAddr>,
    tasks: JoinSet<(&'static str, Result<()>)>,
    /// The task of each restartable stage with its own stop token, the tasks stopped to be
    /// started again (and how long each stays down), and the waits of those that stay down.
    running: HashMap<&'static str, (AbortHandle, CancellationToken)>,
    restarting: HashMap<Id, (&'static str, std::time::Duration)>,
    down: HashMap<Id, &'static str>,
    sink_counters: Arc<SinkCounters>,
    agent_stats: Arc<AgentStats>,
    job_stats: Arc<StreamJobStats>,
    /// The stages spawned here so far.
    spawned: std::collections::HashSet<&'static str>,
    cache: Option<EdgeCache>,
    enrich: Option<(EnrichConfig, Enricher)>,
    rules: Option<watch::Receiver<RuleSet>>,
}

impl Pipeline {
    /// Gets the stages of `env.hosts` ready to spawn; opens nothing yet.
    pub fn build(config: &PipelineConfig, env: Env) -> Self {
        let counters: HashMap<_, _> = STAGES.iter().map(|s| (*s, Arc::<StageCounters>::default())).collect();
        let ready: HashMap<_, _> =
            [CONTEXT_SINK, AGENT, STREAMJOB, GATEWAY].into_iter().map(|s| (s, watch::Sender::new(false))).collect();
        let hosted =
            STAGES.iter().filter(|s| env.hosts.contains(s)).map(|s| ((*s).to_owned(), Arc::clone(&counters[s])));
        let mut metrics =
            Metrics::new(probes::hops::SOURCE, hosted.collect(), probes::hops::SINK, Arc::clone(&env.sent));
        if let Some(breach_ns) = env.exemplars {
            metrics = metrics.with_exemplars(breach_ns);
        }
        let metrics = Arc::new(metrics);
        let mut gateway =
            GatewayState::with_fanout(ready[GATEWAY].subscribe(), env.cancel.clone(), config.gateway.fanout())
                .with_metrics(Arc::clone(&metrics));
        if let Some(auth) = config.gateway.auth() {
            gateway = gateway.with_auth(auth);
        }
        let mut ingress = None;
        if config.connector.source == SourceKind::Http && env.hosts.contains(&GATEWAY) {
            let (tx, rx) = mpsc::channel(config.connector.http_in_flight);
            gateway = gateway.with_ingress(tx);
            if let Some(token) = &env.players {
                gateway = gateway.with_trusted(token.as_str());
            }
            ingress = Some(rx);
        }
        Self {
            config: config.clone(),
            env,
            counters,
            ready,
            metrics,
            gateway,
            ingress,
            grpc_addr: None,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            restarting: HashMap::new(),
            down: HashMap::new(),
            sink_counters: Arc::default(),
            agent_stats: Arc::default(),
            job_stats: Arc::default(),
            spawned: std::collections::HashSet::new(),
            cache: None,
            enrich: None,
            rules: None,
        }
    }

    /// The metrics every hosted stage counts into, for `/metrics` and OTLP.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The gateway's state (its clients, its fan-out).
    pub fn gateway(&self) -> &GatewayState {
        &self.gateway
    }

    /// The token that stops every stage and task of the pipeline.
    pub fn cancel(&self) -> CancellationToken {
        self.env.cancel.clone()
    }

    /// Where the gateway serves gRPC, once spawned with it.
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.grpc_addr
    }

    /// Spawns every stage this process hosts; says what each started.
    pub async fn spawn_all(&mut self) -> Result<Vec<String>> {
        let mut started = Vec::new();
        for stage in self.env.hosts.clone() {
            started.push(self.spawn(stage).await?);
        }
        Ok(started)
    }

    /// Spawns `stage` (the connector with the edge-cache sink beside it), opening what it
    /// needs; says what it started.
    pub async fn spawn(&mut self, stage: &'static str) -> Result<String> {
        self.spawned.insert(stage);
        match stage {
            CONNECTOR => {
                let cache = self.edge_cache().await?;
                let source = self.source()?;
                let what = format!(
                    "source {}, edge cache {}",
                    source.describe(),
                    self.config.edge_cache_at(&self.env.dir).describe()
                );
                let ctx = self.context(CONTEXT_SINK);
                let sink = ContextSink::new(cache, Arc::clone(&self.sink_counters));
                self.tasks.spawn(tagged(CONTEXT_SINK, runtime::run(sink, ctx)));
                let (kafka, counters) = (self.kafka_for(CONNECTOR), Arc::clone(&self.counters[CONNECTOR]));
                let cfg = self.config.connector.config(source);
                self.tasks.spawn(tagged(CONNECTOR, connector::run(kafka, cfg, counters, self.env.cancel.clone())));
                Ok(what)
            }
            AGENT if self.config.agent.kind == AgentKind::Faust => {
                let runs_on =
                    crate::agent::faust::check(&crate::agent::faust::python(self.config.agent.python.as_deref()))
                        .await?;
                self.start(AGENT)?;
                Ok(format!(
                    "Faust worker ({runs_on}), group {}, table changelog {}",
                    self.env.kafka.names.of(&crate::topology::group_of(AGENT)),
                    self.env.kafka.names.of(crate::topics::AGENT_CHANGELOG)
                ))
            }
            AGENT => {
                self.cache = Some(self.edge_cache().await?);
                self.start(AGENT)?;
                Ok(format!("group {}, state in {}", crate::topology::group_of(AGENT), self.env.state_dir.display()))
            }
            STREAMJOB => {
                if let (None, Some(config)) = (&self.enrich, self.config.enrich(&self.env.dir)) {
                    let enricher = Enricher::open(&config).await?;
                    self.enrich = Some((config, enricher));
                }
                if self.rules.is_none() {
                    let (tx, rx) = watch::channel(RuleSet::default());
                    let follow = crate::streamjob::follow_rules(self.env.kafka.clone(), tx, self.env.cancel.clone());
                    self.tasks.spawn(tagged("rules", follow));
                    self.rules = Some(rx);
                }
                self.start(STREAMJOB)?;
                let mut what = format!("group {}", crate::topology::group_of(STREAMJOB));
                if let Some((config, _)) = &self.enrich {
                    what = format!("{what}, enriching from {}", config.at.describe());
                }
                Ok(what)
            }
            GATEWAY => self.spawn_gateway().await,
            other => Err(Error::Config(format!("no stage `{other}`; stages are {}", STAGES.join(", ")))),
        }
    }

    async fn spawn_gateway(&mut self) -> Result<String> {
        let mut what = format!("group {}", crate::topology::group_of(GATEWAY));
        let ctx = self.context(GATEWAY);
        self.tasks.spawn(tagged(GATEWAY, runtime::run(Gateway::new(self.gateway.clone()), ctx)));
        if let Some(at) = self.env.grpc.clone().or_else(|| self.config.gateway.grpc.clone()) {
            let grpc = TcpListener::bind(&at)
                .await
                .map_err(|e| Error::Config(format!("cannot serve gRPC on {at} (gateway.grpc): {e}")))?;
            let addr = grpc.local_addr()?;
            self.grpc_addr = Some(addr);
            what = format!("{what}, gRPC {addr}");
            let serve = crate::gateway::grpc::serve(grpc, self.gateway.clone(), self.env.cancel.clone());
            self.tasks.spawn(tagged("gateway-grpc", serve));
        }
        if let Some(listener) = self.env.listener.take() {
            what = format!("{what}, serving http://{}/events", listener.local_addr()?);
            let serve = crate::gateway::serve(listener, self.gateway.clone(), self.env.cancel.clone());
            self.tasks.spawn(tagged("gateway-http", serve));
        }
        Ok(what)
    }

    /// Starts the agent or the stream job on what is already open.
    fn start(&mut self, stage: &'static str) -> Result<()> {
        let mut ctx = self.context(stage);
        // Its own token, so that it can be stopped in order on its own.
        let stop = ctx.cancel.child_token();
        ctx.cancel = stop.clone();
        let handle = match stage {
            AGENT if self.config.agent.kind == AgentKind::Faust => {
                let at = match self.config.edge_cache_at(&self.env.dir) {
                    crate::io::cache::CacheAt::Sqlite(p) => p.display().to_string(),
                    crate::io::cache::CacheAt::Redis(url) => url,
                };
                let config =
                    self.config.agent.faust(self.env.state_dir.clone(), self.env.run, at).map_err(Error::Config)?;
                let run = crate::agent::faust::run(config, ctx, Arc::clone(&self.agent_stats));
                self.tasks.spawn(tagged(AGENT, run))
            }
            AGENT => {
                let config =
                    self.config.agent.config(self.env.state_dir.clone(), self.env.run).map_err(Error::Config)?;
                let agent = Agent::new(config, self.cache.clone(), Arc::clone(&self.agent_stats));
                self.tasks.spawn(tagged(AGENT, runtime::run(agent, ctx)))
            }
            _ => {
                let mut job = StreamJob::new(self.config.streamjob.config());
                if let Some(rules) = &self.rules {
                    job = job.with_rules(rules.clone());
                }
                if let Some((_, e)) = &self.enrich {
                    job = job.with_enricher(e.clone());
                }
                job.stats = Arc::clone(&self.job_stats);
                self.tasks.spawn(tagged(STREAMJOB, runtime::run(job, ctx)))
            }
        };
        self.running.insert(stage, (handle, stop));
        Ok(())
    }

    /// Stops the agent or the stream job abruptly; it starts again once its task has
    /// ended (see [`Self::next_exit`]).
    pub fn restart(&mut self, stage: &'static str) -> Result<()> {
        self.stop_and_start(stage, Stop::Kill, std::time::Duration::ZERO)
    }

    /// Stops the agent or the stream job as `how` says; it starts again `down` after its
    /// task has ended (see [`Self::next_exit`]).
    pub fn stop_and_start(&mut self, stage: &'static str, how: Stop, down: std::time::Duration) -> Result<()> {
        let (handle, stop) =
            self.running.get(stage).ok_or_else(|| Error::Config(format!("`{stage}` cannot be restarted here")))?;
        match how {
            Stop::Kill => handle.abort(),
            Stop::InOrder => stop.cancel(),
        }
        self.restarting.insert(handle.id(), (stage, down));
        Ok(())
    }

    /// Runs `task` beside the stages until shutdown; its end is reported like theirs.
    pub fn spawn_task(&mut self, name: &'static str, task: impl Future<Output = Result<()>> + Send + 'static) {
        self.tasks.spawn(tagged(name, task));
    }

    /// The next task to end on its own (a stage restarted by [`Self::restart`] is started
    /// again instead); `None` when none is running. Cancel-safe.
    pub async fn next_exit(&mut self) -> Option<Exit> {
        loop {
            let done = self.tasks.join_next_with_id().await?;
            let id = match &done {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let stopped = self.restarting.remove(&id);
            if let Some((stage, down)) = stopped.filter(|(_, down)| !down.is_zero()) {
                // It stays down a while first.
                self.ready[stage].send_replace(false);
                let cancel = self.env.cancel.clone();
                let wait = self.tasks.spawn(tagged(stage, async move {
                    tokio::select! {
                        () = tokio::time::sleep(down) => {}
                        () = cancel.cancelled() => {}
                    }
                    Ok(())
                }));
                self.down.insert(wait.id(), stage);
                continue;
            }
            if let Some(stage) = stopped.map(|(s, _)| s).or_else(|| self.down.remove(&id)) {
                self.ready[stage].send_replace(false);
                if let Err(e) = self.start(stage) {
                    return Some(Ok((stage, Err(e))));
                }
                continue;
            }
            return Some(done.map(|(_, r)| r));
        }
    }

    /// Resolves once every hosted stage that consumes has its partitions (false if one
    /// stopped first).
    pub fn ready(&self) -> impl Future<Output = bool> + Send + 'static {
        let mut hosted: Vec<watch::Receiver<bool>> = Vec::new();
        for stage in &self.env.hosts {
            let name = if *stage == CONNECTOR { CONTEXT_SINK } else { stage };
            hosted.push(self.ready[name].subscribe());
        }
        async move {
            for mut r in hosted {
                if r.wait_for(|r| *r).await.is_err() {
                    return false;
                }
            }
            true
        }
    }

    /// Every stage's figures now.
    pub fn figures(&self) -> PipelineFigures {
        let mut f = PipelineFigures {
            stages: STAGES.iter().map(|s| (*s, StageFigures::of(&self.counters[s]))).collect(),
            agent: AgentFigures::of(&self.agent_stats),
            streamjob: self
                .spawned
                .contains(STREAMJOB)
                .then(|| StreamJobFigures::of(&self.job_stats, self.enrich.as_ref())),
            gateway: self.spawned.contains(GATEWAY).then(|| GatewayFigures::of(&self.gateway)),
            ..Default::default()
        };
        f.sink(&self.sink_counters);
        f
    }

    /// Where stage figures from elsewhere (stages in processes of their own, read from
    /// their `/metrics`) are put, so that this process's figures and `/metrics` show them.
    pub fn mirror(&self) -> impl Fn(&[(&str, StageFigures)]) + Send + Sync + 'static {
        let counters = self.counters.clone();
        move |stages| {
            for (stage, f) in stages {
                if let Some(c) = counters.get(stage) {
                    f.store(c);
                }
            }
        }
    }

    /// Stops every task (in-flight events finished, offsets committed) within `timeout`;
    /// the first failure, if any.
    pub async fn shutdown(&mut self, timeout: std::time::Duration) -> Option<String> {
        self.env.cancel.cancel();
        let mut failure = None;
        let stopping = async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((name, Err(e))) = &done {
                    failure.get_or_insert_with(|| format!("{name}: {e}"));
                }
            }
        };
        if tokio::time::timeout(timeout, stopping).await.is_err() {
            failure.get_or_insert_with(|| format!("the stages did not stop within {timeout:?}"));
        }
        failure
    }

    fn kafka_for(&self, stage: &str) -> KafkaSettings {
        self.env.clients.for_stage(&self.env.kafka, stage)
    }

    fn context(&self, stage: &'static str) -> StageContext {
        let counters = self.counters.get(stage).cloned().unwrap_or_default();
        let ready = self.ready.get(stage).cloned().unwrap_or_else(|| watch::Sender::new(false));
        StageContext { kafka: self.kafka_for(stage), counters, ready, cancel: self.env.cancel.clone() }
    }

    async fn edge_cache(&mut self) -> Result<EdgeCache> {
        if let Some(c) = &self.cache {
            return Ok(c.clone());
        }
        let cache = EdgeCache::open(&self.config.edge_cache_at(&self.env.dir)).await?;
        self.cache = Some(cache.clone());
        Ok(cache)
    }

    fn source(&mut self) -> Result<Source> {
        let c = &self.config.connector;
        match (c.source, &c.postgres) {
            (SourceKind::Postgres, Some(url)) => Ok(Source::Postgres { url: url.clone(), slot: c.slot.clone() }),
            (SourceKind::Postgres, None) => Err(Error::Config("connector.postgres is missing".into())),
            (SourceKind::Http, _) => self.ingress.take().map(Source::Http).ok_or_else(|| {
                Error::Config("the http source is the gateway of an in-process run; host the gateway too".into())
            }),
            (SourceKind::Sqlite, _) => Ok(c.sqlite_source(self.config.source_file(&self.env.dir))),
        }
    }
}

async fn tagged(name: &'static str, f: impl Future<Output = Result<()>>) -> (&'static str, Result<()>) {
    (name, f.await)
}
