//! `watch --correlate traceparent` on a pipeline tailgate did not write: Python stages
//! (confluent-kafka, trace context propagated with OpenTelemetry's own propagator) carry
//! records through three topics of an embedded broker with nothing but `traceparent`. The
//! watch's hop figures must agree with what the stages measured themselves (within 1 ms at
//! p50), and the records it cannot time, without trace context or never seen upstream, are
//! counted.
//!
//! The stages measure with their own clock: each notes the moment it produced each record
//! (milliseconds with a fraction), and a hop is the downstream moment less the upstream
//! one. The watch has only the records' timestamps, those moments in whole milliseconds:
//! each of its hop times lies within 1 ms of the stages' (so do the medians), and the
//! histogram adds its 0.1% precision.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tailgate::result::RunResult;

const TRACED: usize = 600;
const FOREIGN: usize = 20;
const ORPHANS: usize = 12;
const TOPICS: [&str; 3] = ["peer.in", "peer.mid", "peer.out"];

fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let py = std::env::var_os("TAILGATE_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import confluent_kafka, opentelemetry.sdk.trace"])
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return Some(py);
    }
    let why = "no Python environment with confluent-kafka and opentelemetry-sdk (.ci/run makes one: .venv)";
    testkit::missing("a_pipeline_with_only_trace_context_is_timed_hop_by_hop", "python", why)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The moments a stage produced its records, by trace id.
fn sent(path: &Path) -> std::collections::HashMap<String, f64> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A hop as the stages measured it: for each trace both produced, downstream less upstream.
fn own_hop(upstream: &Path, downstream: &Path) -> Vec<f64> {
    let (up, down) = (sent(upstream), sent(downstream));
    down.iter().filter_map(|(trace, at)| Some(at - up.get(trace)?)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_only_trace_context_is_timed_hop_by_hop() {
    let Some(py) = python() else { return };
    let broker = pipeline::embedded::EmbeddedBroker::start().await.unwrap();
    let bs = broker.bootstrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watch");

    // The watch starts before the pipeline's topics exist, says it waits, and reads them
    // from their start once they are made.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .args(["watch", "--bootstrap", &bs, "--correlate", "traceparent", "--topics", &TOPICS.join(",")])
        .args(["--for", "20s", "--sla-p99", "600000", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, heard) = std::sync::mpsc::channel();
    let stderr = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = heard.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap();
            if line.contains(what) {
                return line;
            }
        }
    };
    let waiting = wait_for("waiting for");
    assert!(waiting.contains("peer.in, peer.mid, peer.out"), "{waiting}");
    let kafka = pipeline::KafkaSettings::new(bs.clone());
    kafka.ensure_topics(&TOPICS, &[]).await.unwrap();
    wait_for("watching");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/traceparent_pipeline.py");
    let [sent_in, sent_mid, sent_out] = ["in", "mid", "out"].map(|t| dir.path().join(format!("sent-{t}.json")));
    let stage = |args: Vec<String>| Command::new(&py).arg(&script).args(args).spawn().unwrap();
    let s = |v: &str| v.to_owned();
    let first = stage(vec![
        s("relay"),
        bs.clone(),
        s(TOPICS[0]),
        s(TOPICS[1]),
        TRACED.to_string(),
        ORPHANS.to_string(),
        sent_mid.display().to_string(),
    ]);
    let second = stage(vec![
        s("relay"),
        bs.clone(),
        s(TOPICS[1]),
        s(TOPICS[2]),
        (TRACED + ORPHANS).to_string(),
        s("0"),
        sent_out.display().to_string(),
    ]);
    let producer = stage(vec![
        s("produce"),
        bs.clone(),
        s(TOPICS[0]),
        TRACED.to_string(),
        s("200"),
        FOREIGN.to_string(),
        sent_in.display().to_string(),
    ]);
    let statuses =
        tokio::task::spawn_blocking(move || [producer, first, second].map(|mut c| c.wait().unwrap().success()))
            .await
            .unwrap();
    assert_eq!(statuses, [true; 3], "every Python stage finished");
    let done = tokio::task::spawn_blocking(move || watch.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stdout));

    let r: RunResult = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(r.mode, "watch");
    let c = r.watch.as_ref().unwrap().correlation.as_ref().unwrap();
    let records: Vec<(&str, u64, &str)> =
        c.topics.iter().map(|t| (t.topic.as_str(), t.records, t.timestamp.as_str())).collect();
    let (traced, foreign, orphans) = (TRACED as u64, FOREIGN as u64, ORPHANS as u64);
    assert_eq!(
        records,
        [
            ("peer.in", traced + foreign, "CreateTime"),
            ("peer.mid", traced + orphans, "CreateTime"),
            ("peer.out", traced + orphans, "CreateTime"),
        ]
    );
    assert_eq!((c.foreign, c.unmatched, c.evicted), (foreign, orphans, 0), "{c:?}");
    let hops: Vec<(&str, u64)> = r.hops.iter().map(|h| (h.name.as_str(), h.stats.count)).collect();
    assert_eq!(hops, [("peer.in->peer.mid", traced), ("peer.mid->peer.out", traced + orphans)]);
    assert_eq!(r.end_to_end.count, traced, "end to end only for traces seen on the first topic");

    // Each hop as tailgate timed it, against the stage's own measurement of it.
    let own = [own_hop(&sent_in, &sent_mid), own_hop(&sent_mid, &sent_out)];
    assert_eq!(own.each_ref().map(Vec::len), [TRACED, TRACED + ORPHANS]);
    for (hop, own) in r.hops.iter().zip(own) {
        let (ours, theirs) = (hop.stats.p50_ms, median(own));
        eprintln!("{}: tailgate p50 {ours} ms, the stages' own {theirs:.3} ms", hop.name);
        let within = (ours - theirs).abs() <= 1.0 + 0.001 * theirs;
        assert!(within, "{}: tailgate p50 {ours} ms, the stages' {theirs} ms", hop.name);
    }
    for file in ["end_to_end.hlog", "hop-peer.in_to_peer.mid.hlog", "hop-peer.mid_to_peer.out.hlog", "report.html"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}
