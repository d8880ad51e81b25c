//! The agent as a Faust worker (`[agent] kind = "faust"`): the Python app in
//! `pipeline/python/faust_agent.py`, built into the binary, run as a child process in a
//! Python environment with `faust-streaming` and `tailgate_probe`. It reads its settings
//! from one environment variable and writes a JSON line of figures to its stdout every
//! 200 ms, which this task adds to the agent's counters; its log goes to `faust-agent.log`
//! in the agent's state directory.
//!
//! Stopping the task in order sends the worker SIGTERM (Faust commits what it acknowledged
//! and leaves its group); aborting the task kills it (`kill_on_drop`), as a crash would.

use super::AgentStats;
use super::model::{Latency, ModelConfig};
use super::state::Restored;
use crate::io::kafka::KafkaSettings;
use crate::runtime::StageContext;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

/// The app, as shipped.
pub const APP: &str = include_str!("../../python/faust_agent.py");
/// The Python packages it needs, as shipped.
pub const REQUIREMENTS: &str = include_str!("../../python/requirements.txt");
/// How a user makes the environment it runs in.
pub const SETUP: &str = "scripts/python-env (it makes .venv with faust-streaming and tailgate_probe)";
/// The variable that carries its settings.
const SETTINGS_VAR: &str = "TAILGATE_FAUST_AGENT";
/// The longest an in-order stop may take before the worker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Client settings it takes over from the stages' (librdkafka names, applied to aiokafka).
const TAKEN: [&str; 5] =
    ["linger.ms", "compression.type", "session.timeout.ms", "heartbeat.interval.ms", "message.max.bytes"];

/// The Faust agent's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FaustConfig {
    /// The interpreter of the environment it runs in.
    pub python: PathBuf,
    pub history: usize,
    pub prefetch: bool,
    pub model: ModelConfig,
    /// The edge cache: a SQLite path or a `redis://` URL.
    pub edge_cache: String,
    /// Where its script and log go.
    pub state_dir: PathBuf,
    /// Only this run's sessions count as restored.
    pub run: Option<u64>,
}

