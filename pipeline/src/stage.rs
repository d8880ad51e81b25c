//! The runtime every Kafka-consuming stage shares: consume, read the protocol headers,
//! process, stamp, produce, and store the input offset only once the output is
//! acknowledged (at-least-once). What cannot be read or processed goes to the dead-letter
//! topic with the reason in a header; nothing is dropped silently.

use crate::convert::Converter;
use crate::enrich::ResultOrder;
use crate::event::StoryEvent;
use crate::io::kafka::KafkaSettings;
use crate::{Error, Result, kafka_err, topics};
use probes::headers::{DLQ_REASON, DLQ_STAGE, INTENDED, STAMPS, TRACEPARENT};
use probes::spans::{Consumed, SpanRecord, Spans};
use probes::{Incoming, Stamp};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// What a stage knows about the event it is processing besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The load generator's intended send time (the event time), epoch ns.
    pub intended_ns: u64,
    /// When this stage received the event, epoch ns.
    pub ingress_ns: u64,
    /// Where it came from in the input topic.
    pub partition: i32,
    pub offset: i64,
}

/// A record a stage writes beside its main output (Flink's side outputs): produced with
/// the event's output and acknowledged before its input offset is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideRecord {
    pub topic: &'static str,
    pub key: Vec<u8>,
    /// Empty: a tombstone.
    pub value: Vec<u8>,
    /// The partition to write to; `None`: the key's (the producer's partitioner).
    pub partition: Option<i32>,
}

/// A stage's business logic: transform the event in place (adding side records to `side`),
/// or refuse it with a reason (which dead-letters it).
pub trait Processor: Send + 'static {
    /// The stage's name in stamps, group ids and reports.
    const NAME: &'static str;

    /// Processes one event.
    fn process(
        &mut self,
        event: &mut StoryEvent,
        meta: &Meta,
        side: &mut Vec<SideRecord>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// An asynchronous lookup to make after [`Self::process`] (the stream job's
    /// enrichment): when given, the runtime keeps several events in flight and produces
    /// each once its lookup is done. None by default.
    fn enricher(&self) -> Option<crate::enrich::Enricher> {
        None
    }

    /// Called before the first event after the group assigned `partitions` of the input
    /// (a start or a rebalance): a stateful processor rebuilds what it now owns.
    fn assigned(
        &mut self,
        _kafka: &KafkaSettings,
        _partitions: &[i32],
    ) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

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
}

/// Consumer context that reports when the group has assigned partitions, and counts
/// assignments for a stage that must act on each (the agent restores state).
#[derive(Debug)]
pub struct ReadyContext {
    ready: watch::Sender<bool>,
    assignments: watch::Sender<u64>,
}

impl ReadyContext {
    /// A context that sets `ready` once partitions are assigned.
    pub fn new(ready: watch::Sender<bool>) -> Self {
        Self { ready, assignments: watch::Sender::new(0) }
    }

    /// Changes on every assignment (a rebalance has completed; the consumer's assignment
    /// may differ). Assignments happen while the consumer is polled.
    pub fn assignments(&self) -> watch::Receiver<u64> {
        self.assignments.subscribe()
    }
}

impl ClientContext for ReadyContext {}

impl ConsumerContext for ReadyContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assignments.send_modify(|n| *n += 1);
            if tpl.count() > 0 {
                self.ready.send_replace(true);
            }
        }
    }
}

/// A consumer of a stage's input topic.
pub type StageConsumer = StreamConsumer<ReadyContext>;

/// Opens the consumer for `stage` on `input` in the group `tailgate-<stage>`; `ready` turns
/// true once partitions are assigned.
pub fn open_consumer(
    kafka: &KafkaSettings,
    stage: &'static str,
    input: &str,
    ready: watch::Sender<bool>,
) -> Result<Arc<StageConsumer>> {
    let consumer: StageConsumer = kafka
        .own_consumer_config(stage)
        .create_with_context(ReadyContext::new(ready))
        .map_err(|e| Error::Config(format!("{stage} consumer: {e}")))?;
    consumer.subscribe(&[input]).map_err(kafka_err(format!("{stage} subscribe to {input}")))?;
    Ok(Arc::new(consumer))
}

