//! The agent (Faust style). `story.actions` is partitioned by session, and this instance
//! owns its partitions' sessions. Per session it keeps state (actions so far, recent
//! choices) in memory, in a local store and in a compacted changelog ([`state`]), fetches
//! the session's character and world from the edge cache, builds a prompt from state,
//! context and event, calls the model ([`model`]) and emits the beat to `story.beats`.
//!
//! - **Pools**: `concurrency` workers; a session always goes to the same worker, so its
//!   events are processed in order while different sessions proceed in parallel.
//! - **Prefetch**: after a session's event, its worker starts fetching that session's
//!   context for the next event, so the cache lookup is off the critical path.
//! - **At-least-once**: an input offset is stored only once the beat and the changelog
//!   record are acknowledged. A redelivered event (already in the state) is emitted again
//!   with the beat number it had and does not change the state; the gateway drops the
//!   duplicate by event id and counts it.
//! - **Partition moves**: a session's changelog record goes to the partition its event came
//!   from. When partitions are assigned (on start, or when another instance joins or leaves
//!   the group) the agent reads those changelog partitions before processing further, so
//!   a session that moves here continues from the state its last owner left.

pub mod config;
pub mod faust;
pub mod model;
pub mod state;

use crate::event::{Beat, StoryEvent};
use crate::io::cache::EdgeCache;
use crate::io::kafka::KafkaSettings;
use crate::runtime::{Ack, Carried, DeadLetters, Emitter, From, Out, Stage, Upstream};
use crate::{Error, Result, topics};
use model::{Model, ModelConfig};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use state::{Restored, RunSession, SessionState, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// The stage's name.
pub const NAME: &str = crate::topology::AGENT;

/// How the agent behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// How many recent choices a session's prompt recalls.
    pub history: usize,
    /// Workers processing different sessions in parallel.
    pub concurrency: usize,
    /// Fetch a session's context ahead, after its previous event.
    pub prefetch: bool,
    pub model: ModelConfig,
    /// The local state store's directory.
    pub state_dir: PathBuf,
    /// Only this run's sessions are restored (an in-process run); `None`: every run's, as a
    /// standalone `tailgate stage agent` serving one run after another does. State is
    /// keyed by run and session either way.
    pub run: Option<u64>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// One worker, prefetch on, an instant simulated model, state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>, run: Option<u64>) -> Self {
        Self {
            history: 3,
            concurrency: 1,
            prefetch: true,
            model: ModelConfig::default(),
            state_dir: state_dir.into(),
            run,
        }
    }
}

/// What the agent reports while and after it runs.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// One entry per partition assignment (the first on start): how the state was rebuilt.
    pub restores: Mutex<Vec<Restored>>,
    pub context_hits: AtomicU64,
    pub context_misses: AtomicU64,
    pub context_errors: AtomicU64,
    /// Events seen again after a restart and emitted with their earlier beat number.
    pub replays: AtomicU64,
    /// Model calls that failed (the event was dead-lettered).
    pub model_failures: AtomicU64,
    /// The Faust agent: what it runs on, and the CPU time its processes used.
    pub runtime: Mutex<Option<String>>,
    pub process_cpu_ns: AtomicU64,
}

