//! Load from more than one machine. `tailgate worker` runs on each load host; the
//! coordinator (`tailgate run --workers N`) and the workers talk through the Kafka cluster
//! under test, never through a protocol of their own:
//!
//! - the control topic carries each worker's hello, the clock exchange ([`clock`]), the run
//!   plan (its share of the rate, a disjoint id space, the start time) and the stop;
//! - the results topic carries each worker's report every second: counts, and its interval
//!   histograms as `.hlog` lines, which the coordinator merges by adding counts
//!   ([`coordinator`]).
//!
//! A worker ([`worker`]) plays its share of the actions through the gateway's HTTP ingress
//! and is the audience of one worker's events (its own, or the next one's), correcting each
//! latency by the two hosts' measured clock offsets.

pub mod clock;
pub mod coordinator;
pub mod worker;

use loadgen::clocks::Interval;
use loadgen::{Arrival, KeyDist, Shape};
use serde::{Deserialize, Serialize};

/// The control topic: one partition, so that every message keeps its order.
pub const CONTROL_TOPIC: &str = "tailgate.control";
/// Where workers report.
pub const RESULTS_TOPIC: &str = "tailgate.results";
/// The `LogAppendTime` topic whose append times bound each side's offset from the broker.
pub const APPEND_TOPIC: &str = "tailgate.clock-append";
/// A worker reports this often.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What goes over the control topic besides the clock exchange, JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// A worker ready for a plan, with where its offset from the broker lies (when the
    /// broker's append times could tell).
    Hello {
        from: String,
        append_bound: Option<Interval>,
    },
    Plan(Box<Plan>),
    /// The run is over: each worker stops its audience and sends its last report.
    Stop {
        run: u64,
    },
}

/// One worker's part of a run. Times are on the coordinator's clock; the worker converts
/// them to its own by `offset_ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub to: String,
    pub run: u64,
    /// Its ids are `index + k * workers`.
    pub index: u64,
    pub workers: u64,
    /// The gateway (`http://host:port`): players post to it, the audience follows it.
    pub gateway: String,
    /// The players' bearer token, which lets them name their actions' identity and time.
    pub players: String,
    /// The audience's bearer token, when the gateway asks one.
    pub audience_token: Option<String>,
    pub in_flight: usize,
    pub arrival: Arrival,
    /// Its share of the scenario's rate over time.
    pub shape: Shape,
    /// How long the load goes, warm-up included, ns.
    pub length_ns: u64,
    pub start_ns: u64,
    pub measure_from_ns: u64,
    pub keys: KeyDist,
    pub sessions: u64,
    pub payload_bytes: usize,
    pub seed: u64,
    pub poison_every: u64,
    /// This worker's clock minus the coordinator's, as measured.
    pub offset_ns: i64,
    /// Whose events its audience follows: that worker's index, name and offset, and how
    /// many events its plan has.
    pub follows: Followed,
}

/// The worker whose events an audience follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followed {
    pub index: u64,
    pub name: String,
    pub offset_ns: i64,
    pub expected: u64,
}

/// A worker's report, every second and once more after the stop. Counts are totals so
/// far; `logs` holds the interval lines closed since the last report, per metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    pub from: String,
    pub run: u64,
    pub sent: u64,
    /// Distinct deliveries of the events it follows.
    pub delivered: u64,
    /// (metric, `.hlog` lines): `end_to_end`, each hop, and `uncorrected`.
    pub logs: Vec<(String, String)>,
    /// Set once its load is over.
    pub load: Option<LoadDone>,
    /// Set in the last report, after the stop.
    pub last: Option<Last>,
}

/// A worker's load, over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadDone {
    pub sent: u64,
    pub warmup_sent: u64,
    pub stopped_early: bool,
    /// The schedule lag's interval lines.
    pub schedule_lag: String,
    /// Actions the gateway refused after every retry, and the first reason.
    pub refused: u64,
    pub first_refusal: Option<String>,
    /// Why the load ended before its schedule did.
    pub error: Option<String>,
}

/// What a worker's audience saw, at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Last {
    pub warmup_delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub unexpected: u64,
    pub unreadable: u64,
    pub error: Option<String>,
}

/// The metric names of a report's logs that are not the hops'.
pub const END_TO_END: &str = "end_to_end";
pub const UNCORRECTED: &str = "uncorrected";
