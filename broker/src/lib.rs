//! tailgate's own single-node Kafka-protocol broker: the embedded default of every run and
//! `tailgate broker`. It speaks the Kafka wire protocol (the `kafka-protocol` crate's
//! generated messages) over tokio and behaves as Apache Kafka does wherever that shapes
//! latency or correctness: a fetch parks until `fetch.min.bytes` arrive or its max wait
//! passes, woken by each produce to its partitions; offsets are found through an index;
//! retention and compaction bound what is kept; the idempotent producer's sequences are
//! checked; consumer groups follow the classic protocol's state machine.
//!
//! - [`batch`]: record batches, read and rewritten in place;
//! - [`log`]: one partition's log, retention, compaction, producer state;
//! - [`topics`]: topics and their configs; [`store`]: the optional on-disk log;
//! - [`groups`]: the group coordinator; [`server`]: connections and API handlers;
//! - [`shape`]: every request body checked against its fields before it is decoded;
//! - [`security`]: the listener's TLS and SASL (PLAIN, SCRAM);
//! - [`faults`]: stalls, dropped connections and added fetch latency, on purpose.

pub mod batch;
pub mod faults;
pub mod groups;
pub mod log;
pub mod security;
pub mod server;
pub mod shape;
pub mod store;
pub mod topics;

use crate::faults::Faults;
use crate::groups::{Committed, Coordinator};
use crate::log::Log;
use crate::store::Segment;
use crate::topics::{Defaults, Topic, TopicConfig};
use kafka_protocol::ResponseError as E;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Duration;
use uuid::Uuid;

/// What results call this broker.
pub const KIND: &str = "tailgate";
/// This broker's version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The one node's id.
pub const NODE_ID: i32 = 1;
/// The most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 10_000;

/// How a broker is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` to listen on; port 0 picks a free one.
    pub listen: String,
    /// `host:port` clients are told to connect to; the listening address when absent.
    pub advertised: Option<String>,
    /// Keep the log on disk here (and serve it again after a restart); in memory when
    /// absent.
    pub data: Option<PathBuf>,
    /// Retention and size limits for topics that do not set their own.
    pub defaults: Defaults,
    /// Partitions of a topic created without a count (Kafka's `num.partitions`).
    pub default_partitions: i32,
    /// Create a topic when a client's metadata request names one that does not exist.
    pub auto_create_topics: bool,
    /// How long an empty group waits for more members before its first generation
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay: Duration,
    /// Write log lines (closed connections, storage errors) to standard error.
    pub log_to_stderr: bool,
    /// The listener's security protocol, TLS certificate and SASL users.
    pub security: security::Security,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            advertised: None,
            data: None,
            defaults: Defaults::default(),
            default_partitions: 1,
            auto_create_topics: false,
            group_initial_rebalance_delay: Duration::ZERO,
            log_to_stderr: false,
            security: security::Security::default(),
        }
    }
}

/// Errors starting a broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("advertised address {0:?} is not host:port")]
    Advertised(String),
    #[error("data directory {path}: {source}")]
    Data { path: String, source: std::io::Error },
    #[error("a broker that keeps its log in memory cannot restart; give it a data directory")]
    NoData,
    #[error("listener security: {0}")]
    Security(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub batches_in: AtomicU64,
    pub fetches_parked: AtomicU64,
    pub malformed: AtomicU64,
    pub refused_auth: AtomicU64,
}

/// Counters since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client connections open now.
    pub connections: u64,
    pub requests: u64,
    /// Record batches appended.
    pub batches_in: u64,
    /// Fetches that found too little and waited.
    pub fetches_parked: u64,
    /// Connections closed for a malformed or unsupported request.
    pub malformed: u64,
    /// Connections closed for failing TLS or SASL, or for a request before SASL.
    pub refused_auth: u64,
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    config: Config,
    advertised_host: String,
    advertised_port: u16,
    cluster_id: String,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Coordinator,
    producers: Mutex<HashMap<i64, i16>>,
    next_producer: AtomicI64,
    offsets_log: Mutex<Option<std::fs::File>>,
    faults: Arc<Faults>,
    stats: Stats,
    guard: security::Guard,
}

impl Shared {
    fn log(&self, msg: &str) {
        if self.config.log_to_stderr {
            eprintln!("broker: {msg}");
        }
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        topics.values().find(|t| t.id == id).cloned()
    }

