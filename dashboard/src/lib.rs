//! tailgate's live terminal dashboard. A feed of [`Feed`] events (delivered samples with
//! their stamps, progress counters, the final verdict) fills a [`DashState`]; the
//! [`app`] draws it at a fixed frame rate with ratatui and restores the terminal on every
//! way out. The producer side only ever `try_send`s: when the UI falls behind, samples are
//! dropped from the view (and counted), never held up in the pipeline.

pub mod app;
pub mod model;
pub mod ui;

pub use app::{FeedSender, feed_channel, run_app};
pub use model::{Budget, DashState, FaultMark, Feed, Meta, Progress, Sample, StageLag, Verdict, WindowSize};
