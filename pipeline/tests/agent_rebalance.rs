//! Two agent instances in one consumer group on the embedded broker: when a second instance
//! joins, and when the first leaves, partitions move, and the sessions on them continue
//! from the state their last owner left (read back from the co-partitioned changelog).
//! Every session's beats are numbered 1, 2, 3... in event order across both moves.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::agent::{self, AgentConfig, AgentStats};
use pipeline::event::session_key;
use pipeline::runtime::StageContext;
use pipeline::{KafkaSettings, StoryEvent, topics};
use probes::TraceContext;
use probes::headers::{INTENDED, TRACEPARENT};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SESSIONS: u64 = 8;
const PER_BATCH: u64 = 10 * SESSIONS;

struct Instance {
    stats: Arc<AgentStats>,
    cancel: CancellationToken,
    task: JoinHandle<pipeline::Result<()>>,
}

async fn start(kafka: &KafkaSettings, dir: &Path) -> Instance {
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let (stats, cancel) = (Arc::new(AgentStats::default()), CancellationToken::new());
    let mut config = AgentConfig::new(dir, Some(1));
    config.concurrency = 2;
    let ctx = StageContext { ready: ready_tx, cancel: cancel.clone(), ..StageContext::new(kafka.clone()) };
    let task = tokio::spawn(pipeline::runtime::run(agent::Agent::new(config, None, Arc::clone(&stats)), ctx));
    tokio::time::timeout(Duration::from_secs(60), ready_rx.wait_for(|r| *r)).await.unwrap().unwrap();
    Instance { stats, cancel, task }
}

impl Instance {
    fn restores(&self) -> Vec<agent::state::Restored> {
        self.stats.restores.lock().unwrap().clone()
    }

    async fn stop(self) -> Vec<agent::state::Restored> {
        self.cancel.cancel();
        let restores = self.stats.clone();
        self.task.await.unwrap().unwrap();
        restores.restores.lock().unwrap().clone()
    }
}

/// Sends events `ids`, session `id % SESSIONS`, keyed by session as the connector keys them.
async fn send(producer: &FutureProducer, ids: std::ops::Range<u64>) {
    let tp = TraceContext::new_root().encode();
    for id in ids {
        let session = id % SESSIONS;
        let event =
            StoryEvent { run: 1, id, session, action: format!("act {id}"), beat: None, window: None, enrichment: None };
        let value = serde_json::to_vec(&event).unwrap();
        let headers = OwnedHeaders::new()
            .insert(Header { key: TRACEPARENT, value: Some(&tp[..]) })
            .insert(Header { key: INTENDED, value: Some("1000") });
        let key = session_key(session);
        let record = FutureRecord::to(topics::ACTIONS).key(&key[..]).payload(&value[..]).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
}

/// Every beat number each event id got, once `want` distinct ids have a beat.
async fn beats(kafka: &KafkaSettings, want: usize) -> BTreeMap<u64, Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let records = kafka.read_to_end(topics::BEATS, &HashMap::new(), Duration::from_secs(30)).await.unwrap();
        let mut numbers: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for r in records {
            let e: StoryEvent = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            numbers.entry(e.id).or_default().push(e.beat.unwrap().number);
        }
        if numbers.len() >= want {
            return numbers;
        }
        assert!(Instant::now() < deadline, "only {} of {want} events have beats", numbers.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_continue_their_state_when_partitions_move_between_instances() {
    let (_broker, kafka) = testkit::broker(4).await;
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // A alone, then B joins: the partitions are split between them.
    let a = start(&kafka, dir_a.path()).await;
    send(&producer, 0..PER_BATCH).await;
    beats(&kafka, PER_BATCH as usize).await;
    let b = start(&kafka, dir_b.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.restores().last().unwrap().partitions.len() == 4 {
        assert!(Instant::now() < deadline, "A kept every partition after B joined: {:?}", a.restores());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_first = b.restores()[0].clone();
    assert!(!b_first.partitions.is_empty() && b_first.partitions.len() < 4, "{b_first:?}");
    assert!(b_first.records > 0, "B read what A wrote on its partitions: {b_first:?}");
    send(&producer, PER_BATCH..2 * PER_BATCH).await;
    beats(&kafka, 2 * PER_BATCH as usize).await;

    // A leaves: B takes A's partitions and must read what A wrote since B joined.
    let a_restores = a.stop().await;
    while b.restores().last().unwrap().partitions.len() < 4 {
        assert!(Instant::now() < deadline + Duration::from_secs(60), "B never got A's partitions");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&producer, 2 * PER_BATCH..3 * PER_BATCH).await;
    let numbers = beats(&kafka, 3 * PER_BATCH as usize).await;
    let b_restores = b.stop().await;

    for (id, got) in &numbers {
        let expected = id / SESSIONS + 1; // the session's events are ids s, s+8, s+16...
        assert!(
            got.iter().all(|n| *n == expected),
            "event {id} (session {}) got beat numbers {got:?}, expected {expected}; A restored {a_restores:?}, B {b_restores:?}",
            id % SESSIONS
        );
    }
    let last = b_restores.last().unwrap();
    assert_eq!(last.partitions, [0, 1, 2, 3]);
    assert_eq!(last.from, "changelog", "B's store was new");
    assert!(last.records > 0 && last.sessions > 0, "{last:?}");
}
