//! A tap on a running pipeline's topics: a consumer group of its own that reads the
//! protocol headers of every message and reports (intended, stamps, received) samples
//! ([`run`]), or each record's topic, `traceparent` and timestamp ([`run_records`]). It
//! produces nothing and commits nothing, so the pipeline's own groups are untouched.

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

/// Reads `topics` until `cancel`, calling `on_sample(intended_ns, stamps, received_ns)`
/// for each message with tailgate headers and `on_foreign()` for others. From their end,
/// unless `from_start`: for topics created after the watch began, whose every record is
/// new to it.
pub async fn run(
    kafka: &KafkaSettings,
    topics: &[String],
    from_start: bool,
    on_sample: impl FnMut(u64, &str, u64) + Send + 'static,
    on_foreign: impl FnMut() + Send + 'static,
    cancel: CancellationToken,
) -> Result<()> {
    let (mut on_sample, mut on_foreign) = (on_sample, on_foreign);
    let handle = move |msg: &BorrowedMessage<'_>| {
        let received_ns = probes::now_ns();
        let headers = msg.headers().map(|h| h.iter().map(|h| (h.key, h.value)));
        match headers.map(Incoming::from_headers) {
            Some(Ok(incoming)) => {
                on_sample(incoming.intended_ns, &String::from_utf8_lossy(incoming.stamps), received_ns);
            }
            _ => on_foreign(),
        }
    };
    let ctx = StageContext { cancel, ..StageContext::new(kafka.clone()) };
    crate::runtime::run(Tap { topics: topics.to_vec(), from_start, handle }, ctx).await
}

/// One record as [`run_records`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct TappedRecord<'a> {
    pub topic: &'a str,
    /// Its `traceparent` header's value, if it has one.
    pub traceparent: Option<&'a [u8]>,
    /// Its timestamp, and whether the producer (CreateTime) or the broker (LogAppendTime)
    /// set it.
    pub timestamp: rdkafka::Timestamp,
}

/// Reads `topics` until `cancel`, calling `on_record` for every record: its topic, its
/// `traceparent` and its timestamp. From their end unless `from_start`, as [`run`].
pub async fn run_records(
    kafka: &KafkaSettings,
    topics: &[String],
    from_start: bool,
    mut on_record: impl FnMut(TappedRecord<'_>) + Send + 'static,
    cancel: CancellationToken,
) -> Result<()> {
    let handle = move |msg: &BorrowedMessage<'_>| {
        let traceparent =
            msg.headers().and_then(|h| h.iter().find(|h| h.key == probes::headers::TRACEPARENT).and_then(|h| h.value));
        on_record(TappedRecord { topic: msg.topic(), traceparent, timestamp: msg.timestamp() });
    };
    let ctx = StageContext { cancel, ..StageContext::new(kafka.clone()) };
    crate::runtime::run(Tap { topics: topics.to_vec(), from_start, handle }, ctx).await
}

/// How often [`wait_for_topics`] looks again.
pub const TOPIC_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Waits until the cluster has every one of `topics`, looking every [`TOPIC_CHECK`] and
/// calling `waiting(missing)` whenever the missing ones change. Returns the topics that
/// were missing when it began (empty when none was), or `None` when cancelled first.
pub async fn wait_for_topics(
    kafka: &KafkaSettings,
    topics: &[String],
    mut waiting: impl FnMut(&[String]),
    cancel: &CancellationToken,
) -> Result<Option<Vec<String>>> {
    let mut first: Option<Vec<String>> = None;
    let mut last: Option<Vec<String>> = None;
    loop {
        let have = kafka.topic_names(std::time::Duration::from_secs(5)).await?;
        let missing: Vec<String> = topics.iter().filter(|t| !have.contains(*t)).cloned().collect();
        if missing.is_empty() {
            return Ok(Some(first.unwrap_or_default()));
        }
        first.get_or_insert_with(|| missing.clone());
        if last.as_ref() != Some(&missing) {
            waiting(&missing);
            last = Some(missing);
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(TOPIC_CHECK) => {}
        }
    }
}

/// The tap as a stage that only looks: a group of its own, from the topics' end, no
/// producer, no commits.
struct Tap<H> {
    topics: Vec<String>,
    from_start: bool,
    handle: H,
}

impl<H: FnMut(&BorrowedMessage<'_>) + Send + 'static> Stage for Tap<H> {
    const NAME: &'static str = NAME;
    const PRODUCES: bool = false;
    const COMMITS: bool = false;

    fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    fn consumer_config(&self, kafka: &KafkaSettings) -> ClientConfig {
        let group = format!("tailgate-watch-{}-{:x}", std::process::id(), probes::now_ns());
        let mut config = kafka.consumer_config(NAME, &group);
        config
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", if self.from_start { "earliest" } else { "latest" })
            // A topic deleted and made again, or given partitions, is seen within a second
            // (librdkafka's default looks every five minutes).
            .set("topic.metadata.refresh.interval.ms", "1000");
        config
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, _out: &mut Out<'_>) -> Result<Ack> {
        (self.handle)(msg);
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
