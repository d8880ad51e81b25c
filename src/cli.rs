//! The command line: `tailgate run` (optionally with the live dashboard), `tailgate watch`,
//! `tailgate validate`, and the exit codes.
//!
//! Exit codes: 0 ran and the SLA passed; 1 ran and the SLA failed; 2 bad input (scenario
//! file, flags); 3 runtime failure (broker unreachable, a stage crashed).

use crate::run::{self, RunError, RunOptions};
use crate::scenario::Scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Exit code: ran and every SLA objective passed.
pub const EXIT_PASS: u8 = 0;
/// Exit code: ran and an SLA objective failed.
pub const EXIT_SLA_FAILED: u8 = 1;
/// Exit code: bad input (scenario file, flags).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: runtime failure (broker unreachable, a stage crashed).
pub const EXIT_RUNTIME: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "tailgate", version, about = "Measure, watch and gate the latency of Kafka-centric event pipelines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario through the reference pipeline and judge it against its SLA.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Run directory [default: runs/<scenario>-<UTC timestamp>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// An external Kafka cluster (host:port[,host:port...]) instead of the embedded broker.
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: Option<String>,
        /// Events per second, over the scenario's.
        #[arg(long)]
        rate: Option<f64>,
        /// Measured duration ("30s", "2m"), over the scenario's.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Warm-up ("5s"), over the scenario's.
        #[arg(long, value_parser = parse_duration)]
        warmup: Option<Duration>,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
        /// Show the live dashboard while the run goes (and its verdict until you press q).
        #[arg(long)]
        tui: bool,
    },
    /// Watch a running pipeline's latency live by tapping its topics (produces nothing,
    /// commits nothing: a consumer group of its own, reading from the end).
    Watch {
        /// The Kafka cluster (host:port[,host:port...]).
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: String,
        /// Topics to tap; events need tailgate's headers (any pipeline that forwards them).
        #[arg(long, value_delimiter = ',', default_value = "story.updates")]
        topics: Vec<String>,
        /// End-to-end p99 budget to draw and check, ms.
        #[arg(long, value_name = "MS", default_value_t = 50.0)]
        sla_p99: f64,
        /// Consumer groups whose lag to show (read only) [default: the reference pipeline's stages].
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Check scenario files without running them.
    Validate {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\""))
}

/// Parses the arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { EXIT_PASS });
        }
    };
    ExitCode::from(match cli.command {
        Command::Validate { scenarios } => validate(&scenarios),
        Command::Run { scenario, out, bootstrap, rate, duration, warmup, quiet, tui } => {
            let opts = RunOptions {
                scenario,
                out,
                bootstrap,
                rate,
                duration,
                warmup,
                progress: !quiet && !tui,
                feed: None,
                stop: None,
            };
            if tui { run_with_dashboard(opts) } else { run_blocking(opts) }
        }
        Command::Watch { bootstrap, topics, sla_p99, groups } => watch(&bootstrap, topics, sla_p99, groups),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        EXIT_RUNTIME
    })
}

fn needs_terminal(what: &str) -> Option<u8> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        None
    } else {
        eprintln!("error: {what} draws a live dashboard and needs a terminal on stdout");
        Some(EXIT_BAD_INPUT)
    }
}

