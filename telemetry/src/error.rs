//! What can go wrong when span or metric export is set up. Export failures while a run
//! goes are not errors: they are counted and reported with the run.

/// A telemetry setting that cannot be used, or an exporter that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not an OTLP protocol tailgate speaks (grpc, http/protobuf)")]
    UnknownProtocol(String),
    #[error("{var}: `{value}` is not a number")]
    NotANumber { var: &'static str, value: String },
    #[error("the sample ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    #[error("{var}: {source}")]
    InVariable { var: &'static str, source: Box<Error> },
    #[error("OTLP {signal} exporter for {endpoint} ({protocol}): {source}")]
    Exporter {
        signal: &'static str,
        endpoint: String,
        protocol: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot start the {what}: {source}")]
    Start { what: &'static str, source: std::io::Error },
    #[error("the export thread stopped while starting")]
    ThreadStopped,
}

/// The telemetry crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
