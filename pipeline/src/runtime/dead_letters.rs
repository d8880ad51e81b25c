//! The dead-letter topic: what a stage cannot read or process goes there as it came, with
//! the reason and the stage in headers; and a run's audit of what it holds.

use super::StageCounters;
use super::emit::send_with_retry;
use crate::convert::Converter;
use crate::event::StoryEvent;
use crate::io::kafka::KafkaSettings;
use crate::io::kafka::Names;
use crate::{Error, Result, topics};
use probes::headers::{DLQ_REASON, DLQ_STAGE};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Sends messages that cannot be processed to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    stage: &'static str,
    counters: Arc<StageCounters>,
    names: Names,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("stage", &self.stage).finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, stage: &'static str, counters: Arc<StageCounters>, names: Names) -> Self {
        Self { producer, stage, counters, names }
    }

    /// Sends the message as it came (key, value, headers) plus the reason and this stage.
    /// `None` when even that cannot be produced (the event is counted as skipped).
    pub fn send(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<&rdkafka::message::BorrowedHeaders>,
        reason: &str,
    ) -> Result<Option<DeliveryFuture>> {
        let h = headers.map_or_else(|| OwnedHeaders::new_with_capacity(2), |h| h.detach());
        self.send_owned(key, value, h, reason)
    }

    /// [`Self::send`] with headers already owned. A copy that cannot be produced (larger
    /// than the producer's `message.max.bytes`, say) is sent again cut to [`KEEP`] bytes;
    /// if even that fails, the event is counted as skipped and `None` returned.
    pub fn send_owned(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        h: OwnedHeaders,
        reason: &str,
    ) -> Result<Option<DeliveryFuture>> {
        match self.produce(key, value, h.clone(), reason) {
            Err(Error::Unproducible { reason: why, .. }) => {
                let cut = value.map(|v| &v[..v.len().min(KEEP)]);
                let reason = format!("{reason} (the copy cut to {KEEP} bytes: as it came, {why})");
                match self.produce(key, cut, h, &reason) {
                    Err(Error::Unproducible { reason: why, .. }) => {
                        self.counters.skip(self.stage, &format!("{reason}; dead-lettering failed too: {why}"));
                        Ok(None)
                    }
                    other => other.map(Some),
                }
            }
            other => other.map(Some),
        }
    }

    /// Dead-letters a readable `event` that cannot go on, in the pipeline's format: when it
    /// is too large for that, with its action and beat cut to [`KEEP`] bytes (its run and
    /// id, which the run's audit reads, kept).
    pub fn send_event(
        &self,
        event: &StoryEvent,
        converter: Converter,
        h: OwnedHeaders,
        reason: &str,
    ) -> Result<Option<DeliveryFuture>> {
        let key = crate::event::session_key(event.session);
        match self.produce(Some(&key), Some(&converter.encode(event)), h.clone(), reason) {
            Err(Error::Unproducible { reason: why, .. }) => {
                let small = converter.encode(&shrunk(event));
                let reason = format!("{reason} (its text cut to {KEEP} bytes: as it came, {why})");
                self.send_owned(Some(&key), Some(&small), h, &reason)
            }
            other => other.map(Some),
        }
    }

    fn produce(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        mut h: OwnedHeaders,
        reason: &str,
    ) -> Result<DeliveryFuture> {
        h = h
            .insert(Header { key: DLQ_REASON, value: Some(reason) })
            .insert(Header { key: DLQ_STAGE, value: Some(self.stage) });
        let dlq = self.names.of(topics::DLQ);
        let mut record = FutureRecord::<[u8], [u8]>::to(&dlq).headers(h);
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

/// How much of a dead letter's text is kept when the whole cannot be produced.
pub const KEEP: usize = 1024;

/// `event` with its action and beat text cut to [`KEEP`] bytes each.
fn shrunk(event: &StoryEvent) -> StoryEvent {
    let cut = |s: &str| {
        let mut end = s.len().min(KEEP);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    let mut small = event.clone();
    small.action = cut(&event.action);
    if let Some(beat) = &mut small.beat {
        beat.text = cut(&beat.text);
        beat.prompt = cut(&beat.prompt);
    }
    small
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

/// Reads the dead-letter topic from `since` (per partition: its end when the run began, so
/// a topic that grew over many runs is not read whole; absent: its beginning) up to its
/// current end and collects the events of `run`, giving up after `timeout`.
pub async fn audit_dead_letters(
    kafka: &KafkaSettings,
    run: u64,
    since: &std::collections::HashMap<i32, i64>,
    timeout: Duration,
) -> Result<DeadLetterAudit> {
    let records = kafka.read_to_end(topics::DLQ, since, timeout).await?;
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
