//! The runtime every Kafka-consuming stage shares: one loop that consumes, tells the stage
//! of every assignment, hands it each message, and stores the input offset only once the
//! outputs it led to are acknowledged (at-least-once). A stage is a [`Stage`]: its logic
//! and lifecycle hooks, with defaults, in the spirit of Arroyo's operators. What cannot be
//! read or processed goes to the dead-letter topic with the reason; nothing is dropped
//! silently.
//!
//! [`consume`] is the consumer side, [`emit`] the producing side (one `emit` for stamp,
//! headers, produce, span and count), [`ack`] the offset store, [`dead_letters`] the
//! dead-letter topic.

pub mod ack;
pub mod consume;
pub mod dead_letters;
pub mod emit;

pub use ack::{Ack, AckError, Pending};
pub use consume::{GroupContext, StageConsumer, close_consumer, decode, next_message};
pub use dead_letters::{DeadLetterAudit, DeadLetters, audit_dead_letters};
pub use emit::{
    Carried, Emitter, From, SideRecord, StageSpan, Upstream, open_producer, outgoing_headers, send_with_retry,
};

use crate::event::StoryEvent;
use crate::io::kafka::KafkaSettings;
use crate::{Error, Result};
use probes::Incoming;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How many outputs may await acknowledgement at once.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Live counters of one stage, readable while it runs.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Events passed on to the next hop.
    pub forwarded: AtomicU64,
    /// Events sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Events a transform dropped on purpose (the connector's filters).
    pub filtered: AtomicU64,
    /// Events seen again (at-least-once redelivery) and not passed on (the gateway).
    pub duplicates: AtomicU64,
    /// Events that could be neither passed on nor dead-lettered (counted lost), and why the
    /// first could not.
    pub skipped: AtomicU64,
    pub first_skip: std::sync::OnceLock<String>,
}

impl StageCounters {
    /// Counts an event `stage` could neither pass on nor dead-letter, saying so loudly
    /// (the first, then every thousandth): the run goes on and accounts it as lost.
    pub fn skip(&self, stage: &str, reason: &str) {
        let n = self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let _ = self.first_skip.set(reason.to_owned());
        if n == 1 || n.is_multiple_of(1000) {
            eprintln!(
                "error: stage {stage} skipped an event it could neither pass on nor dead-letter ({n} so far): {reason}"
            );
        }
    }
}

/// What every stage is started with.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// Its Kafka clients' settings (with the pipeline's converter and span sink).
    pub kafka: KafkaSettings,
    pub counters: Arc<StageCounters>,
    /// Turns true once the stage has partitions and has done what a new assignment asks.
    pub ready: watch::Sender<bool>,
    pub cancel: CancellationToken,
}

impl StageContext {
    /// A context with fresh counters, a ready signal nobody watches, and its own token.
    pub fn new(kafka: KafkaSettings) -> Self {
        Self { kafka, counters: Arc::default(), ready: watch::Sender::new(false), cancel: CancellationToken::new() }
    }
}

/// What a stage's hooks may use while it runs.
#[allow(missing_debug_implementations)] // librdkafka's consumer has no Debug
pub struct Out<'a> {
    pub ctx: &'a StageContext,
    pub consumer: &'a StageConsumer,
    /// The producer side; `None` for a stage that produces nothing.
    emitter: Option<Emitter>,
    dead_letters: Option<DeadLetters>,
}

impl Out<'_> {
    /// The stage's emitter (a stage that declares `PRODUCES = false` has none).
    pub fn emitter(&self) -> Result<&Emitter> {
        self.emitter.as_ref().ok_or_else(|| Error::Config("this stage has no producer".into()))
    }

    /// The dead-letter sender, to hand to a worker.
    pub fn dead_letters(&self) -> Result<&DeadLetters> {
        self.dead_letters.as_ref().ok_or_else(|| Error::Config("this stage has no producer".into()))
    }

    /// The protocol headers and the event of `msg`, or why they cannot be read.
    pub fn decode<'m>(&self, msg: &'m BorrowedMessage<'_>) -> Result<(Incoming<'m>, StoryEvent), String> {
        decode(msg, self.ctx.kafka.converter)
    }

    /// Sends `msg` as it came to the dead-letter topic with `reason`.
    pub fn dead_letter(&self, msg: &BorrowedMessage<'_>, reason: &str) -> Result<Ack> {
        self.dead_letters()?.send(msg.key(), msg.payload(), msg.headers(), reason).map(Ack::from)
    }
}

