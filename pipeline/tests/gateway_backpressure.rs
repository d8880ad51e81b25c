//! The gateway on the embedded broker with one client that stops reading: once its queue is
//! full the consumer pauses its partitions instead of dropping, and when the client reads
//! again the consumer resumes and every update arrives, in order, none lost.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

#[path = "common/beats.rs"]
mod beats;

use pipeline::gateway::GatewayState;
use pipeline::gateway::fanout::{FanoutConfig, Item, SlowClient};
use pipeline::runtime::StageContext;
use pipeline::topics;
use rdkafka::producer::FutureProducer;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A gateway on `kafka` whose one client (returned, reading nothing yet) has room for 4
/// updates, once its consumer has partitions; then 20 updates sent to it.
async fn full_gateway(
    kafka: &pipeline::KafkaSettings,
    cancel: &CancellationToken,
) -> (GatewayState, pipeline::gateway::fanout::Subscription, tokio::task::JoinHandle<pipeline::Result<()>>) {
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let config = FanoutConfig { buffer: 4, policy: SlowClient::DropOldest, ..FanoutConfig::default() };
    let state = GatewayState::with_fanout(ready_rx.clone(), cancel.clone(), config);
    let client = state.subscribe(None);
    let ctx = StageContext { ready: ready_tx, cancel: cancel.clone(), ..StageContext::new(kafka.clone()) };
    let consumer = tokio::spawn(pipeline::runtime::run(pipeline::gateway::Gateway::new(state.clone()), ctx));
    tokio::time::timeout(Duration::from_secs(60), ready_rx.wait_for(|r| *r)).await.unwrap().unwrap();
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    for id in 0..20u64 {
        beats::send(&producer, topics::UPDATES, &beats::beat(3, id, 1, "go"), 1000).await;
    }
    (state, client, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_client_pauses_the_consumer_and_reading_resumes_it_without_loss() {
    let (_broker, kafka) = testkit::broker(1).await;

    let cancel = CancellationToken::new();
    let (state, mut client, consumer) = full_gateway(&kafka, &cancel).await;

    // The queue fills (4) and the consumer pauses with the fifth update in hand.
    let stats = state.fanout_stats();
    tokio::time::timeout(Duration::from_secs(60), async {
        while stats.pauses.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the consumer paused");

    // Reading makes room: the consumer resumes, and every update arrives in order.
    let mut ids = Vec::new();
    while ids.len() < 20 {
        match tokio::time::timeout(Duration::from_secs(60), client.next()).await.unwrap() {
            Some(Item::Update(data)) => {
                let d: serde_json::Value = serde_json::from_str(&data).unwrap();
                ids.push(d["id"].as_u64().unwrap());
            }
            other => panic!("expected an update, got {other:?}"),
        }
    }
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0, "paused, not dropped");
    assert!(stats.pauses.load(Ordering::Relaxed) >= 1);
    assert!(stats.paused_ns.load(Ordering::Relaxed) > 0);
    cancel.cancel();
    consumer.await.unwrap().unwrap();
}

/// A client that reads nothing for longer than the consumer may go without polling: the
/// gateway waits for it at most half of `max.poll.interval.ms` (here 6 s, so 3 s), then
/// reads on and the slow-client policy applies, so the group never takes the gateway's
/// partitions away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_ends_before_the_consumer_would_be_dropped_from_its_group() {
    let (_broker, mut kafka) = testkit::broker(1).await;
    for (k, v) in [("max.poll.interval.ms", "6000"), ("session.timeout.ms", "6000")] {
        kafka.consumer.insert(k.into(), v.into());
    }
    let cancel = CancellationToken::new();
    let (state, _client, consumer) = full_gateway(&kafka, &cancel).await; // the client never reads
    let stats = state.fanout_stats();
    tokio::time::timeout(Duration::from_secs(30), async {
        while stats.dropped.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the pause ended and the slow-client policy applied");
    let paused = Duration::from_nanos(stats.paused_ns.load(Ordering::Relaxed));
    assert!(paused >= Duration::from_millis(2900), "it waited for the client for half the poll interval: {paused:?}");
    assert!(stats.pauses.load(Ordering::Relaxed) >= 1);
    assert!(!consumer.is_finished(), "the gateway goes on");
    cancel.cancel();
    consumer.await.unwrap().unwrap();
}