/// Opens a producer for `stage`.
pub fn open_producer(kafka: &KafkaSettings, stage: &str) -> Result<FutureProducer> {
    kafka.producer_config(stage).create().map_err(|e| Error::Config(format!("{stage} producer: {e}")))
}

/// Commits what was stored and drops the consumer off the async runtime, giving up after
/// a few seconds (a consumer's close can hang on a broker that went away).
pub async fn close_consumer(consumer: Arc<StageConsumer>) {
    let closing = tokio::task::spawn_blocking(move || {
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        drop(consumer);
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
}

/// Reads the protocol headers and the event from a message, or says why it cannot.
pub fn decode<'m>(msg: &'m BorrowedMessage<'_>, converter: Converter) -> Result<(Incoming<'m>, StoryEvent), String> {
    let incoming = match msg.headers() {
        Some(h) => Incoming::from_headers(h.iter().map(|h| (h.key, h.value))),
        None => Incoming::from_headers(std::iter::empty()),
    }
    .map_err(|e| e.to_string())?;
    let payload = msg.payload().ok_or("the message has no value")?;
    let event = converter.decode(payload)?;
    Ok((incoming, event))
}

/// This stage's span for one event: a child of the incoming trace context, named in the
/// outgoing `traceparent` and recorded (sampled traces only) once the output is sent.
#[derive(Debug, Clone, Copy)]
pub struct StageSpan<'a> {
    pub stage: &'static str,
    pub parent: probes::TraceContext,
    pub span: probes::TraceContext,
    /// The message it came in, when from Kafka.
    pub consumed: Option<Consumed<'a>>,
    /// The topic the output goes to, if any.
    pub output: Option<&'a str>,
}

impl<'a> StageSpan<'a> {
    /// A new span under `parent`.
    pub fn new(
        stage: &'static str,
        parent: probes::TraceContext,
        consumed: Option<Consumed<'a>>,
        output: Option<&'a str>,
    ) -> Self {
        Self { stage, parent, span: parent.child(), consumed, output }
    }

    /// Records the span for `event_id`, processed from the stamp's ingress to its egress.
    pub fn record(&self, spans: &Spans, event_id: u64, stamp: &Stamp<'_>) {
        probes::spans::record(spans, &self.span, || {
            SpanRecord::stage(
                self.stage,
                &self.parent,
                &self.span,
                (stamp.ingress_ns, stamp.egress_ns),
                self.consumed,
                self.output,
                event_id,
            )
        });
    }
}

/// Builds the outgoing headers: `span` (a child in the same trace) as the `traceparent`,
/// the intended time passed on, the stamps with this stage's appended, and any foreign
/// headers of the incoming message forwarded.
pub fn outgoing_headers<H: Headers>(
    msg_headers: Option<&H>,
    incoming: &Incoming<'_>,
    span: &probes::TraceContext,
    stamp: Stamp<'_>,
    stamps_buf: &mut Vec<u8>,
) -> OwnedHeaders {
    stamp.append_to(incoming.stamps, stamps_buf);
    let child = span.encode();
    let mut intended = Vec::with_capacity(20);
    probes::headers::push_u64(&mut intended, incoming.intended_ns);
    let mut out = OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: TRACEPARENT, value: Some(&child[..]) })
        .insert(Header { key: INTENDED, value: Some(&intended[..]) })
        .insert(Header { key: STAMPS, value: Some(&stamps_buf[..]) });
    for h in msg_headers.into_iter().flat_map(|h| h.iter()) {
        if ![TRACEPARENT, INTENDED, STAMPS].contains(&h.key) {
            out = out.insert(h);
        }
    }
    out
}

/// A message's headers, owned, with the protocol ones already read: for a worker that
/// produces the output later and elsewhere.
#[derive(Debug, Clone)]
pub struct Carried {
    trace: probes::TraceContext,
    intended_ns: u64,
    stamps: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

impl Carried {
    pub fn of(msg_headers: Option<&rdkafka::message::BorrowedHeaders>, incoming: &Incoming<'_>) -> Self {
        Self {
            trace: incoming.trace,
            intended_ns: incoming.intended_ns,
            stamps: incoming.stamps.to_vec(),
            headers: msg_headers.map(|h| h.detach()),
        }
    }

    /// The incoming trace context.
    pub fn trace(&self) -> probes::TraceContext {
        self.trace
    }

