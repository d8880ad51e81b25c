//! Each `[[faults]]` kind, applied mid-run on the embedded broker: the run records when it
//! began and ended, what the events intended during it took and how long recovery took;
//! every event still arrives, exactly once, and in order within its session.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

mod support;

use tailgate::result::RunResult;

/// The quick start's shape, shorter: 1,000 events/s over 64 sessions for 8 s (1 s of it
/// warm-up), each fault 2 s in. Recovery is measured against a p99 of 5 s, which a busy
/// test machine meets once the fault is over (how it is computed has unit tests of its own).
fn scenario(name: &str, extra: &str, fault: &str) -> String {
    format!(
        r#"
name = "{name}"
[load]
rate = 1000
sessions = 64
payload_bytes = 256
warmup = "1s"
duration = "7s"
drain = "60s"
[broker]
partitions = 3
[agent]
concurrency = 8
[kafka.producer]
"acks" = "all"
[[sla]]
metric = "end_to_end.p99_ms"
max = 5000.0
{extra}
[[faults]]
at = "2s"
{fault}
"#
    )
}

/// Every event arrived once and in order; the one fault is recorded whole.
fn assert_ridden_out(r: &RunResult, kind: &str) {
    let c = r.counts;
    assert_eq!(c.sent, 8000, "{c:?}");
    // Redelivered upstream (at-least-once) perhaps, but never twice to the client.
    assert_eq!((c.delivered, c.lost, c.dead_lettered, c.client_duplicates, c.reordered), (8000, 0, 0, 0, 0), "{c:?}");
    assert_eq!(r.faults.len(), 1, "{:?}", r.faults);
    let f = &r.faults[0];
    assert_eq!(f.kind, kind);
    assert!(f.began_at_s >= 2.0, "{f:?}");
    assert!(f.ended_at_s.is_some_and(|e| e >= f.began_at_s), "{f:?}");
    let during = f.during.unwrap_or_else(|| panic!("the latency of events intended during it: {f:?}"));
    assert!(during.count > 0, "{f:?}");
    assert_eq!(f.recovery_bound_ms, Some(5000.0), "against the SLA's p99: {f:?}");
    assert!(f.recovery_s.is_some(), "the p99 was back under the SLA before the end: {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_from_its_log_loses_nothing() {
    let r = support::run_text(&scenario("broker-restart", "", "kind = \"broker_restart\"\nduration = \"500ms\"")).await;
    assert_ridden_out(&r, "broker_restart");
    assert!(r.broker.storage.starts_with("disk:"), "a restart needs the log on disk: {}", r.broker.storage);
    // Events intended while the broker was down waited for it.
    assert!(r.faults[0].during.unwrap().max_ms >= 300.0, "{:?}", r.faults[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_loses_nothing() {
    let r = support::run_text(&scenario(
        "agent-kill",
        "",
        "kind = \"stage_kill\"\nstage = \"agent\"\nduration = \"300ms\"",
    ))
    .await;
    assert_ridden_out(&r, "stage_kill");
    assert_eq!(r.faults[0].stage.as_deref(), Some("agent"));
    // Its state came back from the changelog when it started again.
    assert!(r.pipeline.as_ref().unwrap().agent_restores.len() >= 2, "{:?}", r.pipeline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_job_restarted_in_order_loses_nothing() {
    let r = support::run_text(&scenario("job-restart", "", "kind = \"stage_restart\"\nstage = \"streamjob\"")).await;
    assert_ridden_out(&r, "stage_restart");
    assert_eq!(r.faults[0].stage.as_deref(), Some("streamjob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_the_connector_and_the_enrichment_loses_nothing() {
    let Some(pg) = testkit::postgres("a_postgres_restart_under_the_connector_and_the_enrichment_loses_nothing").await
    else {
        return;
    };
    let slot = format!("tg_fault_{}", probes::now_ns() % 1_000_000_007);
    let extra = format!(
        "[connector]\nsource = \"postgres\"\npostgres = \"{pg}\"\nslot = \"{slot}\"\n[streamjob.enrich]\nurl = \"{pg}\"\ntimeout = \"5s\"\n"
    );
    let r = support::run_text(&scenario("pg-restart", &extra, "kind = \"postgres_restart\"\nduration = \"1s\"")).await;
    assert_ridden_out(&r, "postgres_restart");
    let db = pipeline::io::postgres::connect(&pg).await.unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_under_the_edge_cache_loses_nothing() {
    let Some(redis) = testkit::redis("a_redis_stall_under_the_edge_cache_loses_nothing").await else { return };
    let extra = format!("[edge_cache]\nurl = \"{redis}\"\n");
    let r = support::run_text(&scenario("redis-stall", &extra, "kind = \"redis_stall\"\nduration = \"1s\"")).await;
    assert_ridden_out(&r, "redis_stall");
}
