//! The stream job as a stage on the embedded broker, fed beats with known event times: the
//! updates carry their window counts, a window's final count, a pattern match and a late
//! event each land on their side output, and every decision is in `story.audit`. A job
//! stopped and started again picks its open windows up from its changelog.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

#[path = "common/beats.rs"]
mod beats;

use pipeline::streamjob::{Pattern, StreamJob, StreamJobConfig};
use pipeline::{KafkaSettings, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn read_values(kafka: &KafkaSettings, topic: &str, want: usize) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = kafka.consumer_config("test-reader", "test-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    // Read a little past `want`, so that an extra record would be seen.
    let mut quiet_until = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap());
        }
        if out.len() >= want && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_patterns_and_late_events_reach_their_side_outputs() {
    let (_broker, kafka) = testkit::broker(1).await;

    let binge = Pattern { name: "binge".into(), times: 3, within: Duration::from_secs(2), contains: None };
    let job = StreamJob::new(StreamJobConfig { patterns: vec![binge], ..StreamJobConfig::default() });
    let stats = Arc::clone(&job.stats);
    let stage = beats::start(&kafka, job).await;

    // One session; event times in ms. 10_000..10_900 is a binge in window [10_000, 11_000);
    // 12_000 moves the watermark to 11_800, firing that window; 10_100 then comes too late.
    send_beats(&kafka, 0, &[10_000, 10_500, 10_900, 12_000, 10_100]).await;

    let (updates, audit, signals, late) = tokio::task::block_in_place(|| {
        (
            read_values(&kafka, topics::UPDATES, 5),
            read_values(&kafka, topics::AUDIT, 3),
            read_values(&kafka, topics::SIGNALS, 1),
            read_values(&kafka, topics::LATE, 1),
        )
    });
    let forwarded = stage.counters.forwarded.load(Ordering::Relaxed);
    stage.stop().await;

    // Every event goes on, the late one marked late and counted in no window.
    let windows: Vec<(u64, u64, bool)> = updates
        .iter()
        .map(|u| {
            let w = &u["window"];
            (w["start_ms"].as_u64().unwrap(), w["count"].as_u64().unwrap(), w["late"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        windows,
        [(10_000, 1, false), (10_000, 2, false), (10_000, 3, false), (12_000, 1, false), (10_000, 0, true)]
    );
    let decisions: Vec<&str> = audit.iter().map(|a| a["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["pattern", "window_fired", "late"]);
    assert_eq!((audit[1]["start_ms"].as_u64(), audit[1]["count"].as_u64()), (Some(10_000), Some(3)));
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0]["signal"], "binge");
    assert_eq!(signals[0]["ids"], serde_json::json!([0, 1, 2]));
    assert_eq!((signals[0]["run"].as_u64(), signals[0]["session"].as_u64()), (Some(9), Some(4)));
    assert_eq!(late.len(), 1);
    assert_eq!((late[0]["id"].as_u64(), late[0]["watermark_ms"].as_u64()), (Some(4), Some(11_800)));

    assert_eq!(forwarded, 5);
    assert_eq!(stats.audit_records.load(Ordering::Relaxed), 3);
    assert_eq!(stats.late.load(Ordering::Relaxed), 1);
    assert_eq!(stats.windows_fired.load(Ordering::Relaxed), 1);
}

/// Sends beats of session 4 of run 9 at the given event times (ms), ids from `first_id`.
async fn send_beats(kafka: &KafkaSettings, first_id: u64, times: &[u64]) {
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    for (i, ms) in times.iter().enumerate() {
        let id = first_id + i as u64;
        beats::send(&producer, topics::BEATS, &beats::beat(9, id, 4, &format!("choice {id}")), ms * 1_000_000).await;
    }
}

/// The job with its changelog on.
fn job_with_changelog() -> StreamJob {
    StreamJob::new(StreamJobConfig { changelog: true, ..StreamJobConfig::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_job_rebuilds_its_open_windows_from_the_changelog() {
    let (_broker, kafka) = testkit::broker(1).await;
    kafka.ensure_topics(&[topics::STREAMJOB_CHANGELOG], &[("cleanup.policy", "compact")]).await.unwrap();

    // Two actions in window [20_000, 21_000), then the job stops with the window open.
    let stage = beats::start(&kafka, job_with_changelog()).await;
    send_beats(&kafka, 0, &[20_000, 20_400]).await;
    tokio::task::block_in_place(|| read_values(&kafka, topics::UPDATES, 2));
    stage.stop().await;

    // A new instance: the third action counts as the window's third, and when the
    // watermark passes the window's end it fires with all three.
    let job = job_with_changelog();
    let stats = Arc::clone(&job.stats);
    let stage = beats::start(&kafka, job).await;
    send_beats(&kafka, 2, &[20_800, 22_000]).await;
    let (updates, audit) = tokio::task::block_in_place(|| {
        (read_values(&kafka, topics::UPDATES, 4), read_values(&kafka, topics::AUDIT, 1))
    });
    stage.stop().await;
    assert_eq!(stats.restored.load(Ordering::Relaxed), 1, "session 4 was rebuilt");
    let counts: Vec<u64> = updates.iter().map(|u| u["window"]["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 3, 1]);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["decision"].as_str(), audit[0]["start_ms"].as_u64(), audit[0]["count"].as_u64()),
        (Some("window_fired"), Some(20_000), Some(3))
    );
}
