//! The capacity search: the highest rate a system sustains. A rate is sustained when every
//! SLA objective held over its step, the rate delivered reached 99% of it, and no stage's
//! lag grew over the step. The search climbs by a factor until a step fails (or, when the
//! first one fails, comes down until one holds), then bisects between the highest rate
//! that held and the lowest that failed, to a set precision.
//!
//! It knows nothing of what a step runs: [`Search::next`] picks the next rate from the
//! steps so far, so the same search drives the reference pipeline (each step a run) and
//! the synthetic systems of known capacity its tests check it against.

use serde::{Deserialize, Serialize};

/// What one step at one rate showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The target rate, events per second.
    pub rate: f64,
    /// The rate delivered over the step.
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// How fast the backlog grew over the step, events per second (about 0 when the system
    /// keeps up).
    pub lag_growth: f64,
    /// Every SLA objective held.
    pub sla_held: bool,
}

impl Step {
    /// The least share of the target rate a sustained step delivers.
    pub const ACHIEVED_SHARE: f64 = 0.99;

    /// Why the rate was not sustained, or `None` when it was.
    pub fn failed(&self) -> Option<String> {
        let lag_limit = LAG_GROWTH_SHARE * self.rate;
        if !self.sla_held {
            Some(format!("an SLA objective failed (p99 {:.1} ms)", self.p99_ms))
        } else if self.achieved < Self::ACHIEVED_SHARE * self.rate {
            Some(format!("{:.0}/s delivered, under 99% of {:.0}/s", self.achieved, self.rate))
        } else if self.lag_growth > lag_limit {
            Some(format!("the backlog grew by {:.0} events/s", self.lag_growth))
        } else {
            None
        }
    }
}

/// Backlog growth, as a share of the rate, above which a step counts as falling behind.
const LAG_GROWTH_SHARE: f64 = 0.01;

/// How the search goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The first rate tried.
    pub start: f64,
    /// Each climbing (or descending) step multiplies (divides) the rate by this.
    pub factor: f64,
    /// Bisection stops when the failing rate is within this share above the sustained one.
    pub precision: f64,
    /// The highest rate tried; a system that sustains it is reported as sustaining at
    /// least that.
    pub ceiling: f64,
    /// At most this many steps in all.
    pub max_steps: usize,
}

