//! Fault hooks: ways to make the broker misbehave on purpose, from the process that owns
//! it ([`crate::Broker::faults`]) or from `tailgate broker` flags. Each use is counted, so
//! a run can show which faults it saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

/// The fault switches of one broker.
#[derive(Debug)]
pub struct Faults {
    stall_until: Mutex<Option<Instant>>,
    fetch_latency: Mutex<HashMap<String, Duration>>,
    drops: watch::Sender<u64>,
    stalled_responses: AtomicU64,
    delayed_fetches: AtomicU64,
    dropped_connections: AtomicU64,
}

/// How often each fault took effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Responses held back by a stall.
    pub stalled_responses: u64,
    /// Fetch responses delayed by a topic's added latency.
    pub delayed_fetches: u64,
    /// Connections closed by [`Faults::drop_connections`].
    pub dropped_connections: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            stall_until: Mutex::new(None),
            fetch_latency: Mutex::new(HashMap::new()),
            drops: watch::channel(0).0,
            stalled_responses: AtomicU64::new(0),
            delayed_fetches: AtomicU64::new(0),
            dropped_connections: AtomicU64::new(0),
        }
    }
}

impl Faults {
    /// Holds every response back until `for_` from now has passed (requests are still
    /// read and applied; only the answers wait).
    pub fn stall(&self, for_: Duration) {
        *self.stall_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + for_);
    }

    /// Closes every open client connection now; clients reconnect as they would to a
    /// restarted broker.
    pub fn drop_connections(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Adds `latency` to every fetch response that includes `topic`; zero removes it.
    pub fn set_fetch_latency(&self, topic: &str, latency: Duration) {
        let mut m = self.fetch_latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if latency.is_zero() {
            m.remove(topic);
        } else {
            m.insert(topic.to_owned(), latency);
        }
    }

    /// How often each fault took effect so far.
    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            stalled_responses: self.stalled_responses.load(Ordering::Relaxed),
            delayed_fetches: self.delayed_fetches.load(Ordering::Relaxed),
            dropped_connections: self.dropped_connections.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    pub(crate) fn count_dropped(&self) {
        self.dropped_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits out a stall, if one is on.
    pub(crate) async fn before_response(&self) {
        let until = *self.stall_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = until.filter(|u| *u > Instant::now()) {
            self.stalled_responses.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until).await;
        }
    }

    /// The latency added to a fetch of these topics (the largest that applies).
    pub(crate) fn fetch_delay<'a>(&self, topics: impl Iterator<Item = &'a str>) -> Option<Duration> {
        let m = self.fetch_latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.is_empty() {
            return None;
        }
        let d = topics.filter_map(|t| m.get(t).copied()).max()?;
        self.delayed_fetches.fetch_add(1, Ordering::Relaxed);
        Some(d)
    }
}
