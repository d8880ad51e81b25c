//! The report and the gate on synthetic runs with known distributions: the files a report
//! writes (valid JUnit XML, self-contained HTML, charts, JSON) and the gate's decisions.

#![allow(clippy::unwrap_used)]

use reports::gate::CheckOptions;
use reports::synthetic::{Spec, write_run};
use std::path::{Path, PathBuf};

fn sweep(dir: &Path, profiles: &[(&str, f64)], seconds: u64, seed: u64) -> PathBuf {
    for (i, (name, median)) in profiles.iter().enumerate() {
        write_run(&dir.join(name), &Spec::new(name, seconds, 200.0, *median, seed + i as u64)).unwrap();
    }
    dir.to_owned()
}

#[test]
fn a_report_writes_every_file_and_they_hold_the_runs_figures() {
    let tmp = tempfile::tempdir().unwrap();
    // Five transit hops of median 2 ms: ~10 ms end to end. Of 15 ms: ~75 ms, over the SLA.
    let dir = sweep(tmp.path(), &[("fast", 2.0), ("slow", 15.0)], 20, 1);
    let (report, written) = reports::report(std::slice::from_ref(&dir), &dir, None).unwrap();
    assert!(!report.passed);
    assert_eq!(report.best.as_deref(), Some("fast"));
    assert!(
        report.verdict().starts_with("FAIL: 1 of 2 profiles miss the SLA: slow (end_to_end.p99_ms = "),
        "{}",
        report.verdict()
    );

    for f in ["report.html", "summary.md", "junit.xml", "report.json"] {
        assert!(written.files.contains(&dir.join(f)), "{f}");
    }
    for chart in ["percentiles", "over-time-fast", "over-time-slow", "hops", "frontier"] {
        let png = std::fs::read(dir.join("charts").join(format!("{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}");
        assert!(png.len() > 5_000, "{chart}.png has {} bytes", png.len());
        let svg = std::fs::read_to_string(dir.join("charts").join(format!("{chart}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<text"), "{chart}.svg");
    }

    // The HTML stands alone: charts inline, nothing fetched from anywhere.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 5);
    for external in ["src=\"http", "href=\"http", "<script", "<link", "url("] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(html.contains("synthetic") && html.contains("FAIL"));

    // report.json carries the same verdict and one row per profile and second.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["verdict"]["passed"], false);
    assert_eq!(json["verdict"]["best_profile"], "fast");
    let rows = json["profiles"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["profile"], "fast");
    assert_eq!(rows[0]["runs"], 1);
    let seconds = json["seconds"].as_array().unwrap();
    let slow_measured = seconds.iter().filter(|r| r["profile"] == "slow" && r["phase"] == "measured").count();
    assert!(slow_measured >= 20, "{slow_measured}");
    assert_eq!(rows[1]["seconds_over_sla"], slow_measured, "every second of `slow` is over 50 ms at p99");
    assert_eq!(rows[0]["seconds_over_sla"], 0);
    let warm = seconds.iter().filter(|r| r["profile"] == "fast" && r["phase"] == "warmup").count();
    assert!((2..=3).contains(&warm), "two seconds of warm-up (and the stragglers received in the third): {warm}");
    let shares: f64 = json["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["profile"] == "fast")
        .map(|h| h["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");

    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| slow | ❌ fail |"), "{md}");
}

#[test]
fn junit_xml_is_well_formed_with_one_case_per_objective_per_profile() {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(tmp.path(), &[("fast", 2.0), ("slow", 15.0)], 5, 9);
    reports::report(std::slice::from_ref(&dir), &dir, None).unwrap();
    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let mut reader = Reader::from_str(&xml);
    let (mut stack, mut cases, mut failures) = (Vec::<String>::new(), 0, Vec::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                if name == "testcase" {
                    cases += 1;
                }
                if name == "failure" {
                    let msg = e.try_get_attribute("message").unwrap().unwrap().unescape_value().unwrap().into_owned();
                    failures.push(msg);
                }
                stack.push(name);
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => cases += 1,
            Event::End(e) => assert_eq!(stack.pop().unwrap().as_bytes(), e.name().as_ref(), "tags nest"),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty());
    // Each profile: the p99 objective and the implied counts.lost <= 0.
    assert_eq!(cases, 4);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].starts_with("end_to_end.p99_ms = ") && failures[0].ends_with("limit <= 50"), "{}", failures[0]);
    assert!(xml.contains("<testsuites name=\"tailgate\" tests=\"4\" failures=\"1\""), "{xml}");
}

#[test]
fn runs_of_one_profile_merge_by_histogram() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let ra = write_run(&a, &Spec::new("p", 10, 200.0, 2.0, 1)).unwrap();
    let rb = write_run(&b, &Spec::new("p", 10, 200.0, 20.0, 2)).unwrap();
    let runs = reports::runs::load_all(&[a, b]).unwrap();
    let merged = reports::runs::by_profile(runs, None);
    assert_eq!(merged.len(), 1);
    let m = &merged[0].result;
    assert_eq!(m.end_to_end.count, ra.end_to_end.count + rb.end_to_end.count);
    assert_eq!(m.counts.sent, ra.counts.sent + rb.counts.sent);
    // Half the events are ~10x slower: the merged median sits between the two, and the
    // merged p99 is the slow run's tail, not the average of the two p99s.
    assert!(m.end_to_end.p99_ms > rb.end_to_end.p90_ms, "{:?}", m.end_to_end);
    let averaged = (ra.end_to_end.p99_ms + rb.end_to_end.p99_ms) / 2.0;
    assert!((m.end_to_end.p99_ms - averaged).abs() > 10.0, "{} vs {averaged}", m.end_to_end.p99_ms);
}

#[test]
fn the_gate_passes_a_run_against_itself_and_flags_a_slower_one() {
    let tmp = tempfile::tempdir().unwrap();
    let base = sweep(&tmp.path().join("base"), &[("balanced", 3.0)], 30, 10);
    let same = sweep(&tmp.path().join("same"), &[("balanced", 3.0)], 30, 20);
    let slower = sweep(&tmp.path().join("slower"), &[("balanced", 3.6)], 30, 30);
    let opts = CheckOptions::default();

    let c = reports::check(&base, Some(&base), None, &[], &opts).unwrap();
    assert!(c.passed, "{}", c.render());
    assert!(c.profiles[0].comparisons.iter().all(|x| x.delta_ms == 0.0));

    let c = reports::check(&same, Some(&base), None, &[], &opts).unwrap();
    assert!(c.passed, "another sample of the same system is not a regression:\n{}", c.render());

    let c = reports::check(&slower, Some(&base), None, &[], &opts).unwrap();
    assert!(!c.passed, "20% slower hops are a regression:\n{}", c.render());
    let p99 = c.profiles[0].comparisons.iter().find(|x| x.metric == "end_to_end.p99_ms").unwrap();
    assert!(p99.regressed && p99.ci_ms[0] > 0.0, "{p99:?}");
    assert!(c.render().contains("FAIL end_to_end.p99_ms"), "{}", c.render());
    assert_eq!(c.best.as_deref(), Some("balanced"), "it still meets its objectives");

    // Reversed, the faster one is better, not a regression.
    let c = reports::check(&base, Some(&slower), None, &[], &opts).unwrap();
    assert!(c.passed, "{}", c.render());
    assert!(c.render().contains("BETTER"), "{}", c.render());
}

#[test]
fn the_gate_names_the_best_profile_and_filters_profiles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sweep(tmp.path(), &[("a", 4.0), ("b", 2.0), ("c", 30.0)], 5, 40);
    let opts = CheckOptions::default();
    let c = reports::check(&dir, None, None, &[], &opts).unwrap();
    assert!(!c.passed, "c misses the SLA");
    assert_eq!(c.best.as_deref(), Some("b"));
    let c = reports::check(&dir, None, None, &["a".into(), "b".into()], &opts).unwrap();
    assert!(c.passed);
    let e = reports::check(&dir, None, None, &["nope".into()], &opts).unwrap_err().to_string();
    assert!(e.contains("has no run of profile `nope`"), "{e}");
}

#[test]
fn a_directory_without_runs_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let e = reports::runs::load_all(&[tmp.path().to_owned()]).unwrap_err().to_string();
    assert!(e.contains("neither a run directory"), "{e}");
    std::fs::create_dir(tmp.path().join("r")).unwrap();
    std::fs::write(tmp.path().join("r").join("result.json"), "{\"not\": 1}").unwrap();
    let e = reports::runs::load_all(&[tmp.path().join("r")]).unwrap_err().to_string();
    assert!(e.contains("not a tailgate result"), "{e}");
}

