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

/// One use of a fault hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Hold every response back for this long.
    Stall(Duration),
    /// Close every client connection.
    DropConnections,
    /// Add `latency` to every fetch of `topic`, for `lasts` (`None`: from then on).
    FetchLatency { topic: String, latency: Duration, lasts: Option<Duration> },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stall(d) => write!(f, "every response held back for {d:?}"),
            Self::DropConnections => write!(f, "every client connection dropped"),
            Self::FetchLatency { topic, latency, lasts: None } => {
                write!(f, "every fetch of {topic} delayed {latency:?}")
            }
            Self::FetchLatency { topic, latency, lasts: Some(l) } => {
                write!(f, "every fetch of {topic} delayed {latency:?} for {l:?}")
            }
        }
    }
}

/// Faults to apply, each at a time after the plan starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub faults: Vec<(Duration, Fault)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Applies every fault at its time after `start`, telling `began` as each takes effect
    /// (its index in [`Plan::faults`], and how long after `start` it did), and lifts each
    /// added fetch latency when its time is up. Returns when nothing is left to do.
    pub async fn run(&self, faults: &Faults, start: Instant, mut began: impl FnMut(usize, Duration)) {
        enum Step<'a> {
            Begin(usize, &'a Fault),
            Lift(&'a str),
        }
        let mut steps: Vec<(Duration, Step<'_>)> = Vec::new();
        for (i, (at, fault)) in self.faults.iter().enumerate() {
            steps.push((*at, Step::Begin(i, fault)));
            if let Fault::FetchLatency { topic, lasts: Some(l), .. } = fault {
                steps.push((*at + *l, Step::Lift(topic)));
            }
        }
        steps.sort_by_key(|(at, _)| *at); // stable: a fault begins before one at the same time is lifted
        for (at, step) in steps {
            tokio::time::sleep_until(start + at).await;
            match step {
                Step::Begin(i, fault) => {
                    match fault {
                        Fault::Stall(d) => faults.stall(*d),
                        Fault::DropConnections => faults.drop_connections(),
                        Fault::FetchLatency { topic, latency, .. } => faults.set_fetch_latency(topic, *latency),
                    }
                    began(i, start.elapsed());
                }
                Step::Lift(topic) => faults.set_fetch_latency(topic, Duration::ZERO),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_plan_applies_each_fault_at_its_time_and_lifts_added_latency() {
        let faults = Faults::default();
        let plan = Plan {
            faults: vec![
                (Duration::from_secs(5), Fault::DropConnections),
                (
                    Duration::from_secs(1),
                    Fault::FetchLatency {
                        topic: "t".into(),
                        latency: Duration::from_millis(20),
                        lasts: Some(Duration::from_secs(2)),
                    },
                ),
                (Duration::from_secs(2), Fault::Stall(Duration::from_secs(1))),
            ],
        };
        let start = Instant::now();
        let mut drops = faults.drop_signal();
        let mut seen = Vec::new();
        let run = plan.run(&faults, start, |i, at| seen.push((at, plan.faults[i].1.clone())));
        let check = async {
            tokio::time::sleep_until(start + Duration::from_millis(1500)).await;
            assert_eq!(faults.fetch_delay(["t"].into_iter()), Some(Duration::from_millis(20)));
            assert_eq!(faults.fetch_delay(["u"].into_iter()), None);
            tokio::time::sleep_until(start + Duration::from_millis(3500)).await;
            assert_eq!(faults.fetch_delay(["t"].into_iter()), None, "lifted after its 2 s");
            assert_eq!(*drops.borrow_and_update(), 0);
        };
        tokio::join!(run, check);
        assert!(drops.has_changed().unwrap(), "the drop was signalled");
        let at: Vec<u64> = seen.iter().map(|(at, _)| at.as_secs()).collect();
        assert_eq!(at, [1, 2, 5]);
        assert_eq!(seen[1].1, Fault::Stall(Duration::from_secs(1)));
        assert_eq!(faults.counts().delayed_fetches, 1);
        assert_eq!(seen[0].1.to_string(), "every fetch of t delayed 20ms for 2s");
    }
}
