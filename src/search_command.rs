//! `tailgate run --find-max-rate` (or a scenario with `[search]`): runs the capacity
//! search, prints each step and what it found. Exit 0 when a rate was sustained, 1 when
//! none was, 2 for bad input, 3 when a step failed to run.

use crate::command::tokio_runtime;
use crate::exit::{EXIT_PASS, EXIT_SLA_FAILED};
use crate::run::{self, RunOptions};
use crate::scenario::Scenario;
use std::time::Duration;

/// Whether `tailgate run` on this scenario is a search: `--find-max-rate`, or the scenario
/// has `[search]`. A scenario that does not load is not: the run reports why.
pub(crate) fn asked(flag: bool, scenario: &std::path::Path) -> bool {
    flag || Scenario::load(scenario).is_ok_and(|s| s.search.is_some())
}

/// Runs the search and prints it; returns the exit code.
pub(crate) fn search(opts: &RunOptions) -> u8 {
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let section = match run::prepare(opts) {
        Ok(s) => s.search.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let outcome = rt.block_on(run::find_max_rate(opts, &section));
    rt.shutdown_timeout(Duration::from_secs(2));
    let searched = match outcome {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let i = &searched.index;
    println!(
        "capacity search  {} ({}), steps of {:.0}s after {:.0}s warm-up, each a run under {}",
        i.scenario,
        i.profile,
        i.step_s,
        i.warmup_s,
        searched.dir.join("steps").display()
    );
    for step in &i.found.steps {
        println!("  {}", run::search::describe(step));
    }
    match (i.found.max_rate, &i.found.failed_at) {
        (Some(m), Some((f, why))) => println!("highest sustained rate  {m:.0}/s (not at {f:.0}/s: {why})"),
        (Some(m), None) => println!("highest sustained rate  at least {m:.0}/s (the ceiling held)"),
        (None, _) => println!("highest sustained rate  none: no rate tried was sustained"),
    }
    if let Some(k) = i.found.knee {
        println!(
            "knee                    {k:.0}/s (highest sustained rate whose p99 stayed within twice the lowest step's)"
        );
    }
    if i.interrupted {
        println!("(interrupted)");
    }
    println!("results   {}", searched.dir.join("search.json").display());
    println!("chart     {}", searched.dir.join("capacity.svg").display());
    if i.found.max_rate.is_some() { EXIT_PASS } else { EXIT_SLA_FAILED }
}
