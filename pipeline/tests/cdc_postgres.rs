//! Change data capture from a real PostgreSQL: rows inserted (single-row and multi-row
//! transactions) arrive in `story.actions` in commit order, and stopping the connector
//! mid-stream and starting it again neither loses nor repeats a row, because it resumes
//! from the position it recorded in `tailgate.connect-offsets`.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::connector::{self, ACTION_COLUMNS, ConnectorConfig, Position, Source};
use pipeline::runtime::StageCounters;
use pipeline::{KafkaSettings, StoryEvent, topics};
use probes::TraceContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Reads `story.actions` until `want` events of `run` arrived (or a minute passed).
fn read_run(kafka: &KafkaSettings, run: u64, want: usize) -> Vec<u64> {
    let consumer: BaseConsumer = kafka.consumer_config("test-reader", "test-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topics::ACTIONS, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ids = Vec::new();
    while ids.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let e: StoryEvent = serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap();
            if e.run == run {
                ids.push(e.id);
            }
        }
    }
    // Anything more (a repeat) would show up within a short wait.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let e: StoryEvent = serde_json::from_slice(m.unwrap().payload().unwrap()).unwrap();
            if e.run == run {
                ids.push(e.id);
            }
        }
    }
    ids
}

async fn insert_rows(url: &str, run: u64, ids: std::ops::Range<u64>, one_transaction: bool) {
    let tp = TraceContext::new_root().to_string();
    let db = pipeline::io::postgres::connect(url).await.unwrap();
    if one_transaction {
        db.batch_execute("BEGIN").await.unwrap();
    }
    for id in ids {
        db.execute(
            &format!("INSERT INTO story_actions ({ACTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[&(run as i64), &(id as i64), &((id % 7) as i64), &(probes::now_ns() as i64), &tp, &"go"],
        )
        .await
        .unwrap();
    }
    if one_transaction {
        db.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_in_commit_order_without_loss_or_repeat_across_a_restart() {
    let Some(url) = testkit::postgres("rows_arrive_in_commit_order_without_loss_or_repeat_across_a_restart").await
    else {
        return;
    };
    let (_broker, kafka) = testkit::broker(1).await;
    let run = probes::now_ns() >> 8;
    let slot = format!("tg_test_{}", run % 1_000_000_007);
    pipeline::io::postgres::prepare(&url, &slot, true).await.unwrap();

    let start = |cancel: CancellationToken| {
        let source = Source::Postgres { url: url.clone(), slot: slot.clone() };
        let counters = Arc::new(StageCounters::default());
        tokio::spawn(connector::run(kafka.clone(), ConnectorConfig::new(source), counters, cancel))
    };

    // First life: single-row transactions, then a 400-row transaction, stopped mid-stream.
    let cancel = CancellationToken::new();
    let first = start(cancel.clone());
    insert_rows(&url, run, 0..200, false).await;
    let big = tokio::spawn({
        let url = url.clone();
        async move { insert_rows(&url, run, 200..600, true).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    cancel.cancel();
    first.await.unwrap().unwrap();
    big.await.unwrap();
    let key = Source::Postgres { url: url.clone(), slot: slot.clone() }.offsets_key().unwrap();
    let recorded = connector::committed_position(&kafka, &key).await.unwrap();
    assert!(matches!(recorded, Position::Postgres { lsn, .. } if lsn > 0), "{recorded:?}");

    // Second life: resumes where the first stopped; more rows arrive meanwhile.
    let cancel = CancellationToken::new();
    let second = start(cancel.clone());
    insert_rows(&url, run, 600..800, false).await;
    let ids = tokio::task::block_in_place(|| read_run(&kafka, run, 800));
    cancel.cancel();
    second.await.unwrap().unwrap();

    assert_eq!(ids.len(), 800, "every row exactly once (got {})", ids.len());
    assert_eq!(ids, (0..800).collect::<Vec<_>>(), "in commit order");

    let db = pipeline::io::postgres::connect(&url).await.unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

#[tokio::test]
async fn a_server_without_logical_decoding_or_a_wrong_address_is_a_clear_error() {
    let e =
        pipeline::io::postgres::prepare("postgres://tailgate:x@127.0.0.1:9/tailgate", "s", false).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("postgres://tailgate:***@127.0.0.1:9/tailgate"), "{msg}");
    assert!(msg.contains("Check the address"), "{msg}");
}
