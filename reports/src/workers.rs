//! What `result.json` says of a run whose load came from workers on other hosts: each
//! worker's share and figures beside the merged ones, and each one's clock offset from the
//! coordinator with its bound and how it was measured.

use probes::Summary;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The run's workers (`tailgate run --workers N`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkersInfo {
    /// Whose events each worker's audience followed: `own` (its own: sent and received on
    /// one host) or `crossed` (the next worker's: every latency crosses hosts).
    pub audience: String,
    pub workers: Vec<WorkerFigures>,
    /// The most a corrected end-to-end latency can be off by: for each pair of sender and
    /// receiver on different hosts, the sum of their clock bounds; 0 when none crosses.
    pub clock_uncertainty_ms: f64,
    /// The most the uncertainty may be (a share of the SLA's end-to-end bound); absent
    /// when the scenario allows any (`[workers] allow_uncertain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uncertainty_ms: Option<f64>,
    /// End to end merged without the clock correction: what the run would have said had
    /// it trusted the hosts' clocks.
    pub uncorrected_end_to_end: Summary,
}

/// One worker's share of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerFigures {
    pub name: String,
    /// Its ids are `index + k * workers`.
    pub index: u64,
    /// `finished`, or `lost` when it stopped reporting before the run ended.
    pub state: String,
    /// Why it was taken for lost, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    /// Events it reported sending (warm-up included).
    pub sent: u64,
    /// Events the pipeline took in that a lost worker sent after its last report: in
    /// `counts.sent`, and lost or in flight.
    #[serde(default)]
    pub unreported_sent: u64,
    /// The worker whose events its audience followed, and how many of them it received.
    pub follows: String,
    pub delivered: u64,
    /// End to end of the events it received, clocks corrected, and as its clock read them.
    pub end_to_end: Summary,
    pub uncorrected: Summary,
    /// Its interval log in the run directory.
    pub interval_log: String,
}

/// One worker's clock offset from the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClockOffset {
    pub worker: String,
    /// The worker's clock minus the coordinator's.
    pub offset_ms: f64,
    /// The true offset lies within `offset_ms ± bound_ms`.
    pub bound_ms: f64,
    /// `ntp` (four-timestamp exchanges over the control topic), or `ntp+log_append_time`
    /// when the broker's append times narrowed it.
    pub method: String,
    /// Exchanges made, and the lowest-delay ones kept.
    pub samples: usize,
    pub kept: usize,
    /// Measured again after the load: how far the offset moved meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ms: Option<f64>,
}

impl WorkersInfo {
    /// The workers' lines of a run's summary: each one's share, state, latency and clock.
    pub(crate) fn render(&self, clocks: &[ClockOffset], s: &mut String) {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "workers   {} · audience {} · clock uncertainty {:.3} ms{}",
            self.workers.len(),
            self.audience,
            self.clock_uncertainty_ms,
            self.max_uncertainty_ms.map(|m| format!(" (at most {m:.3})")).unwrap_or_default()
        );
        for w in &self.workers {
            let clock = clocks.iter().find(|c| c.worker == w.name).map_or_else(String::new, |c| {
                format!(" · clock {:+.3} ± {:.3} ms ({})", c.offset_ms, c.bound_ms, c.method)
            });
            let _ = writeln!(
                s,
                "  {:<12} {:<8} sent {:>8}  received {:>8} of {}'s · p50 {:.3} p99 {:.3} ms (uncorrected {:.3} / {:.3}){clock}",
                w.name,
                w.state,
                w.sent + w.unreported_sent,
                w.delivered,
                w.follows,
                w.end_to_end.p50_ms,
                w.end_to_end.p99_ms,
                w.uncorrected.p50_ms,
                w.uncorrected.p99_ms,
            );
            if let Some(why) = &w.lost {
                let _ = writeln!(s, "  {:<12} lost: {why}", "");
            }
        }
        let u = &self.uncorrected_end_to_end;
        let _ =
            writeln!(s, "  merged end to end without the clock correction: p50 {:.3} p99 {:.3} ms", u.p50_ms, u.p99_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_worker_its_clock_and_a_lost_ones_reason() {
        let w = |name: &str, lost: Option<&str>| WorkerFigures {
            name: name.into(),
            state: if lost.is_some() { "lost" } else { "finished" }.into(),
            lost: lost.map(Into::into),
            sent: 10,
            follows: "w1".into(),
            ..WorkerFigures::default()
        };
        let info = WorkersInfo {
            audience: "crossed".into(),
            workers: vec![w("w1", None), w("w2", Some("no report for 5s at 3.0 s"))],
            clock_uncertainty_ms: 0.5,
            max_uncertainty_ms: Some(5.0),
            ..WorkersInfo::default()
        };
        let clocks = [ClockOffset {
            worker: "w2".into(),
            offset_ms: 40.0,
            bound_ms: 0.3,
            method: "ntp".into(),
            ..ClockOffset::default()
        }];
        let mut s = String::new();
        info.render(&clocks, &mut s);
        assert!(s.contains("clock uncertainty 0.500 ms (at most 5.000)"), "{s}");
        assert!(s.contains("clock +40.000 ± 0.300 ms (ntp)"), "{s}");
        assert!(s.contains("lost: no report for 5s at 3.0 s"), "{s}");
    }
}
