//! A run's counts at a moment, as every metrics exporter reads them (the Prometheus text
//! and OTLP alike).

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
    pub stages: Vec<StageCounts>,
}
