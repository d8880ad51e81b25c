//! The gate: every profile's SLA objectives, and with a baseline, regressions beyond the
//! noise margin the [`bootstrap`](crate::bootstrap) estimates from the interval data.

use crate::END_TO_END_TAG;
use crate::bootstrap::{Bootstrap, Difference};
use crate::hlog::Stat;
use crate::result::ObjectiveResult;
use crate::runs::Profile;
use serde::Serialize;
use std::fmt::Write as _;

/// How regressions are judged.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    pub bootstrap: Bootstrap,
    /// A change smaller than this share of the baseline (percent) is never a regression,
    /// however certain: the floor under the estimated margin.
    pub min_change_pct: f64,
    /// ... nor one smaller than this many milliseconds.
    pub min_change_ms: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self { bootstrap: Bootstrap::default(), min_change_pct: 2.0, min_change_ms: 0.05 }
    }
}

/// One latency statistic against the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub baseline_ms: f64,
    pub current_ms: f64,
    pub delta_ms: f64,
    /// The confidence interval of the delta.
    pub ci_ms: [f64; 2],
    /// Half the interval's width.
    pub margin_ms: f64,
    /// Worse beyond the margin and the floor.
    pub regressed: bool,
}

/// One profile's gate.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileCheck {
    pub profile: String,
    pub objectives: Vec<ObjectiveResult>,
    pub comparisons: Vec<Comparison>,
    /// A baseline was given but has no run of this profile.
    pub no_baseline: bool,
    pub end_to_end_p99_ms: f64,
    pub passed: bool,
}

/// The whole gate.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub profiles: Vec<ProfileCheck>,
    /// The profile with the lowest end-to-end p99 among those meeting every objective.
    pub best: Option<String>,
    pub passed: bool,
    pub confidence: f64,
}

/// The latency metrics compared with a baseline: every latency objective's, and end-to-end
/// p50 and p99.
pub fn compared_metrics(p: &Profile) -> Vec<String> {
    let mut out = vec![format!("{END_TO_END_TAG}.p50_ms"), format!("{END_TO_END_TAG}.p99_ms")];
    for o in &p.result.sla.objectives {
        if latency_metric(&o.metric).is_some() && !out.contains(&o.metric) {
            out.push(o.metric.clone());
        }
    }
    out
}

/// `(series name, statistic)` of a latency metric path (`end_to_end.p99_ms`,
/// `hops.agent.p50_ms`).
pub fn latency_metric(metric: &str) -> Option<(String, Stat)> {
    let parts: Vec<&str> = metric.split('.').collect();
    match parts.as_slice() {
        [e, s] if *e == END_TO_END_TAG => Some((END_TO_END_TAG.to_owned(), Stat::parse(s)?)),
        ["hops", hop, s] => Some(((*hop).to_owned(), Stat::parse(s)?)),
        _ => None,
    }
}

/// Gates `current` (objectives as evaluated on each merged profile), against `baseline` when
/// given.
pub fn check(current: &[Profile], baseline: Option<&[Profile]>, opts: &CheckOptions) -> Check {
    let profiles: Vec<ProfileCheck> = current
        .iter()
        .map(|p| {
            let base = baseline.and_then(|b| b.iter().find(|x| x.name == p.name));
            let comparisons: Vec<Comparison> = base
                .map(|b| compared_metrics(p).iter().filter_map(|m| compare(b, p, m, opts)).collect())
                .unwrap_or_default();
            let passed = p.result.sla.passed && comparisons.iter().all(|c| !c.regressed);
            ProfileCheck {
                profile: p.name.clone(),
                objectives: p.result.sla.objectives.clone(),
                comparisons,
                no_baseline: baseline.is_some() && base.is_none(),
                end_to_end_p99_ms: p.result.end_to_end.p99_ms,
                passed,
            }
        })
        .collect();
    let best = crate::runs::best(current).map(|p| p.name.clone());
    let passed = !profiles.is_empty() && profiles.iter().all(|p| p.passed);
    Check { profiles, best, passed, confidence: opts.bootstrap.confidence }
}

fn compare(baseline: &Profile, current: &Profile, metric: &str, opts: &CheckOptions) -> Option<Comparison> {
    let (series, stat) = latency_metric(metric)?;
    let d: Difference = opts.bootstrap.difference(&baseline.series(&series), &current.series(&series), stat)?;
    let floor = (d.baseline.abs() * opts.min_change_pct / 100.0).max(opts.min_change_ms);
    Some(Comparison {
        metric: metric.to_owned(),
        baseline_ms: d.baseline,
        current_ms: d.candidate,
        delta_ms: d.delta,
        ci_ms: [d.lower, d.upper],
        margin_ms: d.margin(),
        regressed: d.lower > 0.0 && d.delta > floor,
    })
}

impl Check {
    /// The table `tailgate check` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for p in &self.profiles {
            let _ = writeln!(s, "profile {}: {}", p.profile, if p.passed { "PASS" } else { "FAIL" });
            for o in &p.objectives {
                let actual = o.actual.map_or_else(|| "no value".to_owned(), |a| format!("{a:.3}"));
                let _ = writeln!(
                    s,
                    "  {:<4} {:<34} {:>12}   limit {}",
                    if o.passed { "PASS" } else { "FAIL" },
                    o.metric,
                    actual,
                    o.objective().bound()
                );
            }
            if p.no_baseline {
                let _ = writeln!(s, "  (the baseline has no run of this profile: not compared)");
            }
            if !p.comparisons.is_empty() {
                let _ = writeln!(
                    s,
                    "  {:<4} {:<34} {:>10} {:>10} {:>10} {:>22}",
                    "",
                    "vs baseline (ms)",
                    "baseline",
                    "current",
                    "change",
                    format!("{:.0}% interval", self.confidence * 100.0)
                );
            }
            for c in &p.comparisons {
                let verdict = if c.regressed {
                    "FAIL"
                } else if c.ci_ms[1] < 0.0 {
                    "BETTER"
                } else {
                    "ok"
                };
                let _ = writeln!(
                    s,
                    "  {verdict:<4} {:<34} {:>10.3} {:>10.3} {:>+10.3} {:>22}",
                    c.metric,
                    c.baseline_ms,
                    c.current_ms,
                    c.delta_ms,
                    format!("[{:+.3}, {:+.3}]", c.ci_ms[0], c.ci_ms[1])
                );
            }
        }
        match &self.best {
            Some(b) => {
                let p99 = self.profiles.iter().find(|p| p.profile == *b).map_or(0.0, |p| p.end_to_end_p99_ms);
                let _ = writeln!(s, "best profile: {b} (end-to-end p99 {p99:.3} ms, meets every objective)");
            }
            None => {
                let _ = writeln!(s, "best profile: none meets every objective");
            }
        }
        let _ = writeln!(s, "verdict: {}", if self.passed { "PASS" } else { "FAIL" });
        s
    }
}
