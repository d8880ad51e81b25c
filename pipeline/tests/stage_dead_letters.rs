//! The stage runtime on the embedded broker: a valid event comes out stamped, in the same
//! trace, with its intended time intact; events it cannot read go to the dead-letter topic
//! with the reason and the stage in headers; nothing is dropped.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::agent::{self, AgentConfig, AgentStats};
use pipeline::runtime::{StageContext, StageCounters};
use pipeline::{KafkaSettings, StoryEvent, topics};
use probes::headers::{DLQ_REASON, DLQ_STAGE, INTENDED, STAMPS, TRACEPARENT};
use probes::{StampIter, TraceContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn read_all(kafka: &KafkaSettings, topic: &str, want: usize) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = kafka.consumer_config("test-reader", "test-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.unwrap().detach());
        }
    }
    out
}

fn header<'a>(m: &'a OwnedMessage, key: &str) -> Option<&'a [u8]> {
    m.headers()?.iter().find(|h| h.key == key)?.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_are_stamped_and_poison_is_dead_lettered_with_its_reason() {
    let (_broker, kafka) = testkit::broker(1).await;
    let state = tempfile::tempdir().unwrap();

    let (ready_tx, mut ready_rx) = watch::channel(false);
    let cancel = CancellationToken::new();
    let counters = Arc::new(StageCounters::default());
    let ctx =
        StageContext { counters: Arc::clone(&counters), ready: ready_tx, cancel: cancel.clone(), kafka: kafka.clone() };
    let agent = agent::Agent::new(AgentConfig::new(state.path(), Some(1)), None, Arc::new(AgentStats::default()));
    let stage = tokio::spawn(pipeline::runtime::run(agent, ctx));
    tokio::time::timeout(Duration::from_secs(60), ready_rx.wait_for(|r| *r)).await.unwrap().unwrap();

    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let trace = TraceContext::new_root();
    let tp = trace.encode();
    let good = serde_json::to_vec(&StoryEvent {
        run: 1,
        id: 7,
        session: 3,
        action: "open the door".into(),
        beat: None,
        window: None,
        enrichment: None,
    })
    .unwrap();
    let headers = || {
        OwnedHeaders::new()
            .insert(Header { key: TRACEPARENT, value: Some(&tp[..]) })
            .insert(Header { key: INTENDED, value: Some("1000") })
            .insert(Header { key: "x-user", value: Some("kept") })
    };
    // 1. no headers at all; 2. a valid event; 3. valid headers around a value that is not an event.
    let sends = [
        FutureRecord::<str, [u8]>::to(topics::ACTIONS).key("p").payload(&b"\xff\x00garbage"[..]),
        FutureRecord::to(topics::ACTIONS).key("g").payload(&good[..]).headers(headers()),
        FutureRecord::to(topics::ACTIONS).key("j").payload(&b"{\"run\":1}"[..]).headers(headers()),
    ];
    for r in sends {
        producer.send(r, Duration::from_secs(10)).await.unwrap();
    }

    let beats = tokio::task::block_in_place(|| read_all(&kafka, topics::BEATS, 1));
    let dlq = tokio::task::block_in_place(|| read_all(&kafka, topics::DLQ, 2));
    cancel.cancel();
    stage.await.unwrap().unwrap();

    assert_eq!(beats.len(), 1);
    let beat = &beats[0];
    let out_trace = TraceContext::parse(header(beat, TRACEPARENT).unwrap()).unwrap();
    assert_eq!(out_trace.trace_id, trace.trace_id, "same trace");
    assert_ne!(out_trace.span_id, trace.span_id, "a child span");
    assert_eq!(header(beat, INTENDED), Some(&b"1000"[..]));
    assert_eq!(header(beat, "x-user"), Some(&b"kept"[..]), "foreign headers are forwarded");
    let stamps: Vec<_> = StampIter::new(header(beat, STAMPS).unwrap()).unwrap().map(Result::unwrap).collect();
    assert_eq!(stamps.len(), 1);
    assert_eq!(stamps[0].stage, "agent");
    let event: StoryEvent = serde_json::from_slice(beat.payload().unwrap()).unwrap();
    assert_eq!(event.beat.unwrap().number, 1);

    assert_eq!(dlq.len(), 2);
    let reasons: Vec<String> =
        dlq.iter().map(|m| String::from_utf8_lossy(header(m, DLQ_REASON).unwrap()).into_owned()).collect();
    assert_eq!(reasons[0], "header `traceparent` is missing");
    assert!(reasons[1].starts_with("the value is not a JSON story event"), "{}", reasons[1]);
    assert!(dlq.iter().all(|m| header(m, DLQ_STAGE) == Some(&b"agent"[..])));
    assert_eq!(dlq[0].payload(), Some(&b"\xff\x00garbage"[..]), "dead letters keep the original value");

    assert_eq!(counters.forwarded.load(Ordering::Relaxed), 1);
    assert_eq!(counters.dead_lettered.load(Ordering::Relaxed), 2);
}

/// A run's audit of the dead-letter topic reads from where the topic ended when the run
/// began: a topic that holds many earlier runs' dead letters is not read whole (and a
/// dead letter from before is not the run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_audit_reads_only_what_came_after_the_run_began() {
    let (_broker, kafka) = testkit::broker(1).await;
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let dlq =
        pipeline::runtime::DeadLetters::new(producer, "agent", Arc::new(StageCounters::default()), Default::default());
    let letter = |id: u64| {
        let e = StoryEvent { run: 9, id, session: 1, action: "x".into(), beat: None, window: None, enrichment: None };
        dlq.send_event(&e, kafka.converter, OwnedHeaders::new(), "poison").unwrap().unwrap()
    };
    letter(1).await.unwrap().unwrap();
    let since = kafka.high_watermarks(topics::DLQ).await.unwrap();
    letter(2).await.unwrap().unwrap();
    let timeout = Duration::from_secs(10);
    let all =
        pipeline::runtime::audit_dead_letters(&kafka, 9, &std::collections::HashMap::new(), timeout).await.unwrap();
    let run = pipeline::runtime::audit_dead_letters(&kafka, 9, &since, timeout).await.unwrap();
    assert_eq!(all.ids.len(), 2);
    assert_eq!(run.ids.into_iter().collect::<Vec<_>>(), [2]);
}
