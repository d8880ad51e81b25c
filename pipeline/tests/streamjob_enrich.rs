//! The stream job's async enrichment as a stage on the embedded broker, with a SQLite
//! database where some sessions' lookups are slow (a statement that runs for seconds): the
//! slow ones time out to the fallback while the others are looked up meanwhile, the
//! in-flight bound holds, and the result order is the one configured.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

#[path = "common/beats.rs"]
mod beats;

use pipeline::streamjob::enrich::{EnrichAt, EnrichConfig, Enricher, ResultOrder, TABLE};
use pipeline::streamjob::profiles::{seed, seed_profile};
use pipeline::streamjob::{StreamJob, StreamJobConfig};
use pipeline::{KafkaSettings, StoryEvent, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const EVENTS: u64 = 24;
const SESSIONS: u64 = 8;
const BOUND: usize = 6;

/// Sessions 0 and 4 are slow: their lookup counts to 200 million first.
fn slow(session: u64) -> bool {
    session.is_multiple_of(4)
}

fn read_updates(kafka: &KafkaSettings) -> Vec<StoryEvent> {
    let consumer: BaseConsumer = kafka.consumer_config("test-reader", "test-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topics::UPDATES, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while Instant::now() < deadline && out.len() < EVENTS as usize {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap());
        }
    }
    out
}

/// Runs the job over `EVENTS` beats (sessions in turn) and returns the updates in the
/// order they were produced, with the enrichment's counters.
async fn enrich_run(order: ResultOrder) -> (Vec<StoryEvent>, Arc<pipeline::streamjob::enrich::EnrichStats>, u64) {
    let (_broker, kafka) = testkit::broker(1).await;

    let dir = tempfile::tempdir().unwrap();
    let at = EnrichAt::Sqlite(dir.path().join("profiles.sqlite"));
    seed(&at, SESSIONS).await.unwrap();
    let mut config = EnrichConfig::new(at);
    config.query = Some(format!(
        "SELECT profile FROM {TABLE} WHERE session = ?1 AND (session % 4 != 0 OR \
         (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000000) \
          SELECT max(i) FROM n) > 0)"
    ));
    config.timeout = Duration::from_millis(200);
    config.max_in_flight = BOUND;
    config.connections = BOUND;
    config.cache = 0;
    config.order = order;
    config.fallback = "plain".into();
    let enricher = Enricher::open(&config).await.unwrap();
    let stats = Arc::clone(enricher.stats());
    let job = StreamJob::new(StreamJobConfig::default()).with_enricher(enricher);

    let stage = beats::start(&kafka, job).await;
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    for id in 0..EVENTS {
        let event = beats::beat(2, id, id % SESSIONS, "go");
        beats::send(&producer, topics::BEATS, &event, 1_000_000_000_000 + id * 1_000_000).await;
    }
    let updates = tokio::task::block_in_place(|| read_updates(&kafka));
    let forwarded = stage.counters.forwarded.load(Ordering::Relaxed);
    stage.stop().await;
    (updates, stats, forwarded)
}

/// What every run must show, whatever the order.
fn check(updates: &[StoryEvent], stats: &pipeline::streamjob::enrich::EnrichStats, forwarded: u64) {
    assert_eq!(updates.len(), EVENTS as usize, "every beat goes on");
    assert_eq!(forwarded, EVENTS);
    for u in updates {
        let e = u.enrichment.as_ref().unwrap();
        if slow(u.session) {
            assert_eq!((e.profile.as_str(), e.from.as_str()), ("plain", "timeout"), "{u:?}");
        } else if e.from == "db" {
            assert_eq!(e.profile, seed_profile(u.session), "{u:?}");
        }
        assert!(u.window.is_some(), "windows still apply: {u:?}");
    }
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert!(updates.iter().any(|u| u.enrichment.as_ref().unwrap().from == "db"), "fast sessions were looked up");
    assert_eq!(n(&stats.events), EVENTS);
    assert_eq!(n(&stats.db_hits) + n(&stats.timeouts) + n(&stats.missing) + n(&stats.errors), EVENTS);
    assert!(n(&stats.timeouts) >= EVENTS / 4, "each slow lookup timed out: {stats:?}");
    let peak = n(&stats.peak_in_flight);
    assert!(peak <= BOUND as u64, "the in-flight bound holds: {peak}");
    assert!(peak >= 2, "lookups overlapped instead of running one by one: {peak}");
    assert_eq!(n(&stats.in_flight), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_enrichment_keeps_the_input_order_around_slow_lookups() {
    let (updates, stats, forwarded) = enrich_run(ResultOrder::Ordered).await;
    check(&updates, &stats, forwarded);
    let ids: Vec<u64> = updates.iter().map(|u| u.id).collect();
    assert_eq!(ids, (0..EVENTS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_enrichment_lets_fast_lookups_pass_slow_ones() {
    let (updates, stats, forwarded) = enrich_run(ResultOrder::Unordered).await;
    check(&updates, &stats, forwarded);
    let mut ids: Vec<u64> = updates.iter().map(|u| u.id).collect();
    let first_slow = ids.iter().position(|&id| slow(id % SESSIONS)).unwrap();
    assert!(first_slow > 0, "event 0 (slow) was overtaken: {ids:?}");
    ids.sort_unstable();
    assert_eq!(ids, (0..EVENTS).collect::<Vec<_>>(), "each exactly once");
}
