//! A short scenario end to end on the embedded broker: every event sent is delivered (or
//! dead-lettered), the hops add up to the end-to-end time, and the run directory holds
//! `result.json` and an interval log per metric.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use tailgate::result::RunResult;
use tailgate::run::{RunOptions, run};

const SCENARIO: &str = r#"
name = "e2e-test"
[load]
rate = 200
sessions = 16
payload_bytes = 64
warmup = "1s"
duration = "3s"
drain = "30s"
[[sla]]
metric = "end_to_end.p99_ms"
max = 60000.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_accounts_for_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = dir.path().join("run");
    let opts = RunOptions { scenario, out: Some(out.clone()), ..RunOptions::default() };
    let outcome = run(opts).await.expect("the run completes");
    assert!(!outcome.sweep);
    assert_eq!(outcome.runs.len(), 1);
    assert_eq!(outcome.runs[0].failure, None);
    assert_eq!(outcome.runs[0].dir, out);
    let r = &outcome.runs[0].result;
    assert_eq!(r.profile, "default");

    // Accounting: 200/s for 1s + 3s, all delivered exactly once.
    let c = r.counts;
    assert_eq!(c.sent, 800);
    assert_eq!(c.warmup_sent, 200);
    assert_eq!(c.lost, 0, "{c:?}");
    assert_eq!(c.dead_lettered, 0, "{c:?}");
    assert_eq!(c.delivered, c.sent - c.dead_lettered);
    assert_eq!(r.end_to_end.count, 600, "only events after warm-up are measured");
    assert!(r.sla.passed, "{:?}", r.sla);
    assert_eq!(r.broker.kind, "tailgate");

    // The hops are the whole path, and their means add up to the end-to-end mean.
    let names: Vec<&str> = r.hops.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source->connector",
            "connector",
            "connector->agent",
            "agent",
            "agent->streamjob",
            "streamjob",
            "streamjob->gateway",
            "gateway",
            "gateway->client"
        ]
    );
    assert!(r.hops.iter().all(|h| h.stats.count == 600));
    let sum: f64 = r.hops.iter().map(|h| h.stats.mean_ms).sum();
    let mean = r.end_to_end.mean_ms;
    assert!((sum - mean).abs() <= 0.05 * mean, "hops sum to {sum} ms, end to end {mean} ms");

    // The run directory.
    let back: RunResult = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(&back, r);
    for h in &r.hops {
        let file = out.join(format!("hop-{}.hlog", h.name.replace("->", "_to_")));
        assert_hlog(&file);
    }
    assert_hlog(&out.join("end_to_end.hlog"));
    assert_hlog(&out.join("schedule_lag.hlog"));
    // The warm-up lasts one second: its events may all be delivered within one interval.
    assert_hlog_at_least(&out.join("warmup.hlog"), 1);
}

const SWEEP: &str = r#"
name = "sweep-test"
[load]
rate = 200
sessions = 16
payload_bytes = 64
warmup = "1s"
duration = "2s"
drain = "30s"
[broker]
partitions = 1
[profiles.eager]
[profiles.eager.producer]
"linger.ms" = 0
[profiles.batchy]
partitions = 2
[profiles.batchy.producer]
"linger.ms" = 10
"compression.type" = "lz4"
[profiles.batchy.topic]
"retention.ms" = "600000"
[profiles.batchy.stages.gateway.consumer]
"fetch.wait.max.ms" = 2
# The agent's beats zstd-compressed, the others' records lz4: both through one run.
[profiles.batchy.stages.agent.producer]
"compression.type" = "zstd"
[[sla]]
metric = "end_to_end.p99_ms"
max = 60000.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_runs_each_profile_on_its_own_broker_into_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, SWEEP).unwrap();
    let out = dir.path().join("sweep");
    let opts = RunOptions { scenario, out: Some(out.clone()), ..RunOptions::default() };
    let outcome = run(opts).await.expect("the sweep completes");
    assert!(outcome.sweep);
    let names: Vec<&str> = outcome.runs.iter().map(|r| r.result.profile.as_str()).collect();
    assert_eq!(names, ["eager", "batchy"]);
    let mut bootstraps = Vec::new();
    for r in &outcome.runs {
        assert_eq!(r.failure, None);
        assert_eq!(r.dir, out.join(&r.result.profile));
        let c = r.result.counts;
        assert_eq!((c.sent, c.lost, c.dead_lettered), (600, 0, 0), "{}: {c:?}", r.result.profile);
        assert!(r.dir.join("result.json").is_file());
        bootstraps.push(r.result.broker.bootstrap.clone());
    }
    assert_ne!(bootstraps[0], bootstraps[1], "each profile gets a fresh broker");
    let batchy = &outcome.runs[1].result.broker;
    assert_eq!(batchy.partitions, 2);
    assert_eq!(batchy.producer["linger.ms"], "10");
    assert_eq!(batchy.producer["compression.type"], "lz4");
    assert_eq!(batchy.topic["retention.ms"], "600000");
    assert_eq!(batchy.stages["gateway"].consumer["fetch.wait.max.ms"], "2");
    assert_eq!(batchy.stages["agent"].producer["compression.type"], "zstd");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(index["profiles"][1]["dir"], "batchy");

    // The report reads the sweep back, profile by profile, in the order run.
    let (report, _) = reports::report(std::slice::from_ref(&out), &out, None).unwrap();
    let profiles: Vec<&str> = report.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(profiles, ["eager", "batchy"]);
    assert!(report.passed, "{}", report.verdict());
    assert!(out.join("report.html").is_file());
}

