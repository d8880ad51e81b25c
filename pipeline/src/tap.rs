//! A tap on a running pipeline's topics: a consumer group of its own that reads the
//! protocol headers of every message and reports (intended, stamps, received) samples.
//! It produces nothing and commits nothing, so the pipeline's own groups are untouched.

use crate::io::kafka::KafkaSettings;
use crate::runtime::{Ack, Out, Stage, StageContext};
use crate::{Error, Result, kafka_err};
use probes::Incoming;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio_util::sync::CancellationToken;

/// The stage name the tap reports itself as.
pub const NAME: &str = "tap";

/// Reads `topics` from their end until `cancel`, calling `on_sample(intended_ns, stamps,
/// received_ns)` for each message with tailgate headers and `on_foreign()` for others.
pub async fn run(
    kafka: &KafkaSettings,
    topics: &[String],
    on_sample: impl FnMut(u64, &str, u64) + Send + 'static,
    on_foreign: impl FnMut() + Send + 'static,
    cancel: CancellationToken,
) -> Result<()> {
    let ctx = StageContext { cancel, ..StageContext::new(kafka.clone()) };
    crate::runtime::run(Tap { topics: topics.to_vec(), on_sample, on_foreign }, ctx).await
}

/// The tap as a stage that only looks: a group of its own, from the topics' end, no
/// producer, no commits.
struct Tap<S, F> {
    topics: Vec<String>,
    on_sample: S,
    on_foreign: F,
}

impl<S: FnMut(u64, &str, u64) + Send + 'static, F: FnMut() + Send + 'static> Stage for Tap<S, F> {
    const NAME: &'static str = NAME;
    const PRODUCES: bool = false;
    const COMMITS: bool = false;

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn consumer_config(&self, kafka: &KafkaSettings) -> ClientConfig {
        let group = format!("tailgate-watch-{}-{:x}", std::process::id(), probes::now_ns());
        let mut config = kafka.consumer_config(NAME, &group);
        config.set("enable.auto.commit", "false").set("auto.offset.reset", "latest");
        config
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, _out: &mut Out<'_>) -> Result<Ack> {
        let received_ns = probes::now_ns();
        let headers = msg.headers().map(|h| h.iter().map(|h| (h.key, h.value)));
        match headers.map(Incoming::from_headers) {
            Some(Ok(incoming)) => {
                (self.on_sample)(incoming.intended_ns, &String::from_utf8_lossy(incoming.stamps), received_ns);
            }
            _ => (self.on_foreign)(),
        }
        Ok(Ack::Nothing)
    }
}

/// How far each of `groups` is behind: the sum, over every partition it has committed
/// offsets for, of the high watermark minus the committed offset. `None` for a group with
/// no committed offsets. Reads offsets only: it neither joins nor commits to the groups.
pub async fn group_lags(
    kafka: &KafkaSettings,
    groups: &[String],
    timeout: std::time::Duration,
) -> Result<Vec<(String, Option<u64>)>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (kafka, groups) = (kafka.clone(), groups.to_vec());
    // A consumer that fetched committed offsets can be slow to drop: the answer is sent
    // first and the consumers are dropped afterwards, off the async runtime.
    std::thread::spawn(move || {
        let lags = (|| {
            let mut out = Vec::new();
            for group in &groups {
                let consumer: BaseConsumer = kafka
                    .consumer_config(NAME, group)
                    .set("enable.auto.commit", "false")
                    .create()
                    .map_err(|e| Error::Config(format!("lag reader: {e}")))?;
                let md = consumer.fetch_metadata(None, timeout).map_err(kafka_err("lag metadata"))?;
                let mut tpl = TopicPartitionList::new();
                for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
                    for p in t.partitions() {
                        tpl.add_partition(t.name(), p.id());
                    }
                }
                let committed =
                    consumer.committed_offsets(tpl, timeout).map_err(kafka_err(format!("offsets of {group}")))?;
                let mut lag = None;
                for e in committed.elements() {
                    if let Offset::Offset(at) = e.offset() {
                        let (_, high) = consumer
                            .fetch_watermarks(e.topic(), e.partition(), timeout)
                            .map_err(kafka_err("watermarks"))?;
                        *lag.get_or_insert(0) += u64::try_from(high - at).unwrap_or(0);
                    }
                }
                out.push((group.clone(), lag));
            }
            Ok(out)
        })();
        let _ = tx.send(lags);
    });
    rx.await.map_err(|_| Error::Stage { stage: NAME, reason: "the lag reader stopped".into() })?
}
