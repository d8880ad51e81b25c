//! One run of a scenario: for each of its profiles in turn, bring up the broker (embedded
//! unless a bootstrap address is given), create the topics, start the pipeline, drive the
//! open-loop load, drain, account for every event, and write the run directory. A profile's
//! run is a list of phases ([`profile`]); each phase has a module of its own.

mod broker;
mod drain;
mod drive;
mod external;
mod faults;
mod outcome;
mod profile;
mod relay;
mod remote;
pub mod search;
mod tracing;
mod watch;

pub use search::find_max_rate;
pub(crate) use tracing::start_tracer;

use crate::result::RunResult;
use crate::scenario::{Resolved, Scenario, valid_bootstrap};
use dashboard::FeedSender;
use pipeline::KafkaSettings;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a broker has to answer before the run gives up on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the stages have to join their consumer groups.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Run directory; default `runs/<scenario>-<UTC timestamp>`.
    pub out: Option<PathBuf>,
    pub bootstrap: Option<String>,
    /// Over the scenario's `[broker] topic_prefix`.
    pub topic_prefix: Option<String>,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub warmup: Option<Duration>,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// A live view to feed (samples, progress, the header).
    pub feed: Option<FeedSender>,
    /// Set from outside (a live view's quit) to stop the load early; results are written.
    pub stop: Option<Arc<AtomicBool>>,
    /// Only these profiles (all when empty).
    pub profiles: Vec<String>,
    /// Wait for this many `tailgate worker`s and let them make the load, over the
    /// scenario's `[workers] count`.
    pub workers: Option<u64>,
}

/// Why a run did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario or the flags are wrong (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// Something failed while running (exit 3).
    #[error("{0}")]
    Runtime(String),
}

impl RunError {
    /// The documented exit code.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) => crate::exit::EXIT_BAD_INPUT,
            Self::Runtime(_) => crate::exit::EXIT_RUNTIME,
        }
    }
}

/// A runtime failure (exit 3) that says `e`.
pub(crate) fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::Runtime(e.to_string())
}

/// One profile's finished run: its results and where they were written.
#[derive(Debug)]
pub struct ProfileRun {
    pub result: RunResult,
    pub dir: PathBuf,
    /// A stage that failed during the run (the results are written all the same).
    pub failure: Option<String>,
}

/// A finished run of a scenario: one run per profile.
#[derive(Debug)]
pub struct Outcome {
    /// The run directory, or the sweep directory holding one per profile.
    pub dir: PathBuf,
    /// Whether the scenario has profiles (`dir` is a sweep directory).
    pub sweep: bool,
    pub runs: Vec<ProfileRun>,
}

/// Loads the scenario and applies the command-line overrides.
pub fn prepare(opts: &RunOptions) -> Result<Scenario, RunError> {
    let mut s = Scenario::load(&opts.scenario).map_err(|e| RunError::BadInput(e.to_string()))?;
    if let Some(rate) = opts.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(RunError::BadInput(format!("--rate must be a positive number, not {rate}")));
        }
        s.load.set_rate(rate);
    }
    if let Some(d) = opts.duration {
        if d.is_zero() {
            return Err(RunError::BadInput("--duration must be longer than zero".into()));
        }
        s.load.duration = d;
    }
    if let Some(w) = opts.warmup {
        s.load.warmup = w;
    }
    if let Some(b) = &opts.bootstrap {
        if !valid_bootstrap(b) {
            return Err(RunError::BadInput(format!("--bootstrap `{b}` is not host:port[,host:port...]")));
        }
        s.broker.bootstrap = Some(b.clone());
    }
    if let Some(prefix) = &opts.topic_prefix {
        crate::scenario::valid_topic_prefix(prefix).map_err(|e| RunError::BadInput(format!("--topic-prefix: {e}")))?;
        s.broker.topic_prefix = Some(prefix.clone());
    }
    if let Some(n) = opts.workers {
        if !(1..=crate::scenario::workers::MAX_WORKERS).contains(&n) {
            let most = crate::scenario::workers::MAX_WORKERS;
            return Err(RunError::BadInput(format!("--workers must be 1 to {most}, not {n}")));
        }
        s.workers.get_or_insert_with(|| crate::scenario::WorkersSection::of(n)).count = n;
        if let Some((section, field, why)) = s.workers_conflict() {
            return Err(RunError::BadInput(format!("--workers: [{section}] {field}: {why}")));
        }
    }
    if s.workers.is_some() {
        // The workers post the actions to the gateway's HTTP ingress.
        s.connector.source = crate::scenario::SourceKind::Http;
    }
    Ok(s)
}

