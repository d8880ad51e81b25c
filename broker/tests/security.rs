//! The broker's secured listeners with a real client (librdkafka through rdkafka): SASL
//! SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN over TLS and over plain TCP, TLS alone, and the
//! refusals a client sees: a wrong password, an unknown mechanism, a request before SASL.

use broker::security::{Protocol, Security};
use broker::{Broker, Config};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const USER: &str = "story-svc";
const PASSWORD: &str = "open sesame, 2026";

async fn secured(protocol: Protocol, dir: &std::path::Path) -> (Broker, Option<testkit::tls::TlsFiles>) {
    let tls = protocol.tls().then(|| testkit::tls::write(dir));
    let security = Security {
        protocol,
        tls_cert: tls.as_ref().map(|t| t.cert.clone()),
        tls_key: tls.as_ref().map(|t| t.key.clone()),
        users: BTreeMap::from([(USER.to_owned(), PASSWORD.to_owned())]),
    };
    let b = Broker::start(Config { security, auto_create_topics: true, default_partitions: 2, ..Config::default() })
        .await
        .expect("a secured broker starts");
    (b, tls)
}

fn client(
    b: &Broker,
    protocol: Protocol,
    tls: Option<&testkit::tls::TlsFiles>,
    mechanism: &str,
    password: &str,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", b.bootstrap()).set("broker.address.family", "v4");
    c.set("security.protocol", protocol.name());
    if protocol.sasl() {
        c.set("sasl.mechanisms", mechanism).set("sasl.username", USER).set("sasl.password", password);
    }
    if let Some(t) = tls {
        c.set("ssl.ca.location", t.ca.display().to_string());
    }
    c
}

/// Produces `n` records to a topic of its own and reads them back in a group.
async fn round_trip(c: ClientConfig, topic: &str, n: usize) {
    let producer: FutureProducer =
        c.clone().set("acks", "all").set("enable.idempotence", "true").create().expect("producer");
    for i in 0..n {
        let value = format!("event {i}");
        producer
            .send(FutureRecord::<str, str>::to(topic).key(&value).payload(&value), Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .expect("acknowledged over the secured listener");
    }
    let consumer: BaseConsumer = c
        .clone()
        .set("group.id", format!("{topic}-readers"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribes");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < n {
        assert!(std::time::Instant::now() < deadline, "read {} of {n}", seen.len());
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("no consumer error");
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("event {i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_scram_sha_512_carries_records_both_ways() {
    let dir = tempfile::tempdir().expect("dir");
    let (b, tls) = secured(Protocol::SaslSsl, dir.path()).await;
    round_trip(client(&b, Protocol::SaslSsl, tls.as_ref(), "SCRAM-SHA-512", PASSWORD), "scram512", 50).await;
    assert_eq!(b.stats().refused_auth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mechanism_and_protocol_carries_records() {
    let dir = tempfile::tempdir().expect("dir");
    for (protocol, mechanism) in [
        (Protocol::SaslSsl, "SCRAM-SHA-256"),
        (Protocol::SaslSsl, "PLAIN"),
        (Protocol::SaslPlaintext, "SCRAM-SHA-512"),
        (Protocol::SaslPlaintext, "PLAIN"),
        (Protocol::Ssl, ""),
    ] {
        let (b, tls) = secured(protocol, dir.path()).await;
        let topic = format!("{}-{}", protocol.name(), mechanism).to_lowercase();
        round_trip(client(&b, protocol, tls.as_ref(), mechanism, PASSWORD), &topic, 10).await;
        assert_eq!(b.stats().refused_auth, 0, "{topic}");
    }
}

/// Keeps every error librdkafka reports, as a run's preflight does.
#[derive(Default, Clone)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().expect("lock").push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Errors {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_the_mechanism_named_and_the_connection_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let (b, tls) = secured(Protocol::SaslSsl, dir.path()).await;
    let errors = Errors::default();
    let consumer: BaseConsumer<Errors> = client(&b, Protocol::SaslSsl, tls.as_ref(), "SCRAM-SHA-512", "wrong")
        .create_with_context(errors.clone())
        .expect("consumer");
    let md = tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(None, Duration::from_secs(3)).map(drop);
        // Errors reach the context when the client is polled.
        for _ in 0..10 {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        md
    })
    .await
    .expect("joins");
    assert!(md.is_err(), "no metadata without authenticating");
    let seen = errors.0.lock().expect("lock").join("\n");
    assert!(
        seen.contains("Authentication failed") && seen.contains("SCRAM-SHA-512"),
        "librdkafka reports the broker's reason: {seen}"
    );
    assert!(b.stats().refused_auth >= 1);
    assert!(!seen.contains(PASSWORD));
}

#[tokio::test]
async fn a_request_before_authenticating_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("dir");
    let (b, _) = secured(Protocol::SaslPlaintext, dir.path()).await;
    let mut s = tokio::net::TcpStream::connect(b.bootstrap()).await.expect("connects");
    // Metadata v1, correlation 1, a null client id, all topics (a null array).
    let frame: [u8; 18] = [0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    s.write_all(&frame).await.expect("writes");
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered or closed");
    assert_eq!(read.expect("read"), 0, "closed without an answer");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.stats().refused_auth == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.stats().refused_auth, 1, "counted as refused");
}
