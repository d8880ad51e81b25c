//! At-least-once: an input offset is stored only once every output it led to is
//! acknowledged, in consumption order, by one acker task per stage.

use super::consume::{StageConsumer, close_consumer};
use crate::{Error, Result};
use rdkafka::consumer::Consumer;
use rdkafka::producer::DeliveryFuture;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
    /// Kafka refused an output for good (the event is skipped and accounted as lost; the
    /// stage goes on).
    Refused(String),
    /// The worker that was to produce the outputs failed: the stage has failed.
    Failed(String),
    /// The worker or the producer went away without answering: the stage is being torn
    /// down, and the input will be read again by whoever owns it next. Not a failure of
    /// the outputs.
    Abandoned,
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(reason) | Self::Failed(reason) => f.write_str(reason),
            Self::Abandoned => f.write_str("the worker stopped before producing"),
        }
    }
}

impl AckError {
    /// What `stage` does about it, for every acker alike: a refusal is counted as skipped
    /// (accounted lost) and the stage goes on; a worker's failure is the stage's error.
    pub fn settle(self, stage: &'static str, counters: &super::StageCounters) -> Result<()> {
        match self {
            Self::Abandoned => Ok(()),
            Self::Refused(reason) => {
                counters.skip(stage, &format!("output not acknowledged: {reason}"));
                Ok(())
            }
            Self::Failed(reason) => Err(Error::Stage { stage, reason: format!("output not acknowledged: {reason}") }),
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
                for f in rx.await.map_err(|_| AckError::Abandoned)?.map_err(AckError::Failed)? {
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
/// when the sender is dropped; an output Kafka refused for good is counted as skipped (the
/// stage goes on); a worker's failure fails (and cancels) the stage.
pub fn spawn_acker(
    consumer: Arc<StageConsumer>,
    stage: &'static str,
    input: Arc<str>,
    mut rx: mpsc::Receiver<Pending>,
    counters: Arc<super::StageCounters>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            match p.ack.wait().await {
                Ok(()) => {}
                // The stage stopped abruptly; what follows is re-read by the next owner.
                Err(AckError::Abandoned) => return Ok(()),
                Err(e) => {
                    if let Err(failed) = e.settle(stage, &counters) {
                        cancel.cancel();
                        return Err(failed);
                    }
                }
            }
            // Fails only when the partition was revoked meanwhile; the new owner re-reads it.
            let _ = consumer.store_offset(&input, p.partition, p.offset);
        }
        Ok(())
    })
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