impl Default for Search {
    fn default() -> Self {
        Self { start: 500.0, factor: 2.0, precision: 0.02, ceiling: 1_000_000.0, max_steps: 24 }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Found {
    /// Every step, in the order tried.
    pub steps: Vec<Step>,
    /// The highest sustained rate; `None` when no rate tried was sustained.
    pub max_rate: Option<f64>,
    /// The lowest rate that failed, and why; `None` when the ceiling held.
    pub failed_at: Option<(f64, String)>,
    /// The highest sustained rate whose p99 stayed within twice the lowest step's: where
    /// latency starts to climb before the system gives out.
    pub knee: Option<f64>,
}

impl Search {
    /// The next rate to try after `steps` (in the order tried), or `None` when the search
    /// is done. A pure function of the steps, so a caller drives it at its own pace (each
    /// step an async run) and a test drives it with a model.
    pub fn next(&self, steps: &[Step]) -> Option<f64> {
        if steps.is_empty() {
            return Some(self.start.min(self.ceiling));
        }
        if steps.len() >= self.max_steps {
            return None;
        }
        let Bracket { held, failed } = bracket(steps);
        match (held, failed) {
            (None, Some((low, _))) => Some(low / self.factor).filter(|r| *r >= 1.0),
            (Some(h), None) => (h < self.ceiling).then(|| (h * self.factor).min(self.ceiling)),
            (Some(h), Some((f, _))) => ((f - h) / h > self.precision).then_some((h + f) / 2.0),
            (None, None) => None,
        }
    }

    /// What `steps` show: the highest sustained rate, the lowest failing one above it, the
    /// knee.
    pub fn found(&self, steps: &[Step]) -> Found {
        let Bracket { held, failed } = bracket(steps);
        Found { steps: steps.to_vec(), max_rate: held, failed_at: failed, knee: knee(steps) }
    }

    /// Runs `trial` at each rate the search picks, to the end.
    pub fn run(&self, mut trial: impl FnMut(f64) -> Step) -> Found {
        let mut steps = Vec::new();
        while let Some(rate) = self.next(&steps) {
            steps.push(trial(rate));
        }
        self.found(&steps)
    }
}

/// The highest sustained rate, and the lowest failing rate above it (with why it failed).
struct Bracket {
    held: Option<f64>,
    failed: Option<(f64, String)>,
}

fn bracket(steps: &[Step]) -> Bracket {
    let held = steps.iter().filter(|s| s.failed().is_none()).map(|s| s.rate).max_by(f64::total_cmp);
    let failed = steps
        .iter()
        .filter(|s| held.is_none_or(|h| s.rate > h))
        .filter_map(|s| s.failed().map(|why| (s.rate, why)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    Bracket { held, failed }
}

fn knee(steps: &[Step]) -> Option<f64> {
    let lowest = steps.iter().min_by(|a, b| a.rate.total_cmp(&b.rate))?;
    steps
        .iter()
        .filter(|s| s.failed().is_none() && s.p99_ms <= 2.0 * lowest.p99_ms.max(f64::EPSILON))
        .map(|s| s.rate)
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// A single server, first come first served, fed at `rate` for `seconds` of simulated
    /// time: arrivals evenly spaced or Poisson, service times fixed or exponential. Returns
    /// the step as the search sees it, against an SLA of `p99 <= bound_ms`.
    struct Queue {
        service_s: f64,
        exponential_service: bool,
        poisson_arrivals: bool,
        bound_ms: f64,
        seconds: f64,
    }

    impl Queue {
        fn step(&self, rate: f64, seed: u64) -> Step {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut exp = |mean: f64| -(1.0 - rng.random::<f64>()).ln() * mean;
            let (mut at, mut free_at) = (0.0, 0.0);
            let mut latencies = Vec::new();
            let (mut done_in_step, mut backlog_half, mut backlog_end) = (0u64, 0.0, 0.0);
            let half = self.seconds / 2.0;
            while at < self.seconds {
                let service = if self.exponential_service { exp(self.service_s) } else { self.service_s };
                let start: f64 = f64::max(at, free_at);
                free_at = start + service;
                latencies.push(free_at - at);
                if free_at <= self.seconds {
                    done_in_step += 1;
                }
                // The backlog a moment is the work queued ahead of it, in events.
                if at <= half {
                    backlog_half = (free_at - at) / self.service_s;
                }
                backlog_end = (free_at - at) / self.service_s;
                at += if self.poisson_arrivals { exp(1.0 / rate) } else { 1.0 / rate };
            }
            latencies.sort_by(f64::total_cmp);
            let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] * 1e3;
            let p99_ms = q(0.99);
            Step {
                rate,
                achieved: done_in_step as f64 / self.seconds,
                p50_ms: q(0.5),
                p99_ms,
                lag_growth: (backlog_end - backlog_half) / half,
                sla_held: p99_ms <= self.bound_ms,
            }
        }
    }

    #[test]
    fn it_finds_the_capacity_of_a_fixed_service_time_within_five_percent() {
        // 2 ms per event: 500/s, whatever the rate asked for beyond it.
        let q = Queue {
            service_s: 0.002,
            exponential_service: false,
            poisson_arrivals: false,
            bound_ms: 50.0,
            seconds: 20.0,
        };
        let found = Search { start: 50.0, ..Search::default() }.run(|r| q.step(r, 1));
        let max = found.max_rate.unwrap();
        assert!((475.0..=500.0).contains(&max), "{max} for a capacity of 500/s: {:#?}", found.steps);
        let (failed, why) = found.failed_at.clone().unwrap();
        assert!(failed > max && (failed - max) / max <= 0.02, "{failed} {why}");
        // Climbed 50, 100, 200, 400, 800, then bisected.
        let rates: Vec<f64> = found.steps.iter().map(|s| s.rate).collect();
        assert_eq!(rates[..5], [50.0, 100.0, 200.0, 400.0, 800.0]);
        assert!(found.steps.len() <= Search::default().max_steps);
    }

    #[test]
    fn where_the_sla_binds_first_it_finds_the_rate_queueing_theory_gives() {
        // M/M/1 at 1000/s service: the time in the system is exponential with rate
        // (1000 - rate), so p99 = ln(100) / (1000 - rate), and a p99 bound of 50 ms holds
        // up to 1000 - ln(100) / 0.05 = 907.9/s.
        let q = Queue {
            service_s: 0.001,
            exponential_service: true,
            poisson_arrivals: true,
            bound_ms: 50.0,
            seconds: 300.0,
        };
        let found = Search { start: 100.0, ..Search::default() }.run(|r| q.step(r, 7));
        let max = found.max_rate.unwrap();
        let known = 1000.0 - 100f64.ln() / 0.05;
        assert!((max - known).abs() / known <= 0.05, "{max} against {known:.1}: {:#?}", found.steps);
        let (_, why) = found.failed_at.unwrap();
        assert!(why.starts_with("an SLA objective failed"), "{why}");
        assert!(found.knee.is_some_and(|k| k < max), "{:?}", found.knee);
    }

    #[test]
    fn a_first_step_that_fails_sends_the_search_down() {
        let q = Queue {
            service_s: 0.01,
            exponential_service: false,
            poisson_arrivals: false,
            bound_ms: 50.0,
            seconds: 20.0,
        };
        let found = Search { start: 1_000.0, ..Search::default() }.run(|r| q.step(r, 1));
        let rates: Vec<f64> = found.steps.iter().map(|s| s.rate).collect();
        assert_eq!(rates[..5], [1_000.0, 500.0, 250.0, 125.0, 62.5]);
        let max = found.max_rate.unwrap();
        assert!((95.0..=100.0).contains(&max), "{max} for a capacity of 100/s");
    }

    #[test]
    fn a_system_past_the_ceiling_is_reported_as_sustaining_it() {
        let q = Queue {
            service_s: 1e-6,
            exponential_service: false,
            poisson_arrivals: false,
            bound_ms: 50.0,
            seconds: 2.0,
        };
        let found = Search { start: 1_000.0, ceiling: 4_000.0, ..Search::default() }.run(|r| q.step(r, 1));
        assert_eq!(found.max_rate, Some(4_000.0));
        assert_eq!(found.failed_at, None);
        assert_eq!(found.steps.len(), 3);
    }
}
