//! The story event as it travels through the pipeline: JSON in the Kafka value, enriched by
//! each stage (the protocol headers travel beside it, see `probes::headers`).

use serde::{Deserialize, Serialize};

/// One story action and what the stages made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryEvent {
    /// The run that sent it.
    pub run: u64,
    /// Unique within the run.
    pub id: u64,
    /// The story session; also the Kafka key.
    pub session: u64,
    /// What the player did.
    pub action: String,
    /// Added by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat: Option<Beat>,
    /// Added by the stream job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Added by the stream job's async enrichment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

/// The agent's beat: the session's story so far turned into the next prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// How many actions the session has taken, this one included.
    pub number: u64,
    /// The prompt the model was called with.
    pub prompt: String,
    /// The model's reply.
    pub text: String,
}

/// The stream job's window figures for the event's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Event-time start of the tumbling window, ms since the epoch.
    pub start_ms: u64,
    /// Actions of the session in that window so far, this one included.
    pub count: u64,
    /// The window had already closed (the watermark passed it) when the event arrived.
    pub late: bool,
}

/// The session profile the stream job looked up for the beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrichment {
    /// The profile (the scenario's fallback when the lookup did not answer in time).
    pub profile: String,
    /// Where it came from: `cache`, `db`, or why the fallback: `timeout`, `missing`, `error`.
    pub from: String,
}

/// The Kafka key for a session.
pub fn session_key(session: u64) -> [u8; 8] {
    session.to_be_bytes()
}