    /// The outgoing headers naming `span` with `stamp` appended, as [`outgoing_headers`]
    /// builds them.
    pub fn headers(&self, span: &probes::TraceContext, stamp: Stamp<'_>, stamps_buf: &mut Vec<u8>) -> OwnedHeaders {
        let incoming = Incoming { trace: self.trace, intended_ns: self.intended_ns, stamps: &self.stamps };
        outgoing_headers(self.headers.as_ref(), &incoming, span, stamp, stamps_buf)
    }

    /// The headers as they came, for a dead letter.
    pub fn original(&self) -> OwnedHeaders {
        self.headers.clone().unwrap_or_else(|| OwnedHeaders::new_with_capacity(2))
    }
}

/// Sends messages that cannot be processed to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    stage: &'static str,
    counters: Arc<StageCounters>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("stage", &self.stage).finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, stage: &'static str, counters: Arc<StageCounters>) -> Self {
        Self { producer, stage, counters }
    }

    /// Sends the message as it came (key, value, headers) plus the reason and this stage.
    pub fn send(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<&rdkafka::message::BorrowedHeaders>,
        reason: &str,
    ) -> Result<DeliveryFuture> {
        let h = headers.map_or_else(|| OwnedHeaders::new_with_capacity(2), |h| h.detach());
        self.send_owned(key, value, h, reason)
    }

    /// [`Self::send`] with headers already owned.
    pub fn send_owned(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        mut h: OwnedHeaders,
        reason: &str,
    ) -> Result<DeliveryFuture> {
        h = h
            .insert(Header { key: DLQ_REASON, value: Some(reason) })
            .insert(Header { key: DLQ_STAGE, value: Some(self.stage) });
        let mut record = FutureRecord::<[u8], [u8]>::to(topics::DLQ).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let fut = send_with_retry(&self.producer, record, self.stage)?;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(fut)
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full.
pub fn send_with_retry<'a>(
    producer: &FutureProducer,
    mut record: FutureRecord<'a, [u8], [u8]>,
    stage: &'static str,
) -> Result<DeliveryFuture> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    for _ in 0..10_000 {
        match producer.send_result(record) {
            Ok(fut) => return Ok(fut),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(Error::Stage { stage, reason: format!("cannot produce: {e}") }),
        }
    }
    Err(Error::Stage { stage, reason: "producer queue full for 10s".into() })
}

/// What an input offset waits for before it may be stored.
pub enum Ack {
    /// Nothing: the input produced no output.
    Nothing,
    /// One output's delivery.
    Delivery(DeliveryFuture),
    /// Several outputs' deliveries (an event and its side records).
    All(Vec<DeliveryFuture>),
    /// Outputs a worker will produce: every delivery it hands back, or its reason for failing.
    Later(oneshot::Receiver<Result<Vec<DeliveryFuture>, String>>),
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Nothing => "Nothing",
            Self::Delivery(_) => "Delivery",
            Self::All(_) => "All",
            Self::Later(_) => "Later",
        })
    }
}

impl From<Option<DeliveryFuture>> for Ack {
    fn from(f: Option<DeliveryFuture>) -> Self {
        f.map_or(Self::Nothing, Self::Delivery)
    }
}

/// Why an [`Ack`] did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// An output was refused (or its producer dropped): the stage has failed.
    Refused(String),
    /// The worker or the producer went away without answering: the stage is being torn
    /// down, and the input will be read again by whoever owns it next. Not a failure of
    /// the outputs.
    Abandoned,
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(reason) => f.write_str(reason),
            Self::Abandoned => f.write_str("the worker stopped before producing"),
        }
    }
}

impl Ack {
    /// Waits for every output.
    pub async fn wait(self) -> Result<(), AckError> {
        async fn delivered(f: DeliveryFuture) -> Result<(), AckError> {
            match f.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(AckError::Refused(e.to_string())),
                // The producer went away with its stage (an abrupt stop): not a refusal.
                Err(_) => Err(AckError::Abandoned),
            }
        }
        match self {
            Self::Nothing => Ok(()),
            Self::Delivery(f) => delivered(f).await,
            Self::All(fs) => {
                for f in fs {
                    delivered(f).await?;
                }
                Ok(())
            }
            Self::Later(rx) => {
                for f in rx.await.map_err(|_| AckError::Abandoned)?.map_err(AckError::Refused)? {
                    delivered(f).await?;
                }
                Ok(())
            }
        }
    }
}

