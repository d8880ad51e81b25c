//! tailgate's reference pipeline: the four stages of a low-latency story service, each a
//! real Kafka client (librdkafka) that stamps every event on its way through. One folder
//! per stage:
//!
//! - [`connector`]: change capture from the `story_actions` table ([`table`]: SQLite,
//!   PostgreSQL or HTTP) through single message transforms to `story.actions`;
//! - [`agent`]: per-session state, prompt construction and a (simulated) model call, to
//!   `story.beats`;
//! - [`streamjob`]: event-time windows and patterns per session, to `story.updates`, with
//!   side outputs for audit, signals and late events, state in a changelog, and async
//!   enrichment from a database;
//! - [`gateway`]: `story.updates` to HTTP clients over Server-Sent Events, WebSocket and
//!   long-poll, and to gRPC clients, through a bounded queue per client;
//! - [`context_sink`]: the edge cache kept from `story.context`.
//!
//! Each stage folder holds its own `config.rs` (its scenario section, defaults and checks).
//! [`topology`] is the one table of stages, topics and groups. [`runtime`] is the one loop
//! every Kafka-consuming stage runs in (consume, stamp, produce, store offsets only once the
//! output is acknowledged, dead-letter what cannot be processed). [`assemble`] builds,
//! spawns, restarts, reads and stops the stages for a run or a stage process. [`io`] holds
//! what the stages talk to (Kafka clients and admin, PostgreSQL, the edge cache) and
//! imports no stage; [`embedded`] starts the in-process broker; [`tap`] reads any
//! pipeline's stamps for `tailgate watch`.

pub mod agent;
pub mod assemble;
pub mod config;
pub mod connector;
pub mod context_sink;
pub mod convert;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod event;
pub mod gateway;
pub mod io;
pub mod metrics;
pub mod runtime;
pub mod streamjob;
pub mod table;
pub mod tap;
pub mod topology;

pub use event::StoryEvent;
pub use io::kafka::KafkaSettings;

pub use topology::{STAGES, topics};

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach a Kafka broker at {bootstrap}: {reason}. Check the address and that the broker is up \
         (or omit --bootstrap to use the embedded broker)"
    )]
    Unreachable { bootstrap: String, reason: String },
    #[error(
        "the Kafka broker at {bootstrap} refused the credentials for SASL mechanism {mechanism}: {reason}. Check \
         sasl.username and sasl.password in [kafka.client] (or TAILGATE_KAFKA_SASL_PASSWORD)"
    )]
    Auth { bootstrap: String, mechanism: String, reason: String },
    #[error("Kafka client setting rejected: {0}")]
    Config(String),
    #[error("Kafka error in {context}: {source}")]
    Kafka { context: String, source: rdkafka::error::KafkaError },
    #[error("cannot create topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("stage {stage}: {reason}")]
    Stage { stage: &'static str, reason: String },
    /// This one record can never be produced (too large, a partition that does not exist):
    /// the stage dead-letters it and goes on.
    #[error("stage {stage}: cannot produce the record: {reason}")]
    Unproducible { stage: &'static str, reason: String },
    #[error("source database {path}: {source}")]
    Source { path: String, source: rusqlite::Error },
    #[error("embedded broker: {0}")]
    Embedded(#[source] Cause),
    #[error("edge cache {at}: {source}")]
    Cache { at: String, source: Cause },
    #[error("PostgreSQL source {at}: {source}")]
    Postgres { at: String, source: Cause },
    #[error("stream job enrichment database {at}: {source}")]
    Enrich { at: String, source: Cause },
    #[error("agent state store: {0}")]
    State(#[source] Cause),
    #[error("{what}: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
    #[error("gateway: {0}")]
    Gateway(#[from] std::io::Error),
}

/// What an [`Error`] came from: the underlying error, or the reason where there is none.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn kafka_err(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    let context = context.into();
    move |source| Error::Kafka { context, source }
}