/// A Kafka-consuming stage: its name, what it reads, and its logic. Every hook but
/// [`Stage::handle`] has a default.
pub trait Stage: Send + 'static {
    /// The stage's name in stamps, group ids and reports.
    const NAME: &'static str;
    /// Whether it opens a producer (for outputs and dead letters).
    const PRODUCES: bool = true;
    /// Whether input offsets are stored once outputs are acknowledged (a stage that only
    /// looks, such as the tap, commits nothing).
    const COMMITS: bool = true;

    /// The topics it consumes; offsets are stored on the first.
    fn topics(&self) -> Vec<String>;

    /// Its consumer's settings: by default the pipeline's, in the group `tailgate-<NAME>`.
    fn consumer_config(&self, kafka: &KafkaSettings) -> ClientConfig {
        kafka.own_consumer_config(Self::NAME)
    }

    /// Called once, before the first message: open what the stage needs (workers, state).
    fn on_start(&mut self, _out: &Out<'_>) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Called before the next message whenever the group has assigned `partitions` of the
    /// first topic (a start or a rebalance): a stateful stage rebuilds what it now owns.
    fn on_assigned(&mut self, _out: &Out<'_>, _partitions: &[i32]) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Handles one message: what its input offset waits for before it may be stored.
    fn handle(&mut self, msg: &BorrowedMessage<'_>, out: &mut Out<'_>) -> impl Future<Output = Result<Ack>> + Send;

    /// Called once the loop has ended, before the offsets are committed: finish what is in
    /// flight (workers hand back their last outputs).
    fn on_drain(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called after a clean stop, once every acknowledged offset is committed; `owned`
    /// are the partitions the stage had last.
    fn on_close(&mut self, _kafka: &KafkaSettings, _owned: &[i32]) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

/// Runs `stage` until `ctx.cancel`, or until it fails.
pub async fn run<S: Stage>(mut stage: S, ctx: StageContext) -> Result<()> {
    // The cluster's names: the run's prefix before the pipeline's.
    let topics: Vec<String> = stage.topics().iter().map(|t| ctx.kafka.names.of(t).into_owned()).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let input = names.join(",");
    let consumer: StageConsumer = stage
        .consumer_config(&ctx.kafka)
        .create_with_context(GroupContext::default())
        .map_err(|e| Error::Config(format!("{} consumer: {e}", S::NAME)))?;
    consumer.subscribe(&names).map_err(crate::kafka_err(format!("{} subscribe to {input}", S::NAME)))?;
    let consumer = Arc::new(consumer);
    let first: Arc<str> = names.first().copied().unwrap_or_default().into();
    let (emitter, dead_letters) = if S::PRODUCES {
        let producer = open_producer(&ctx.kafka, S::NAME)?;
        let dead_letters =
            DeadLetters::new(producer.clone(), S::NAME, Arc::clone(&ctx.counters), ctx.kafka.names.clone());
        let emitter = Emitter {
            stage: S::NAME,
            producer,
            converter: ctx.kafka.converter,
            spans: ctx.kafka.spans.clone(),
            counters: Arc::clone(&ctx.counters),
            dead_letters: dead_letters.clone(),
            input: Arc::clone(&first),
            group: ctx.kafka.names.of(&crate::topology::group_of(S::NAME)).into(),
            names: ctx.kafka.names.clone(),
        };
        (Some(emitter), Some(dead_letters))
    } else {
        (None, None)
    };
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let acker = ack::spawn_acker(
        Arc::clone(&consumer),
        S::NAME,
        Arc::clone(&first),
        rx,
        Arc::clone(&ctx.counters),
        ctx.cancel.clone(),
    );
    let mut out = Out { ctx: &ctx, consumer: &consumer, emitter, dead_letters };
    let result = consume_loop(&mut stage, &mut out, &first, &input, &tx).await;
    stage.on_drain().await;
    let owned = consume::assigned_partitions(&consumer, &first);
    drop(out);
    let result = ack::finish(S::NAME, consumer, tx, acker, result).await;
    if result.is_ok() {
        stage.on_close(&ctx.kafka, &owned).await?;
    }
    result
}

/// The loop: assignments first, then messages, each handed to the stage and its ack to the
/// acker.
async fn consume_loop<S: Stage>(
    stage: &mut S,
    out: &mut Out<'_>,
    first: &str,
    input: &str,
    tx: &mpsc::Sender<Pending>,
) -> Result<()> {
    stage.on_start(out).await?;
    let (consumer, cancel) = (out.consumer, out.ctx.cancel.clone());
    let mut assignments = consumer.context().assignments();
    loop {
        let msg = tokio::select! {
            biased;
            Ok(()) = assignments.changed() => {
                assigned(stage, out, first).await?;
                continue;
            }
            m = next_message(consumer, &cancel, S::NAME, input) => match m? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        if assignments.has_changed().unwrap_or(false) {
            // The assignment changed while this message was fetched.
            assignments.mark_unchanged();
            assigned(stage, out, first).await?;
        }
        let (partition, offset) = (msg.partition(), msg.offset());
        let ack = stage.handle(&msg, out).await?;
        if S::COMMITS && tx.send(Pending { partition, offset, ack }).await.is_err() {
            return Ok(()); // the acker failed; it says why
        }
    }
}

/// Tells the stage of its partitions of `first`, then says it is ready if it has any.
async fn assigned<S: Stage>(stage: &mut S, out: &Out<'_>, first: &str) -> Result<()> {
    let partitions = consume::assigned_partitions(out.consumer, first);
    stage.on_assigned(out, &partitions).await?;
    if !partitions.is_empty() {
        out.ctx.ready.send_replace(true);
    }
    Ok(())
}