/// The first `n` characters of `s`.
fn clip(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Builds the beat for `event` (read at input `offset`) from the session's state and
/// context, applying the event to the state unless it was applied before. Returns the beat
/// (its text is the simulated reply) and whether the state changed.
pub fn compose(
    state: &mut SessionState,
    event: &StoryEvent,
    offset: i64,
    context: Option<&str>,
    history: usize,
) -> (Beat, bool) {
    let action = clip(&event.action, 48);
    let replayed = state.replay(event.id, offset);
    let number = match replayed {
        Some(n) => n,
        None => state.actions + 1,
    };
    let story_so_far = if state.recent.is_empty() {
        "nothing yet".to_owned()
    } else {
        state.recent.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
    };
    let setting = context
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .map(|c| {
            format!(
                " The hero is {}, in {}.",
                c["character"].as_str().unwrap_or("a stranger"),
                c["world"].as_str().unwrap_or("an unknown land")
            )
        })
        .unwrap_or_default();
    let prompt = format!(
        "Session {} at beat {number}.{setting} The story so far: {story_so_far}. The player now: {action}. \
         Continue the story in one vivid sentence.",
        event.session
    );
    let text = format!("Beat {number}: the tale turns on \"{}\".", clip(action, 16));
    if replayed.is_none() {
        state.actions = number;
        state.remember(event.id, offset);
        if state.recent.len() == history {
            state.recent.pop_front();
        }
        if history > 0 {
            state.recent.push_back(clip(action, 16).to_owned());
        }
    }
    (Beat { number, prompt, text }, replayed.is_none())
}

/// One event for a worker.
struct Job {
    event: StoryEvent,
    /// The input partition, which the session's changelog record goes to.
    partition: i32,
    offset: i64,
    carried: Carried,
    ingress_ns: u64,
    done: oneshot::Sender<std::result::Result<Vec<DeliveryFuture>, String>>,
}

/// What a worker is given, in order.
// Events are the hot path and adoptions rare: boxing the event would cost an allocation per
// event to shrink a message that is moved once.
#[allow(clippy::large_enum_variant)]
enum Work {
    Event(Job),
    /// Session states read back from the changelog; adopted where ahead of the worker's.
    Adopt(Vec<(RunSession, SessionState)>),
}

/// The agent as a stage: it consumes `story.actions` and hands each event to the worker
/// that owns its session; whenever partitions are assigned, it first rebuilds their
/// sessions' state (and is ready once the first assignment's state is restored).
pub struct Agent {
    config: AgentConfig,
    cache: Option<EdgeCache>,
    stats: Arc<AgentStats>,
    /// Opened on start.
    recovery: Option<state::Recovery>,
    loaded: usize,
    senders: Vec<mpsc::Sender<Work>>,
    /// The workers; dropping the stage (an abrupt stop) stops them all at once.
    workers: JoinSet<()>,
}

impl Agent {
    /// An agent reading context from `cache` (none: every lookup misses), reporting in
    /// `stats`.
    pub fn new(config: AgentConfig, cache: Option<EdgeCache>, stats: Arc<AgentStats>) -> Self {
        Self { config, cache, stats, recovery: None, loaded: 0, senders: Vec::new(), workers: JoinSet::new() }
    }
}

impl Stage for Agent {
    const NAME: &'static str = NAME;

    fn topics(&self) -> Vec<String> {
        vec![topics::ACTIONS.into()]
    }

    async fn on_start(&mut self, out: &Out<'_>) -> Result<()> {
        let kafka = &out.ctx.kafka;
        check_co_partitioned(kafka).await?;
        let (recovery, sessions) = state::Recovery::open(&self.config.state_dir, self.config.run)?;
        self.loaded = sessions.len();
        let seed = self.config.run.unwrap_or_else(probes::now_ns);
        let model = Model::new(&self.config.model, seed).map_err(|reason| Error::Stage { stage: NAME, reason })?;
        let n = self.config.concurrency.max(1);
        let mut shards: Vec<HashMap<RunSession, SessionState>> = vec![HashMap::new(); n];
        for (key, st) in sessions {
            shards[(key.1 % n as u64) as usize].insert(key, st);
        }
        for states in shards {
            let (wtx, wrx) = mpsc::channel::<Work>(256);
            self.senders.push(wtx);
            let w = Worker {
                states,
                store: recovery.store.clone(),
                failed: None,
                emitter: out.emitter()?.clone(),
                dlq: out.dead_letters()?.clone(),
                model: model.clone(),
                cache: self.cache.clone(),
                prefetched: HashMap::new(),
                config: self.config.clone(),
                stats: Arc::clone(&self.stats),
            };
            self.workers.spawn(w.run(wrx));
        }
        self.recovery = Some(recovery);
        Ok(())
    }

    async fn on_assigned(&mut self, out: &Out<'_>, partitions: &[i32]) -> Result<()> {
        // Rebuild the assigned partitions' sessions before reading on.
        let Some(recovery) = self.recovery.as_mut() else { return Ok(()) };
        let (states, restored) = recovery.catch_up(&out.ctx.kafka, partitions.to_vec(), self.loaded).await?;
        let n = self.senders.len().max(1);
        let mut per_worker = vec![Vec::new(); n];
        for (key, st) in states {
            per_worker[(key.1 % n as u64) as usize].push((key, st));
        }
        for (w, states) in self.senders.iter().zip(per_worker) {
            if !states.is_empty() && w.send(Work::Adopt(states)).await.is_err() {
                break;
            }
        }
        if let Ok(mut r) = self.stats.restores.lock() {
            r.push(restored);
        }
        Ok(())
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, out: &mut Out<'_>) -> Result<Ack> {
        let ingress_ns = probes::now_ns();
        let (incoming, event) = match out.decode(msg) {
            Ok(d) => d,
            Err(reason) => return out.dead_letter(msg, &reason),
        };
        let (done, rx) = oneshot::channel();
        let carried = Carried::of(msg.headers(), &incoming);
        let w = &self.senders[(event.session % self.senders.len() as u64) as usize];
        let job = Job { event, partition: msg.partition(), offset: msg.offset(), carried, ingress_ns, done };
        if w.send(Work::Event(job)).await.is_err() {
            return Err(Error::Stage { stage: NAME, reason: "a worker stopped".into() });
        }
        Ok(Ack::Later(rx))
    }

    async fn on_drain(&mut self) {
        self.senders.clear();
        while self.workers.join_next().await.is_some() {}
    }

    async fn on_close(&mut self, kafka: &KafkaSettings, owned: &[i32]) -> Result<()> {
        // Everything acknowledged is in the store: the next start needs only what follows.
        match &self.recovery {
            Some(recovery) => recovery.mark_clean(kafka, owned).await,
            None => Ok(()),
        }
    }
}

/// Refuses to start unless the changelog has as many partitions as `story.actions`: a
/// session's state is kept in the changelog partition numbered as its events' partition.
async fn check_co_partitioned(kafka: &KafkaSettings) -> Result<()> {
    let input = kafka.high_watermarks(topics::ACTIONS).await?.len();
    let changelog = kafka.high_watermarks(topics::AGENT_CHANGELOG).await?.len();
    if input == changelog {
        return Ok(());
    }
    Err(Error::Stage {
        stage: NAME,
        reason: format!(
            "{} has {changelog} partitions but {} has {input}: the changelog must be co-partitioned with the \
             input (recreate it with {input} partitions)",
            topics::AGENT_CHANGELOG,
            topics::ACTIONS
        ),
    })
}

struct Worker {
    states: HashMap<RunSession, SessionState>,
    store: Store,
    /// Why the worker can no longer keep state; every later event fails with it.
    failed: Option<String>,
    /// Beats out (with the changelog records), and dead letters.
    emitter: Emitter,
    dlq: DeadLetters,
    model: Model,
    cache: Option<EdgeCache>,
    prefetched: HashMap<u64, tokio::task::JoinHandle<Result<Option<String>>>>,
    config: AgentConfig,
    stats: Arc<AgentStats>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        let mut stamps = Vec::with_capacity(512);
        while let Some(work) = rx.recv().await {
            match work {
                Work::Event(job) => {
                    let out = match &self.failed {
                        Some(reason) => Err(reason.clone()),
                        None => self.handle(&job, &mut stamps).await.map_err(|e| e.to_string()),
                    };
                    let _ = job.done.send(out);
                }
                Work::Adopt(states) => {
                    if let Err(e) = self.adopt(states) {
                        self.failed = Some(format!("cannot keep restored state: {e}"));
                    }
                }
            }
        }
    }

    /// Takes each restored state that is ahead of the one in memory.
    fn adopt(&mut self, states: Vec<(RunSession, SessionState)>) -> Result<()> {
        for ((run, session), restored) in states {
            let mine = self.states.entry((run, session)).or_default();
            if restored.actions > mine.actions {
                *mine = restored;
                self.store.put(&state::state_key(run, session), mine)?;
            }
        }
        Ok(())
    }

    /// The session's context: the prefetched answer when there is one, else a lookup now.
    async fn context(&mut self, session: u64) -> Option<String> {
        let cache = self.cache.as_ref()?;
        let got = match self.prefetched.remove(&session) {
            Some(h) => h.await.unwrap_or_else(|source| Err(Error::Task { what: "a context prefetch", source })),
            None => cache.get(session).await,
        };
        let counter = match &got {
            Ok(Some(_)) => &self.stats.context_hits,
            Ok(None) => &self.stats.context_misses,
            Err(_) => &self.stats.context_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        got.ok().flatten()
    }

    /// Dead-letters the job's event (written again in the pipeline's format; refusals here
    /// are about a readable event, so nothing of the original is lost) with its headers.
    fn dead_letter(&self, job: &Job, reason: &str) -> Result<Option<DeliveryFuture>> {
        self.dlq.send_event(&job.event, self.emitter.converter, job.carried.original(), reason)
    }

    async fn handle(&mut self, job: &Job, stamps: &mut Vec<u8>) -> Result<Vec<DeliveryFuture>> {
        let event = &job.event;
        if event.action.is_empty() {
            let reason = "the action is empty: nothing to continue the story from";
            return Ok(self.dead_letter(job, reason)?.into_iter().collect());
        }
        let context = self.context(event.session).await;
        let state = self.states.entry((event.run, event.session)).or_default();
        let (beat, changed) = compose(state, event, job.offset, context.as_deref(), self.config.history);
        let mut acks = Vec::with_capacity(2);
        if changed {
            let skey = state::state_key(event.run, event.session);
            let value = self.store.put(&skey, state)?;
            let changelog = self.emitter.names.of(topics::AGENT_CHANGELOG);
            let record =
                FutureRecord::<[u8], [u8]>::to(&changelog).partition(job.partition).key(&skey[..]).payload(&value[..]);
            acks.push(self.emitter.send(record)?);
        } else {
            self.stats.replays.fetch_add(1, Ordering::Relaxed);
        }
        let text = match self.model.call(&beat.prompt, beat.text.clone()).await {
            Ok(t) => t,
            Err(reason) => {
                self.stats.model_failures.fetch_add(1, Ordering::Relaxed);
                acks.extend(self.dead_letter(job, &reason)?);
                return Ok(acks);
            }
        };
        if self.config.prefetch
            && let Some(cache) = &self.cache
        {
            let (cache, session) = (cache.clone(), event.session);
            self.prefetched.insert(session, tokio::spawn(async move { cache.get(session).await }));
        }
        let mut out = event.clone();
        out.beat = Some(Beat { text, ..beat });
        let from = From { partition: job.partition, offset: job.offset, ingress_ns: job.ingress_ns };
        acks.extend(self.emitter.emit(&out, Upstream::Carried(&job.carried), from, topics::BEATS, stamps)?);
        Ok(acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, session: u64, action: &str) -> StoryEvent {
        StoryEvent { run: 1, id, session, action: action.into(), beat: None, window: None, enrichment: None }
    }

    #[test]
    fn prompts_recall_recent_choices_and_the_context() {
        let mut s = SessionState::default();
        assert_eq!(compose(&mut s, &event(1, 1, "open the door"), 0, None, 2).0.number, 1);
        compose(&mut s, &event(2, 1, "light a torch"), 1, None, 2);
        let ctx = r#"{"character": "a tide witch", "world": "a drowned city"}"#;
        let (b, changed) = compose(&mut s, &event(3, 1, "run"), 2, Some(ctx), 2);
        assert!(changed);
        assert_eq!(b.number, 3);
        assert!(b.prompt.contains("open the door; light a torch"), "{}", b.prompt);
        assert!(b.prompt.contains("a tide witch, in a drowned city"), "{}", b.prompt);
        let (b, _) = compose(&mut s, &event(4, 1, "jump"), 3, None, 2);
        assert!(b.prompt.contains("light a torch; run") && !b.prompt.contains("open the door"), "{}", b.prompt);
    }

    #[test]
    fn a_redelivered_event_keeps_its_beat_number_and_leaves_the_state_alone() {
        let mut s = SessionState::default();
        for id in 10..15 {
            compose(&mut s, &event(id, 1, "go"), id as i64, None, 3);
        }
        let before = s.clone();
        let (b, changed) = compose(&mut s, &event(12, 1, "go"), 12, None, 3);
        assert_eq!((b.number, changed), (3, false));
        assert_eq!(s, before);
        assert_eq!(compose(&mut s, &event(15, 1, "go"), 15, None, 3).0.number, 6);
    }

    /// After a crash, every event since the last commit is read again, however many of a
    /// session's there are: none is applied twice, so the next new one is numbered on.
    #[test]
    fn a_redelivery_longer_than_the_remembered_ids_applies_nothing_twice() {
        let mut s = SessionState::default();
        let n = state::REMEMBERED as u64 * 3;
        for i in 0..n {
            compose(&mut s, &event(100 + i, 1, "go"), i as i64, None, 3);
        }
        let before = s.clone();
        for i in 0..n {
            let (b, changed) = compose(&mut s, &event(100 + i, 1, "go"), i as i64, None, 3);
            assert!(!changed, "event {i} was applied before");
            assert!(b.number <= n);
        }
        assert_eq!(s, before);
        assert_eq!(compose(&mut s, &event(100 + n, 1, "go"), n as i64, None, 3).0.number, n + 1);
    }

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(clip("héllo wörld", 7), "héllo w");
        assert_eq!(clip("short", 48), "short");
    }
}
