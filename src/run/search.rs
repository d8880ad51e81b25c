//! A capacity search (`tailgate run --find-max-rate`, or `[search]` in the scenario): the
//! load generator's search, each step a run of the scenario's profile at one constant rate,
//! written as a run directory of its own under `steps/`. `search.json` lists every step
//! and what the search found; `capacity.svg` draws the end-to-end p99 against the rate, and
//! `search.html` shows both.

use super::{ProfileRun, RunError, RunOptions, checked, failed, profile, timestamp_for_path};
use crate::scenario::SearchSection;
use loadgen::search::{Found, Search, Step};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// `search.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchIndex {
    pub scenario: String,
    pub profile: String,
    /// How the search went (start, factor, precision, ceiling, steps).
    pub search: Search,
    /// Each step's measured length and warm-up, seconds.
    pub step_s: f64,
    pub warmup_s: f64,
    /// What it found, every step included.
    pub found: Found,
    /// Each step's run directory, relative to the search directory, in step order.
    pub dirs: Vec<String>,
    /// The bound of the `end_to_end.p99_ms` objective, when there is one.
    pub p99_bound_ms: Option<f64>,
    /// The search was stopped before it finished.
    pub interrupted: bool,
}

/// A finished search.
#[derive(Debug)]
pub struct Searched {
    pub dir: PathBuf,
    pub index: SearchIndex,
    pub runs: Vec<ProfileRun>,
}