/// The interpreter to run the Faust agent with: `configured` (`[agent] python`), else
/// `TAILGATE_PYTHON`, else `.venv/bin/python` in the working directory.
pub fn python(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("TAILGATE_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

/// What the Faust agent runs on (`faust-streaming 0.15.3, Python 3.11.2`), or a clear
/// error naming the interpreter and the command that makes its environment.
pub async fn check(python: &Path) -> Result<String> {
    let probe = "import faust, platform, tailgate_probe; \
                 print(f'faust-streaming {faust.__version__}, Python {platform.python_version()}')";
    let fail = |why: String| Error::Stage {
        stage: super::NAME,
        reason: format!(
            "the Faust agent needs Python with faust-streaming and tailgate_probe, but {}: {why}. Run {SETUP}, \
             or name an interpreter in [agent] python or TAILGATE_PYTHON",
            python.display()
        ),
    };
    let out = Command::new(python).args(["-c", probe]).output().await.map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.lines().last().unwrap_or("it failed").trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The settings the app reads, as JSON. They reach it in its environment only, never a
/// file or a log (a Redis URL may carry a password; Kafka is PLAINTEXT only).
fn settings(config: &FaustConfig, kafka: &KafkaSettings) -> Result<serde_json::Value> {
    if kafka.converter != crate::convert::Converter::Json {
        return Err(Error::Config("the Faust agent reads and writes JSON events; set no other format".into()));
    }
    let all = || kafka.client.iter().chain(&kafka.producer).chain(&kafka.consumer);
    if let Some((_, v)) = all().find(|(k, v)| *k == "security.protocol" && !v.eq_ignore_ascii_case("plaintext")) {
        return Err(Error::Config(format!("the Faust agent connects over PLAINTEXT only, not security.protocol {v}")));
    }
    let ms = |map: &std::collections::BTreeMap<String, String>, k: &str| {
        map.get(k).and_then(|v| v.parse::<f64>().ok()).map(|v| v / 1e3)
    };
    let compression = match kafka.producer.get("compression.type").map(String::as_str) {
        None | Some("none") => None,
        Some(c @ "gzip") => Some(c.to_owned()),
        Some(other) => {
            eprintln!("note: the Faust agent sends uncompressed; aiokafka's {other} needs a package it does not ship");
            None
        }
    };
    // What aiokafka does anyway (acks all, no Nagle, at-least-once commits) is not news.
    let same = |k: &str, v: &str| {
        let defaults = crate::io::kafka::PRODUCER_DEFAULTS.iter().chain(crate::io::kafka::CONSUMER_DEFAULTS.iter());
        defaults.into_iter().any(|(dk, dv)| *dk == k && *dv == v) || (k == "acks" && (v == "all" || v == "-1"))
    };
    let ignored: Vec<&str> =
        all().filter(|(k, v)| !TAKEN.contains(&k.as_str()) && !same(k, v)).map(|(k, _)| k.as_str()).collect();
    if !ignored.is_empty() {
        eprintln!(
            "note: the Faust agent (aiokafka) takes {} of the client settings; it leaves {}",
            TAKEN.join(", "),
            ignored.join(", ")
        );
    }
    let secs = |d: Duration| d.as_secs_f64();
    let model = match &config.model {
        ModelConfig::Simulated(Latency::Fixed(d)) => serde_json::json!({"kind": "simulated", "value_s": secs(*d)}),
        ModelConfig::Simulated(Latency::Uniform { min, max }) => {
            serde_json::json!({"kind": "simulated", "latency": "uniform", "min_s": secs(*min), "max_s": secs(*max)})
        }
        ModelConfig::Simulated(Latency::Lognormal { median, sigma }) => {
            serde_json::json!({"kind": "simulated", "latency": "lognormal", "median_s": secs(*median), "sigma": sigma})
        }
        ModelConfig::Http { url, model, timeout, max_in_flight } => serde_json::json!({
            "kind": "http", "url": url, "model": model, "timeout_s": secs(*timeout), "max_in_flight": max_in_flight,
        }),
    };
    Ok(serde_json::json!({
        "bootstrap": kafka.bootstrap,
        "group": kafka.names.of(&crate::topology::group_of(super::NAME)),
        "topic_prefix": kafka.names.prefix(),
        "partitions": kafka.partitions,
        "run": config.run,
        "seed": config.run.unwrap_or(1),
        "history": config.history,
        "prefetch": config.prefetch,
        "edge_cache": config.edge_cache,
        "model": model,
        "linger_s": ms(&kafka.producer, "linger.ms").unwrap_or(0.0),
        "compression": compression,
        "session_timeout_s": ms(&kafka.consumer, "session.timeout.ms").unwrap_or(10.0),
        "heartbeat_interval_s": ms(&kafka.consumer, "heartbeat.interval.ms").unwrap_or(1.0),
        "max_record_bytes": kafka.producer.get("message.max.bytes").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1_000_000),
    }))
}

/// One line the app writes.
#[derive(Debug, Default, Deserialize)]
struct Line {
    runtime: Option<String>,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    forwarded: u64,
    #[serde(default)]
    dead_lettered: u64,
    #[serde(default)]
    replays: u64,
    #[serde(default)]
    model_failures: u64,
    #[serde(default)]
    context_hits: u64,
    #[serde(default)]
    context_misses: u64,
    #[serde(default)]
    context_errors: u64,
    #[serde(default)]
    skipped: u64,
    first_skip: Option<String>,
    #[serde(default)]
    cpu_s: f64,
    restored: Option<LineRestored>,
}

#[derive(Debug, Deserialize)]
struct LineRestored {
    sessions: u64,
    warm_start_ms: f64,
    #[serde(default)]
    partitions: Vec<i32>,
    #[serde(default)]
    records: u64,
}

/// What one worker process has reported so far, to add only what is new.
#[derive(Debug, Default)]
struct Seen {
    forwarded: u64,
    dead_lettered: u64,
    replays: u64,
    model_failures: u64,
    context_hits: u64,
    context_misses: u64,
    context_errors: u64,
    skipped: u64,
    cpu_ns: u64,
}

fn add(counter: &AtomicU64, seen: &mut u64, now: u64) {
    counter.fetch_add(now.saturating_sub(*seen), Ordering::Relaxed);
    *seen = now.max(*seen);
}

impl Seen {
    fn apply(&mut self, line: &Line, ctx: &StageContext, stats: &AgentStats) {
        add(&ctx.counters.forwarded, &mut self.forwarded, line.forwarded);
        add(&ctx.counters.dead_lettered, &mut self.dead_lettered, line.dead_lettered);
        add(&stats.replays, &mut self.replays, line.replays);
        add(&stats.model_failures, &mut self.model_failures, line.model_failures);
        add(&stats.context_hits, &mut self.context_hits, line.context_hits);
        add(&stats.context_misses, &mut self.context_misses, line.context_misses);
        add(&stats.context_errors, &mut self.context_errors, line.context_errors);
        add(&ctx.counters.skipped, &mut self.skipped, line.skipped);
        if let Some(why) = &line.first_skip {
            let _ = ctx.counters.first_skip.set(why.clone());
        }
        add(&stats.process_cpu_ns, &mut self.cpu_ns, (line.cpu_s.max(0.0) * 1e9) as u64);
    }
}

/// Runs the Faust worker until `ctx.cancel` (then stops it in order), or until it exits.
pub async fn run(config: FaustConfig, ctx: StageContext, stats: Arc<AgentStats>) -> Result<()> {
    let settings = settings(&config, &ctx.kafka)?.to_string();
    std::fs::create_dir_all(&config.state_dir)?;
    let script = config.state_dir.join("faust_agent.py");
    std::fs::write(&script, APP)?;
    let log_path = config.state_dir.join("faust-agent.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut child = Command::new(&config.python)
        .arg(&script)
        .env(SETTINGS_VAR, settings)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| stage_err(format!("cannot start {}: {e}. Run {SETUP}", config.python.display())))?;
    let stdout = child.stdout.take().ok_or_else(|| stage_err("the worker has no stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) => {
                    let Ok(line) = serde_json::from_str::<Line>(&text) else { continue };
                    take(&line, &mut seen, &ctx, &stats);
                }
                // Its stdout closed: it is exiting.
                Ok(None) | Err(_) => break,
            },
            () = ctx.cancel.cancelled() => {
                stop(&mut child).await;
                // What it counted while stopping.
                while let Ok(Some(text)) = lines.next_line().await {
                    if let Ok(line) = serde_json::from_str::<Line>(&text) {
                        take(&line, &mut seen, &ctx, &stats);
                    }
                }
                ctx.ready.send_replace(false);
                return Ok(());
            }
        }
    }
    ctx.ready.send_replace(false);
    let status = child.wait().await?;
    Err(stage_err(format!("the Faust worker exited ({status}); its log, {}: {}", log_path.display(), tail(&log_path))))
}

