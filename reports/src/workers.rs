//! What `result.json` says of a run whose load came from workers on other hosts: each
//! worker's share and figures beside the merged ones, and each one's clock offset from the
//! coordinator with its bound and how it was measured.

use probes::Summary;
use serde::{Deserialize, Serialize};

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
