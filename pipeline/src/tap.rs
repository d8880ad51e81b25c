//! A tap on a running pipeline's topics: a consumer group of its own that reads the
//! protocol headers of every message and reports (intended, stamps, received) samples.
//! It produces nothing and commits nothing, so the pipeline's own groups are untouched.

use crate::kafka::KafkaSettings;
use crate::stage::{ReadyContext, StageConsumer, close_consumer, next_message};
use crate::{Error, Result, kafka_err};
use probes::Incoming;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The stage name the tap reports itself as.
pub const NAME: &str = "tap";

/// Reads `topics` from their end until `cancel`, calling `on_sample(intended_ns, stamps,
/// received_ns)` for each message with tailgate headers and `on_foreign()` for others.
pub async fn run(
    kafka: &KafkaSettings,
    topics: &[String],
    mut on_sample: impl FnMut(u64, &str, u64),
    mut on_foreign: impl FnMut(),
    cancel: CancellationToken,
) -> Result<()> {
    let group = format!("tailgate-watch-{}-{:x}", std::process::id(), probes::now_ns());
    let mut config = kafka.consumer_config(NAME, &group);
    config.set("enable.auto.commit", "false").set("auto.offset.reset", "latest");
    let (ready, _) = watch::channel(false);
    let consumer: StageConsumer = config
        .create_with_context(ReadyContext::new(ready))
        .map_err(|e| Error::Config(format!("tap consumer: {e}")))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(kafka_err(format!("tap subscribe to {}", names.join(","))))?;
    let consumer = Arc::new(consumer);
    let result = loop {
        let msg = match next_message(&consumer, &cancel, NAME, &names.join(",")).await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let received_ns = probes::now_ns();
        let headers = msg.headers().map(|h| h.iter().map(|h| (h.key, h.value)));
        match headers.map(Incoming::from_headers) {
            Some(Ok(incoming)) => {
                on_sample(incoming.intended_ns, &String::from_utf8_lossy(incoming.stamps), received_ns);
            }
            _ => on_foreign(),
        }
    };
    close_consumer(consumer).await;
    result
}