/// An input offset waiting for its outputs to be acknowledged.
pub struct Pending {
    pub partition: i32,
    pub offset: i64,
    pub ack: Ack,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Stores offsets in consumption order, each only after its output is acknowledged. Ends
/// when the sender is dropped; fails (and cancels the stage) if an output is refused.
pub fn spawn_acker(
    consumer: Arc<StageConsumer>,
    stage: &'static str,
    input: &'static str,
    mut rx: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            match p.ack.wait().await {
                Ok(()) => {}
                // The stage stopped abruptly; what follows is re-read by the next owner.
                Err(AckError::Abandoned) => return Ok(()),
                Err(reason) => {
                    cancel.cancel();
                    return Err(Error::Stage { stage, reason: format!("output not acknowledged: {reason}") });
                }
            }
            // Fails only when the partition was revoked meanwhile; the new owner re-reads it.
            let _ = consumer.store_offset(input, p.partition, p.offset);
        }
        Ok(())
    })
}

/// The next message from `input`, or `None` once `cancel` fires.
pub async fn next_message<'c>(
    consumer: &'c StageConsumer,
    cancel: &CancellationToken,
    stage: &'static str,
    input: &str,
) -> Result<Option<BorrowedMessage<'c>>> {
    tokio::select! {
        () = cancel.cancelled() => Ok(None),
        msg = consumer.recv() => {
            msg.map(Some).map_err(|e| Error::Stage { stage, reason: format!("consume from {input}: {e}") })
        }
    }
}

/// Ends a stage: lets the acker store what is acknowledged, commits, closes the consumer,
/// and reports the first failure.
pub async fn finish(
    stage: &'static str,
    consumer: Arc<StageConsumer>,
    tx: mpsc::Sender<Pending>,
    acker: tokio::task::JoinHandle<Result<()>>,
    result: Result<()>,
) -> Result<()> {
    drop(tx);
    let acked = acker.await.map_err(|e| Error::Stage { stage, reason: e.to_string() })?;
    close_consumer(consumer).await;
    result.and(acked)
}

