//! The connector's `http` source through the gateway's `POST /sessions/{id}/actions`: an
//! accepted action is answered 202 only once Kafka has it, in the caller's trace; a full
//! queue answers 503 with Retry-After; a gateway without an ingress answers 404; a body that
//! is not an action is refused.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::connector::{self, ConnectorConfig, Source};
use pipeline::gateway::{self, GatewayState};
use pipeline::runtime::StageCounters;
use pipeline::{StoryEvent, topics};
use probes::TraceContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Sends one HTTP/1.1 request and returns the whole response text.
async fn post(addr: std::net::SocketAddr, path: &str, extra: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn serve(state: GatewayState, cancel: CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway::serve(listener, state, cancel));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_actions_are_in_kafka_in_the_callers_trace() {
    let (_broker, kafka) = testkit::broker(1).await;
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel(16);
    let conn = tokio::spawn(connector::run(
        kafka.clone(),
        ConnectorConfig::new(Source::Http(rx)),
        Arc::new(StageCounters::default()),
        cancel.clone(),
    ));
    let state = GatewayState::new(watch::channel(true).1, cancel.clone()).with_ingress(tx).with_trusted("players");
    let addr = serve(state, cancel.clone()).await;

    let trace = TraceContext::new_root();
    let tp = format!("traceparent: {trace}\r\nAuthorization: Bearer players\r\n");
    for id in 0..3 {
        let body = format!(r#"{{"run": 9, "id": {id}, "action": "open door {id}", "intended_ns": 1000}}"#);
        let resp = post(addr, "/sessions/4/actions", &tp, &body).await;
        assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    }
    let bad = post(addr, "/sessions/4/actions", &tp, r#"{"run": 9, "action": "no id"}"#).await;
    assert!(bad.starts_with("HTTP/1.1 4"), "{bad}");

    // 202 means Kafka has them: read them back at once.
    let records = tokio::task::block_in_place(|| {
        let consumer: BaseConsumer = kafka.consumer_config("test-reader", "test-reader").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topics::ACTIONS, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < 3 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.unwrap().detach());
            }
        }
        out
    });
    cancel.cancel();
    conn.await.unwrap().unwrap();
    assert_eq!(records.len(), 3);
    for (i, m) in records.iter().enumerate() {
        let e: StoryEvent = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!((e.run, e.id, e.session, e.action.as_str()), (9, i as u64, 4, format!("open door {i}").as_str()));
        let h = m.headers().unwrap();
        let tp = h.iter().find(|h| h.key == "traceparent").unwrap().value.unwrap();
        assert_eq!(TraceContext::parse(tp).unwrap().trace_id, trace.trace_id, "the caller's trace goes on");
        assert_eq!(h.iter().find(|h| h.key == "tg-intended").unwrap().value, Some(&b"1000"[..]));
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_and_no_ingress_answers_404() {
    let cancel = CancellationToken::new();
    // Nobody drains this queue of one.
    let (tx, _rx) = mpsc::channel(1);
    let state = GatewayState::new(watch::channel(true).1, cancel.clone()).with_ingress(tx);
    let addr = serve(state, cancel.clone()).await;
    let body = r#"{"run": 1, "id": 1, "action": "go"}"#;
    let first = tokio::spawn(async move { post(addr, "/sessions/1/actions", "", body).await });
    tokio::time::sleep(Duration::from_millis(200)).await; // the first now waits in the queue
    let second = post(addr, "/sessions/1/actions", "", body).await;
    assert!(second.starts_with("HTTP/1.1 503"), "{second}");
    assert!(second.to_ascii_lowercase().contains("retry-after: 1"), "{second}");
    first.abort();

    let plain = serve(GatewayState::new(watch::channel(true).1, cancel.clone()), cancel.clone()).await;
    let resp = post(plain, "/sessions/1/actions", "", body).await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    cancel.cancel();
}

/// The connector's position can no longer be recorded (its offsets topic is gone): the
/// connector stops with that reason instead of waiting for ever on a capture that nobody
/// reads any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_that_cannot_be_recorded_stops_the_connector_with_the_reason() {
    use pipeline::connector::{ActionRow, SourceWriter};
    use rdkafka::admin::{AdminClient, AdminOptions};
    let (_broker, mut kafka) = testkit::broker(1).await;
    kafka.producer.insert("message.timeout.ms".into(), "1000".into());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("source.sqlite");
    let mut writer = SourceWriter::open(&db).unwrap();
    let row = |id: u64| ActionRow {
        run: 9,
        event_id: id,
        session: id % 4,
        intended_ns: 1000,
        traceparent: TraceContext::new_root().to_string().into(),
        action: "go".into(),
    };
    writer.insert(&row(0)).unwrap();
    let cancel = CancellationToken::new();
    let counters = Arc::new(StageCounters::default());
    let conn = tokio::spawn(connector::run(kafka.clone(), ConnectorConfig::new(Source::sqlite(&db)), counters, cancel));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin: AdminClient<_> = kafka.producer_config("admin").create().unwrap();
    admin.delete_topics(&[topics::CONNECT_OFFSETS], &AdminOptions::new()).await.unwrap();
    // Rows keep coming; their position cannot be written.
    for id in 1..2000 {
        writer.insert(&row(id)).unwrap();
    }
    let ended = tokio::time::timeout(Duration::from_secs(60), conn).await.expect("the connector stops, not hangs");
    let err = ended.unwrap().expect_err("the connector fails");
    assert!(err.to_string().contains("position was not recorded"), "{err}");
}
