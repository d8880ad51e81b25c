//! tailgate's vocabulary: the header protocol every stage speaks (W3C `traceparent`,
//! `tg-intended`, `tg-stamps`), the clock stamps are taken with, and the HdrHistogram
//! recorders and interval logs that turn stamps into latency figures, and the spans
//! stages record for tracing ([`spans`]).
//!
//! Nothing here talks to Kafka: the codec works on header names and bytes, so any client
//! library (and any process that forwards the headers) can be measured.

pub mod clock;
pub mod counts;
pub mod headers;
pub mod hops;
pub mod names;
pub mod recorder;
pub mod spans;
pub mod wire;

pub use clock::now_ns;
pub use headers::{HeaderError, Incoming, Stamp, StampIter, TraceContext};
pub use hops::{HopKind, HopSet};
pub use recorder::{LatencyRecorder, Summary};
pub use wire::Delivery;