/// Runs the search to its end (or until stopped) and writes the search directory.
pub async fn find_max_rate(opts: &RunOptions, section: &SearchSection) -> Result<Searched, RunError> {
    let (scenario, profiles) = checked(opts)?;
    let [profile] = &profiles[..] else {
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        return Err(RunError::BadInput(format!(
            "{}: a capacity search runs one profile; pick one with --profile (the scenario has {})",
            opts.scenario.display(),
            names.join(", ")
        )));
    };
    if !scenario.faults.is_empty() {
        return Err(RunError::BadInput(format!(
            "{}: a capacity search runs without [[faults]]: a fault's cost is measured at a fixed rate",
            opts.scenario.display()
        )));
    }
    let dir = opts.out.clone().unwrap_or_else(|| {
        Path::new("runs").join(format!("{}-search-{}", scenario.name, timestamp_for_path(std::time::SystemTime::now())))
    });
    let search = section.search();
    let p99_bound_ms = scenario.sla.iter().find(|o| o.metric == "end_to_end.p99_ms").and_then(|o| o.max);
    let (mut steps, mut runs, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
    let stopped = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
    while let Some(rate) = search.next(&steps) {
        if stopped() {
            break;
        }
        let mut at_rate = scenario.clone();
        at_rate.load.set_rate(rate.round().max(1.0));
        at_rate.load.warmup = section.warmup;
        at_rate.load.duration = section.step;
        let name = format!("{:02}-{:.0}", steps.len() + 1, rate);
        if opts.progress {
            eprintln!("search step {}: {:.0}/s for {:?}", steps.len() + 1, rate, section.step);
        }
        let run = profile::run(&at_rate, profile, &dir.join("steps").join(&name), opts).await?;
        let step = step_of(&run)?;
        // Each step's own report, which search.html links to.
        if let Err(e) = reports::report(std::slice::from_ref(&run.dir), &run.dir, None) {
            eprintln!("warning: the report of step {name}: {e}");
        }
        if opts.progress {
            eprintln!("  {}", describe(&step));
        }
        steps.push(step);
        runs.push(run);
        dirs.push(format!("steps/{name}"));
    }
    let index = SearchIndex {
        scenario: scenario.name.clone(),
        profile: profile.name.clone(),
        search: search.clone(),
        step_s: section.step.as_secs_f64(),
        warmup_s: section.warmup.as_secs_f64(),
        found: search.found(&steps),
        dirs,
        p99_bound_ms,
        interrupted: stopped(),
    };
    write(&dir, &index)?;
    Ok(Searched { dir, index, runs })
}

/// One line for a step: its rate, what it delivered, its p50 and p99, and its verdict.
pub fn describe(s: &Step) -> String {
    format!(
        "{:>9.0}/s  achieved {:>9.1}/s  p50 {:>7.2} ms  p99 {:>8.2} ms  backlog {:>+8.1}/s  {}",
        s.rate,
        s.achieved,
        s.p50_ms,
        s.p99_ms,
        // No "-0.0" for a flat trend.
        if s.lag_growth.abs() < 0.05 { 0.0 } else { s.lag_growth },
        s.failed().map_or_else(|| "sustained".to_owned(), |why| format!("not sustained: {why}"))
    )
}

/// The step a run shows. The backlog's growth comes from the trend of the per-second
/// median latency: in a queue that falls behind, each event waits for the backlog ahead of
/// it, so the median rises by the backlog's growth divided by the rate served.
fn step_of(run: &ProfileRun) -> Result<Step, RunError> {
    let r = &run.result;
    let log = run.dir.join("end_to_end.hlog");
    let series = reports::hlog::Series::read(&log).map_err(|e| failed(format!("{}: {e}", log.display())))?;
    let points: Vec<(f64, f64)> = series
        .intervals
        .iter()
        .filter(|i| !i.is_empty())
        .map(|i| (i.start_s, reports::hlog::counts_quantile_ms(&reports::hlog::merge_counts([i]), 0.5)))
        .collect();
    let lag_growth = slope(&points) / 1e3 * r.achieved_rate;
    Ok(Step {
        rate: r.target_rate,
        achieved: r.achieved_rate,
        p50_ms: r.end_to_end.p50_ms,
        p99_ms: r.end_to_end.p99_ms,
        lag_growth,
        sla_held: r.sla.passed && r.accounting_error.is_none(),
    })
}

/// The least-squares slope of `y` over `x`; 0 for fewer than two distinct `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

/// Writes `search.json` and the capacity chart.
fn write(dir: &Path, index: &SearchIndex) -> Result<(), RunError> {
    let io = |e: std::io::Error| failed(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let json = serde_json::to_string_pretty(index).map_err(failed)?;
    std::fs::write(dir.join("search.json"), json).map_err(io)?;
    let points: Vec<(f64, f64, bool)> =
        index.found.steps.iter().map(|s| (s.rate, s.p99_ms, s.failed().is_none())).collect();
    let chart = reports::charts::Capacity {
        points: &points,
        p99_bound_ms: index.p99_bound_ms,
        max_rate: index.found.max_rate,
        title: &format!("{} ({}): end-to-end p99 against the rate", index.scenario, index.profile),
    };
    let svg = reports::charts::render(&chart, dir).map_err(failed)?;
    std::fs::write(dir.join("search.html"), html(index, &svg)).map_err(io)?;
    Ok(())
}

/// `search.html`: what was found, the chart, and every step with a link to its run.
fn html(index: &SearchIndex, svg: &str) -> String {
    use reports::render::esc;
    use std::fmt::Write as _;
    let f = &index.found;
    let found = match (f.max_rate, &f.failed_at) {
        (Some(m), Some((r, why))) => format!("highest sustained rate <b>{m:.0}/s</b>; not at {r:.0}/s: {}", esc(why)),
        (Some(m), None) => format!("highest sustained rate at least <b>{m:.0}/s</b> (the ceiling held)"),
        (None, _) => "no rate tried was sustained".to_owned(),
    };
    let mut rows = String::new();
    for (i, (s, d)) in f.steps.iter().zip(&index.dirs).enumerate() {
        let verdict = s.failed().map_or_else(|| "sustained".to_owned(), |w| esc(&w));
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:+.1}</td><td>{verdict}</td>\
             <td><a href=\"{d}/report.html\">{d}</a></td></tr>",
            i + 1,
            s.rate,
            s.achieved,
            s.p50_ms,
            s.p99_ms,
            s.lag_growth
        );
    }
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Capacity search: {scenario}</title>\
         <body style=\"font-family:sans-serif;max-width:1000px;margin:auto\"><h1>Capacity search: {scenario} ({profile})</h1>\
         <p>{found}. Steps of {step:.0} s measured after {warmup:.0} s of warm-up, each a run of its own.</p>{svg}\
         <table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>step</th><th>rate /s</th>\
         <th>achieved /s</th><th>p50 ms</th><th>p99 ms</th><th>backlog /s</th><th>verdict</th><th>run</th></tr>{rows}</table></body>",
        scenario = esc(&index.scenario),
        profile = esc(&index.profile),
        step = index.step_s,
        warmup = index.warmup_s,
    )
}

#[cfg(test)]
mod tests {
    use super::slope;

    #[test]
    fn the_backlog_trend_is_the_slope_of_the_median() {
        assert_eq!(slope(&[]), 0.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 9.0)]), 0.0);
    }
}