/// How many outputs may await acknowledgement at once.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Runs a Kafka-to-Kafka stage until `cancel`.
pub async fn run<P: Processor>(
    kafka: KafkaSettings,
    input: &'static str,
    output: &'static str,
    mut processor: P,
    counters: Arc<StageCounters>,
    ready: watch::Sender<bool>,
    cancel: CancellationToken,
) -> Result<()> {
    let consumer = open_consumer(&kafka, P::NAME, input, ready)?;
    let producer = open_producer(&kafka, P::NAME)?;
    let dlq = DeadLetters::new(producer.clone(), P::NAME, Arc::clone(&counters));
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let acker = spawn_acker(Arc::clone(&consumer), P::NAME, input, rx, cancel.clone());
    let mut stamps = Vec::with_capacity(512);
    let mut side = Vec::new();
    let group: Arc<str> = crate::topology::group_of(P::NAME).into();
    let enricher = processor.enricher();
    // Ordered enrichment: each event's emitter waits for its predecessor's.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    let mut assignments = consumer.context().assignments();
    let result = loop {
        let msg = match next_message(&consumer, &cancel, P::NAME, input).await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if assignments.has_changed().unwrap_or(false) {
            assignments.mark_unchanged();
            let partitions = assigned_partitions(&consumer, input);
            if let Err(reason) = processor.assigned(&kafka, &partitions).await {
                break Err(Error::Stage { stage: P::NAME, reason });
            }
        }
        let ingress_ns = probes::now_ns();
        let (partition, offset) = (msg.partition(), msg.offset());
        let ack = match decode(&msg, kafka.converter) {
            Err(reason) => dlq.send(msg.key(), msg.payload(), msg.headers(), &reason).map(Ack::Delivery),
            Ok((incoming, mut event)) => {
                let meta = Meta { intended_ns: incoming.intended_ns, ingress_ns, partition, offset };
                side.clear();
                match processor.process(&mut event, &meta, &mut side).await {
                    Err(reason) => dlq.send(msg.key(), msg.payload(), msg.headers(), &reason).map(Ack::Delivery),
                    Ok(()) => match enricher.as_ref().filter(|e| !enriched_inline(e, &mut event, &mut previous)) {
                        Some(enricher) => {
                            let emit = Emit {
                                stage: P::NAME,
                                producer: producer.clone(),
                                converter: kafka.converter,
                                spans: kafka.spans.clone(),
                                counters: Arc::clone(&counters),
                                input,
                                output,
                                group: Arc::clone(&group),
                                partition,
                                offset,
                                ingress_ns,
                            };
                            let carried = Carried::of(msg.headers(), &incoming);
                            let order = match enricher.order() {
                                ResultOrder::Ordered => {
                                    let (done, next) = oneshot::channel();
                                    Some((previous.replace(next), done))
                                }
                                ResultOrder::Unordered => None,
                            };
                            let admission = enricher.admit().await;
                            produce_side(&producer, &side, P::NAME).map(|sides| {
                                Ack::Later(emit.spawn(enricher.clone(), admission, event, carried, sides, order))
                            })
                        }
                        None => {
                            let consumed = Consumed { topic: input, partition, offset, group: &group };
                            let span = StageSpan::new(P::NAME, incoming.trace, Some(consumed), Some(output));
                            let headers = |s: &_, st: Stamp<'static>, b: &mut _| {
                                outgoing_headers(msg.headers(), &incoming, s, st, b)
                            };
                            let spans = &kafka.spans;
                            let sent = forward(
                                &producer,
                                kafka.converter,
                                spans,
                                &span,
                                headers,
                                &event,
                                ingress_ns,
                                &mut stamps,
                            );
                            sent.and_then(|main| {
                                counters.forwarded.fetch_add(1, Ordering::Relaxed);
                                if side.is_empty() {
                                    return Ok(Ack::Delivery(main));
                                }
                                let mut all = produce_side(&producer, &side, P::NAME)?;
                                all.push(main);
                                Ok(Ack::All(all))
                            })
                        }
                    },
                }
            }
        };
        match ack {
            Ok(ack) => {
                if tx.send(Pending { partition, offset, ack }).await.is_err() {
                    break Ok(()); // the acker failed; its error is reported below
                }
            }
            Err(e) => break Err(e),
        }
    };
    finish(P::NAME, consumer, tx, acker, result).await
}

