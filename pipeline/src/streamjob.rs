//! The stream job (Flink style): event time is the load generator's intended send time;
//! a watermark trails the highest event time seen by a bounded out-of-orderness; each
//! session's actions are counted in tumbling windows, and every beat goes on enriched with
//! its window's count so far. Events behind the watermark are marked late, never dropped.

use crate::event::{StoryEvent, Window};
use crate::stage::{Meta, Processor};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The stage's name.
pub const NAME: &str = "streamjob";

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamJobConfig {
    /// Tumbling window length.
    pub window: Duration,
    /// How far behind the highest event time the watermark trails.
    pub out_of_orderness: Duration,
}

impl Default for StreamJobConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(1), out_of_orderness: Duration::from_millis(200) }
    }
}

/// Window state per session.
#[derive(Debug, Default)]
pub struct StreamJob {
    window_ms: u64,
    out_of_order_ms: u64,
    max_event_ms: u64,
    windows: HashMap<u64, BTreeMap<u64, u64>>,
    /// Events that arrived behind the watermark.
    pub late: u64,
    since_purge: u32,
}

impl StreamJob {
    pub fn new(config: StreamJobConfig) -> Self {
        Self {
            window_ms: (config.window.as_millis() as u64).max(1),
            out_of_order_ms: config.out_of_orderness.as_millis() as u64,
            ..Self::default()
        }
    }

    /// The watermark, ms since the epoch: no event with an earlier time is expected.
    pub fn watermark_ms(&self) -> u64 {
        self.max_event_ms.saturating_sub(self.out_of_order_ms)
    }

    /// Counts one action of `session` at event time `event_ms`.
    pub fn observe(&mut self, session: u64, event_ms: u64) -> Window {
        self.max_event_ms = self.max_event_ms.max(event_ms);
        let watermark = self.watermark_ms();
        let start_ms = event_ms - event_ms % self.window_ms;
        let windows = self.windows.entry(session).or_default();
        let window = if start_ms + self.window_ms <= watermark {
            self.late += 1;
            Window { start_ms, count: windows.get(&start_ms).copied().unwrap_or(0), late: true }
        } else {
            let count = windows.entry(start_ms).or_default();
            *count += 1;
            Window { start_ms, count: *count, late: false }
        };
        // Windows the watermark has passed are final: drop them.
        let closed = watermark.saturating_sub(self.window_ms - 1);
        *windows = windows.split_off(&closed);
        self.since_purge += 1;
        if self.since_purge >= 10_000 {
            self.since_purge = 0;
            self.windows.retain(|_, w| {
                *w = w.split_off(&closed);
                !w.is_empty()
            });
        }
        window
    }

    /// Open windows across all sessions.
    pub fn open_windows(&self) -> usize {
        self.windows.values().map(BTreeMap::len).sum()
    }
}

impl Processor for StreamJob {
    const NAME: &'static str = NAME;

    async fn process(&mut self, event: &mut StoryEvent, meta: &Meta) -> Result<(), String> {
        if event.beat.is_none() {
            return Err("the event has no beat: it did not come through the agent".into());
        }
        event.window = Some(self.observe(event.session, meta.intended_ns / 1_000_000));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> StreamJob {
        StreamJob::new(StreamJobConfig { window: Duration::from_secs(1), out_of_orderness: Duration::from_millis(200) })
    }

    #[test]
    fn counts_per_session_in_tumbling_windows() {
        let mut j = job();
        assert_eq!(j.observe(1, 10_000).count, 1);
        assert_eq!(j.observe(1, 10_500).count, 2);
        assert_eq!(j.observe(2, 10_600).count, 1);
        let w = j.observe(1, 11_000);
        assert_eq!((w.start_ms, w.count, w.late), (11_000, 1, false));
    }

    #[test]
    fn out_of_order_within_the_bound_is_on_time_and_beyond_it_is_late() {
        let mut j = job();
        j.observe(1, 10_900);
        j.observe(1, 11_100); // watermark 10_900: window 10_000 still open
        let w = j.observe(1, 10_950);
        assert_eq!((w.start_ms, w.count, w.late), (10_000, 2, false));
        j.observe(1, 11_300); // watermark 11_100: window 10_000 closed
        let w = j.observe(1, 10_990);
        assert_eq!((w.start_ms, w.late), (10_000, true));
        assert_eq!(j.late, 1);
    }

    #[test]
    fn closed_windows_are_dropped() {
        let mut j = job();
        for t in (0..10_000).step_by(100) {
            j.observe(t % 7, 100_000 + t);
        }
        assert!(j.open_windows() <= 7 * 2, "{}", j.open_windows());
    }
}