#[test]
fn omb_export_has_the_shape_and_the_figures_of_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let r = write_run(tmp.path(), &Spec::new("p", 25, 100.0, 2.0, 5)).unwrap();
    let run = reports::runs::Run::load(tmp.path()).unwrap();
    let omb = reports::omb::export(&run);
    assert_eq!(omb["workload"], "synthetic");
    assert_eq!(omb["messageSize"], 256);
    assert_eq!(omb["partitions"], 1);
    assert_eq!(omb["aggregatedEndToEndLatency99pct"].as_f64().unwrap(), r.end_to_end.p99_ms);
    assert_eq!(omb["aggregatedEndToEndLatencyMax"].as_f64().unwrap(), r.end_to_end.max_ms);
    assert_eq!(omb["aggregatedPublishLatency50pct"].as_f64().unwrap(), r.hops[0].stats.p50_ms);
    // Publish delay is in microseconds, as OMB writes it.
    assert_eq!(omb["aggregatedPublishDelayLatency50pct"].as_u64().unwrap() as f64, r.schedule_lag.p50_ms * 1000.0);
    // 25 s in 10 s periods: 3 periods, every measured event in one of them.
    let periods = omb["endToEndLatency99pct"].as_array().unwrap();
    assert_eq!(periods.len(), 3);
    let consumed: f64 = omb["consumeRate"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() * 10.0).sum();
    assert_eq!(consumed as u64, r.end_to_end.count);
    let quantiles = omb["aggregatedEndToEndLatencyQuantiles"].as_object().unwrap();
    assert_eq!(quantiles["50.0"].as_f64().unwrap(), r.end_to_end.p50_ms);
    assert_eq!(quantiles["100.0"].as_f64().unwrap(), r.end_to_end.max_ms);
}

#[test]
fn repeated_sweeps_under_one_directory_merge_per_profile() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, seed) in [(1, 50), (2, 60)] {
        sweep(&tmp.path().join(i.to_string()), &[("a", 2.0), ("b", 3.0)], 5, seed);
    }
    let found = reports::runs::discover(&[tmp.path().to_owned()]).unwrap();
    assert_eq!(found.len(), 4);
    let profiles = reports::runs::by_profile(reports::runs::load_all(&[tmp.path().to_owned()]).unwrap(), None);
    let runs: Vec<(&str, usize)> = profiles.iter().map(|p| (p.name.as_str(), p.runs.len())).collect();
    assert_eq!(runs, [("a", 2), ("b", 2)]);
}
