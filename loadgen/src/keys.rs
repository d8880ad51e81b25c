//! Which story session each event belongs to: uniform over the sessions, or Zipf-skewed so
//! a few sessions are hot (as real audiences are).

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// The distribution of session ids.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum KeyDist {
    #[default]
    Uniform,
    /// Zipf with this exponent (> 0; 1.0 is the classic law).
    Zipf { exponent: f64 },
}

/// Draws session ids in `0..sessions`.
#[derive(Debug, Clone)]
pub struct Keys {
    sessions: u64,
    zipf: Option<Zipf<f64>>,
    rng: SmallRng,
}

impl Keys {
    /// `sessions` must be at least 1; a Zipf exponent must be positive (validated upstream,
    /// and falling back to uniform here rather than panicking).
    pub fn new(dist: KeyDist, sessions: u64, seed: u64) -> Self {
        let sessions = sessions.max(1);
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf { exponent } => Zipf::new(sessions as f64, exponent).ok(),
        };
        Self { sessions, zipf, rng: SmallRng::seed_from_u64(seed) }
    }

    /// The next session id.
    pub fn next_session(&mut self) -> u64 {
        match &self.zipf {
            // Zipf samples ranks 1..=n.
            Some(z) => (z.sample(&mut self.rng) as u64).clamp(1, self.sessions) - 1,
            None => self.rng.random_range(0..self.sessions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(dist: KeyDist) -> Vec<u64> {
        let mut keys = Keys::new(dist, 64, 1);
        let mut c = vec![0u64; 64];
        for _ in 0..64_000 {
            c[keys.next_session() as usize] += 1;
        }
        c
    }

    #[test]
    fn uniform_covers_every_session_evenly() {
        let c = counts(KeyDist::Uniform);
        assert!(c.iter().all(|&n| (800..1200).contains(&n)), "{c:?}");
    }

    #[test]
    fn zipf_makes_the_first_sessions_hot() {
        let c = counts(KeyDist::Zipf { exponent: 1.0 });
        assert!(c[0] > 5 * c[31], "{c:?}");
        assert!(c.iter().all(|&n| n > 0));
    }
}
