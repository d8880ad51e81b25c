//! The command line: `tailgate run` and `tailgate validate`, and the exit codes.
//!
//! Exit codes: 0 ran and the SLA passed; 1 ran and the SLA failed; 2 bad input (scenario
//! file, flags); 3 runtime failure (broker unreachable, a stage crashed).

use crate::run::{self, RunError, RunOptions};
use crate::scenario::Scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
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
        Command::Run { scenario, out, bootstrap, rate, duration, warmup, quiet } => {
            let opts = RunOptions { scenario, out, bootstrap, rate, duration, warmup, progress: !quiet };
            run_blocking(opts)
        }
    })
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
            if let Some(f) = o.failure {
                eprintln!("error: the run failed: {f}");
                EXIT_RUNTIME
            } else if o.result.sla.passed {
                EXIT_PASS
            } else {
                EXIT_SLA_FAILED
            }
        }
        Err(e @ (RunError::BadInput(_) | RunError::Runtime(_))) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