fn run_with_dashboard(mut opts: RunOptions) -> u8 {
    if let Some(code) = needs_terminal("--tui") {
        return code;
    }
    let (tx, rx) = dashboard::feed_channel();
    let quit = Arc::new(AtomicBool::new(false));
    let meta = dashboard::Meta {
        title: opts.scenario.display().to_string(),
        profile: "default".into(),
        broker: "starting".into(),
        started_ns: probes::now_ns(),
        ..dashboard::Meta::default()
    };
    let ui = {
        let quit = Arc::clone(&quit);
        std::thread::spawn(move || dashboard::run_app(meta, rx, &quit))
    };
    opts.feed = Some(tx.clone());
    opts.stop = Some(quit);
    let (code, report) = match runtime() {
        Ok(rt) => {
            let outcome = rt.block_on(run::run(opts));
            rt.shutdown_timeout(Duration::from_secs(2));
            match outcome {
                Ok(o) => {
                    let lines = o
                        .result
                        .sla
                        .objectives
                        .iter()
                        .map(|ob| format!("{} = {}", ob.metric, ob.actual.map_or("-".into(), |a| format!("{a:.3}"))))
                        .collect();
                    tx.deliver(dashboard::Feed::Finished(dashboard::Verdict { passed: o.result.sla.passed, lines }));
                    (verdict_code(&o), Ok(o))
                }
                Err(e) => {
                    tx.deliver(dashboard::Feed::Failed(e.to_string()));
                    (e.exit_code(), Err(e))
                }
            }
        }
        Err(code) => return code,
    };
    drop(tx);
    if let Ok(Err(e)) = ui.join() {
        eprintln!("warning: the dashboard failed: {e}");
    }
    match report {
        Ok(o) => {
            print!("{}", o.result.render(&o.dir));
            if let Some(f) = &o.failure {
                eprintln!("error: the run failed: {f}");
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
    code
}

fn verdict_code(o: &run::Outcome) -> u8 {
    if o.failure.is_some() {
        EXIT_RUNTIME
    } else if o.result.sla.passed {
        EXIT_PASS
    } else {
        EXIT_SLA_FAILED
    }
}

fn watch(bootstrap: &str, topics: Vec<String>, sla_p99: f64, groups: Vec<String>) -> u8 {
    let groups = if groups.is_empty() { pipeline::tap::stage_groups() } else { groups };
    if !crate::scenario::valid_bootstrap(bootstrap) {
        eprintln!("error: --bootstrap `{bootstrap}` is not host:port[,host:port...]");
        return EXIT_BAD_INPUT;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let kafka = pipeline::KafkaSettings::new(bootstrap);
    if let Err(e) = rt.block_on(kafka.check_reachable(run::CONNECT_TIMEOUT)) {
        eprintln!("error: {e}");
        return EXIT_RUNTIME;
    }
    if let Some(code) = needs_terminal("watch") {
        return code;
    }
    let (tx, rx) = dashboard::feed_channel();
    let meta = dashboard::Meta {
        title: format!("watching {}", topics.join(",")),
        profile: "-".into(),
        broker: format!("kafka @ {bootstrap}"),
        started_ns: probes::now_ns(),
        planned: None,
        budgets: vec![dashboard::Budget { metric: "end_to_end.p99_ms".into(), max: sla_p99 }],
        sink: pipeline::tap::NAME.into(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let tap = rt.spawn({
        let (cancel, tx) = (cancel.clone(), tx.clone());
        async move {
            let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let lags = {
                let (kafka, seen, tx, cancel) = (kafka.clone(), Arc::clone(&seen), tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    while tokio::select! { () = cancel.cancelled() => false, _ = tick.tick() => true } {
                        let lags = pipeline::tap::group_lags(&kafka, &groups, Duration::from_secs(5)).await;
                        let lags = lags.unwrap_or_default().into_iter().filter_map(|(g, l)| {
                            Some(dashboard::StageLag {
                                stage: g.trim_start_matches("tailgate-").to_owned(),
                                events: l?,
                            })
                        });
                        tx.offer(dashboard::Feed::Progress(dashboard::Progress {
                            delivered: seen.load(std::sync::atomic::Ordering::Relaxed),
                            lags: lags.collect(),
                            ..Default::default()
                        }));
                    }
                })
            };
            let tapped = pipeline::tap::run(
                &kafka,
                &topics,
                |intended_ns, stamps, received_ns| {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.offer(dashboard::Feed::Sample(dashboard::Sample {
                        intended_ns,
                        received_ns,
                        stamps: stamps.into(),
                    }));
                },
                || {},
                cancel,
            )
            .await;
            let _ = lags.await;
            tapped
        }
    });
    drop(tx);
    let quit = AtomicBool::new(false);
    let ui = dashboard::run_app(meta, rx, &quit);
    cancel.cancel();
    let tapped = rt.block_on(tap);
    rt.shutdown_timeout(Duration::from_secs(2));
    match (ui, tapped) {
        (Err(e), _) => {
            eprintln!("error: the dashboard failed: {e}");
            EXIT_RUNTIME
        }
        (_, Ok(Err(e))) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
        _ => EXIT_PASS,
    }
}

fn validate(files: &[PathBuf]) -> u8 {
    let mut code = EXIT_PASS;
    for f in files {
        match Scenario::load(f) {
            Ok(s) => println!("ok: {} (scenario `{}`)", f.display(), s.name),
            Err(e) => {
                eprintln!("{e}");
                code = EXIT_BAD_INPUT;
            }
        }
    }
    code
}

fn run_blocking(opts: RunOptions) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    let outcome = runtime.block_on(run::run(opts));
    // Kafka clients and the embedded broker may linger in background tasks; don't wait on them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(o) => {
            print!("{}", o.result.render(&o.dir));
            if let Some(f) = &o.failure {
                eprintln!("error: the run failed: {f}");
            }
            verdict_code(&o)
        }
        Err(e @ (RunError::BadInput(_) | RunError::Runtime(_))) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
