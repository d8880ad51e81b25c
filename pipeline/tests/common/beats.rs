//! Beats as the agent writes them, and a Kafka-to-Kafka stage from `story.beats` to
//! `story.updates` run on a test broker.

#![allow(dead_code)]

use pipeline::event::Beat;
use pipeline::runtime::{Stage, StageContext, StageCounters};
use pipeline::{KafkaSettings, StoryEvent};
use probes::TraceContext;
use probes::headers::{INTENDED, TRACEPARENT};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Event `id` of `session` in `run`, with the agent's beat.
pub fn beat(run: u64, id: u64, session: u64, action: &str) -> StoryEvent {
    StoryEvent {
        run,
        id,
        session,
        action: action.into(),
        beat: Some(Beat { number: id + 1, prompt: "p".into(), text: "t".into() }),
        window: None,
        enrichment: None,
    }
}

/// Produces `event` to `topic`, keyed by its session, with a new trace and `intended_ns`
/// as its event time; waits for the broker's ack.
pub async fn send(producer: &FutureProducer, topic: &str, event: &StoryEvent, intended_ns: u64) {
    let tp = TraceContext::new_root().encode();
    let intended = intended_ns.to_string();
    let value = serde_json::to_vec(event).unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header { key: TRACEPARENT, value: Some(&tp[..]) })
        .insert(Header { key: INTENDED, value: Some(intended.as_bytes()) });
    let key = pipeline::event::session_key(event.session);
    let record = FutureRecord::<[u8], [u8]>::to(topic).key(&key[..]).payload(&value).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.unwrap();
}

/// A stage running until its `cancel`.
pub struct Running {
    pub task: tokio::task::JoinHandle<pipeline::Result<()>>,
    pub cancel: CancellationToken,
    pub counters: Arc<StageCounters>,
}

impl Running {
    /// Stops the stage and checks it ended cleanly.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Runs `stage` (from `story.beats` to `story.updates`); returns once it has partitions.
pub async fn start<S: Stage>(kafka: &KafkaSettings, stage: S) -> Running {
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let cancel = CancellationToken::new();
    let counters = Arc::new(StageCounters::default());
    let ctx =
        StageContext { kafka: kafka.clone(), counters: Arc::clone(&counters), ready: ready_tx, cancel: cancel.clone() };
    let task = tokio::spawn(pipeline::runtime::run(stage, ctx));
    tokio::time::timeout(Duration::from_secs(60), ready_rx.wait_for(|r| *r)).await.unwrap().unwrap();
    Running { task, cancel, counters }
}
