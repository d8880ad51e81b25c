//! tailgate's results and what is made of them: `result.json` ([`result`]), interval logs
//! read back and merged ([`hlog`]), run and sweep directories ([`runs`]), the tables
//! ([`frames`], polars), the charts ([`charts`], plotters), the report files ([`render`]),
//! the SLA and regression gate ([`gate`], with the [`bootstrap`] noise margin) and the
//! OpenMessaging Benchmark export ([`omb`]). [`synthetic`] writes runs with known
//! distributions for tests and benchmarks.

pub mod bootstrap;
pub mod charts;
pub mod frames;
pub mod gate;
pub mod hlog;
pub mod omb;
pub mod recovery;
pub mod render;
pub mod result;
pub mod runs;
pub mod summary;
pub mod synthetic;
pub mod workers;

use std::path::{Path, PathBuf};

/// A run directory's results.
pub const RESULT_FILE: &str = "result.json";
/// A sweep directory's index of its runs.
pub const SWEEP_FILE: &str = "sweep.json";
/// The interval-log tag (and file stem) of end-to-end latency during warm-up.
pub const WARMUP_TAG: &str = "warmup";
/// The interval-log tag (and file stem) of end-to-end latency.
pub const END_TO_END_TAG: &str = "end_to_end";
/// Tag of the load generator's schedule-lag log.
pub const SCHEDULE_LAG_TAG: &str = "schedule_lag";

/// The interval log file of a metric (`end_to_end.hlog`, `hop-agent.hlog`, `hop-agent_to_streamjob.hlog`).
pub fn hlog_file(metric: &str, hop: bool) -> String {
    let stem = metric.replace("->", "_to_");
    if hop { format!("hop-{stem}.hlog") } else { format!("{stem}.hlog") }
}

/// Why results could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("drawing {chart}: {reason}")]
    Chart { chart: String, reason: String },
    #[error("tables: {0}")]
    Table(#[from] polars::error::PolarsError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_owned(), source }
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Bad { path: path.to_owned(), reason: reason.into() }
}

/// Reads every run under `dirs`, merges them by profile (judged by `objectives`, or by the
/// objectives each run was judged by) and writes the report into `out`.
pub fn report(
    dirs: &[PathBuf],
    out: &Path,
    objectives: Option<&[result::Objective]>,
) -> Result<(render::Report, render::Written)> {
    let runs = runs::load_all(dirs)?;
    let report = render::Report::build(runs::by_profile(runs, objectives))?;
    let written = report.write(out)?;
    Ok((report, written))
}

/// Gates the runs under `dir` (only `profiles` when not empty), against the runs under
/// `baseline` when given.
pub fn check(
    dir: &Path,
    baseline: Option<&Path>,
    objectives: Option<&[result::Objective]>,
    profiles: &[String],
    opts: &gate::CheckOptions,
) -> Result<gate::Check> {
    let load = |d: &Path| -> Result<Vec<runs::Profile>> {
        let mut p = runs::by_profile(runs::load_all(&[d.to_owned()])?, objectives);
        if !profiles.is_empty() {
            p.retain(|x| profiles.contains(&x.name));
        }
        Ok(p)
    };
    let current = load(dir)?;
    if let Some(missing) = profiles.iter().find(|p| !current.iter().any(|c| c.name == **p)) {
        return Err(bad(dir, format!("has no run of profile `{missing}`")));
    }
    let base = baseline.map(load).transpose()?;
    Ok(gate::check(&current, base.as_deref(), opts))
}
