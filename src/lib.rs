//! tailgate measures, watches and gates the latency of Kafka-centric event pipelines.
//!
//! This crate is the `tailgate` command: [`scenario`] reads scenario files, [`run`] runs
//! one through the reference pipeline, [`result`] is what a run writes and how its SLA is
//! judged, and [`cli`] maps all of it onto commands and exit codes.

pub mod cli;
pub mod result;
pub mod run;
pub mod scenario;