/// Enriches `event` at once when its profile is cached and nothing before it is still in
/// flight (ordered mode), so a cache hit costs no task; true when it did.
fn enriched_inline(
    enricher: &crate::enrich::Enricher,
    event: &mut StoryEvent,
    previous: &mut Option<oneshot::Receiver<()>>,
) -> bool {
    use tokio::sync::oneshot::error::TryRecvError;
    let pending = previous.as_mut().is_some_and(|rx| matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    if pending {
        return false;
    }
    *previous = None;
    match enricher.cached(event.session) {
        Some(hit) => {
            event.enrichment = Some(hit);
            true
        }
        None => false,
    }
}

/// The partitions of `topic` the consumer has now.
fn assigned_partitions(consumer: &StageConsumer, topic: &str) -> Vec<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Produces the event to the span's output and records the span; `headers` builds the
/// outgoing headers from this stage's span and stamp.
#[allow(clippy::too_many_arguments)]
fn forward(
    producer: &FutureProducer,
    converter: Converter,
    spans: &Spans,
    span: &StageSpan<'_>,
    headers: impl FnOnce(&probes::TraceContext, Stamp<'static>, &mut Vec<u8>) -> OwnedHeaders,
    event: &StoryEvent,
    ingress_ns: u64,
    stamps: &mut Vec<u8>,
) -> Result<DeliveryFuture> {
    let value = converter.encode(event);
    let key = crate::event::session_key(event.session);
    let stamp = Stamp { stage: span.stage, ingress_ns, egress_ns: probes::now_ns() };
    let headers = headers(&span.span, stamp, stamps);
    let output = span.output.unwrap_or_default();
    let record = FutureRecord::<[u8], [u8]>::to(output).key(&key[..]).payload(&value[..]).headers(headers);
    let sent = send_with_retry(producer, record, span.stage)?;
    span.record(spans, event.id, &stamp);
    Ok(sent)
}

/// Produces side records, returning their deliveries.
fn produce_side(producer: &FutureProducer, side: &[SideRecord], stage: &'static str) -> Result<Vec<DeliveryFuture>> {
    let mut all = Vec::with_capacity(1 + side.len());
    for r in side {
        let mut record = FutureRecord::<[u8], [u8]>::to(r.topic).key(&r.key[..]);
        if !r.value.is_empty() {
            record = record.payload(&r.value[..]);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        all.push(send_with_retry(producer, record, stage)?);
    }
    Ok(all)
}

/// What producing one event later, from its own task, needs.
struct Emit {
    stage: &'static str,
    producer: FutureProducer,
    converter: Converter,
    spans: Spans,
    counters: Arc<StageCounters>,
    input: &'static str,
    output: &'static str,
    group: Arc<str>,
    partition: i32,
    offset: i64,
    ingress_ns: u64,
}

impl Emit {
    /// Looks the event up, waits for its predecessor when `order` says so (the previous
    /// emitter's signal, and this one's to give), produces it, and answers on the returned
    /// channel with every delivery (`sides` included) for the acker.
    fn spawn(
        self,
        enricher: crate::enrich::Enricher,
        admission: crate::enrich::Admission,
        mut event: StoryEvent,
        carried: Carried,
        sides: Vec<DeliveryFuture>,
        order: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
    ) -> oneshot::Receiver<Result<Vec<DeliveryFuture>, String>> {
        let (ack, answer) = oneshot::channel();
        tokio::spawn(async move {
            let _admission = admission;
            event.enrichment = Some(enricher.lookup(event.session).await);
            let _done = match order {
                Some((previous, done)) => {
                    if let Some(previous) = previous {
                        let _ = previous.await; // sent or dropped: the predecessor has produced
                    }
                    Some(done)
                }
                None => None,
            };
            let consumed =
                Consumed { topic: self.input, partition: self.partition, offset: self.offset, group: &self.group };
            let span = StageSpan::new(self.stage, carried.trace(), Some(consumed), Some(self.output));
            let headers = |s: &_, st: Stamp<'static>, b: &mut _| carried.headers(s, st, b);
            let mut stamps = Vec::with_capacity(512);
            let sent = forward(
                &self.producer,
                self.converter,
                &self.spans,
                &span,
                headers,
                &event,
                self.ingress_ns,
                &mut stamps,
            );
            let answer = sent.map_err(|e| e.to_string()).map(|main| {
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                let mut all = sides;
                all.push(main);
                all
            });
            let _ = ack.send(answer);
        });
        answer
    }
}

/// What the dead-letter topic holds for one run, read back from the broker.
#[derive(Debug, Default)]
pub struct DeadLetterAudit {
    /// Ids of this run's events found there.
    pub ids: std::collections::HashSet<u64>,
    /// Messages that are not this run's events (other runs', or unreadable poison).
    pub other: u64,
    /// The first reason seen for one of this run's events.
    pub first_reason: Option<String>,
}

/// Reads the dead-letter topic from the beginning up to its current end and collects the
/// events of `run`, giving up after `timeout`.
pub async fn audit_dead_letters(kafka: &KafkaSettings, run: u64, timeout: Duration) -> Result<DeadLetterAudit> {
    let records = kafka.read_to_end(topics::DLQ, &std::collections::HashMap::new(), timeout).await?;
    let mut audit = DeadLetterAudit::default();
    for r in records {
        match r.value.as_deref().and_then(|v| dead_letter_identity(kafka.converter, v)) {
            Some((r_run, id)) if r_run == run => {
                audit.ids.insert(id);
                if audit.first_reason.is_none() {
                    audit.first_reason = r.header(DLQ_REASON);
                }
            }
            _ => audit.other += 1,
        }
    }
    Ok(audit)
}

/// The run and event id of a dead letter: a story event in the pipeline's format, or the
/// connector's JSON form of a captured row.
fn dead_letter_identity(converter: Converter, value: &[u8]) -> Option<(u64, u64)> {
    #[derive(serde::Deserialize)]
    struct Row {
        run: u64,
        event_id: u64,
    }
    converter
        .decode(value)
        .map(|e| (e.run, e.id))
        .ok()
        .or_else(|| serde_json::from_slice::<Row>(value).ok().map(|r| (r.run, r.event_id)))
        .or_else(|| Converter::Json.decode(value).ok().map(|e| (e.run, e.id)))
}
