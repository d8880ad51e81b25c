//! A run's counts at a moment, and the latency histogram bounds, as every metrics exporter
//! uses them (the Prometheus text and OTLP alike).

/// Latency histogram bucket bounds, seconds: fine below the 50 ms SLAs tailgate checks,
/// coarse above.
pub const LATENCY_BOUNDS_S: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 5.0];

/// One stage's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub stage: String,
    pub forwarded: u64,
    pub dead_lettered: u64,
    pub filtered: u64,
    pub duplicates: u64,
    /// Passed on by the previous hop (the load generator for the first) and not yet
    /// settled by this stage.
    pub waiting: u64,
}

/// The run's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub delivered: u64,
    /// Sent and not yet delivered, dead-lettered or filtered.
    pub in_flight: u64,
    /// Sent and never settled: known once the run has drained and accounted (0 before).
    pub lost: u64,
    pub stages: Vec<StageCounts>,
}
