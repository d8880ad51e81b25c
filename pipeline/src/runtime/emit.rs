//! The producing side of a stage: one [`Emitter`] that stamps an event, builds its
//! outgoing headers (a child span, the intended time, the stamps, foreign headers passed
//! on), produces it, records its span and counts it; side records beside it.

use super::StageCounters;
use crate::convert::Converter;
use crate::event::StoryEvent;
use crate::{Error, Result};
use probes::headers::{INTENDED, STAMPS, TRACEPARENT};
use probes::spans::{Consumed, SpanRecord, Spans};
use probes::{Incoming, Stamp};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// Enqueues a record, waiting while librdkafka's queue is full (for at most 10 s). The wait
/// is a blocking one (callers are synchronous), so on a multi-threaded runtime the worker
/// thread's other tasks are handed to another thread first.
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
                let wait = || std::thread::sleep(Duration::from_millis(1));
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                    _ => wait(),
                }
            }
            Err((KafkaError::MessageProduction(code), _)) => {
                return Err(Error::Unproducible { stage, reason: code.to_string() });
            }
            Err((e, _)) => return Err(Error::Stage { stage, reason: format!("cannot produce: {e}") }),
        }
    }
    Err(Error::Stage { stage, reason: "producer queue full for 10s".into() })
}

/// Opens a producer for `stage`.
pub fn open_producer(kafka: &crate::KafkaSettings, stage: &str) -> Result<FutureProducer> {
    kafka.producer_config(stage).create().map_err(|e| Error::Config(format!("{stage} producer: {e}")))
}

/// Where an event's incoming headers are: on the message being handled, or carried to a
/// worker that produces the output later.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // librdkafka's borrowed headers have no Debug
pub enum Upstream<'a> {
    Message(Option<&'a BorrowedHeaders>, &'a Incoming<'a>),
    Carried(&'a Carried),
}

impl Upstream<'_> {
    /// The incoming trace context.
    pub fn trace(&self) -> probes::TraceContext {
        match self {
            Self::Message(_, incoming) => incoming.trace,
            Self::Carried(c) => c.trace(),
        }
    }

    /// The headers as they came, for a dead letter.
    fn original(&self) -> OwnedHeaders {
        match self {
            Self::Message(headers, _) => headers.map_or_else(|| OwnedHeaders::new_with_capacity(2), |h| h.detach()),
            Self::Carried(c) => c.original(),
        }
    }

    fn headers(&self, span: &probes::TraceContext, stamp: Stamp<'_>, buf: &mut Vec<u8>) -> OwnedHeaders {
        match self {
            Self::Message(headers, incoming) => outgoing_headers(*headers, incoming, span, stamp, buf),
            Self::Carried(c) => c.headers(span, stamp, buf),
        }
    }
}

/// Where in the input an event came from.
#[derive(Debug, Clone, Copy)]
pub struct From {
    pub partition: i32,
    pub offset: i64,
    /// When this stage received it, epoch ns.
    pub ingress_ns: u64,
}

/// A stage's way out: stamp, headers, produce, span and count, for every event it passes on
/// (from its own task or from a worker's).
#[derive(Clone)]
pub struct Emitter {
    pub stage: &'static str,
    pub producer: FutureProducer,
    pub converter: Converter,
    pub spans: Spans,
    pub counters: Arc<StageCounters>,
    /// Where an event goes that can never be produced.
    pub dead_letters: super::DeadLetters,
    /// The topic it consumes, and the group it consumes with (named in spans), as the
    /// cluster names them.
    pub input: Arc<str>,
    pub group: Arc<str>,
    /// The run's names for the pipeline's topics on the cluster.
    pub names: crate::io::kafka::Names,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter").field("stage", &self.stage).field("input", &self.input).finish_non_exhaustive()
    }
}

impl Emitter {
    /// Produces `event` to `output`, as a child span of `upstream`, stamped from `from`'s
    /// ingress to now; records the span and counts the event as forwarded. An event that can
    /// never be produced (too large, say) is dead-lettered instead, and the delivery to wait
    /// for is the dead letter's (`None` when not even that could be produced).
    pub fn emit(
        &self,
        event: &StoryEvent,
        upstream: Upstream<'_>,
        from: From,
        output: &'static str,
        stamps: &mut Vec<u8>,
    ) -> Result<Option<DeliveryFuture>> {
        let consumed =
            Consumed { topic: &self.input, partition: from.partition, offset: from.offset, group: &self.group };
        let output = &*self.names.of(output);
        let span = StageSpan::new(self.stage, upstream.trace(), Some(consumed), Some(output));
        let value = self.converter.encode(event);
        let key = crate::event::session_key(event.session);
        let stamp = Stamp { stage: self.stage, ingress_ns: from.ingress_ns, egress_ns: probes::now_ns() };
        let headers = upstream.headers(&span.span, stamp, stamps);
        let record = FutureRecord::<[u8], [u8]>::to(output).key(&key[..]).payload(&value[..]).headers(headers);
        match send_with_retry(&self.producer, record, self.stage) {
            Ok(sent) => {
                span.record(&self.spans, event.id, &stamp);
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                Ok(Some(sent))
            }
            Err(Error::Unproducible { reason, .. }) => {
                let reason = format!("cannot be produced to {output}: {reason}");
                self.dead_letters.send_event(event, self.converter, upstream.original(), &reason)
            }
            Err(e) => Err(e),
        }
    }

    /// Stamps an event that leaves the pipeline here (the gateway's push): the stamps with
    /// this stage's appended go to `stamps`; the span is recorded and the event counted
    /// once `deliver` has taken it.
    pub fn leave(
        &self,
        event_id: u64,
        incoming: &Incoming<'_>,
        from: From,
        stamps: &mut Vec<u8>,
        deliver: impl FnOnce(&probes::TraceContext, &[u8]),
    ) {
        let consumed =
            Consumed { topic: &self.input, partition: from.partition, offset: from.offset, group: &self.group };
        let span = StageSpan::new(self.stage, incoming.trace, Some(consumed), None);
        let stamp = Stamp { stage: self.stage, ingress_ns: from.ingress_ns, egress_ns: probes::now_ns() };
        stamp.append_to(incoming.stamps, stamps);
        deliver(&span.span, stamps);
        span.record(&self.spans, event_id, &stamp);
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Produces side records, returning their deliveries.
    pub fn side(&self, side: &[SideRecord]) -> Result<Vec<DeliveryFuture>> {
        let mut all = Vec::with_capacity(1 + side.len());
        for r in side {
            let topic = self.names.of(r.topic);
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).key(&r.key[..]);
            if !r.value.is_empty() {
                record = record.payload(&r.value[..]);
            }
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            all.push(send_with_retry(&self.producer, record, self.stage)?);
        }
        Ok(all)
    }

    /// Enqueues any other record (a changelog entry, say).
    pub fn send(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<DeliveryFuture> {
        send_with_retry(&self.producer, record, self.stage)
    }
}
