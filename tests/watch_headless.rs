//! `watch` as a monitor and a gate: a run feeds an embedded broker that serves as the
//! user's cluster, and two headless watches tap it. One watches for 20 s against a
//! generous SLA, serving `/metrics` (scraped mid-watch) and printing a JSON line a second,
//! and exits 0; one holds the same pipeline to an impossible SLA and exits 1. Both write
//! run directories that `tailgate report` and `tailgate check` read.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tailgate::result::RunResult;
use tailgate::run::run;

mod support;

fn tailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sla(dir: &Path, name: &str, p99_max: f64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = {p99_max}\n")).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_watch_writes_a_run_that_report_and_check_read_and_gates_by_its_sla() {
    let (broker, _kafka) = testkit::broker(3).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = "name = \"watched\"\n[load]\nrate = 200\nwarmup = \"1s\"\nduration = \"27s\"\n";
    let feeding = tokio::spawn(run(support::against(broker.bootstrap(), dir.path(), scenario)));

    let port = free_port();
    let (pass_dir, fail_dir) = (dir.path().join("watch-pass"), dir.path().join("watch-fail"));
    let passing = tailgate()
        .args(["watch", "--bootstrap", broker.bootstrap(), "--topics", "story.updates", "--for", "20s", "--json"])
        .arg("--sla")
        .arg(sla(dir.path(), "generous.toml", 5_000.0))
        .arg("--out")
        .arg(&pass_dir)
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let failing = tailgate()
        .args(["watch", "--bootstrap", broker.bootstrap(), "--for", "8s"])
        .arg("--sla")
        .arg(sla(dir.path(), "impossible.toml", 0.001))
        .arg("--out")
        .arg(&fail_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Mid-watch, /metrics has the run's histograms under the run's names.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let scraped = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(scraped.contains("tailgate_end_to_end_latency_seconds_bucket"), "{scraped}");
    assert!(scraped.contains("tailgate_hop_latency_seconds_bucket{hop=\"agent\""), "{scraped}");
    let delivered = scraped
        .lines()
        .find_map(|l| l.strip_prefix("tailgate_events_delivered_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert!(delivered > 0.0, "{scraped}");

    let (passing, failing) =
        tokio::task::spawn_blocking(move || (passing.wait_with_output().unwrap(), failing.wait_with_output().unwrap()))
            .await
            .unwrap();
    let outcome = feeding.await.unwrap().unwrap();
    let c = outcome.runs[0].result.counts;
    assert_eq!((c.lost, c.dead_lettered), (0, 0), "the watches do not disturb the run");

    let (out, err) = (String::from_utf8_lossy(&passing.stdout), String::from_utf8_lossy(&passing.stderr));
    assert_eq!(passing.status.code(), Some(0), "{out}\n{err}");
    let lines: Vec<serde_json::Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 18, "a line a second: {out}");
    assert!(lines.iter().any(|l| l["window"]["count"].as_u64() > Some(100)), "{out}");

    let r: RunResult = serde_json::from_slice(&std::fs::read(pass_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(r.mode, "watch");
    assert!(r.sla.passed, "{:?}", r.sla);
    let watch = r.watch.as_ref().unwrap();
    assert_eq!(watch.foreign, 0);
    assert!(watch.events >= 200 * 15, "{watch:?}");
    assert_eq!(r.counts.delivered, watch.events);
    assert_eq!(r.end_to_end.count, watch.events);
    let hops: Vec<&str> = r.hops.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        hops,
        [
            "source->connector",
            "connector",
            "connector->agent",
            "agent",
            "agent->streamjob",
            "streamjob",
            "streamjob->tap"
        ]
    );
    for file in ["end_to_end.hlog", "hop-agent.hlog", "hop-streamjob_to_tap.hlog", "report.html"] {
        assert!(pass_dir.join(file).is_file(), "{file}");
    }
    // The end-to-end log on disk holds every event the result counts.
    let log = reports::hlog::Series::read(&pass_dir.join("end_to_end.hlog")).unwrap();
    assert_eq!(log.total().len(), watch.events);

    let err = String::from_utf8_lossy(&failing.stderr);
    assert_eq!(failing.status.code(), Some(1), "{err}");
    let r: RunResult = serde_json::from_slice(&std::fs::read(fail_dir.join("result.json")).unwrap()).unwrap();
    assert!(!r.sla.passed && r.end_to_end.count > 0);

    // The directories open in report and check, as a run's do.
    let report = tailgate().arg("report").arg(&pass_dir).arg("--out").arg(dir.path().join("report")).output().unwrap();
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stderr));
    let check = tailgate().arg("check").arg(&pass_dir).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let check = tailgate().arg("check").arg(&fail_dir).output().unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stdout));
}
