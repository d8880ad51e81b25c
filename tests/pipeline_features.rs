//! The reference pipeline's features through whole runs on the embedded broker: an agent
//! stopped abruptly mid-run rebuilds its state from the changelog and loses nothing with
//! eight workers keeping each session's order; the Protobuf converter and a transform chain
//! (mask, filter, header) keep the accounting exact, filtered and poisoned events included;
//! actions posted over HTTP arrive through the gateway's ingress; and, where
//! the servers run, capture from PostgreSQL with the context in Redis and beats enriched
//! from PostgreSQL.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

mod support;

use support::run_text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_mid_run_recovers_its_state_and_loses_nothing() {
    let r = run_text(
        r#"
name = "agent-restart"
[load]
rate = 300
sessions = 32
payload_bytes = 64
warmup = "1s"
duration = "4s"
drain = "60s"
[broker]
partitions = 4
[agent]
concurrency = 8
restart_at = "2500ms"
[agent.model]
kind = "simulated"
latency = "uniform"
min = "0ms"
max = "2ms"
"#,
    )
    .await;
    let c = r.counts;
    assert_eq!(c.sent, 1500);
    assert_eq!((c.lost, c.dead_lettered, c.filtered), (0, 0, 0), "{c:?}");
    assert_eq!(c.delivered, c.sent);
    assert_eq!(c.reordered, 0, "each session's order holds with 8 workers");
    let p = r.pipeline.unwrap();
    assert_eq!(p.agent_concurrency, 8);
    let (first, later) = p.agent_restores.split_first().unwrap();
    assert_eq!((first.at_s, first.records), (0.0, 0), "{first:?}");
    // The restarted agent found no clean mark and read every partition's changelog.
    let restart: Vec<_> = later.iter().filter(|r| r.at_s > 2.0 && r.from == "changelog").collect();
    assert!(!restart.is_empty(), "{:?}", p.agent_restores);
    let mut partitions: Vec<i32> = restart.iter().flat_map(|r| r.partitions.clone()).collect();
    partitions.dedup();
    assert_eq!(partitions, [0, 1, 2, 3], "{restart:?}");
    assert!(restart.iter().map(|r| r.records).sum::<u64>() > 0, "{restart:?}");
    assert!(restart.iter().map(|r| r.sessions).sum::<u64>() > 0, "{restart:?}");
    assert!(p.context_hits > 0 && p.context_errors == 0, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_and_a_transform_chain_keep_the_accounting_exact() {
    let r = run_text(
        r#"
name = "converters"
[load]
rate = 200
sessions = 8
payload_bytes = 64
warmup = "1s"
duration = "2s"
drain = "60s"
poison_every = 100
[broker]
partitions = 1
[connector]
tasks = 3
converter = "protobuf"
[[connector.transforms]]
type = "mask"
fields = ["action"]
[[connector.transforms]]
type = "filter"
field = "session"
equals = 3
[[connector.transforms]]
type = "insert_header"
name = "x-source"
value = "cdc"
"#,
    )
    .await;
    let c = r.counts;
    assert_eq!(c.sent, 600);
    assert!(c.filtered > 0, "session 3's events are filtered: {c:?}");
    assert_eq!(c.dead_lettered, 6, "every 100th event is poison: {c:?}");
    assert_eq!(c.delivered + c.filtered + c.dead_lettered, c.sent, "{c:?}");
    assert_eq!((c.lost, c.reordered), (0, 0), "{c:?}");
    let p = r.pipeline.unwrap();
    assert_eq!((p.converter.as_str(), p.tasks), ("protobuf", 3));
    assert_eq!(p.transforms, ["mask", "filter", "insert_header"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_posted_to_the_gateway_arrive_and_poison_is_dead_lettered() {
    // The gateway requires bearer tokens: the players and the audience carry the
    // all-sessions one (the gateway's own tests cover refusals).
    let r = run_text(
        r#"
name = "http-ingress"
[load]
rate = 200
sessions = 8
payload_bytes = 64
warmup = "1s"
duration = "2s"
drain = "60s"
poison_every = 50
[broker]
partitions = 1
[connector]
source = "http"
[[gateway.tokens]]
token = "player-one"
sessions = [1]
[[gateway.tokens]]
token = "tailgate-run"
sessions = "all"
"#,
    )
    .await;
    let c = r.counts;
    assert_eq!(c.sent, 600);
    assert_eq!(c.dead_lettered, 12, "{c:?}");
    // Not `reordered`: players post concurrently, so two actions of one session in flight
    // at once may reach the gateway in either order (docs/measured.md), more so on a busy box.
    assert_eq!((c.delivered, c.lost), (588, 0), "{c:?}");
    assert!(r.pipeline.unwrap().source.starts_with("http POST http://127.0.0.1:"));
    assert_eq!(r.hops.iter().find(|h| h.name == "source->connector").unwrap().stats.count, 392);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_from_postgres_with_context_in_redis() {
    let (Some(pg), Some(redis)) = (
        testkit::postgres("capture_from_postgres_with_context_in_redis").await,
        testkit::redis("capture_from_postgres_with_context_in_redis").await,
    ) else {
        return;
    };
    let slot = format!("tg_run_{}", probes::now_ns() % 1_000_000_007);
    let r = run_text(&format!(
        r#"
name = "cdc"
[load]
rate = 300
sessions = 16
payload_bytes = 64
warmup = "1s"
duration = "3s"
drain = "60s"
[broker]
partitions = 1
[connector]
source = "postgres"
postgres = "{pg}"
slot = "{slot}"
[edge_cache]
url = "{redis}"
[streamjob.enrich]
url = "{pg}"
timeout = "5s"
"#
    ))
    .await;
    let c = r.counts;
    assert_eq!(c.sent, 1200);
    assert_eq!((c.delivered, c.lost, c.dead_lettered, c.reordered), (1200, 0, 0, 0), "{c:?}");
    let p = r.pipeline.unwrap();
    assert!(p.source.starts_with("postgres postgres://tailgate:***@"), "{}", p.source);
    assert!(p.edge_cache.starts_with("Redis redis://"), "{}", p.edge_cache);
    assert!(p.context_hits >= 1100 && p.context_misses == 0, "{p:?}");
    // Every beat enriched from PostgreSQL, through the cache after each session's first.
    let e = p.streamjob.unwrap().enrich.unwrap();
    assert!(e.database.starts_with("PostgreSQL postgres://tailgate:***@"), "{e:?}");
    assert_eq!((e.events, e.db_hits + e.cache_hits, e.timeouts, e.errors, e.missing), (1200, 1200, 0, 0, 0), "{e:?}");
    assert!(e.db_hits >= 16 && e.peak_in_flight <= e.max_in_flight, "{e:?}");
    let db = pipeline::io::postgres::connect(&pg).await.unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_job_signals_a_pattern_given_in_the_scenario() {
    // One session, an action every 50 ms: every three consecutive actions are a binge
    // (within 2 s), and matches do not overlap, so 60 actions give exactly 20 signals.
    let r = run_text(
        r#"
name = "binge"
[load]
rate = 20
sessions = 1
warmup = "1s"
duration = "2s"
[broker]
partitions = 1
[streamjob]
slide = "500ms"
[streamjob.enrich]
timeout = "5s"
order = "unordered"
[[streamjob.patterns]]
name = "binge"
times = 3
within = "2s"
[[streamjob.patterns]]
name = "never"
times = 2
within = "1s"
contains = "no action says this"
"#,
    )
    .await;
    let c = r.counts;
    assert_eq!((c.sent, c.delivered, c.lost), (60, 60, 0), "{c:?}");
    let j = r.pipeline.unwrap().streamjob.unwrap();
    assert_eq!((j.window_ms, j.slide_ms), (1000, 500));
    assert_eq!(j.signals.get("binge"), Some(&20), "{j:?}");
    assert_eq!(j.signals.get("never"), None, "{j:?}");
    assert_eq!(j.late, 0, "in order, nothing is late: {j:?}");
    assert!(j.windows_fired >= 4, "3 s of events in 1 s windows every 500 ms: {j:?}");
    assert_eq!(j.audit_records, j.windows_fired + j.late + 20, "every decision is audited: {j:?}");
    // Enrichment from the SQLite file the run seeded, then the cache. Events that reach the
    // job in one burst (the backlog of its first fetch) are looked up side by side before
    // the first answer fills the cache, so the split between the two varies.
    let e = j.enrich.unwrap();
    assert!(e.database.starts_with("SQLite ") && e.database.ends_with("profiles.sqlite"), "{e:?}");
    assert_eq!((e.order.as_str(), e.events, e.db_hits + e.cache_hits, e.timeouts), ("unordered", 60, 60, 0), "{e:?}");
    assert!(e.db_hits >= 1 && e.cache_hits >= 1, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_job_stopped_mid_run_rebuilds_its_windows_from_the_changelog() {
    // Eight sessions, 5 s windows: when the job is stopped abruptly 2.5 s in, every session
    // has a window open, and the new job must take them from story.streamjob-changelog.
    let r = run_text(
        r#"
name = "job-restart"
[load]
rate = 100
sessions = 8
warmup = "1s"
duration = "3s"
drain = "60s"
[broker]
partitions = 2
[streamjob]
window = "5s"
restart_at = "2500ms"
"#,
    )
    .await;
    let c = r.counts;
    assert_eq!((c.sent, c.delivered, c.lost), (400, 400, 0), "{c:?}");
    let j = r.pipeline.unwrap().streamjob.unwrap();
    assert!(j.changelog, "{j:?}");
    assert_eq!(j.late, 0, "the restored watermark makes nothing late: {j:?}");
    assert!(j.restored >= 1, "sessions were rebuilt from the changelog: {j:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_published_mid_run_changes_the_stream_job_without_a_restart() {
    // An action every 50 ms for 3 s; 1.5 s in, `pair` (two actions within 1 s) is
    // published on story.rules: from then on about one signal per two actions.
    let r = run_text(
        r#"
name = "rules"
[load]
rate = 20
sessions = 1
warmup = "1s"
duration = "2s"
[broker]
partitions = 1
[[streamjob.rules]]
at = "1500ms"
name = "pair"
times = 2
within = "1s"
"#,
    )
    .await;
    assert_eq!((r.counts.delivered, r.counts.lost), (60, 0));
    let j = r.pipeline.unwrap().streamjob.unwrap();
    assert_eq!(j.rules.len(), 1, "{j:?}");
    let rule = &j.rules[0];
    assert!(rule.enabled && rule.name == "pair");
    assert!((1.4..2.5).contains(&rule.published_at_s), "{rule:?}");
    assert!(rule.took_effect_at_s >= rule.published_at_s && rule.delay_ms < 2000.0, "{rule:?}");
    // Only the actions after the rule took effect can pair up (the last ones may still be
    // waiting for their partner).
    let after = ((3.0 - rule.took_effect_at_s) * 20.0) as u64;
    let pairs = j.signals.get("pair").copied().unwrap_or(0);
    assert!(pairs >= 1 && pairs <= after / 2 + 1, "{pairs} pairs from about {after} actions: {j:?}");
}
