//! The four-timestamp clock exchange over the control topic: the coordinator sends pings
//! stamped with its clock, the worker answers each with its receive and send stamps on its
//! own clock, and the coordinator stamps the answer's arrival. `loadgen::clocks` turns the
//! exchanges into an offset and a bound. The Kafka round trip is slow and lopsided (a
//! produce, then a fetch); that widens the bound, never biases the offset beyond it.
//! [`broker_bound`] gives each side a second bound, from a broker's `LogAppendTime`.

use super::CONTROL_TOPIC;
use loadgen::clocks::{Exchange, Interval, append_time_bound};
use pipeline::KafkaSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A message of the exchange, JSON on the control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClockMessage {
    Ping { to: String, seq: u64, t1: i64 },
    Pong { from: String, seq: u64, t1: i64, t2: i64, t3: i64 },
}

/// A clock: nanoseconds since the Unix epoch as this side reads them.
pub type Now = fn() -> i64;

/// How long the coordinator waits for each answer before counting the ping as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordinator's side: `n` pings to `worker`, `gap` apart; the exchanges that were
/// answered, in order.
pub async fn measure(
    kafka: &KafkaSettings,
    worker: &str,
    n: u64,
    gap: Duration,
    now: Now,
) -> Result<Vec<Exchange>, String> {
    let producer = producer(kafka)?;
    let consumer = from_end(kafka, CONTROL_TOPIC, "clock-coordinator").await?;
    let mut out = Vec::new();
    for seq in 0..n {
        let t1 = now();
        send(&producer, &kafka.names.of(CONTROL_TOPIC), &ClockMessage::Ping { to: worker.into(), seq, t1 }).await?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                let m = consumer.recv().await.map_err(|e| format!("reading {CONTROL_TOPIC}: {e}"))?;
                let t4 = now();
                let Some(Ok(ClockMessage::Pong { from, seq: s, t1: back, t2, t3 })) =
                    m.payload().map(serde_json::from_slice::<ClockMessage>)
                else {
                    continue;
                };
                if from == worker && s == seq && back == t1 {
                    return Ok::<_, String>(Exchange { t1, t2, t3, t4 });
                }
            }
        })
        .await;
        // Unanswered in time: one sample fewer.
        if let Ok(exchange) = answer {
            out.push(exchange?);
        }
        tokio::time::sleep(gap).await;
    }
    Ok(out)
}

/// The worker's side: answers every ping addressed to `name`, stamped with `now`, until
/// `cancel`.
pub async fn answer(kafka: &KafkaSettings, name: &str, now: Now, cancel: CancellationToken) -> Result<(), String> {
    let producer = producer(kafka)?;
    let consumer = from_end(kafka, CONTROL_TOPIC, &format!("clock-{name}")).await?;
    loop {
        let m = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m.map_err(|e| format!("reading {CONTROL_TOPIC}: {e}"))?,
        };
        let t2 = now();
        let Some(Ok(ClockMessage::Ping { to, seq, t1 })) = m.payload().map(serde_json::from_slice::<ClockMessage>)
        else {
            continue;
        };
        if to == name {
            let pong = ClockMessage::Pong { from: name.into(), seq, t1, t2, t3: now() };
            send(&producer, &kafka.names.of(CONTROL_TOPIC), &pong).await?;
        }
    }
}

/// Where this side's clock offset from the broker lies (this clock minus the broker's):
/// `n` records produced to `topic`, created with `message.timestamp.type = LogAppendTime`
/// when missing. Each append (the broker's clock) came after the send and before the
/// acknowledgement (this clock); the intervals of all `n` are intersected.
pub async fn broker_bound(kafka: &KafkaSettings, topic: &str, n: u64, now: Now) -> Result<Interval, String> {
    let mut one = kafka.clone();
    one.partitions = 1;
    one.ensure_topics(&[topic], &[("message.timestamp.type", "LogAppendTime")]).await.map_err(|e| e.to_string())?;
    let producer = producer(kafka)?;
    let topic = &*kafka.names.of(topic);
    let mut bound: Option<Interval> = None;
    for _ in 0..n {
        let sent = now();
        let delivered = producer
            .send(FutureRecord::<(), _>::to(topic).payload(b"clock"), Duration::from_secs(5))
            .await
            .map_err(|(e, _)| format!("writing {topic}: {e}"))?;
        let acked = now();
        // The produce response carries the append time; librdkafka reports it as such.
        let rdkafka::Timestamp::LogAppendTime(append_ms) = delivered.timestamp else {
            return Err(format!("{topic} does not use LogAppendTime"));
        };
        let i = append_time_bound(sent, append_ms, acked);
        bound = Some(
            bound
                .map_or(Some(i), |b| b.intersect(i))
                .ok_or_else(|| format!("{topic}: the append times disagree with each other (did a clock step?)"))?,
        );
    }
    bound.ok_or_else(|| "no record produced".into())
}

/// A producer for the control and results topics: each message goes at once.
pub(crate) fn producer(kafka: &KafkaSettings) -> Result<FutureProducer, String> {
    let mut c = kafka.producer_config("tailgate-workers");
    c.set("linger.ms", "0");
    c.create().map_err(|e| format!("a producer for {CONTROL_TOPIC}: {e}"))
}

/// A consumer of `topic` (one partition, made when missing) from its current end (no
/// group: it commits nothing).
pub(crate) async fn from_end(kafka: &KafkaSettings, topic: &str, name: &str) -> Result<StreamConsumer, String> {
    let mut one = kafka.clone();
    one.partitions = 1;
    one.ensure_topics(&[topic], &[]).await.map_err(|e| e.to_string())?;
    let ends = kafka.high_watermarks(topic).await.map_err(|e| e.to_string())?;
    let mut c = kafka.consumer_config(name, &format!("tailgate-{name}"));
    c.set("enable.auto.commit", "false");
    c.set("fetch.wait.max.ms", "10");
    let consumer: StreamConsumer = c.create().map_err(|e| format!("a consumer of {topic}: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends {
        tpl.add_partition_offset(&kafka.names.of(topic), p, Offset::Offset(end)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("reading {topic}: {e}"))?;
    Ok(consumer)
}

/// Writes `m` as JSON to `topic` (the prefixed name) and waits for the acknowledgement.
pub(crate) async fn send(producer: &FutureProducer, topic: &str, m: &impl Serialize) -> Result<(), String> {
    let body = serde_json::to_vec(m).map_err(|e| e.to_string())?;
    producer
        .send(FutureRecord::<(), _>::to(topic).payload(&body), Duration::from_secs(5))
        .await
        .map(drop)
        .map_err(|(e, _)| format!("writing {topic}: {e}"))
}