/// The broker's fault hooks, scheduled as scenario data, show in the run's figures: the
/// faults in `result.json` and the summary, what the broker did in `broker.faults`, and the
/// added latency in the hop that reads the slowed topic. Nothing is lost across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_broker_faults_show_in_the_run_and_lose_nothing() {
    let text = format!(
        r#"{}
[[faults]]
kind = "topic_latency"
at = "0s"
topic = "story.beats"
latency = "40ms"

[[faults]]
kind = "broker_stall"
at = "2s"
duration = "300ms"
"#,
        SCENARIO.replace("e2e-test", "faults-test")
    );
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, text).unwrap();
    let out = dir.path().join("run");
    let outcome = run(RunOptions { scenario, out: Some(out.clone()), ..RunOptions::default() }).await.unwrap();
    assert_eq!(outcome.runs[0].failure, None);
    let r = &outcome.runs[0].result;
    let c = r.counts;
    assert_eq!((c.sent, c.delivered, c.lost, c.dead_lettered), (800, 800, 0, 0), "{c:?}");

    let kinds: Vec<&str> = r.faults.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["topic_latency", "broker_stall"]);
    assert!(r.faults[1].began_at_s >= 2.0, "{:?}", r.faults[1]);
    assert_eq!(r.faults[1].duration_s, Some(0.3));
    assert_eq!(r.faults[0].topic.as_deref(), Some("story.beats"));
    let effects = r.broker.faults.expect("the broker's fault counts");
    assert!(effects.delayed_fetches > 0 && effects.stalled_responses > 0, "{effects:?}");
    assert_eq!(effects.dropped_connections, 0);
    // Every fetch of story.beats is answered 40 ms after it was read, so no beat reaches
    // the stream job sooner.
    let hop = r.hops.iter().find(|h| h.name == "agent->streamjob").unwrap();
    assert!(hop.stats.min_ms >= 40.0, "{:?}", hop.stats);

    reports::report(std::slice::from_ref(&out), &out, None).unwrap();
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains(
            "faults applied: topic_latency at 0.0s (every fetch of story.beats delayed 40ms); broker_stall at 2."
        ),
        "{summary}"
    );
    assert!(r.render(&out).contains("fault     broker_stall at 2."));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("faults applied: topic_latency"), "the report names the faults");
}

/// Every client connection dropped at once mid-run (a broker blip): each stage rides it out
/// (librdkafka reconnects) and every event still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_ridden_out_and_lose_nothing() {
    let text = format!(
        "{}\n[[faults]]\nkind = \"connections_drop\"\nat = \"2s\"\n",
        SCENARIO.replace("e2e-test", "blip-test")
    );
    // No stage stopped (the helper checks the run did not fail).
    let r = support::run_text(&text).await;
    let c = r.counts;
    assert_eq!((c.sent, c.delivered, c.lost, c.dead_lettered), (800, 800, 0, 0), "{c:?}");
    let effects = r.broker.faults.expect("the broker's fault counts");
    assert!(effects.dropped_connections > 0, "{effects:?}");
}

/// Events the agent can never produce (larger than its producer's `message.max.bytes`) go
/// to the dead-letter topic, cut to fit, with the reason; the run goes on and accounts for
/// every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_too_large_to_produce_are_dead_lettered_and_the_run_goes_on() {
    let text = r#"
name = "too-large"
[load]
rate = 5
sessions = 4
payload_bytes = 700000
warmup = "1s"
duration = "2s"
drain = "30s"
[kafka.stages.agent.producer]
"message.max.bytes" = "600000"
"#;
    // No stage stopped (the helper checks the run did not fail).
    let c = support::run_text(text).await.counts;
    assert_eq!((c.sent, c.delivered, c.dead_lettered, c.lost), (15, 0, 15, 0), "{c:?}");
}

fn assert_hlog(path: &Path) {
    assert_hlog_at_least(path, 2);
}

fn assert_hlog_at_least(path: &Path, min: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.contains("#[StartTime: "), "{}", path.display());
    let intervals = text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('"')).count();
    assert!(intervals >= min, "{} has {intervals} intervals", path.display());
}

/// An OpenMessaging Benchmark workload imported, run, and exported back: the export carries
/// the workload's shape and the run's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omb_workload_round_trips_through_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let workload = "name: round trip\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 128\nproducerRate: 200\n\
                    keyDistributor: KEY_ROUND_ROBIN\ntestDurationMinutes: 1\nwarmupDurationMinutes: 1\n";
    let imported = tailgate::omb::import_text(workload).unwrap();
    assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    let scenario = dir.path().join("imported.toml");
    std::fs::write(&scenario, &imported.scenario).unwrap();
    let out = dir.path().join("run");
    let opts = RunOptions {
        scenario,
        out: Some(out.clone()),
        duration: Some(std::time::Duration::from_secs(3)),
        warmup: Some(std::time::Duration::from_secs(1)),
        ..RunOptions::default()
    };
    let outcome = run(opts).await.unwrap();
    let r = &outcome.runs[0].result;
    assert_eq!(r.counts.lost, 0);

    let omb = reports::omb::export(&reports::runs::Run::load(&out).unwrap());
    assert_eq!(omb["workload"], "round-trip");
    assert_eq!(omb["messageSize"], 128);
    assert_eq!(omb["partitions"], 2);
    assert_eq!(omb["aggregatedEndToEndLatency99pct"].as_f64().unwrap(), r.end_to_end.p99_ms);
    let consumed: f64 = omb["consumeRate"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() * 10.0).sum();
    assert_eq!(consumed.round() as u64, r.end_to_end.count);
}
