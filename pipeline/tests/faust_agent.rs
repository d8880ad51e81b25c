//! The Faust agent (`[agent] kind = "faust"`: a faust-streaming worker in Python) on the
//! embedded broker: it beats like the Rust agent, dead-letters what it cannot read, and a
//! worker killed mid-stream (SIGKILL, nothing committed since its last commit) is started
//! again, recovers its table from `story.agent-changelog`, and numbers every session's
//! beats 1, 2, 3... on from where the dead one left, with nothing lost.
//!
//! They need the Python environment `scripts/python-env` makes (`.venv` at the repository
//! root, or `TAILGATE_PYTHON`); without it they are skipped, unless `TAILGATE_REQUIRE`
//! names `python` (as in CI), where they fail.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::agent::faust::{self, FaustConfig};
use pipeline::agent::model::ModelConfig;
use pipeline::agent::{AgentStats, state::Restored};
use pipeline::runtime::StageContext;
use pipeline::{KafkaSettings, StoryEvent, topics};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "common/beats.rs"]
mod beats;

const SESSIONS: u64 = 8;

fn python(test: &str) -> Option<PathBuf> {
    let py = std::env::var_os("TAILGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    if py.exists() {
        return Some(py);
    }
    testkit::missing(
        test,
        "python",
        "no Python environment (.venv/bin/python or TAILGATE_PYTHON); run scripts/python-env",
    )
}

struct Worker {
    ctx: StageContext,
    task: JoinHandle<pipeline::Result<()>>,
}

/// Starts a Faust agent and waits until it has its partitions and has recovered its table.
async fn start(kafka: &KafkaSettings, py: &Path, dir: &Path, stats: &Arc<AgentStats>) -> Worker {
    start_with(kafka, py, dir, stats, ModelConfig::default()).await
}

async fn start_with(
    kafka: &KafkaSettings,
    py: &Path,
    dir: &Path,
    stats: &Arc<AgentStats>,
    model: ModelConfig,
) -> Worker {
    let config = FaustConfig {
        python: py.to_owned(),
        history: 3,
        prefetch: true,
        model,
        edge_cache: String::new(),
        state_dir: dir.to_owned(),
        run: Some(1),
    };
    let (ready, mut ready_rx) = watch::channel(false);
    let ctx = StageContext { ready, cancel: CancellationToken::new(), ..StageContext::new(kafka.clone()) };
    let task = tokio::spawn(faust::run(config, ctx.clone(), Arc::clone(stats)));
    let ready = tokio::time::timeout(Duration::from_secs(90), ready_rx.wait_for(|r| *r)).await;
    assert!(ready.is_ok(), "the Faust agent was not ready in 90 s; its log: {}", log(dir));
    Worker { ctx, task }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("faust-agent.log")).unwrap_or_default()
}

fn event(id: u64, action: &str) -> StoryEvent {
    StoryEvent { run: 1, id, session: id % SESSIONS, action: action.into(), beat: None, window: None, enrichment: None }
}

/// Sends events `ids`, session `id % SESSIONS`, keyed by session as the connector keys them.
async fn send(producer: &FutureProducer, ids: std::ops::Range<u64>) {
    for id in ids {
        beats::send(producer, topics::ACTIONS, &event(id, &format!("act {id}")), 1000).await;
    }
}

