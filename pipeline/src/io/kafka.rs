//! Kafka clients and topics: one place where every stage's producer and consumer settings
//! are built, so a scenario's overrides reach them all.

use crate::{Error, Result, kafka_err};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the brokers are and how every client talks to them.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`.
    pub bootstrap: String,
    /// Partitions of each topic tailgate creates.
    pub partitions: i32,
    /// Replicas of each topic tailgate creates; `None`: as many as the cluster has brokers,
    /// up to three ([`replication_for`]).
    pub replication: Option<i32>,
    /// librdkafka settings every client takes (producers, consumers, the admin client):
    /// where the connection is secured (`security.protocol`, `sasl.*`, `ssl.*`).
    pub client: BTreeMap<String, String>,
    /// librdkafka producer settings over tailgate's defaults.
    pub producer: BTreeMap<String, String>,
    /// librdkafka consumer settings over tailgate's defaults.
    pub consumer: BTreeMap<String, String>,
    /// How story events are written in values (the same on every pipeline topic).
    pub converter: crate::convert::Converter,
    /// Where each stage records its span per event when tracing is on. Not a client
    /// setting, but it travels with the settings every stage is given.
    pub spans: probes::spans::Spans,
    /// The names of the run's topics and consumer groups on the cluster.
    pub names: Names,
}

/// The names of a run's topics and consumer groups on the cluster: the pipeline's own
/// (`story.actions`, `tailgate-agent`) with the run's prefix before them
/// (`[broker] topic_prefix`), so that runs sharing a cluster do not collide. Code speaks
/// of the pipeline's names; the prefix is put on where a name reaches Kafka.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(std::sync::Arc<str>);

impl Names {
    /// Names with `prefix` before them.
    pub fn with_prefix(prefix: &str) -> Self {
        Self(prefix.into())
    }

    /// The prefix (empty for none).
    pub fn prefix(&self) -> &str {
        &self.0
    }

    /// The name on the cluster of the pipeline's topic or group `name`.
    pub fn of<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if self.0.is_empty() { name.into() } else { format!("{}{name}", self.0).into() }
    }
}

/// Producer defaults: no batching delay, acknowledged by all replicas, idempotent.
pub const PRODUCER_DEFAULTS: [(&str, &str); 5] = [
    ("linger.ms", "0"),
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("socket.nagle.disable", "true"),
    ("message.timeout.ms", "30000"),
];

/// Consumer defaults: offsets stored by tailgate once outputs are acknowledged, committed in
/// the background. Fetches keep librdkafka's own `fetch.wait.max.ms` (500 ms): a broker
/// answers a parked fetch as soon as one byte arrives (`fetch.min.bytes` 1), so the wait
/// only bounds how long an idle consumer's request stays open.
pub const CONSUMER_DEFAULTS: [(&str, &str); 6] = [
    ("enable.auto.commit", "true"),
    ("enable.auto.offset.store", "false"),
    ("auto.commit.interval.ms", "1000"),
    ("auto.offset.reset", "earliest"),
    ("fetch.min.bytes", "1"),
    ("socket.nagle.disable", "true"),
];

impl KafkaSettings {
    /// Defaults for `bootstrap` with 3 partitions.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            partitions: 3,
            replication: None,
            client: BTreeMap::new(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            converter: crate::convert::Converter::Json,
            spans: None,
            names: Names::default(),
        }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", format!("tailgate-{client_id}"))
            .set("broker.address.family", "v4");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    /// The effective producer settings (defaults, then the scenario's).
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        for (k, v) in PRODUCER_DEFAULTS {
            c.set(k, v);
        }
        for (k, v) in &self.producer {
            c.set(k, v);
        }
        c
    }

    /// A consumer of the pipeline's own `name` (a stage or a helper), in its group
    /// `tailgate-<name>` ([`crate::topology::group_of`]).
    pub fn own_consumer_config(&self, name: &str) -> ClientConfig {
        self.consumer_config(name, &crate::topology::group_of(name))
    }

    /// The effective consumer settings for `group` (defaults, then the scenario's).
    pub fn consumer_config(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.base(client_id);
        c.set("group.id", self.names.of(group));
        for (k, v) in CONSUMER_DEFAULTS {
            c.set(k, v);
        }
        for (k, v) in &self.consumer {
            c.set(k, v);
        }
        c
    }

    /// The producer settings in effect (tailgate's defaults, then the scenario's).
    pub fn effective_producer(&self) -> BTreeMap<String, String> {
        effective(&PRODUCER_DEFAULTS, &self.client, &self.producer)
    }

    /// The consumer settings in effect (tailgate's defaults, then the scenario's).
    pub fn effective_consumer(&self) -> BTreeMap<String, String> {
        effective(&CONSUMER_DEFAULTS, &self.client, &self.consumer)
    }

    /// Checks that librdkafka accepts every setting, by building (and dropping) a producer
    /// and a consumer; names the offending setting otherwise. Connects to nothing.
    pub fn check_settings(&self) -> Result<()> {
        let mut p = self.producer_config("check");
        p.set("bootstrap.servers", "127.0.0.1:9");
        p.create::<rdkafka::producer::BaseProducer>().map_err(|e| Error::Config(format!("[kafka.producer]: {e}")))?;
        let mut c = self.consumer_config("check", "check");
        c.set("bootstrap.servers", "127.0.0.1:9");
        c.create::<BaseConsumer>().map_err(|e| Error::Config(format!("[kafka.consumer]: {e}")))?;
        Ok(())
    }

    /// The names of every topic the cluster has.
    pub async fn topic_names(&self, timeout: Duration) -> Result<std::collections::HashSet<String>> {
        let consumer: BaseConsumer = self.base("topics").create().map_err(|e| Error::Config(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let md = consumer.fetch_metadata(None, timeout).map_err(crate::kafka_err("topic metadata"))?;
            Ok(md.topics().iter().map(|t| t.name().to_owned()).collect())
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka metadata call", source })?
    }

    /// Fails with [`Error::Unreachable`] naming the address unless a broker answers a
    /// metadata request within `timeout`, or with [`Error::Auth`], naming the mechanism,
    /// when it refuses the client's credentials.
    pub async fn check_reachable(&self, timeout: Duration) -> Result<()> {
        let mut c = self.base("probe");
        c.set("socket.connection.setup.timeout.ms", timeout.as_millis().max(1000).to_string());
        let errors = ErrorLog::default();
        let consumer: BaseConsumer<ErrorLog> =
            c.create_with_context(errors.clone()).map_err(|e| Error::Config(e.to_string()))?;
        let bootstrap = self.bootstrap.clone();
        let mechanism = self.client.get("sasl.mechanisms").or_else(|| self.client.get("sasl.mechanism")).cloned();
        tokio::task::spawn_blocking(move || {
            let Err(e) = consumer.fetch_metadata(None, timeout) else { return Ok(()) };
            // The client's own errors say why (a refused password, a failed TLS handshake).
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(20));
            }
            if let Some(reason) = errors.authentication() {
                return Err(Error::Auth { bootstrap, mechanism: mechanism.unwrap_or_else(|| "GSSAPI".into()), reason });
            }
            let mut reason = format!("no metadata answer within {timeout:?} ({e})");
            for why in errors.reasons() {
                reason.push_str("; ");
                reason.push_str(&why);
            }
            Err(Error::Unreachable { bootstrap, reason })
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka admin call", source })?
    }

    /// Creates every topic of the pipeline that is missing, with `config` (the compacted
    /// ones also with `cleanup.policy = compact`).
    pub async fn ensure_pipeline_topics(&self, config: &[(&str, &str)]) -> Result<()> {
        self.ensure_topics(&crate::topics::ALL, config).await?;
        let mut compacted = config.to_vec();
        compacted.push(("cleanup.policy", "compact"));
        self.ensure_topics(&crate::topics::COMPACTED, &compacted).await
    }

    /// Creates `topics` (the pipeline's names: the prefix goes before them) with
    /// [`Self::partitions`] partitions; topics that already exist are left as they are.
    /// Waits until the metadata shows every partition.
    pub async fn ensure_topics(&self, topics: &[&str], config: &[(&str, &str)]) -> Result<()> {
        let named: Vec<String> = topics.iter().map(|t| self.names.of(t).into_owned()).collect();
        let topics: Vec<&str> = named.iter().map(String::as_str).collect();
        let admin: AdminClient<DefaultClientContext> =
            self.base("admin").create().map_err(|e| Error::Config(e.to_string()))?;
        let replication = match self.replication {
            Some(r) => r,
            None => replication_for(self.brokers().await?),
        };
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let topic = NewTopic::new(t, self.partitions, TopicReplication::Fixed(replication));
                config.iter().fold(topic, |n, (k, v)| n.set(k, v))
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics(&new, &opts).await.map_err(kafka_err("create topics"))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(Error::Topic { topic, reason: code.to_string() }),
            }
        }
        let consumer: BaseConsumer = self.base("admin-meta").create().map_err(|e| Error::Config(e.to_string()))?;
        let wanted: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                let md = consumer.fetch_metadata(None, Duration::from_secs(5)).map_err(kafka_err("topic metadata"))?;
                let ready = wanted.iter().all(|w| {
                    md.topics().iter().any(|t| t.name() == w && t.error().is_none() && !t.partitions().is_empty())
                });
                if ready {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(Error::Topic { topic: wanted.join(","), reason: "not visible in metadata after 10s".into() })
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka admin call", source })?
    }
}

impl KafkaSettings {
    /// How many brokers the cluster has, as its metadata says.
    pub async fn brokers(&self) -> Result<usize> {
        let consumer: BaseConsumer = self.base("admin-meta").create().map_err(|e| Error::Config(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let md = consumer.fetch_metadata(None, Duration::from_secs(10)).map_err(kafka_err("cluster metadata"))?;
            Ok(md.brokers().len())
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka admin call", source })?
    }
}

/// The replication factor of the topics tailgate creates on a cluster of `brokers`: three
/// where there are three or more (Kafka's own advice for durability), else every broker.
pub fn replication_for(brokers: usize) -> i32 {
    brokers.clamp(1, 3) as i32
}

/// One record read back by [`KafkaSettings::read_to_end`].
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Option<rdkafka::message::OwnedHeaders>,
}

impl ReadBack {
    /// The value of the first header named `key`, as text.
    pub fn header(&self, key: &str) -> Option<String> {
        use rdkafka::message::Headers;
        let h = self.headers.as_ref()?.iter().find(|h| h.key == key)?;
        h.value.map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every partition of `topic` with its low and high watermarks.
fn watermarks(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Vec<(i32, i64, i64)>> {
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(kafka_err(format!("metadata of {topic}")))?;
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(kafka_err(format!("watermarks of {topic}")))?;
            Ok((p.id(), low, high))
        })
        .collect()
}

impl KafkaSettings {
    /// The current end offset of every partition of the pipeline's `topic`.
    pub async fn high_watermarks(&self, topic: &str) -> Result<std::collections::HashMap<i32, i64>> {
        let consumer: BaseConsumer = self.base("watermarks").create().map_err(|e| Error::Config(e.to_string()))?;
        let topic = self.names.of(topic).into_owned();
        tokio::task::spawn_blocking(move || {
            let marks = watermarks(&consumer, &topic, Duration::from_secs(10))?;
            Ok(marks.into_iter().map(|(p, _, high)| (p, high)).collect())
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka admin call", source })?
    }

    /// Reads `topic` up to its current end, from the offsets in `from` (the beginning for
    /// partitions not named), without joining a consumer group. A topic that does not exist
    /// reads as empty. Gives up with an error after `timeout`.
    pub async fn read_to_end(
        &self,
        topic: &str,
        from: &std::collections::HashMap<i32, i64>,
        timeout: Duration,
    ) -> Result<Vec<ReadBack>> {
        self.read(topic, from, false, timeout).await
    }

    /// Reads only the partitions named in `from`, from those offsets, up to their current
    /// end; otherwise as [`Self::read_to_end`].
    pub async fn read_partitions_to_end(
        &self,
        topic: &str,
        from: &std::collections::HashMap<i32, i64>,
        timeout: Duration,
    ) -> Result<Vec<ReadBack>> {
        self.read(topic, from, true, timeout).await
    }

    /// Reads until every partition read reports its end (librdkafka's partition EOF: the
    /// high watermark a fetch answers).
    async fn read(
        &self,
        topic: &str,
        from: &std::collections::HashMap<i32, i64>,
        only_named: bool,
        timeout: Duration,
    ) -> Result<Vec<ReadBack>> {
        use rdkafka::error::KafkaError;
        use rdkafka::message::Message;
        use rdkafka::{Offset, TopicPartitionList};
        // The last fetch of a read to the end finds nothing new, and a broker holds such a
        // fetch for its whole max wait (librdkafka's default is 500 ms): a bounded read asks
        // for an answer at once instead.
        let consumer: BaseConsumer = self
            .own_consumer_config(crate::topology::READ_BACK)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(|e| Error::Config(e.to_string()))?;
        let (topic, from) = (self.names.of(topic).into_owned(), from.clone());
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            let mut reading = std::collections::HashSet::new();
            for (p, low, _) in watermarks(&consumer, &topic, timeout)? {
                if only_named && !from.contains_key(&p) {
                    continue;
                }
                let start = from.get(&p).copied().unwrap_or(low).max(low);
                tpl.add_partition_offset(&topic, p, Offset::Offset(start)).map_err(kafka_err("assign"))?;
                reading.insert(p);
            }
            let mut out = Vec::new();
            if reading.is_empty() {
                return Ok(out);
            }
            consumer.assign(&tpl).map_err(kafka_err(format!("assign {topic}")))?;
            let deadline = std::time::Instant::now() + timeout;
            while !reading.is_empty() {
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Topic {
                        topic,
                        reason: format!("could not read to its end within {timeout:?}"),
                    });
                }
                let msg = match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        reading.remove(&p);
                        continue;
                    }
                    Some(m) => m.map_err(kafka_err(format!("read {topic}")))?,
                };
                out.push(ReadBack {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                    headers: msg.headers().map(rdkafka::message::BorrowedHeaders::detach),
                });
            }
            Ok(out)
        })
        .await
        .map_err(|source| Error::Task { what: "a Kafka admin call", source })?
    }
}

/// Which kind of client a setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Producer,
    Consumer,
}

/// Checks one client setting with librdkafka's own configuration parser (name, type and
/// range), without creating a client; the error is librdkafka's.
pub fn check_setting(kind: Client, key: &str, value: &str) -> std::result::Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(key, value);
    if kind == Client::Consumer {
        c.set("group.id", "check");
    }
    c.create_native_config().map(drop).map_err(|e| match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => desc,
        other => other.to_string(),
    })
}

fn effective(
    defaults: &[(&str, &str)],
    client: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = defaults.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    m.extend(client.iter().chain(overrides).map(|(k, v)| (k.clone(), v.clone())));
    m
}

/// Every error librdkafka reports to a client, kept for the message a failed connection
/// gives (librdkafka hands them over when the client is polled).
#[derive(Debug, Default, Clone)]
pub struct ErrorLog(std::sync::Arc<std::sync::Mutex<Vec<(RDKafkaErrorCode, String)>>>);

impl rdkafka::ClientContext for ErrorLog {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        if let Ok(mut seen) = self.0.lock() {
            seen.push((code, reason.to_owned()));
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ErrorLog {}

impl ErrorLog {
    /// The first failed authentication, if any.
    fn authentication(&self) -> Option<String> {
        let seen = self.0.lock().ok()?;
        seen.iter().find(|(code, _)| *code == RDKafkaErrorCode::Authentication).map(|(_, why)| why.clone())
    }

    /// What went wrong, the latest distinct reasons first.
    fn reasons(&self) -> Vec<String> {
        let Ok(seen) = self.0.lock() else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        for (_, why) in seen.iter().rev() {
            if !out.contains(why) && out.len() < 2 {
                out.push(why.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn topics_get_three_replicas_where_the_cluster_has_them_else_every_broker() {
        let r: Vec<i32> = [0, 1, 2, 3, 9].into_iter().map(super::replication_for).collect();
        assert_eq!(r, [1, 1, 2, 3, 3]);
    }
}
