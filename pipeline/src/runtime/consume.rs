//! The consumer side of a stage: its group's consumer, told of every assignment, and how a
//! message is read (the protocol headers and the event) or found unreadable.

use crate::convert::Converter;
use crate::event::StoryEvent;
use crate::{Error, Result};
use probes::Incoming;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Consumer context that counts the group's assignments, for the runtime to tell its stage
/// of each (and to say the stage is ready once it has partitions).
#[derive(Debug, Default)]
pub struct GroupContext {
    assignments: watch::Sender<u64>,
}

impl GroupContext {
    /// Changes on every assignment (a rebalance has completed; the consumer's assignment
    /// may differ). Assignments happen while the consumer is polled.
    pub fn assignments(&self) -> watch::Receiver<u64> {
        self.assignments.subscribe()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.assignments.send_modify(|n| *n += 1);
        }
    }
}

/// A consumer of a stage's input topic.
pub type StageConsumer = StreamConsumer<GroupContext>;

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

/// The next message from `input`, or `None` once `cancel` fires. Consumer errors that
/// librdkafka recovers from by itself (a broker restarting, a dropped connection, a
/// coordinator moving) are said once and waited out; only a fatal one ends the stage.
pub async fn next_message<'c>(
    consumer: &'c StageConsumer,
    cancel: &CancellationToken,
    stage: &'static str,
    input: &str,
) -> Result<Option<BorrowedMessage<'c>>> {
    let mut errors = 0u64;
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            msg = consumer.recv() => msg,
        };
        match msg {
            Ok(m) => {
                if errors > 0 {
                    eprintln!("stage {stage}: consuming {input} again, after {errors} consumer error(s)");
                }
                return Ok(Some(m));
            }
            Err(e) if recoverable(&e) => {
                if errors == 0 {
                    eprintln!("stage {stage}: consume from {input}: {e}; waiting for the broker");
                }
                errors += 1;
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            Err(e) => return Err(Error::Stage { stage, reason: format!("consume from {input}: {e}") }),
        }
    }
}

/// Whether librdkafka goes on consuming after `e`: every consumer error but a fatal one.
pub fn recoverable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumption(code) if *code != RDKafkaErrorCode::Fatal)
}

/// The partitions of `topic` the consumer has now.
pub fn assigned_partitions(consumer: &StageConsumer, topic: &str) -> Vec<i32> {
    consumer
        .assignment()
        .map(|tpl| {
            let mut ps: Vec<i32> = tpl.elements_for_topic(topic).iter().map(|e| e.partition()).collect();
            ps.sort_unstable();
            ps
        })
        .unwrap_or_default()
}