    fn topic_names(&self) -> Vec<String> {
        self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    fn topic_dir(&self, name: &str) -> Option<PathBuf> {
        self.config.data.as_ref().map(|d| d.join("topics").join(name))
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        set: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, (i16, String)> {
        let config = TopicConfig::parse(set, &self.config.defaults).map_err(|e| (E::InvalidConfig.code(), e))?;
        let mut topics = self.topics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if topics.contains_key(name) {
            return Err((E::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")));
        }
        let id = Uuid::from_u128(random_u128());
        let dir = self.topic_dir(name);
        let storage = |e: std::io::Error| (E::KafkaStorageError.code(), e.to_string());
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(storage)?;
            let mut meta = format!("id {id}\npartitions {partitions}\n");
            for (k, v) in &config.set {
                meta.push_str(&format!("config {k}={v}\n"));
            }
            std::fs::write(dir.join("topic.meta"), meta).map_err(storage)?;
        }
        let topic = Arc::new(Topic::create(name.to_owned(), id, partitions, config, dir.as_deref()).map_err(storage)?);
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    fn delete_topic(&self, name: &str) -> Option<Uuid> {
        let topic = self.topics.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name)?;
        self.groups.forget_topic(name);
        if let Some(dir) = self.topic_dir(name)
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            self.log(&format!("cannot remove {}: {e}", dir.display()));
        }
        Some(topic.id)
    }

    /// A producer id and epoch for InitProducerId: the same id one epoch on when the
    /// producer names its current one (KIP-360), a new id otherwise.
    fn producer_id(&self, id: i64, epoch: i16) -> (i64, i16) {
        let mut known = self.producers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if id >= 0 && known.get(&id) == Some(&epoch) && epoch < i16::MAX {
            known.insert(id, epoch + 1);
            return (id, epoch + 1);
        }
        let id = self.next_producer.fetch_add(1, Ordering::Relaxed);
        known.insert(id, 0);
        if let Some(dir) = &self.config.data
            && let Err(e) = std::fs::write(dir.join("next-producer-id"), (id + 1).to_string())
        {
            self.log(&format!("cannot record the next producer id: {e}"));
        }
        (id, 0)
    }

    /// OffsetCommit through the coordinator, written to the offsets file when on disk.
    fn commit(&self, group: &str, generation: i32, member: &str, offsets: Vec<((String, i32), Committed)>) -> i16 {
        // The lines for the offsets file, only when there is one (a data directory).
        let lines: Option<String> = self.config.data.is_some().then(|| {
            let group = hex(group.as_bytes());
            offsets.iter().map(|((t, p), c)| format!("{group}\t{t}\t{p}\t{}\t{}\n", c.offset, c.leader_epoch)).collect()
        });
        let code = self.groups.commit(group, generation, member, offsets);
        if code == 0
            && let Some(lines) = lines
        {
            let mut f = self.offsets_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(f) = f.as_mut()
                && let Err(e) = f.write_all(lines.as_bytes())
            {
                self.log(&format!("cannot record committed offsets: {e}"));
            }
        }
        code
    }

    /// Retention and compaction over every partition; run once a second.
    fn housekeeping(&self) {
        let now = now_ms();
        for t in self.all_topics() {
            let r = &t.config.retention;
            for p in &t.partitions {
                let mut log = p.lock();
                log.enforce_retention(r, now);
                if r.compact && log.wants_compaction() {
                    log.compact(now, r.delete_retention_ms);
                }
            }
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: append times and retention.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    String::from_utf8(bytes?).ok()
}

fn random_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a ^ u64::from(std::process::id()));
    (u128::from(a) << 64) | u128::from(h.finish())
}

/// A running broker; stopped (every connection closed) when dropped.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    bootstrap: String,
    /// The address bound (its port chosen when the configuration said 0).
    listening: std::net::SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Binds, restores the data directory if there is one, and starts serving.
    pub async fn start(config: Config) -> Result<Self> {
        Self::serve(config, Arc::default()).await
    }

    /// Stops as a crash would (the listening socket and every connection closed at once,
    /// nothing more written), stays down for `down`, then starts again on the same address
    /// from the data directory, with the same fault switches. A broker in memory has
    /// nothing to start again from: [`Error::NoData`].
    pub async fn restart(&mut self, down: Duration) -> Result<()> {
        if self.shared.config.data.is_none() {
            return Err(Error::NoData);
        }
        let config = Config { listen: self.listening.to_string(), ..self.shared.config.clone() };
        let faults = Arc::clone(&self.shared.faults);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        // Every connection's task lets go of the old state before the new one reads the
        // directory, so no write of the old broker lands after it.
        let gone = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && tokio::time::Instant::now() < gone {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(down).await;
        *self = Self::serve(config, faults).await?;
        Ok(())
    }

    async fn serve(config: Config, faults: Arc<Faults>) -> Result<Self> {
        let guard = security::Guard::new(&config.security).map_err(Error::Security)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen { addr: config.listen.clone(), source })?;
        let local = listener.local_addr().map_err(|source| Error::Listen { addr: config.listen.clone(), source })?;
        let advertised = config.advertised.clone().unwrap_or_else(|| local.to_string());
        let (host, port) = advertised
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Advertised(advertised.clone()))?;
        let mut shared = Shared {
            advertised_host: host,
            advertised_port: port,
            cluster_id: "tailgate-embedded".into(),
            topics: RwLock::new(HashMap::new()),
            groups: Coordinator::new(config.group_initial_rebalance_delay),
            producers: Mutex::new(HashMap::new()),
            next_producer: AtomicI64::new(1000),
            offsets_log: Mutex::new(None),
            faults,
            stats: Stats::default(),
            guard,
            config,
        };
        if let Some(dir) = shared.config.data.clone() {
            let data = |source| Error::Data { path: dir.display().to_string(), source };
            restore(&mut shared, &dir).map_err(data)?;
        }
        let shared = Arc::new(shared);
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => {
                                conns.spawn(server::connection(shared.clone(), stream));
                            }
                            Err(e) => {
                                shared.log(&format!("accept failed: {e}"));
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            })
        };
        let timers = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    shared.groups.tick(tokio::time::Instant::now());
                    n += 1;
                    if n.is_multiple_of(10) {
                        shared.housekeeping();
                    }
                }
            })
        };
        Ok(Self { shared, bootstrap: advertised, listening: local, tasks: vec![accept, timers] })
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Where the log is kept: `memory`, or the data directory.
    pub fn storage(&self) -> String {
        match &self.shared.config.data {
            None => "memory".into(),
            Some(d) => format!("disk:{}", d.display()),
        }
    }

    /// The fault switches.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.shared.faults
    }

    /// Counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        server::snapshot(&self.shared.stats)
    }

    /// Stops serving and waits until the listening socket and every connection are closed
    /// (dropping a broker stops it too, but without waiting).
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Bytes held in every partition's log.
    pub fn stored_bytes(&self) -> u64 {
        self.shared.all_topics().iter().flat_map(|t| t.partitions.iter()).map(|p| p.lock().size()).sum()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Loads topics, logs, committed offsets and the producer-id counter from `dir`.
fn restore(shared: &mut Shared, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("topics"))?;
    let cluster = dir.join("cluster.id");
    shared.cluster_id = match std::fs::read_to_string(&cluster) {
        Ok(id) => id.trim().to_owned(),
        Err(_) => {
            let id = format!("tailgate-{:016x}", random_u128() as u64);
            std::fs::write(&cluster, &id)?;
            id
        }
    };
    let mut max_pid = 999;
    let mut topics = HashMap::new();
    for entry in std::fs::read_dir(dir.join("topics"))? {
        let path = entry?.path();
        let Ok(meta) = std::fs::read_to_string(path.join("topic.meta")) else { continue };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (mut id, mut partitions, mut set) = (Uuid::nil(), 0, BTreeMap::new());
        for line in meta.lines() {
            match line.split_once(' ') {
                Some(("id", v)) => id = Uuid::parse_str(v).unwrap_or_default(),
                Some(("partitions", v)) => partitions = v.parse().unwrap_or(0),
                Some(("config", kv)) => {
                    if let Some((k, v)) = kv.split_once('=') {
                        set.insert(k.to_owned(), v.to_owned());
                    }
                }
                _ => {}
            }
        }
        let config = TopicConfig::parse(set, &shared.config.defaults).map_err(std::io::Error::other)?;
        let mut parts = Vec::new();
        for p in 0..partitions {
            let (segment, (start, batches)) = Segment::open(&path, p)?;
            max_pid = batches.iter().map(|(b, _)| b.producer_id()).fold(max_pid, i64::max);
            parts.push(Arc::new(log::Partition::new(Log::restore(Some(segment), start, batches))));
        }
        topics.insert(name.clone(), Arc::new(Topic { name, id, config, partitions: parts }));
    }
    shared.topics = RwLock::new(topics);
    let recorded = std::fs::read_to_string(dir.join("next-producer-id")).ok().and_then(|s| s.trim().parse().ok());
    shared.next_producer = AtomicI64::new(recorded.unwrap_or(0).max(max_pid + 1));
    let offsets = dir.join("offsets.log");
    if let Ok(text) = std::fs::read_to_string(&offsets) {
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if let [g, t, p, o, e] = f[..]
                && let (Some(g), Ok(p), Ok(o), Ok(e)) = (unhex(g), p.parse(), o.parse(), e.parse())
            {
                let c = Committed { offset: o, leader_epoch: e, metadata: None };
                shared.groups.commit(&g, -1, "", vec![((t.to_owned(), p), c)]);
            }
        }
    }
    *shared.offsets_log.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(std::fs::OpenOptions::new().create(true).append(true).open(offsets)?);
    Ok(())
}
