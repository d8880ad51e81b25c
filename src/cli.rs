//! The command line: `tailgate run` (optionally with the live dashboard), `watch`,
//! `validate`, `report`, `check`, `export omb`, `import omb`, `broker` and `stage`, each
//! ending in one of the [`crate::exit`] codes.

use crate::command::{needs_terminal, parse_duration, tokio_runtime};
use crate::run::{self, RunError, RunOptions};
use crate::scenario::Scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use crate::exit::{EXIT_BAD_INPUT, EXIT_PASS, EXIT_RUNTIME, EXIT_SLA_FAILED};

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
        /// Put this before the name of every topic and consumer group the run makes, over
        /// the scenario's [broker] topic_prefix (runs sharing a cluster do not collide).
        #[arg(long, value_name = "PREFIX")]
        topic_prefix: Option<String>,
        /// Events per second throughout, over the scenario's rate or schedule.
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
        /// Run only these profiles of the scenario (repeat or comma-separate) [default: all].
        #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
        profiles: Vec<String>,
        /// Gate the run against this earlier run or sweep directory (as `tailgate check` does).
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// Do not write the report (report.html and the rest) into the run directory.
        #[arg(long)]
        no_report: bool,
        /// Search for the highest rate the pipeline sustains (the scenario's [search], or
        /// its defaults), each step a run of its own.
        #[arg(long)]
        find_max_rate: bool,
        /// Wait for N `tailgate worker`s (on other hosts) and let them make the load, each
        /// 1/N of the rate; the figures are theirs merged (the scenario's [workers]).
        #[arg(long, value_name = "N")]
        workers: Option<u64>,
    },
    /// Build the report (HTML, Markdown, JUnit, JSON, charts) from run or sweep directories.
    Report {
        /// Run or sweep directories; runs of the same profile are merged.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where to write [default: the first directory].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Judge by these objectives (a TOML file of [[sla]] tables) instead of the runs' own.
        #[arg(long, value_name = "FILE")]
        sla: Option<PathBuf>,
    },
    /// Gate a run or sweep: SLA objectives, and regressions against a baseline beyond the
    /// noise the run's own intervals show. Exit 0 pass, 1 fail, 2 bad input.
    Check {
        /// The run or sweep directory to judge.
        dir: PathBuf,
        /// An earlier run or sweep directory to compare with, profile by profile.
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// Judge by these objectives (a TOML file of [[sla]] tables) instead of the runs' own.
        #[arg(long, value_name = "FILE")]
        sla: Option<PathBuf>,
        /// Gate only these profiles (repeat or comma-separate) [default: all].
        #[arg(long = "profile", value_name = "NAME", value_delimiter = ',')]
        profiles: Vec<String>,
        /// Changes smaller than this percentage of the baseline are never regressions.
        #[arg(long, value_name = "PCT", default_value_t = 2.0)]
        min_change: f64,
    },
    /// Write results in another tool's format.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Turn another tool's workload into a tailgate scenario.
    Import {
        #[command(subcommand)]
        format: ImportFormat,
    },
    /// Watch a running pipeline's latency by tapping its topics (produces nothing, commits
    /// nothing: a consumer group of its own, reading from the end). With a terminal, the
    /// live dashboard; without one, or with --for/--out/--sla/--json, headless: it writes a
    /// run directory and exits 0, or 1 when an objective failed.
    Watch(crate::watch::WatchOptions),
    /// Be a load host for runs started elsewhere with `tailgate run --workers N`: say
    /// hello on the cluster's control topic, answer clock pings, play each plan's share
    /// of the actions and follow the gateway, reporting every second on the results topic.
    Worker(crate::workers::worker::WorkerOptions),
    /// Serve the embedded broker (tailgate's own, in memory unless --data) until Ctrl-C or
    /// SIGTERM, so that runs, `watch` and pipelines in other processes can share it
    /// (`--bootstrap`). Prints the address.
    #[cfg(feature = "embedded")]
    Broker {
        /// Where to listen and what to advertise.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
        listen: String,
        /// Keep the log in this directory, and serve it again after a restart.
        #[arg(long, value_name = "DIR")]
        data: Option<std::path::PathBuf>,
        /// Fault: hold every response back for FOR, starting AT after start (e.g. 10s+2s).
        #[arg(long, value_name = "AT+FOR")]
        stall: Vec<String>,
        /// Fault: close every client connection AT after start (e.g. 15s).
        #[arg(long, value_name = "AT")]
        drop_connections: Vec<String>,
        /// Fault: add latency to every fetch of one topic (e.g. story.beats=20ms).
        #[arg(long, value_name = "TOPIC=LATENCY")]
        fetch_latency: Vec<String>,
        /// The listener's security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
        #[arg(long, value_name = "PROTOCOL", default_value = "PLAINTEXT")]
        security_protocol: String,
        /// The TLS certificate chain (PEM), for the SSL protocols.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<std::path::PathBuf>,
        /// The TLS private key (PEM), for the SSL protocols.
        #[arg(long, value_name = "FILE")]
        tls_key: Option<std::path::PathBuf>,
        /// A SASL user, NAME=PASSWORD (repeat); write the password as '${VAR}' to read it
        /// from the environment rather than the command line.
        #[arg(long = "user", value_name = "NAME=PASSWORD")]
        users: Vec<String>,
    },
    /// Run one stage of the reference pipeline as a process of its own until SIGINT or
    /// SIGTERM, for a `tailgate run` whose scenario has `[stages] external = true`. Run more
    /// agents, stream jobs or gateways to share their consumer group's partitions.
    Stage {
        /// Which stage.
        #[arg(value_enum)]
        stage: crate::stage_process::StageName,
        /// The scenario file whose settings the stage takes.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The Kafka cluster (host:port[,host:port...]), over the scenario's [broker] bootstrap.
        #[arg(long, value_name = "HOST:PORT")]
        bootstrap: Option<String>,
        /// The gateway's HTTP server: /events, /healthz, /readyz, /metrics.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Also serve GET /metrics here [default: the scenario's telemetry.metrics].
        #[arg(long, value_name = "HOST:PORT")]
        metrics: Option<String>,
        /// The gateway's gRPC server (tailgate.gateway.v1.Updates/Subscribe) [default: the
        /// scenario's gateway.grpc, else none].
        #[arg(long, value_name = "HOST:PORT")]
        grpc: Option<String>,
        /// The agent's local state store (one per agent process).
        #[arg(long, value_name = "DIR", default_value = "agent-state")]
        state_dir: PathBuf,
        /// Take the client settings of this profile of the scenario.
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// The agent's implementation: rust, or faust (a Faust worker in Python, started as
        /// a child process) [default: the scenario's agent.kind].
        #[arg(long, value_enum)]
        kind: Option<crate::stage_process::AgentImpl>,
    },
    /// Check scenario files without running them.
    Validate {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ExportFormat {
    /// OpenMessaging Benchmark result JSON, one file per run (`omb-<profile>.json`).
    Omb {
        /// A run or sweep directory.
        dir: PathBuf,
        /// Where to write [default: DIR].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportFormat {
    /// An OpenMessaging Benchmark workload (YAML); fields with no meaning here are listed.
    Omb {
        workload: PathBuf,
        /// An OMB Kafka driver file (driver-kafka/*.yaml), imported as a tuning profile named
        /// by its file name; repeat for a sweep.
        #[arg(long = "driver", value_name = "DRIVER.yaml")]
        drivers: Vec<PathBuf>,
        /// Write the scenario here [default: print it].
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
        Command::Run {
            scenario,
            out,
            bootstrap,
            topic_prefix,
            rate,
            duration,
            warmup,
            quiet,
            tui,
            profiles,
            baseline,
            no_report,
            find_max_rate,
            workers,
        } => {
            let opts = RunOptions {
                scenario,
                out,
                bootstrap,
                topic_prefix,
                rate,
                duration,
                warmup,
                progress: !quiet && !tui,
                feed: None,
                stop: None,
                profiles,
                workers,
            };
            if crate::search_command::asked(find_max_rate, &opts.scenario) {
                if workers.is_some() {
                    eprintln!("error: a capacity search runs its steps from this host; it takes no --workers");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
                if tui || baseline.is_some() {
                    eprintln!("error: a capacity search prints its steps; it takes neither --tui nor --baseline");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
                return ExitCode::from(crate::search_command::search(&opts));
            }
            let after = After { baseline, report: !no_report };
            if tui { run_with_dashboard(opts, &after) } else { run_blocking(opts, &after) }
        }
        Command::Report { dirs, out, sla } => report(&dirs, out, sla.as_deref()),
        Command::Check { dir, baseline, sla, profiles, min_change } => {
            check(&dir, baseline.as_deref(), sla.as_deref(), &profiles, min_change)
        }
        Command::Export { format: ExportFormat::Omb { dir, out } } => export_omb(&dir, out),
        Command::Import { format: ImportFormat::Omb { workload, drivers, out } } => {
            import_omb(&workload, &drivers, out.as_deref())
        }
        Command::Watch(opts) => crate::watch::watch(opts),
        Command::Worker(opts) => crate::workers::worker::worker(opts),
        #[cfg(feature = "embedded")]
        Command::Broker {
            listen,
            data,
            stall,
            drop_connections,
            fetch_latency,
            security_protocol,
            tls_cert,
            tls_key,
            users,
        } => crate::broker_command::broker(
            &listen,
            data,
            &crate::broker_command::BrokerFaults { stall, drop_connections, fetch_latency },
            &crate::broker_command::Secured { protocol: security_protocol, tls_cert, tls_key, users },
        ),
        Command::Stage { stage, config, bootstrap, listen, metrics, grpc, state_dir, profile, kind } => {
            let opts = crate::stage_process::StageOptions {
                stage,
                config,
                bootstrap,
                listen,
                metrics,
                grpc,
                state_dir,
                profile,
                kind,
            };
            stage_process(opts)
        }
    })
}

/// `tailgate stage`: one stage until SIGINT or SIGTERM.
fn stage_process(opts: crate::stage_process::StageOptions) -> u8 {
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::stage_process::serve(opts)) {
        Ok(()) => EXIT_PASS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run_with_dashboard(mut opts: RunOptions, after: &After) -> u8 {
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
    let (code, report) = match tokio_runtime() {
        Ok(rt) => {
            let outcome = rt.block_on(run::run(opts));
            rt.shutdown_timeout(Duration::from_secs(2));
            match outcome {
                Ok(o) => {
                    let lines = o
                        .runs
                        .iter()
                        .flat_map(|r| {
                            r.result.sla.objectives.iter().map(move |ob| {
                                let actual = ob.actual.map_or("-".into(), |a| format!("{a:.3}"));
                                if o.sweep {
                                    format!("{}: {} = {actual}", r.result.profile, ob.metric)
                                } else {
                                    format!("{} = {actual}", ob.metric)
                                }
                            })
                        })
                        .collect();
                    let passed = o.runs.iter().all(|r| r.result.sla.passed);
                    tx.deliver(dashboard::Feed::Finished(dashboard::Verdict { passed, lines }));
                    (EXIT_PASS, Ok(o))
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
        Ok(o) => finish(&o, after),
        Err(e) => {
            eprintln!("error: {e}");
            code
        }
    }
}

/// What follows a run: its report, and the gate against a baseline.
#[derive(Debug)]
struct After {
    baseline: Option<PathBuf>,
    report: bool,
}

/// Prints a finished run's results, writes its report, gates it; returns the exit code.
fn finish(o: &run::Outcome, after: &After) -> u8 {
    for r in &o.runs {
        print!("{}", r.result.render(&r.dir));
        if let Some(f) = &r.failure {
            eprintln!("error: profile {} failed: {f}", r.result.profile);
        }
        if o.sweep {
            println!();
        }
    }
    let mut code = if o.runs.iter().any(|r| r.failure.is_some()) {
        EXIT_RUNTIME
    } else if o.runs.iter().all(|r| r.result.sla.passed) {
        EXIT_PASS
    } else {
        EXIT_SLA_FAILED
    };
    if after.report {
        match reports::report(std::slice::from_ref(&o.dir), &o.dir, None) {
            Ok((_, w)) => println!("report    {}", w.dir.join(reports::render::HTML).display()),
            Err(e) => {
                eprintln!("error: writing the report: {e}");
                code = code.max(EXIT_RUNTIME);
            }
        }
    }
    if o.sweep || after.baseline.is_some() {
        let opts = reports::gate::CheckOptions::default();
        match reports::check(&o.dir, after.baseline.as_deref(), None, &[], &opts) {
            Ok(c) => {
                print!("\n{}", c.render());
                if !c.passed && code == EXIT_PASS {
                    code = EXIT_SLA_FAILED;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = code.max(EXIT_BAD_INPUT);
            }
        }
    }
    code
}

fn load_objectives(sla: Option<&std::path::Path>) -> Result<Option<Vec<reports::result::Objective>>, u8> {
    sla.map(|f| {
        crate::scenario::load_sla(f).map_err(|e| {
            eprintln!("{e}");
            EXIT_BAD_INPUT
        })
    })
    .transpose()
}

fn report(dirs: &[PathBuf], out: Option<PathBuf>, sla: Option<&std::path::Path>) -> u8 {
    let objectives = match load_objectives(sla) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let out = out.unwrap_or_else(|| dirs[0].clone());
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return EXIT_RUNTIME;
    }
    match reports::report(dirs, &out, objectives.as_deref()) {
        Ok((r, w)) => {
            println!("{}", r.verdict());
            for f in &w.files {
                println!("wrote {}", f.display());
            }
            EXIT_PASS
        }
        Err(e @ reports::Error::Bad { .. }) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
    }
}

fn check(
    dir: &std::path::Path,
    baseline: Option<&std::path::Path>,
    sla: Option<&std::path::Path>,
    profiles: &[String],
    min_change: f64,
) -> u8 {
    let objectives = match load_objectives(sla) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if !(min_change.is_finite() && min_change >= 0.0) {
        eprintln!("error: --min-change must be a percentage of at least 0, not {min_change}");
        return EXIT_BAD_INPUT;
    }
    let opts = reports::gate::CheckOptions { min_change_pct: min_change, ..Default::default() };
    match reports::check(dir, baseline, objectives.as_deref(), profiles, &opts) {
        Ok(c) => {
            print!("{}", c.render());
            if c.passed { EXIT_PASS } else { EXIT_SLA_FAILED }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn export_omb(dir: &std::path::Path, out: Option<PathBuf>) -> u8 {
    let runs = match reports::runs::load_all(&[dir.to_owned()]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let out = out.unwrap_or_else(|| dir.to_owned());
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("error: cannot create {}: {e}", out.display());
        return EXIT_RUNTIME;
    }
    for run in &runs {
        let path = out.join(format!("omb-{}.json", run.result.profile));
        let json = serde_json::to_string_pretty(&reports::omb::export(run)).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_RUNTIME;
        }
        println!("wrote {}", path.display());
    }
    EXIT_PASS
}

fn import_omb(workload: &std::path::Path, drivers: &[PathBuf], out: Option<&std::path::Path>) -> u8 {
    let imported = match crate::omb::import_with_drivers(workload, drivers) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    for n in &imported.notes {
        eprintln!("not applied: {n}");
    }
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.scenario) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return EXIT_RUNTIME;
            }
            eprintln!("wrote {}", path.display());
        }
        None => print!("{}", imported.scenario),
    }
    EXIT_PASS
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

fn run_blocking(opts: RunOptions, after: &After) -> u8 {
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
        Ok(o) => finish(&o, after),
        Err(e @ (RunError::BadInput(_) | RunError::Runtime(_))) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
