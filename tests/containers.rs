//! The pipeline against real Apache Kafka (KRaft), PostgreSQL (logical decoding) and Redis,
//! each started in a container by testcontainers, as a user's own cluster would be.
//!
//! These tests need a Docker engine (`DOCKER_HOST`, or `/var/run/docker.sock`). Without
//! one they say on the test output, past the test harness's capture, that they were
//! skipped and why, and pass; with `TAILGATE_REQUIRE=docker` (or `all`) they fail instead.

#![allow(clippy::unwrap_used)]

use tailgate::run::{RunOptions, run};
use testcontainers_modules::kafka::apache;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::redis::{REDIS_PORT, Redis};
use testcontainers_modules::testcontainers::ImageExt;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

/// Why there is no Docker engine to use, if there is none.
fn no_engine() -> Option<String> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        return (host.is_empty()).then(|| "DOCKER_HOST is empty".into());
    }
    let socket = "/var/run/docker.sock";
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => None,
        Err(e) => Some(format!("no Docker engine: DOCKER_HOST is unset and {socket} does not answer ({e})")),
    }
}

/// `true` when the test may go on; otherwise says why it is skipped (or fails if required).
fn engine_or_skip(test: &str) -> bool {
    let Some(why) = no_engine() else { return true };
    testkit::missing::<()>(test, "docker", &why);
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_on_apache_kafka_postgres_and_redis_containers_accounts_for_every_event() {
    if !engine_or_skip("containers::the_pipeline_on_apache_kafka_postgres_and_redis_containers") {
        return;
    }
    let kafka = apache::Kafka::default().start().await.unwrap();
    let postgres = Postgres::default().with_cmd(["-c", "fsync=off", "-c", "wal_level=logical"]).start().await.unwrap();
    let redis = Redis::default().start().await.unwrap();
    let kafka_port = kafka.get_host_port_ipv4(apache::KAFKA_PORT).await.unwrap();
    let pg_port = postgres.get_host_port_ipv4(5432).await.unwrap();
    let redis_port = redis.get_host_port_ipv4(REDIS_PORT).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("containers.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"
name = "containers"
[load]
rate = 200
sessions = 16
warmup = "1s"
duration = "3s"
drain = "60s"
poison_every = 100
[broker]
bootstrap = "127.0.0.1:{kafka_port}"
partitions = 2
[connector]
source = "postgres"
postgres = "postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"
[edge_cache]
url = "redis://127.0.0.1:{redis_port}"
"#
        ),
    )
    .unwrap();
    let opts = RunOptions { scenario, out: Some(dir.path().join("run")), ..RunOptions::default() };
    let outcome = run(opts).await.unwrap();
    let r = &outcome.runs[0];
    assert_eq!(r.failure, None);
    let c = &r.result.counts;
    assert_eq!(c.sent, 800);
    assert_eq!(c.dead_lettered, 8, "every 100th event is poison: {c:?}");
    assert_eq!(c.delivered + c.dead_lettered, c.sent, "{c:?}");
    assert_eq!(c.lost, 0, "{c:?}");
    assert_eq!(r.result.broker.kind, "external");
    let p = r.result.pipeline.as_ref().unwrap();
    assert!(p.source.starts_with("postgres") && p.edge_cache.starts_with("Redis"), "{p:?}");
    assert_eq!(p.context_misses + p.context_errors, 0, "every context came from Redis: {p:?}");
}