/// Every beat number each event id got, and every beat's stamps, once `want` distinct ids
/// have a beat.
async fn beats(kafka: &KafkaSettings, want: usize, dir: &Path) -> (BTreeMap<u64, Vec<u64>>, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let records = kafka.read_to_end(topics::BEATS, &HashMap::new(), Duration::from_secs(30)).await.unwrap();
        let mut numbers: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut stamps = Vec::new();
        for r in records {
            let e: StoryEvent = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            numbers.entry(e.id).or_default().push(e.beat.unwrap().number);
            stamps.extend(r.header("tg-stamps"));
        }
        if numbers.len() >= want {
            return (numbers, stamps);
        }
        assert!(Instant::now() < deadline, "only {} of {want} events have beats; log: {}", numbers.len(), log(dir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each event's first beat is numbered by its place in its session (ids s, s+8, s+16...).
/// An event read again after a crash is emitted again, as a replay that changes no state
/// (the gateway drops it by id), so the numbers of the events after it stay right.
fn assert_continuous(numbers: &BTreeMap<u64, Vec<u64>>, restores: &[Restored]) {
    for (id, got) in numbers {
        let expected = id / SESSIONS + 1;
        assert!(
            got[0] == expected,
            "event {id} (session {}) got beat numbers {got:?}, expected {expected}; restores {restores:?}",
            id % SESSIONS
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faust_agent_beats_stamps_and_dead_letters_like_the_rust_one() {
    let Some(py) = python("the_faust_agent_beats_stamps_and_dead_letters_like_the_rust_one") else { return };
    let (_broker, kafka) = testkit::broker(3).await;
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let (dir, stats) = (tempfile::tempdir().unwrap(), Arc::new(AgentStats::default()));
    // The agent's records may be at most 100 kB (the test's producer keeps librdkafka's 1 MB).
    let mut small = kafka.clone();
    small.producer.insert("message.max.bytes".into(), "100000".into());
    let worker = start(&small, &py, dir.path(), &stats).await;
    send(&producer, 0..80).await;
    // A beat that would be over the limit: dead-lettered, its copy cut down to fit.
    beats::send(&producer, topics::ACTIONS, &event(1002, &"x".repeat(99_900)), 1000).await;
    // One without trace context, one with an empty action: both dead-lettered with why.
    let bare = serde_json::to_vec(&event(1000, "x")).unwrap();
    let record = FutureRecord::<[u8], [u8]>::to(topics::ACTIONS).payload(&bare);
    producer.send(record, Duration::from_secs(10)).await.unwrap();
    beats::send(&producer, topics::ACTIONS, &event(1001, ""), 1000).await;
    let (numbers, stamps) = beats(&kafka, 80, dir.path()).await;
    assert_continuous(&numbers, &[]);
    assert!(stamps.iter().all(|s| s.starts_with("agent:")), "the agent's own stamp: {stamps:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.ctx.counters.dead_lettered.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "dead letters not counted; log: {}", log(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dlq = kafka.read_to_end(topics::DLQ, &HashMap::new(), Duration::from_secs(30)).await.unwrap();
    let reasons: Vec<String> = dlq.iter().filter_map(|r| r.header("tg-dlq-reason")).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let big = reasons.iter().find(|r| r.starts_with("the beat is ")).unwrap_or_else(|| panic!("{reasons:?}"));
    assert!(big.contains("over the 100000 bytes a record may have (the copy cut to 1024 bytes"), "{big}");
    let cut = dlq.iter().find(|r| r.header("tg-dlq-reason").as_deref() == Some(big.as_str())).unwrap();
    let copy: StoryEvent = serde_json::from_slice(cut.value.as_deref().unwrap()).unwrap();
    assert_eq!((copy.id, copy.action.len()), (1002, 1024), "its run and id kept for the audit");
    assert!(reasons.iter().any(|r| r.contains("`traceparent` is missing")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("the action is empty")), "{reasons:?}");
    assert_eq!(worker.ctx.counters.forwarded.load(Ordering::Relaxed), 80);
    assert!(stats.runtime.lock().unwrap().as_deref().unwrap_or_default().starts_with("faust-streaming "));

    worker.ctx.cancel.cancel();
    worker.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faust_worker_killed_mid_stream_recovers_its_table_and_loses_nothing() {
    let Some(py) = python("a_faust_worker_killed_mid_stream_recovers_its_table_and_loses_nothing") else { return };
    let (_broker, mut kafka) = testkit::broker(3).await;
    // A killed worker holds its partitions until its session times out.
    kafka.consumer.insert("session.timeout.ms".into(), "6000".into());
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let (dir, stats) = (tempfile::tempdir().unwrap(), Arc::new(AgentStats::default()));
    let first = start(&kafka, &py, dir.path(), &stats).await;
    // Events still arriving when the worker dies.
    let paced = producer.clone();
    let sending = tokio::spawn(async move {
        for from in (0..400).step_by(8) {
            send(&paced, from..from + 8).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    beats(&kafka, 100, dir.path()).await;
    // SIGKILL (the task aborted drops the child): whatever it had not committed is read again.
    first.task.abort();
    let _ = first.task.await;
    sending.await.unwrap();
    send(&producer, 400..800).await;
    let second = start(&kafka, &py, dir.path(), &stats).await;
    let (numbers, _) = beats(&kafka, 800, dir.path()).await;
    let restores = stats.restores.lock().unwrap().clone();
    assert_continuous(&numbers, &restores);
    assert_eq!(restores.len(), 2, "{restores:?}");
    assert_eq!(restores[1].sessions, SESSIONS, "every session's state came back from the changelog: {restores:?}");
    assert_eq!(restores[1].partitions, [0, 1, 2], "{restores:?}");
    assert!(restores[1].records >= SESSIONS, "{restores:?}");
    second.ctx.cancel.cancel();
    second.task.await.unwrap().unwrap();
}

/// An OpenAI-compatible endpoint: the reply names the prompt's length; a prompt whose action
/// says `refuse` is answered 500.
async fn completions(axum::Json(req): axum::Json<serde_json::Value>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let prompt = req["messages"][0]["content"].as_str().unwrap_or_default();
    if prompt.contains("The player now: refuse") {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
    }
    let content = format!("{} says: {}", req["model"].as_str().unwrap_or_default(), prompt.len());
    axum::Json(serde_json::json!({ "choices": [{ "message": { "role": "assistant", "content": content } }] }))
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faust_agent_calls_an_http_model_and_dead_letters_its_failures() {
    let Some(py) = python("the_faust_agent_calls_an_http_model_and_dead_letters_its_failures") else { return };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (_broker, kafka) = testkit::broker(3).await;
    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let (dir, stats) = (tempfile::tempdir().unwrap(), Arc::new(AgentStats::default()));
    let model = ModelConfig::Http { url, model: "tiny".into(), timeout: Duration::from_secs(5), max_in_flight: 4 };
    let worker = start_with(&kafka, &py, dir.path(), &stats, model).await;
    send(&producer, 0..16).await;
    beats::send(&producer, topics::ACTIONS, &event(16, "refuse"), 1000).await;
    let records = loop {
        let r = kafka.read_to_end(topics::BEATS, &HashMap::new(), Duration::from_secs(30)).await.unwrap();
        if r.len() >= 16 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for r in &records {
        let e: StoryEvent = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let beat = e.beat.unwrap();
        assert_eq!(beat.text, format!("tiny says: {}", beat.prompt.len()), "the model's reply is the beat");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.model_failures.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "the failed call was not counted; log: {}", log(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dlq = kafka.read_to_end(topics::DLQ, &HashMap::new(), Duration::from_secs(30)).await.unwrap();
    let reasons: Vec<String> = dlq.iter().filter_map(|r| r.header("tg-dlq-reason")).collect();
    assert_eq!(reasons, ["model answered 500 Internal Server Error: overloaded"], "as the Rust agent says it");
    worker.ctx.cancel.cancel();
    worker.task.await.unwrap().unwrap();
}
