//! tailgate's load generator. It is open-loop: the schedule alone decides when each event
//! is due, latency counts from that intended time, and how late a send actually went out
//! (schedule lag) is recorded separately, so a stalled system cannot hide its stall
//! (coordinated omission).
//!
//! It plays both ends of the pipeline: [`driver`] writes story actions into the source on
//! schedule, [`audience`] subscribes to the gateway and times every update it receives.

pub mod audience;
pub mod clocks;
pub mod driver;
pub mod ingress;
pub mod keys;
pub mod payload;
pub mod schedule;
pub mod search;

pub use audience::{Audience, IntendedWindow, Observer, Tally};
pub use driver::{Clock, DriveReport, Driver, Send, SystemClock};
pub use keys::KeyDist;
pub use payload::Payloads;
pub use schedule::{Arrival, Schedule, Shape};

/// What a poisoned event (`[load] poison_every`) carries instead of a trace context, so
/// that the pipeline dead-letters it.
pub const POISON_TRACEPARENT: &str = "poison: not a traceparent";

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot subscribe to the gateway at {url}: {reason}")]
    Subscribe { url: String, reason: String },
    #[error("the gateway at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the gateway stream at {url} broke: {reason}")]
    Stream { url: String, reason: String },
    #[error("the source refused event {id}: {reason}")]
    Source { id: u64, reason: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
