//! Arrival schedules: when each event is due, as an offset from the start of the run.
//! Pure functions of (rate, seed), so a test can check them without a clock.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced, `1/rate` apart.
    #[default]
    Constant,
    /// A Poisson process: exponential gaps with mean `1/rate`.
    Poisson,
}

/// The intended send offsets of one run: an iterator of nanoseconds since the start.
#[derive(Debug, Clone)]
pub struct Schedule {
    arrival: Arrival,
    rate: f64,
    end_ns: u64,
    index: u64,
    poisson_at: f64,
    rng: StdRng,
}

impl Schedule {
    /// `rate` events per second for `length`; `seed` fixes the Poisson gaps.
    pub fn new(arrival: Arrival, rate: f64, length: Duration, seed: u64) -> Self {
        Self {
            arrival,
            rate,
            end_ns: u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
            index: 0,
            poisson_at: 0.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// How many events a constant schedule sends (a Poisson one sends about as many).
    pub fn expected_events(&self) -> u64 {
        (self.rate * self.end_ns as f64 / 1e9).ceil() as u64
    }
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.rate <= 0.0 {
            return None;
        }
        let at = match self.arrival {
            Arrival::Constant => (self.index as f64 * 1e9 / self.rate) as u64,
            Arrival::Poisson => {
                let at = self.poisson_at as u64;
                // Inverse-CDF sample of Exp(rate); 1 - u is in (0, 1].
                let u: f64 = self.rng.random();
                self.poisson_at += -(1.0 - u).ln() / self.rate * 1e9;
                at
            }
        };
        self.index += 1;
        (at < self.end_ns).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_evenly_spaced_and_ends_on_time() {
        let s: Vec<u64> = Schedule::new(Arrival::Constant, 1000.0, Duration::from_millis(10), 0).collect();
        assert_eq!(s.len(), 10);
        assert_eq!(s[0], 0);
        assert!(s.windows(2).all(|w| w[1] - w[0] == 1_000_000));
    }

    #[test]
    fn poisson_has_the_right_mean_rate_and_is_reproducible() {
        let a: Vec<u64> = Schedule::new(Arrival::Poisson, 1000.0, Duration::from_secs(20), 7).collect();
        let b: Vec<u64> = Schedule::new(Arrival::Poisson, 1000.0, Duration::from_secs(20), 7).collect();
        assert_eq!(a, b);
        // 20,000 expected; a Poisson count's sd is ~141, so 5 sd either side.
        assert!((19_300..=20_700).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        // Exponential gaps: about 63% are shorter than the mean.
        let short = a.windows(2).filter(|w| w[1] - w[0] < 1_000_000).count() as f64 / a.len() as f64;
        assert!((0.60..0.66).contains(&short), "{short}");
    }
}
