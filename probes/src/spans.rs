//! Spans, as probes see them: one per event per stage, with the ids the `traceparent`
//! headers carry, so that one event is one trace from the load generator's send to the
//! audience's receive. Recording goes through a [`SpanSink`]; an exporter (OpenTelemetry
//! OTLP in `tailgate-telemetry`) implements it. With no sink, nothing is recorded.
//!
//! Head sampling is the `traceparent` sampled flag, decided once where the trace starts
//! ([`TraceContext::root_sampled`]); every stage honours it. A sink may also keep traces
//! the flag left out, when the audience finds their end-to-end time over the SLA
//! ([`SpanSink::delivered`]).

use crate::TraceContext;
use std::sync::Arc;

/// The span kinds tailgate records (OpenTelemetry's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Producer,
    Consumer,
    Internal,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
}

/// Attribute names of the OpenTelemetry messaging semantic conventions tailgate sets.
pub mod attr {
    pub const SYSTEM: &str = "messaging.system";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    pub const OFFSET: &str = "messaging.kafka.offset";
    pub const MESSAGE_ID: &str = "messaging.message.id";
    pub const KEY: &str = "messaging.kafka.message.key";
    /// tailgate's own: the stage that made the span.
    pub const STAGE: &str = "tailgate.stage";
}

/// What a stage knows about the Kafka message it processed, for its span's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed<'a> {
    pub topic: &'a str,
    /// -1 when unknown (as Kafka writes it); the span then leaves it out.
    pub partition: i32,
    /// -1 when unknown; the span then leaves it out.
    pub offset: i64,
    pub group: &'a str,
}

impl SpanRecord {
    /// The span of `stage` processing one event: `parent` is the incoming trace context,
    /// `span` the child the stage put in its outgoing `traceparent`. A stage that read the
    /// event from Kafka is a consumer span named `process <topic>`; the connector, which
    /// captures it from a database, is a producer span named `send <output>`.
    pub fn stage(
        stage: &str,
        parent: &TraceContext,
        span: &TraceContext,
        (start_ns, end_ns): (u64, u64),
        consumed: Option<Consumed<'_>>,
        output: Option<&str>,
        event_id: u64,
    ) -> Self {
        let mut attributes: Vec<(&'static str, Value)> = vec![
            (attr::SYSTEM, "kafka".into()),
            (attr::STAGE, stage.into()),
            (attr::MESSAGE_ID, event_id.to_string().into()),
        ];
        let (name, kind) = match (consumed, output) {
            (Some(c), _) => {
                attributes.extend([
                    (attr::OPERATION_TYPE, "process".into()),
                    (attr::OPERATION_NAME, "process".into()),
                    (attr::DESTINATION, c.topic.into()),
                    (attr::CONSUMER_GROUP, c.group.into()),
                ]);
                if c.partition >= 0 {
                    attributes.push((attr::PARTITION, c.partition.to_string().into()));
                }
                if c.offset >= 0 {
                    attributes.push((attr::OFFSET, c.offset.into()));
                }
                (format!("process {}", c.topic), SpanKind::Consumer)
            }
            (None, Some(out)) => {
                attributes.extend([
                    (attr::OPERATION_TYPE, "send".into()),
                    (attr::OPERATION_NAME, "send".into()),
                    (attr::DESTINATION, out.into()),
                ]);
                (format!("send {out}"), SpanKind::Producer)
            }
            (None, None) => (stage.to_owned(), SpanKind::Internal),
        };
        Self {
            trace_id: parent.trace_id,
            span_id: span.span_id,
            parent_span_id: parent.span_id,
            name,
            kind,
            start_ns,
            end_ns,
            attributes,
        }
    }
}

/// Where spans go.
pub trait SpanSink: Send + Sync + std::fmt::Debug {
    /// Takes one finished span of a sampled trace. Must not block: a sink that cannot keep
    /// up drops the span and counts it.
    fn record(&self, span: SpanRecord);

    /// An event reached the audience at `received_ns`, with the `traceparent` the gateway
    /// gave it and every stage's stamp. Records the receive span when the trace is
    /// sampled, or the whole trace rebuilt from the stamps when it is not and its
    /// end-to-end time broke the SLA.
    fn delivered(&self, trace: &TraceContext, event_id: u64, intended_ns: u64, stamps: &str, received_ns: u64);
}

/// A shared sink, or none (tracing off).
pub type Spans = Option<Arc<dyn SpanSink>>;

/// Records `span` in `spans` when the trace is sampled.
pub fn record(spans: &Spans, sampled: &TraceContext, span: impl FnOnce() -> SpanRecord) {
    if let Some(sink) = spans
        && sampled.is_sampled()
    {
        sink.record(span());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_span_is_the_child_of_the_incoming_context() {
        let parent = TraceContext::new_root();
        let child = parent.child();
        let c = Consumed { topic: "story.beats", partition: 2, offset: 41, group: "tailgate-streamjob" };
        let s = SpanRecord::stage("streamjob", &parent, &child, (10, 20), Some(c), Some("story.updates"), 7);
        assert_eq!((s.trace_id, s.parent_span_id, s.span_id), (parent.trace_id, parent.span_id, child.span_id));
        assert_eq!(s.name, "process story.beats");
        assert_eq!(s.kind, SpanKind::Consumer);
        assert!(s.attributes.contains(&(attr::SYSTEM, "kafka".into())));
        assert!(s.attributes.contains(&(attr::PARTITION, "2".into())));
        assert!(s.attributes.contains(&(attr::OFFSET, 41.into())));
        assert!(s.attributes.contains(&(attr::CONSUMER_GROUP, "tailgate-streamjob".into())));
    }

    #[test]
    fn an_unknown_partition_and_offset_are_left_out_not_invented() {
        let parent = TraceContext::new_root();
        let c = Consumed { topic: "story.beats", partition: -1, offset: -1, group: "g" };
        let s = SpanRecord::stage("streamjob", &parent, &parent.child(), (1, 2), Some(c), None, 7);
        assert!(s.attributes.iter().all(|(k, _)| *k != attr::PARTITION && *k != attr::OFFSET));
    }

    #[test]
    fn the_connector_span_is_a_send() {
        let parent = TraceContext::new_root();
        let s = SpanRecord::stage("connector", &parent, &parent.child(), (1, 2), None, Some("story.actions"), 1);
        assert_eq!((s.name.as_str(), s.kind), ("send story.actions", SpanKind::Producer));
        assert!(s.attributes.contains(&(attr::OPERATION_TYPE, "send".into())));
    }
}
