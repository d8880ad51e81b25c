//! The edge cache sink keeps Redis (and SQLite) from the compacted `story.context` topic:
//! the latest value per session wins and a tombstone deletes it.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use pipeline::context_sink::{self, SinkCounters};
use pipeline::io::cache::{CacheAt, EdgeCache};
use pipeline::topics;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

async fn sink_keeps(at: CacheAt, base: u64) {
    let (_broker, kafka) = testkit::broker(1).await;
    let cache = EdgeCache::open(&at).await.unwrap();
    let counters = Arc::new(SinkCounters::default());
    let (ready, _) = watch::channel(false);
    let cancel = CancellationToken::new();
    let ctx = pipeline::runtime::StageContext {
        ready,
        cancel: cancel.clone(),
        ..pipeline::runtime::StageContext::new(kafka.clone())
    };
    let sink = context_sink::ContextSink::new(cache.clone(), Arc::clone(&counters));
    let sink = tokio::spawn(pipeline::runtime::run(sink, ctx));

    let producer: FutureProducer = kafka.producer_config("test").create().unwrap();
    let key = |s: u64| (base + s).to_be_bytes();
    let sends: [(u64, Option<&str>); 4] = [(1, Some("old")), (2, Some("two")), (1, Some("new")), (2, None)];
    for (s, v) in sends {
        let k = key(s);
        let mut r = FutureRecord::<[u8], str>::to(topics::CONTEXT).key(&k[..]);
        if let Some(v) = v {
            r = r.payload(v);
        }
        producer.send(r, Duration::from_secs(10)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while counters.applied.load(Ordering::Relaxed) < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    sink.await.unwrap().unwrap();
    assert_eq!(counters.applied.load(Ordering::Relaxed), 4);
    assert_eq!(cache.get(base + 1).await.unwrap().as_deref(), Some("new"));
    assert_eq!(cache.get(base + 2).await.unwrap(), None, "the tombstone deleted it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_redis_from_the_compacted_topic() {
    let Some(url) = testkit::redis("the_sink_keeps_redis_from_the_compacted_topic").await else { return };
    // Sessions far from the ones runs use, unique to this test run.
    let base = (probes::now_ns() % 1_000_000) * 1_000 + (1 << 40);
    sink_keeps(CacheAt::Redis(url), base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_sqlite_from_the_compacted_topic() {
    let dir = tempfile::tempdir().unwrap();
    sink_keeps(CacheAt::Sqlite(dir.path().join("cache.sqlite")), 0).await;
}

#[tokio::test]
async fn an_unreachable_redis_names_its_address() {
    let e = EdgeCache::open(&CacheAt::Redis("redis://127.0.0.1:9/0".into())).await.unwrap_err().to_string();
    assert!(e.contains("redis://127.0.0.1:9/0") && e.contains("redis-server"), "{e}");
}

/// A Redis server of this test's own, on a free port, that the test can stop and start.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> std::io::Result<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(Self { port, child: Some(child) })
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Retries `f` for up to `secs` seconds until it succeeds.
async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => panic!("still failing: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_cache_answers_within_its_bound_while_redis_is_down_and_reconnects_after() {
    let test = "the_edge_cache_answers_within_its_bound_while_redis_is_down_and_reconnects_after";
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(mut redis) = testkit::needs(test, "redis", OwnRedis::start(port)) else { return };
    let at = CacheAt::Redis(format!("redis://127.0.0.1:{}/0", redis.port));
    let cache = eventually(10, || EdgeCache::open(&at)).await;
    cache.put(1, Some("before")).await.unwrap();

    redis.stop();
    let began = std::time::Instant::now();
    assert!(cache.get(1).await.is_err(), "Redis is down");
    assert!(began.elapsed() < Duration::from_secs(15), "answered within its bound: {:?}", began.elapsed());

    let _again = OwnRedis::start(port).unwrap();
    eventually(20, || cache.put(2, Some("after"))).await;
    assert_eq!(eventually(10, || cache.get(2)).await.as_deref(), Some("after"), "the same cache reconnected");
}
