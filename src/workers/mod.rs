//! Load from more than one machine. Workers and the coordinator talk through the Kafka
//! cluster under test, on a control topic, never through a protocol of their own. So far:
//! the clock exchange ([`clock`]) by which the coordinator measures each worker's clock
//! offset and its bound, which every latency that crosses hosts depends on.

pub mod clock;

/// The control topic: one partition, so that every message keeps its order.
pub const CONTROL_TOPIC: &str = "tailgate.control";
