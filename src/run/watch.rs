//! The watch phase: while the load goes, a progress line and the live view every tick,
//! the scenario's scheduled restarts, a stage's failure (which stops the load), and Ctrl-C
//! (which stops it too; what was measured is written).

use super::drive::Players;
use super::faults::{Recorder, StageFault};
use super::{RunError, describe_exit, failed};
use dashboard::{Feed, FeedSender, Progress, StageLag};
use loadgen::DriveReport;
use pipeline::assemble::{Pipeline, PipelineFigures};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the watch saw.
#[derive(Debug)]
pub(super) struct Watched {
    pub report: DriveReport,
    /// The first stage that failed.
    pub failure: Option<String>,
    pub interrupted: bool,
}

/// The live counts the watch shows.
pub(super) struct Live<'a> {
    pub sent: &'a AtomicU64,
    pub delivered: &'a AtomicU64,
    pub feed: Option<&'a FeedSender>,
    pub progress: bool,
    pub stop: &'a Arc<AtomicBool>,
}

/// Watches until the players are done; applies each stage fault once, at its time.
pub(super) async fn watch(
    pipeline: &mut Pipeline,
    players: &mut Players,
    mut restarts: Vec<StageFault>,
    recorder: &Recorder,
    live: &Live<'_>,
) -> Result<Watched, RunError> {
    let began = Instant::now();
    let (mut failure, mut interrupted) = (None, false);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.tick().await;
    let mut ticks = 0u64;
    let report = loop {
        let next_restart = restarts.iter().map(|f| f.at).min();
        tokio::select! {
            () = tokio::time::sleep_until(next_restart.unwrap_or_else(tokio::time::Instant::now)), if next_restart.is_some() => {
                let now = tokio::time::Instant::now();
                for f in restarts.iter().filter(|f| f.at <= now) {
                    if f.section.is_none() {
                        eprintln!("stopping the {} abruptly ({}.restart_at) and starting it again", f.stage, f.stage);
                    }
                    recorder.stage(f);
                    pipeline.stop_and_start(f.stage, f.how, f.down).map_err(failed)?;
                }
                restarts.retain(|f| f.at > now);
            },
            r = &mut players.done => break r.map_err(|_| failed("the load generator thread died"))?,
            _ = tick.tick() => {
                ticks += 1;
                show(&pipeline.figures(), players, live, ticks, began);
            },
            Some(done) = pipeline.next_exit(), if failure.is_none() => {
                failure = Some(describe_exit(done));
                live.stop.store(true, Ordering::Relaxed);
            },
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                eprintln!("interrupted: stopping the load and writing what was measured");
                interrupted = true;
                live.stop.store(true, Ordering::Relaxed);
            },
        }
    };
    let report = report.map_err(|e| failed(format!("the source refused an event: {e}")))?;
    interrupted |= report.stopped_early && failure.is_none();
    Ok(Watched { report, failure, interrupted })
}

/// One tick: the live view's progress, and every fourth tick the progress line.
fn show(figures: &PipelineFigures, players: &Players, live: &Live<'_>, ticks: u64, began: Instant) {
    let sent = live.sent.load(Ordering::Relaxed);
    let delivered = live.delivered.load(Ordering::Relaxed);
    let dl = figures.dead_lettered();
    if let Some(feed) = live.feed {
        let lag = players.lag_live.swap(0, Ordering::Relaxed);
        feed.offer(Feed::Progress(Progress {
            sent,
            delivered,
            dead_lettered: dl,
            filtered: figures.filtered(),
            duplicates: figures.stage(pipeline::topology::GATEWAY).duplicates,
            schedule_lag_ms: Some(lag as f64 / 1e6),
            lags: stage_lags(sent, figures),
        }));
    }
    if live.progress && ticks.is_multiple_of(4) {
        eprintln!(
            "{:>6.1}s  sent {sent:>8}  delivered {delivered:>8}  dead-lettered {dl:>5}  in flight {:>6}",
            began.elapsed().as_secs_f64(),
            sent.saturating_sub(delivered + dl + figures.filtered())
        );
    }
}

/// Events waiting in front of each stage: what the hop before it passed on, less what it
/// passed on or dead-lettered.
fn stage_lags(sent: u64, figures: &PipelineFigures) -> Vec<StageLag> {
    let mut upstream = sent;
    figures
        .stages
        .iter()
        .map(|(stage, f)| {
            let lag =
                StageLag { stage: (*stage).to_owned(), events: upstream.saturating_sub(f.forwarded + f.dead_lettered) };
            upstream = f.forwarded;
            lag
        })
        .collect()
}
