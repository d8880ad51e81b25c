//! Load from several hosts, on one machine: each host is a network namespace this test
//! makes (`ip netns add`, a veth pair to the coordinator's namespace, private 10.x
//! addresses), each worker a `tailgate worker` process in its own, against `tailgate run
//! --workers` and its embedded broker in another. One worker's clock is anchored 40 ms
//! off; the run must measure that within its own bound and correct it out.
//!
//! `TAILGATE_WORKERS_RATE` sets each worker's rate (default 200/s; docs/measured.md has
//! 1,000 to 2,000/s, in release).

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use reports::hlog::{Series, counts_quantile_ms, merge_counts};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One run at a time: each is a pipeline and its workers on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SKEW_MS: f64 = 40.0;
const BROKER: &str = "10.77.1.1:9092";

fn rate() -> u64 {
    std::env::var("TAILGATE_WORKERS_RATE").ok().and_then(|r| r.parse().ok()).unwrap_or(200)
}

/// The coordinator's namespace and one per worker, removed (with their processes) when
/// dropped.
struct Hosts {
    coordinator: String,
    workers: Vec<String>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Hosts {
    /// Worker `k`'s namespace has 10.77.k.2 on a veth whose other end, 10.77.k.1, is in
    /// the coordinator's, and routes through it: every worker reaches the broker at
    /// 10.77.1.1. (The kernel does not route 127.0.0.0/8 across a veth, so the hosts
    /// have private addresses.)
    fn make(tag: &str, n: usize) -> Result<Self, String> {
        let id = format!("tg{}{tag}", std::process::id() % 100_000);
        let mut hosts = Self { coordinator: format!("{id}c"), workers: Vec::new(), children: Vec::new() };
        ip(&["netns", "add", &hosts.coordinator])?;
        ip(&["-n", &hosts.coordinator, "link", "set", "lo", "up"])?;
        for k in 1..=n {
            let ns = format!("{id}w{k}");
            ip(&["netns", "add", &ns])?;
            hosts.workers.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let (near, far) = (format!("{tag}c{k}"), format!("{tag}w{k}"));
            let c = hosts.coordinator.clone();
            ip(&["link", "add", &near, "netns", &c, "type", "veth", "peer", "name", &far, "netns", &ns])?;
            ip(&["-n", &c, "addr", "add", &format!("10.77.{k}.1/24"), "dev", &near])?;
            ip(&["-n", &c, "link", "set", &near, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("10.77.{k}.2/24"), "dev", &far])?;
            ip(&["-n", &ns, "link", "set", &far, "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", &format!("10.77.{k}.1")])?;
        }
        Ok(hosts)
    }

    /// `tailgate ARGS` in namespace `ns`, its output to `log`.
    fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) -> usize {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_tailgate")])
            .args(args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// `tailgate run SCENARIO --workers` in the coordinator's namespace, writing `dir/run`;
    /// the child's index and the run directory.
    fn coordinator(&mut self, dir: &Path, scenario: &Path) -> (usize, std::path::PathBuf) {
        let (ns, out) = (self.coordinator.clone(), dir.join("run"));
        let args = ["run", scenario.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-report"];
        (self.spawn(&ns, &args, &dir.join("coordinator.log")), out)
    }

    fn worker(&mut self, k: usize, dir: &Path, extra: &[&str]) -> usize {
        let (ns, name) = (self.workers[k - 1].clone(), format!("w{k}"));
        let mut args = vec!["worker", "--bootstrap", BROKER, "--name", &name, "--once"];
        args.extend_from_slice(extra);
        self.spawn(&ns, &args, &dir.join(format!("{name}.log")))
    }

    /// Waits for child `i` (at most `limit`); its exit code.
    fn wait(&mut self, i: usize, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.children[i].try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.workers.iter().chain([&self.coordinator]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// The namespaces, or why the test cannot make them (skipped, or failed under CI).
fn hosts(test: &str, tag: &str, n: usize) -> Option<Hosts> {
    match Hosts::make(tag, n) {
        Ok(h) => Some(h),
        Err(e) => testkit::missing(test, "netns", &format!("cannot make network namespaces (root is needed): {e}")),
    }
}

fn scenario(dir: &Path, workers: usize, rate_each: u64, audience: &str, drain: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
name = "workers"
[load]
rate = {rate}
sessions = 64
warmup = "2s"
duration = "6s"
drain = "{drain}"
[workers]
count = {workers}
listen = "{BROKER}"
audience = "{audience}"
register_timeout = "60s"
[[sla]]
metric = "end_to_end.p99_ms"
max = 60000.0
"#,
        rate = rate_each * workers as u64
    );
    let path = dir.join("workers.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn result(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run/result.json")).unwrap()).unwrap()
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for f in ["coordinator.log", "w1.log", "w2.log", "w3.log"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            out += &format!("--- {f}\n{t}");
        }
    }
    out
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn three_hosts_merge_exactly_and_a_skewed_clock_is_measured_and_corrected() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let test = "three_hosts_merge_exactly_and_a_skewed_clock_is_measured_and_corrected";
    let Some(mut hosts) = hosts(test, "a", 3) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (run, out) = hosts.coordinator(d, &scenario(d, 3, rate(), "crossed", "20s"));
    // Worker 2's clock runs 40 ms ahead: it sends w2's events and receives w3's.
    let ws: Vec<usize> =
        (1..=3).map(|k| hosts.worker(k, d, if k == 2 { &["--clock-offset-ms", "40"] } else { &[] })).collect();
    let code = hosts.wait(run, Duration::from_secs(240));
    for w in ws {
        hosts.wait(w, Duration::from_secs(30));
    }
    assert_eq!(code, Some(0), "{}", logs(d));
    let r = result(d);
    let workers = r["workers"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);

    // Merged counts are the workers' added, and nothing was lost.
    let c = &r["counts"];
    let sum = |k: &str| workers.iter().map(|w| w[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(c["sent"].as_u64(), Some(sum("sent")), "{c}");
    assert_eq!(c["delivered"].as_u64(), Some(sum("delivered")), "{c}");
    assert_eq!(c["lost"].as_u64(), Some(0), "{c}");
    assert_eq!(c["sent"], c["delivered"], "{c}");
    let per_worker = rate() * 8;
    assert!(workers.iter().all(|w| w["sent"].as_u64() == Some(per_worker)), "{workers:?}");

    // The merged p99, recomputed here from the workers' own interval logs.
    let series: Vec<Series> = (1..=3).map(|k| Series::read(&out.join(format!("workers/w{k}.hlog"))).unwrap()).collect();
    let counts = merge_counts(series.iter().flat_map(|s| &s.intervals));
    let measured: u64 = counts.iter().map(|c| c.1).sum();
    assert_eq!(r["end_to_end"]["count"].as_u64(), Some(measured));
    assert_eq!(measured, sum("delivered") - c["warmup_sent"].as_u64().unwrap(), "the measured events, all of them");
    let p99 = counts_quantile_ms(&counts, 0.99);
    assert!((p99 - f(&r["end_to_end"]["p99_ms"])).abs() <= p99 * 0.001 + 0.001, "{p99} vs {}", r["end_to_end"]);

    // Each clock offset is measured within its own bound: w2's 40 ms, the others' 0.
    let clocks = r["clocks"].as_array().unwrap();
    for (k, c) in clocks.iter().enumerate() {
        let truth = if k == 1 { SKEW_MS } else { 0.0 };
        let (offset, bound) = (f(&c["offset_ms"]), f(&c["bound_ms"]));
        assert!((offset - truth).abs() <= bound, "w{}: {offset} ± {bound} ms, truly {truth}", k + 1);
        assert!(bound < 10.0, "{c}");
    }

    // w2 receives w3's events on a clock 40 ms ahead: uncorrected, they read 40 ms slower.
    let p50 = |w: &Value, k: &str| f(&w[k]["p50_ms"]);
    let (w2, w3) = (&workers[1], &workers[2]);
    let shift = p50(w2, "uncorrected") - p50(w2, "end_to_end");
    // Within the clock bounds and the histograms' three significant digits, each way.
    let resolution = 3.0 + p50(w2, "uncorrected") * 0.002;
    assert!((shift - SKEW_MS).abs() < resolution, "uncorrected minus corrected: {shift} ms: {w2}\n{}", r["clocks"]);
    // Corrected, its figures agree with w3's, which follows w1 across two true clocks.
    let gap = (p50(w2, "end_to_end") - p50(w3, "end_to_end")).abs();
    assert!(gap < 15.0, "w2 {} vs w3 {}", w2["end_to_end"], w3["end_to_end"]);
    let uncertainty = f(&r["workers"]["clock_uncertainty_ms"]);
    assert!(uncertainty > 0.0 && uncertainty < 20.0, "{}", r["workers"]);
    eprintln!(
        "p99 {:.3} ms merged; w2 corrected p50 {:.3} ms, uncorrected {:.3} ms; uncertainty {uncertainty:.3} ms",
        f(&r["end_to_end"]["p99_ms"]),
        p50(w2, "end_to_end"),
        p50(w2, "uncorrected")
    );
}

#[test]
fn a_worker_killed_mid_run_is_named_and_its_events_are_accounted_for() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let test = "a_worker_killed_mid_run_is_named_and_its_events_are_accounted_for";
    let Some(mut hosts) = hosts(test, "k", 2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (run, _) = hosts.coordinator(d, &scenario(d, 2, rate().min(200), "own", "5s"));
    let _w1 = hosts.worker(1, d, &[]);
    let w2 = hosts.worker(2, d, &[]);
    // Killed once its load has gone for a while: its log says it has a plan.
    let until = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(d.join("w2.log")).unwrap_or_default().contains("following") {
        assert!(Instant::now() < until, "w2 got no plan: {}", logs(d));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6));
    hosts.children[w2].kill().unwrap();
    let code = hosts.wait(run, Duration::from_secs(240));
    // Lost events fail the verdict (exit 1); the result is written.
    assert_eq!(code, Some(1), "{}", logs(d));
    let r = result(d);
    let workers = r["workers"]["workers"].as_array().unwrap();
    let lost = workers.iter().find(|w| w["state"] == "lost").unwrap_or_else(|| panic!("{workers:?}"));
    assert_eq!(lost["name"], "w2");
    assert!(lost["lost"].as_str().unwrap().contains("no report"), "{lost}");
    assert_eq!(workers[0]["state"], "finished");
    assert!(std::fs::read_to_string(d.join("coordinator.log")).unwrap().contains("worker w2 was lost"));

    // Every event is accounted for: w2's undelivered ones as lost, none silently dropped.
    let c = &r["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(n("sent"), n("delivered") + n("dead_lettered") + n("filtered") + n("lost"), "{c}");
    let reported: u64 =
        workers.iter().map(|w| w["sent"].as_u64().unwrap() + w["unreported_sent"].as_u64().unwrap()).sum();
    assert_eq!(n("sent"), reported, "{c} vs {workers:?}");
    assert!(n("lost") > 0 && n("lost") <= lost["sent"].as_u64().unwrap() + lost["unreported_sent"].as_u64().unwrap());
    assert_eq!(workers[0]["delivered"], workers[0]["sent"], "w1 is whole: {workers:?}");
}