fn timestamp_for_path(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

/// The scenario with the command line's overrides, and its selected profiles, every client
/// setting of every profile and stage checked, before anything starts.
fn checked(opts: &RunOptions) -> Result<(Scenario, Vec<Resolved>), RunError> {
    let scenario = prepare(opts)?;
    let profiles = scenario.resolve(&opts.profiles).map_err(RunError::BadInput)?;
    for p in &profiles {
        for stage in pipeline::STAGES {
            p.clients.for_stage(&base_kafka(&scenario, p), stage).check_settings().map_err(|e| {
                RunError::BadInput(format!("{}: profile `{}`, stage {stage}: {e}", opts.scenario.display(), p.name))
            })?;
        }
    }
    if !scenario.faults.is_empty() && scenario.broker.bootstrap.is_some() {
        return Err(RunError::BadInput(format!(
            "{}: [[faults]] use the embedded broker's fault hooks; against `tailgate broker`, give that process \
             its --stall, --drop-connections or --fetch-latency flags",
            opts.scenario.display()
        )));
    }
    if scenario.stages.external && scenario.broker.bootstrap.is_none() {
        return Err(RunError::BadInput(format!(
            "{}: [stages] external = true runs against the stages' cluster: give --bootstrap HOST:PORT or \
             [broker] bootstrap",
            opts.scenario.display()
        )));
    }
    Ok((scenario, profiles))
}

/// Runs every selected profile of a scenario, in turn, each on fresh topics (a fresh
/// embedded broker), and writes the run directory (or the sweep directory with one run
/// directory per profile).
pub async fn run(opts: RunOptions) -> Result<Outcome, RunError> {
    let (scenario, profiles) = checked(&opts)?;
    let started = std::time::SystemTime::now();
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(format!("{}-{}", scenario.name, timestamp_for_path(started))));
    let sweep = !scenario.profiles.is_empty();
    if sweep && scenario.broker.bootstrap.is_some() && profiles.len() > 1 {
        eprintln!(
            "note: on an external cluster the profiles share the topics; partitions and topic settings apply \
             only where the topics do not exist yet"
        );
    }
    let mut runs = Vec::new();
    for (i, profile) in profiles.iter().enumerate() {
        let run_dir = if sweep { dir.join(&profile.name) } else { dir.clone() };
        if sweep && opts.progress {
            eprintln!("profile {} ({} of {}): {}", profile.name, i + 1, profiles.len(), profile.description);
        }
        let stop = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        if stop {
            break;
        }
        match profile::run(&scenario, profile, &run_dir, &opts).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                // The profiles that did run keep their index, so they can still be reported.
                if sweep && !runs.is_empty() {
                    let _ = write_sweep_file(&dir, &scenario, &runs);
                }
                return Err(match e {
                    RunError::Runtime(why) if sweep => RunError::Runtime(format!("profile {}: {why}", profile.name)),
                    other => other,
                });
            }
        }
    }
    if sweep {
        write_sweep_file(&dir, &scenario, &runs).map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
    }
    Ok(Outcome { dir, sweep, runs })
}

/// The sweep's index: which profiles ran, in which order, and where.
fn write_sweep_file(dir: &Path, scenario: &Scenario, runs: &[ProfileRun]) -> std::io::Result<()> {
    let index = reports::runs::SweepIndex {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        profiles: runs
            .iter()
            .map(|r| reports::runs::SweepEntry {
                name: r.result.profile.clone(),
                dir: r.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
                passed: r.result.sla.passed,
                failure: r.failure.clone(),
            })
            .collect(),
    };
    index.write(dir)
}

/// Client settings of `profile` of `scenario` for every stage (without a bootstrap
/// address yet), with the topics' replication and the events' format the scenario asks.
pub(crate) fn base_kafka(scenario: &Scenario, profile: &Resolved) -> KafkaSettings {
    let mut kafka = profile.clients.kafka("", profile.partitions);
    kafka.names = pipeline::io::kafka::Names::with_prefix(scenario.broker.topic_prefix.as_deref().unwrap_or(""));
    kafka.replication = scenario.broker.replication;
    kafka.converter = scenario.connector.converter;
    kafka
}

/// Creates the pipeline's topics that are missing, with the profile's topic settings (the
/// compacted ones compacted).
pub(crate) async fn create_topics(kafka: &KafkaSettings, profile: &Resolved) -> Result<(), RunError> {
    kafka.ensure_pipeline_topics(&profile.clients.topic_settings()).await.map_err(failed)
}

pub(crate) fn describe_exit(done: Result<(&'static str, pipeline::Result<()>), tokio::task::JoinError>) -> String {
    match done {
        Ok((name, Ok(()))) => format!("{name} stopped unexpectedly"),
        Ok((_, Err(e))) => e.to_string(),
        Err(e) => format!("a stage panicked: {e}"),
    }
}
