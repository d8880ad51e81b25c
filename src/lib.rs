//! tailgate measures, watches and gates the latency of Kafka-centric event pipelines.
//!
//! This crate is the `tailgate` command: [`scenario`] reads scenario files (and their
//! tuning profiles), [`run`] runs one through the reference pipeline, [`result`] (from the
//! `reports` crate) is what a run writes and how its SLA is judged, [`omb`] imports
//! OpenMessaging Benchmark workloads, [`stage_process`] runs one stage as a process of its
//! own (`tailgate stage`), and [`cli`] maps all of it onto commands and the [`exit`] codes.

#[cfg(feature = "embedded")]
mod broker_command;
pub mod cli;
mod command;
pub mod exit;
pub mod omb;
pub use reports::result;
pub mod run;
pub mod scenario;
mod search_command;
pub mod stage_process;
mod watch;
pub mod workers;