fn take(line: &Line, seen: &mut Seen, ctx: &StageContext, stats: &AgentStats) {
    if let Some(runtime) = &line.runtime
        && let Ok(mut r) = stats.runtime.lock()
    {
        *r = Some(runtime.clone());
        return;
    }
    seen.apply(line, ctx, stats);
    if let Some(r) = &line.restored
        && let Ok(mut restores) = stats.restores.lock()
    {
        restores.push(Restored {
            at_ns: probes::now_ns(),
            from: "changelog (Faust table recovery)".into(),
            partitions: r.partitions.clone(),
            sessions: r.sessions,
            records: r.records,
            warm_start_ms: r.warm_start_ms,
        });
    }
    ctx.ready.send_if_modified(|was| std::mem::replace(was, line.ready) != line.ready);
}

/// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The child is not reaped while we hold it, so its pid is still its own.
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
        eprintln!("the Faust agent did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
        let _ = child.kill().await;
    }
}

/// The last lines of the worker's log, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn stage_err(reason: String) -> Error {
    Error::Stage { stage: super::NAME, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_restarted_adds_its_figures_to_the_earlier_ones() {
        let (ctx, stats) = (StageContext::new(KafkaSettings::new("127.0.0.1:9")), AgentStats::default());
        let line = |forwarded, cpu_s| Line { forwarded, cpu_s, ready: true, ..Line::default() };
        let mut first = Seen::default();
        take(&line(10, 0.5), &mut first, &ctx, &stats);
        take(&line(25, 1.0), &mut first, &ctx, &stats);
        assert!(*ctx.ready.borrow());
        let mut second = Seen::default();
        take(&line(4, 0.25), &mut second, &ctx, &stats);
        assert_eq!(ctx.counters.forwarded.load(Ordering::Relaxed), 29);
        assert_eq!(stats.process_cpu_ns.load(Ordering::Relaxed), 1_250_000_000);
    }

    #[tokio::test]
    async fn a_missing_python_is_named_with_the_command_that_makes_one() {
        let e = check(Path::new("/nonexistent/bin/python")).await.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/bin/python") && e.contains("scripts/python-env"), "{e}");
        // An interpreter without the packages says which import failed.
        let e = check(Path::new("/usr/bin/python3")).await.map_err(|e| e.to_string());
        if let Err(e) = e {
            assert!(e.contains("No module named"), "{e}");
        }
    }

    #[test]
    fn settings_refuse_what_the_worker_cannot_do() {
        let config = FaustConfig {
            python: "python3".into(),
            history: 3,
            prefetch: true,
            model: ModelConfig::default(),
            edge_cache: "cache.sqlite".into(),
            state_dir: "state".into(),
            run: Some(7),
        };
        let mut kafka = KafkaSettings::new("127.0.0.1:9");
        kafka.producer.insert("linger.ms".into(), "5".into());
        let s = settings(&config, &kafka).unwrap();
        assert_eq!((s["linger_s"].as_f64(), s["run"].as_u64()), (Some(0.005), Some(7)));
        kafka.consumer.insert("security.protocol".into(), "SASL_SSL".into());
        assert!(settings(&config, &kafka).unwrap_err().to_string().contains("PLAINTEXT only"));
    }
}
