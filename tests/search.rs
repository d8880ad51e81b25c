//! The capacity search and the changing-rate schedules end to end on the embedded broker:
//! each search step is a run of its own with exact accounting, `search.json` lists every
//! step and its directory, and a ramp's run records the target rate of every second.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use tailgate::run::{RunOptions, find_max_rate, run};
use tailgate::scenario::SearchSection;

const SEARCH: &str = r#"
name = "search-test"
[load]
rate = 100
duration = "10s"
sessions = 8
payload_bytes = 64
drain = "30s"
[search]
start = 150
factor = 2
ceiling = 300
max_steps = 2
step = "2s"
warmup = "1s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_search_step_is_a_run_of_its_own_and_every_step_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, SEARCH).unwrap();
    let out = dir.path().join("search");
    let opts = RunOptions { scenario: scenario.clone(), out: Some(out.clone()), ..RunOptions::default() };
    let section = tailgate::scenario::Scenario::load(&scenario).unwrap().search.unwrap();
    let searched = find_max_rate(&opts, &section).await.expect("the search completes");
    let steps = &searched.index.found.steps;
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(steps[0].rate, 150.0);
    // Up to the ceiling when the first step held, down by the factor when it did not.
    let second = if steps[0].failed().is_none() { 300.0 } else { 75.0 };
    assert_eq!(steps[1].rate, second, "{steps:#?}");
    assert_eq!(searched.runs.len(), 2);
    for (run, rel) in searched.runs.iter().zip(&searched.index.dirs) {
        assert_eq!(run.dir, out.join(rel));
        let c = run.result.counts;
        let rate = run.result.target_rate;
        assert_eq!(c.sent, (rate * 3.0) as u64, "1 s warm-up and 2 s measured at {rate}/s");
        assert_eq!(c.delivered + c.dead_lettered + c.filtered + c.lost, c.sent, "{c:?}");
        assert_eq!(c.lost, 0, "{c:?}");
        assert!(run.dir.join("result.json").is_file());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("search.json")).unwrap()).unwrap();
    assert_eq!(json["found"]["steps"].as_array().unwrap().len(), 2);
    assert_eq!(json["dirs"][0], "steps/01-150");
    assert!(out.join("capacity.svg").is_file());
    let html = std::fs::read_to_string(out.join("search.html")).unwrap();
    assert!(html.contains("steps/01-150/report.html") && html.contains("<svg"), "{html}");
    assert!(out.join("steps/01-150/report.html").is_file());
}

#[test]
fn the_defaults_search_from_500_per_second() {
    let s = SearchSection::default().search();
    assert_eq!((s.start, s.factor), (500.0, 2.0));
}

const RAMP: &str = r#"
name = "ramp-test"
[load]
sessions = 8
payload_bytes = 64
warmup = "1s"
duration = "3s"
drain = "30s"
[load.schedule]
kind = "ramp"
from = 100
to = 300
over = "2s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_sends_what_it_schedules_and_records_each_seconds_target() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, RAMP).unwrap();
    let out = dir.path().join("run");
    let outcome = run(RunOptions { scenario, out: Some(out.clone()), ..RunOptions::default() }).await.unwrap();
    let r = &outcome.runs[0].result;
    // Due: 150 and 250 in the ramp's two seconds, then 300 a second for two: 1,000.
    assert_eq!(r.target_per_s, [150.0, 250.0, 300.0, 300.0]);
    assert_eq!(r.counts.sent, 1_000);
    assert_eq!(r.counts.warmup_sent, 150);
    assert_eq!(r.counts.lost, 0, "{:?}", r.counts);
    assert_eq!(r.counts.delivered + r.counts.dead_lettered, 1_000);
    // The measured period's mean target: 850 events in 3 s.
    assert!((r.target_rate - 850.0 / 3.0).abs() < 1e-9, "{}", r.target_rate);
    assert_eq!(r.schedule.as_deref(), Some("100/s to 300/s over 2s"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(written["target_per_s"].as_array().unwrap().len(), 4);
}
