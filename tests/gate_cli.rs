//! `tailgate report`, `check`, `export omb` and `import omb` from the command line, on
//! synthetic runs with known distributions: their files and their exit codes.

#![allow(clippy::unwrap_used)]

use reports::synthetic::{Spec, write_run};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tailgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailgate")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A sweep of `profiles` (name, transit-hop median ms).
fn sweep(dir: &Path, profiles: &[(&str, f64)], seed: u64) -> PathBuf {
    for (i, (name, median)) in profiles.iter().enumerate() {
        write_run(&dir.join(name), &Spec::new(name, 30, 200.0, *median, seed + i as u64)).unwrap();
    }
    dir.to_owned()
}

#[test]
fn check_passes_against_itself_and_fails_on_a_regression_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = sweep(&tmp.path().join("fast"), &[("low-latency", 2.0), ("balanced", 3.0)], 1);
    // The same profiles, each hop a third slower: still inside the SLA, but a regression.
    let slow = sweep(&tmp.path().join("slow"), &[("low-latency", 2.7), ("balanced", 4.0)], 11);

    let o = tailgate(&["check", s(&fast), "--baseline", s(&fast)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("best profile: low-latency"), "{}", text(&o));

    let o = tailgate(&["check", s(&slow), "--baseline", s(&fast)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("FAIL end_to_end.p99_ms"), "{out}");
    assert!(out.contains("verdict: FAIL"), "{out}");

    // Without a baseline the slower sweep meets its objectives.
    let o = tailgate(&["check", s(&slow)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn check_with_an_sla_file_judges_by_it_and_a_malformed_one_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(&tmp.path().join("run"), &[("balanced", 3.0)], 3);
    let strict = tmp.path().join("strict.toml");
    std::fs::write(&strict, "[[sla]]\nmetric = \"end_to_end.p50_ms\"\nmax = 1.0\n").unwrap();
    let o = tailgate(&["check", s(&dir), "--sla", s(&strict)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FAIL end_to_end.p50_ms"), "{}", text(&o));

    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = 50\n\n[[sla]]\nmetric = \"hops.agnet.p99_ms\"\nmax = 5\n",
    )
    .unwrap();
    let o = tailgate(&["check", s(&dir), "--sla", s(&bad)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:6: `sla[1].metric`: `hops.agnet.p99_ms` is not a metric", bad.display())),
        "{err}"
    );

    std::fs::write(&bad, "[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = \"fifty\"\n").unwrap();
    let o = tailgate(&["check", s(&dir), "--sla", s(&bad)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(":3: `sla[0].max`: invalid type"), "{}", text(&o));

    let o = tailgate(&["check", s(&tmp.path().join("nope"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn report_writes_its_files_and_tells_where() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(&tmp.path().join("run"), &[("a", 2.0), ("b", 3.0)], 5);
    let out = tmp.path().join("out");
    let o = tailgate(&["report", s(&dir), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).starts_with("PASS: 2 profiles meet every SLA objective. Best profile: a"), "{}", text(&o));
    for f in ["report.html", "summary.md", "junit.xml", "report.json", "charts/frontier.png", "charts/hops.svg"] {
        assert!(out.join(f).is_file(), "{f}");
        assert!(text(&o).contains(s(&out.join(f))), "{f} is listed");
    }
    let o = tailgate(&["report", s(&tmp.path().join("missing"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn omb_export_writes_one_file_per_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(&tmp.path().join("run"), &[("a", 2.0), ("b", 3.0)], 7);
    let o = tailgate(&["export", "omb", s(&dir)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for p in ["a", "b"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("omb-{p}.json"))).unwrap()).unwrap();
        assert!(v["aggregatedEndToEndLatency99pct"].as_f64().unwrap() > 0.0);
        assert!(v["driver"].as_str().unwrap().starts_with(&format!("tailgate {p} (synthetic")));
    }
}

#[test]
fn omb_import_prints_a_scenario_and_lists_what_it_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let workload = tmp.path().join("w.yaml");
    std::fs::write(&workload, "name: small\ntopics: 4\npartitionsPerTopic: 2\nmessageSize: 100\nproducerRate: 300\ntestDurationMinutes: 1\nwarmupDurationMinutes: 0\nkeyDistributor: NO_KEY\n").unwrap();
    let scenario = tmp.path().join("small.toml");
    let o = tailgate(&["import", "omb", s(&workload), "--out", s(&scenario)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not applied: keyDistributor: NO_KEY"), "{err}");
    assert!(err.contains("not applied: topics: the reference pipeline has its own chain of topics"), "{err}");
    let o = tailgate(&["validate", s(&scenario)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    std::fs::write(&workload, "producerRate: [1, 2]\n").unwrap();
    let o = tailgate(&["import", "omb", s(&workload)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`producerRate` must be a number"), "{}", text(&o));
}

#[test]
fn omb_driver_files_import_as_tuning_profiles_of_one_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let workload = tmp.path().join("w.yaml");
    std::fs::write(&workload, "name: drivers\npartitionsPerTopic: 4\nproducerRate: 300\ntestDurationMinutes: 1\n")
        .unwrap();
    let latency = tmp.path().join("kafka-latency.yaml");
    std::fs::write(
        &latency,
        "name: Kafka\nproducerConfig: |\n  linger.ms=0\n  buffer.memory=1\nconsumerConfig: |\n  fetch.min.bytes=1\n",
    )
    .unwrap();
    let throughput = tmp.path().join("kafka-throughput.yaml");
    std::fs::write(
        &throughput,
        "name: Kafka\nreplicationFactor: 3\nproducerConfig: |\n  linger.ms=10\n  batch.size=1048576\n",
    )
    .unwrap();
    let scenario = tmp.path().join("sweep.toml");
    let o = tailgate(&[
        "import",
        "omb",
        s(&workload),
        "--driver",
        s(&latency),
        "--driver",
        s(&throughput),
        "--out",
        s(&scenario),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not applied: driver kafka-latency: producerConfig: buffer.memory=1"), "{err}");
    assert!(err.contains("not applied: driver kafka-throughput: replicationFactor: 3"), "{err}");
    let s2 = tailgate::scenario::Scenario::load(&scenario).unwrap();
    let names: Vec<&str> = s2.profiles.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["kafka-latency", "kafka-throughput"]);
    assert_eq!(s2.profiles[1].1.clients.producer.get("linger.ms").map(String::as_str), Some("10"));
}
