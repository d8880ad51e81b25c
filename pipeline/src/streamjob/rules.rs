//! Broadcast rules: patterns that arrive on the compacted topic `story.rules` (keyed by
//! name; a tombstone or `"enabled": false` removes one). Every instance reads the whole
//! topic ([`follow_rules`]) and applies a change before its next event, without a restart;
//! the moment a rule took effect is recorded beside the moment it was published.

use super::{Decision, NAME, Pattern, StreamJob};
use crate::{topics, topology};
use std::collections::BTreeMap;
use std::time::Duration;

/// A rule as `story.rules` carries it (the value; the key is its name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub name: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    pub times: u32,
    pub within_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// When it was published, epoch ns (to measure how long it took to take effect).
    pub published_ns: u64,
}

const fn enabled() -> bool {
    true
}

impl Rule {
    /// The rule for `pattern`, published now.
    pub fn of(pattern: &Pattern, enabled: bool) -> Self {
        Self {
            name: pattern.name.clone(),
            enabled,
            times: pattern.times,
            within_ms: pattern.within.as_millis() as u64,
            contains: pattern.contains.clone(),
            published_ns: probes::now_ns(),
        }
    }

    fn pattern(&self) -> Pattern {
        Pattern {
            name: self.name.clone(),
            times: self.times.max(2),
            within: Duration::from_millis(self.within_ms),
            contains: self.contains.clone(),
        }
    }
}

/// A rule change as it took effect in a job instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleApplied {
    pub name: String,
    pub enabled: bool,
    pub published_ns: u64,
    /// When the job first used it: before the next event it processed.
    pub applied_ns: u64,
}

/// The rules an instance has read from `story.rules`, newest per name, with a version that
/// grows with every change.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub version: u64,
    pub rules: BTreeMap<String, Rule>,
}

impl StreamJob {
    /// Also takes its patterns from the broadcast `rules` (see [`follow_rules`]).
    #[must_use]
    pub fn with_rules(mut self, rules: tokio::sync::watch::Receiver<RuleSet>) -> Self {
        self.rules = Some((rules, 0));
        self
    }

    /// Applies broadcast rule changes not applied yet; records when each took effect.
    pub fn apply_rules(&mut self, decisions: &mut Vec<Decision>) {
        let Some((rx, applied)) = &mut self.rules else { return };
        if rx.borrow().version == *applied {
            return;
        }
        let set = rx.borrow_and_update().clone();
        *applied = set.version;
        let now = probes::now_ns();
        let mut patterns: Vec<Pattern> =
            self.configured.iter().filter(|p| !set.rules.contains_key(&p.name)).cloned().collect();
        patterns.extend(set.rules.values().filter(|r| r.enabled).map(Rule::pattern));
        if let Ok(mut log) = self.stats.rules.lock() {
            for r in set.rules.values() {
                if !log.iter().any(|a| a.name == r.name && a.published_ns == r.published_ns) {
                    let applied = RuleApplied {
                        name: r.name.clone(),
                        enabled: r.enabled,
                        published_ns: r.published_ns,
                        applied_ns: now,
                    };
                    log.push(applied);
                    decisions.push(Decision::RuleApplied { rule: r.clone(), applied_ns: now });
                }
            }
        }
        // Progress towards patterns whose definitions changed starts afresh.
        if patterns != self.patterns {
            self.progress.clear();
            self.patterns = patterns;
        }
    }
}

/// Publishes rules to `story.rules` (keyed by name) with one producer kept warm: a fresh
/// producer's first record waits about 500 ms for its producer id and metadata, which would
/// be counted as the rule's delay.
#[derive(Clone)]
pub struct RulePublisher(rdkafka::producer::FutureProducer, crate::io::kafka::Names);

impl std::fmt::Debug for RulePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulePublisher")
    }
}

impl RulePublisher {
    /// Creates the producer (it connects and gets its producer id in the background).
    pub fn new(kafka: &crate::KafkaSettings) -> crate::Result<Self> {
        let producer =
            kafka.producer_config("rules-publisher").create().map_err(|e| crate::Error::Config(e.to_string()))?;
        Ok(Self(producer, kafka.names.clone()))
    }

    /// Publishes `rule` and waits for the broker's ack.
    pub async fn publish(&self, rule: &Rule) -> crate::Result<()> {
        use rdkafka::producer::FutureRecord;
        let value = serde_json::to_vec(rule).map_err(|e| crate::Error::Stage { stage: NAME, reason: e.to_string() })?;
        let topic = self.1.of(topics::RULES);
        let record = FutureRecord::<str, [u8]>::to(&topic).key(&rule.name).payload(&value);
        self.0
            .send(record, Duration::from_secs(10))
            .await
            .map(drop)
            .map_err(|(e, _)| crate::Error::Kafka { context: format!("publish to {}", topics::RULES), source: e })
    }
}

/// Reads `story.rules` from its beginning and keeps `rules` up to date until `cancel`: the
/// broadcast side of the stream job. Each instance reads every partition itself (no
/// consumer group), as Flink's broadcast state gives every parallel instance every rule.
pub async fn follow_rules(
    kafka: crate::KafkaSettings,
    rules: tokio::sync::watch::Sender<RuleSet>,
    cancel: tokio_util::sync::CancellationToken,
) -> crate::Result<()> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    // Assigned, never subscribed: the group id is only librdkafka's requirement.
    let consumer: StreamConsumer = kafka
        .own_consumer_config(topology::STREAMJOB_RULES)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| crate::Error::Config(format!("rules reader: {e}")))?;
    let partitions = kafka.high_watermarks(topics::RULES).await?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions.keys() {
        tpl.add_partition_offset(&kafka.names.of(topics::RULES), *p, rdkafka::Offset::Beginning)
            .map_err(crate::kafka_err("rules assignment"))?;
    }
    consumer.assign(&tpl).map_err(crate::kafka_err("rules assignment"))?;
    loop {
        let msg = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => match m {
                Ok(m) => m,
                // librdkafka reconnects by itself (a broker restart, a dropped connection).
                Err(e) if crate::runtime::consume::recoverable(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(crate::kafka_err(format!("reading {}", topics::RULES))(e)),
            },
        };
        let Some(name) = msg.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { continue };
        let rule = match msg.payload() {
            // A tombstone removes the rule; the removal takes effect like any change.
            None => Some(Rule {
                name: name.clone(),
                enabled: false,
                times: 2,
                within_ms: 0,
                contains: None,
                published_ns: msg.timestamp().to_millis().map_or(0, |ms| ms as u64 * 1_000_000),
            }),
            Some(v) => serde_json::from_slice::<Rule>(v).ok(),
        };
        if let Some(rule) = rule {
            rules.send_modify(|set| {
                set.version += 1;
                set.rules.insert(name, rule);
            });
        }
    }
}
