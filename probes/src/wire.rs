//! What the gateway sends a client for each update: the event's identity and protocol
//! headers beside the update itself, so the audience can time every hop after delivery.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One update as delivered to a client (the `data:` of a Server-Sent Event), generic over
/// the update body so a reader that only times events can skip it
/// (`Delivery<serde::de::IgnoredAny>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery<'a, T> {
    /// The run the event belongs to.
    pub run: u64,
    /// The event's id, unique within its run.
    pub id: u64,
    /// The story session (the Kafka key).
    pub session: u64,
    #[serde(borrow)]
    pub traceparent: Cow<'a, str>,
    pub intended_ns: u64,
    /// The `tg-stamps` value including the gateway's own stamp.
    #[serde(borrow)]
    pub stamps: Cow<'a, str>,
    pub update: T,
}
