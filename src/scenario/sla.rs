//! SLA objectives: checked against the `result.json` vocabulary, in a scenario's `[[sla]]`
//! or in an SLA file of their own (`tailgate check --sla`, `tailgate report --sla`).

use super::problems::{Problem, ScenarioError, locate_all};
use pipeline::config::Problems;
pub use reports::result::Objective;
use serde::Deserialize;
use std::path::Path;

/// The hop names of the reference pipeline, in path order.
pub fn hop_names() -> Vec<String> {
    reports::result::hop_names(&pipeline::STAGES)
}

/// Whether `metric` names a number in `result.json`.
pub fn known_metric(metric: &str) -> bool {
    reports::result::known_metric(metric, &pipeline::STAGES)
}

/// Problems of SLA objectives: unknown metrics, missing or double bounds.
pub fn validate(sla: &[Objective], p: &mut Problems) {
    for (i, o) in sla.iter().enumerate() {
        if !known_metric(&o.metric) {
            p.bad(
                "sla",
                Some(i),
                "metric",
                format!(
                    "`{}` is not a metric of result.json; use e.g. end_to_end.p99_ms, hops.agent.p99_ms \
                     (hops: {}), counts.lost or achieved_rate",
                    o.metric,
                    hop_names().join(", ")
                ),
            );
        }
        match (o.max, o.min) {
            (None, None) => p.bad("sla", Some(i), "max", "an objective needs `max` or `min`"),
            (Some(_), Some(_)) => p.bad("sla", Some(i), "min", "give `max` or `min`, not both"),
            (Some(v), None) | (None, Some(v)) if !v.is_finite() => {
                p.bad("sla", Some(i), "max", "the bound must be a finite number");
            }
            _ => {}
        }
    }
}

/// An SLA file: `[[sla]]` objectives as in a scenario, validated the same way.
pub fn load_sla(path: &Path) -> Result<Vec<Objective>, ScenarioError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SlaFile {
        sla: Vec<Objective>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::unreadable(path, &e))?;
    let file: SlaFile = toml::from_str(&text).map_err(|e| ScenarioError::parse(path, &text, &e))?;
    if file.sla.is_empty() {
        let none = Problem { line: None, field: "sla".into(), message: "no objectives; add [[sla]] tables".into() };
        return Err(ScenarioError { file: path.to_owned(), problems: vec![none] });
    }
    let mut found = Problems::default();
    validate(&file.sla, &mut found);
    let problems = locate_all(&text, found);
    if problems.is_empty() { Ok(file.sla) } else { Err(ScenarioError { file: path.to_owned(), problems }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_checked_against_result_json() {
        for m in
            ["end_to_end.p99_ms", "hops.agent.p999_ms", "hops.connector->agent.p50_ms", "counts.lost", "achieved_rate"]
        {
            assert!(known_metric(m), "{m}");
        }
        for m in ["end_to_end.p98_ms", "hops.model.p99_ms", "counts", "lost"] {
            assert!(!known_metric(m), "{m}");
        }
    }
}
