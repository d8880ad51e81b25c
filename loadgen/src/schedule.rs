//! Arrival schedules: when each event is due, as an offset from the start of the run.
//! Pure functions of (shape, arrival, seed), so a test can check them without a clock. The
//! shape is the target rate over time (constant, a ramp, steps); the arrival is how events
//! are spaced at that rate (evenly or as a Poisson process).

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

/// The target rate over time, from the start of the load (warm-up included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Shape {
    /// `rate` events per second throughout.
    Constant { rate: f64 },
    /// From `from` to `to` events per second, linearly over `over_s` seconds, then `to`.
    Ramp { from: f64, to: f64, over_s: f64 },
    /// `rates[0]` for `every_s` seconds, then `rates[1]`..., the last one held to the end.
    Step { rates: Vec<f64>, every_s: f64 },
}

impl Shape {
    /// The target rate at `t` seconds, in events per second.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self {
            Self::Constant { rate } => *rate,
            Self::Ramp { from, to, over_s } if t < *over_s => from + (to - from) * t / over_s,
            Self::Ramp { to, .. } => *to,
            Self::Step { rates, every_s } => rates[step_at(t, *every_s, rates.len())],
        }
    }

    /// How many events are due in the first `t` seconds: the rate's integral.
    pub fn events_by(&self, t: f64) -> f64 {
        let t = t.max(0.0);
        match self {
            Self::Constant { rate } => rate * t,
            Self::Ramp { from, to, over_s } => {
                let r = t.min(*over_s);
                from * r + (to - from) * r * r / (2.0 * over_s) + to * (t - r)
            }
            Self::Step { rates, every_s } => {
                let k = step_at(t, *every_s, rates.len());
                rates[..k].iter().sum::<f64>() * every_s + rates[k] * (t - k as f64 * every_s)
            }
        }
    }

    /// When the `n`-th event is due: the time at which [`Shape::events_by`] reaches `n`, in
    /// seconds; `None` when it never does (the rate stays at zero).
    pub fn time_of(&self, n: f64) -> Option<f64> {
        let after = |start: f64, done: f64, rate: f64| (rate > 0.0).then(|| start + (n - done) / rate);
        match self {
            Self::Constant { rate } => after(0.0, 0.0, *rate),
            Self::Ramp { from, to, over_s } => {
                let ramped = (from + to) / 2.0 * over_s;
                if n >= ramped {
                    return after(*over_s, ramped, *to);
                }
                // n = from t + k t^2 / 2, solved in the form that stays exact when k or
                // `from` is zero.
                let k = (to - from) / over_s;
                let root = (from * from + 2.0 * k * n).max(0.0).sqrt();
                let t = 2.0 * n / (from + root);
                Some(if t.is_finite() { t } else { 0.0 })
            }
            Self::Step { rates, every_s } => {
                let mut done = 0.0;
                for (k, r) in rates.iter().enumerate() {
                    let start = k as f64 * every_s;
                    if k + 1 == rates.len() {
                        return after(start, done, *r);
                    }
                    if *r > 0.0 && done + r * every_s > n {
                        return Some(start + (n - done) / r);
                    }
                    done += r * every_s;
                }
                None
            }
        }
    }

    /// The target rate of each second of the first `length`, as events due in it.
    pub fn per_second(&self, length: Duration) -> Vec<f64> {
        let secs = length.as_secs_f64().ceil() as usize;
        (0..secs).map(|s| self.events_by((s + 1) as f64) - self.events_by(s as f64)).collect()
    }

    /// The same shape at `share` of its rates: one of several load generators' part.
    pub fn scaled(&self, share: f64) -> Self {
        match self {
            Self::Constant { rate } => Self::Constant { rate: rate * share },
            Self::Ramp { from, to, over_s } => Self::Ramp { from: from * share, to: to * share, over_s: *over_s },
            Self::Step { rates, every_s } => {
                Self::Step { rates: rates.iter().map(|r| r * share).collect(), every_s: *every_s }
            }
        }
    }

    /// One line for summaries: `1000/s`, `200/s to 3000/s over 45s`, `500, 1000, 2000/s, 10s each`.
    pub fn describe(&self) -> String {
        let n = |r: &f64| format!("{r}");
        match self {
            Self::Constant { rate } => format!("{rate}/s"),
            Self::Ramp { from, to, over_s } => format!("{from}/s to {to}/s over {over_s}s"),
            Self::Step { rates, every_s } => {
                format!("{}/s, {every_s}s each", rates.iter().map(n).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// Which of `steps` steps of `every_s` seconds `t` falls in (the last one holds).
fn step_at(t: f64, every_s: f64, steps: usize) -> usize {
    ((t / every_s).floor().max(0.0) as usize).min(steps.saturating_sub(1))
}

/// The intended send offsets of one run: an iterator of nanoseconds since the start. The
/// `n`-th event is due when the shape's integral reaches `n` (constant spacing) or the sum
/// of `n` unit exponential gaps (Poisson: a Poisson process of the shape's rate, by time
/// rescaling).
#[derive(Debug, Clone)]
pub struct Schedule {
    arrival: Arrival,
    shape: Shape,
    end_ns: u64,
    index: u64,
    poisson_at: f64,
    rng: StdRng,
}

impl Schedule {
    /// Events at the rates of `shape` for `length`; `seed` fixes the Poisson gaps.
    pub fn new(arrival: Arrival, shape: Shape, length: Duration, seed: u64) -> Self {
        Self {
            arrival,
            shape,
            end_ns: u64::try_from(length.as_nanos()).unwrap_or(u64::MAX),
            index: 0,
            poisson_at: 0.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `rate` events per second throughout.
    pub fn constant(arrival: Arrival, rate: f64, length: Duration, seed: u64) -> Self {
        Self::new(arrival, Shape::Constant { rate }, length, seed)
    }

    /// How many events a constant-spaced schedule sends (a Poisson one sends about as many).
    pub fn expected_events(&self) -> u64 {
        self.shape.events_by(self.end_ns as f64 / 1e9).ceil() as u64
    }
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let n = match self.arrival {
            Arrival::Constant => self.index as f64,
            Arrival::Poisson => {
                let n = self.poisson_at;
                // Inverse-CDF sample of Exp(1); 1 - u is in (0, 1].
                let u: f64 = self.rng.random();
                self.poisson_at += -(1.0 - u).ln();
                n
            }
        };
        self.index += 1;
        let at = self.shape.time_of(n)?;
        let at = (at * 1e9) as u64;
        (at < self.end_ns).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_evenly_spaced_and_ends_on_time() {
        let s: Vec<u64> = Schedule::constant(Arrival::Constant, 1000.0, Duration::from_millis(10), 0).collect();
        assert_eq!(s.len(), 10);
        assert_eq!(s[0], 0);
        assert!(s.windows(2).all(|w| w[1] - w[0] == 1_000_000));
    }

    #[test]
    fn poisson_has_the_right_mean_rate_and_is_reproducible() {
        let a: Vec<u64> = Schedule::constant(Arrival::Poisson, 1000.0, Duration::from_secs(20), 7).collect();
        let b: Vec<u64> = Schedule::constant(Arrival::Poisson, 1000.0, Duration::from_secs(20), 7).collect();
        assert_eq!(a, b);
        // 20,000 expected; a Poisson count's sd is ~141, so 5 sd either side.
        assert!((19_300..=20_700).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        // Exponential gaps: about 63% are shorter than the mean.
        let short = a.windows(2).filter(|w| w[1] - w[0] < 1_000_000).count() as f64 / a.len() as f64;
        assert!((0.60..0.66).contains(&short), "{short}");
    }

    /// Events of `s` in each second of its first `secs`.
    fn per_second_sent(s: Schedule, secs: usize) -> Vec<usize> {
        let mut out = vec![0; secs];
        for at in s {
            out[(at / 1_000_000_000) as usize] += 1;
        }
        out
    }

    #[test]
    fn a_ramp_rises_linearly_then_holds() {
        let shape = Shape::Ramp { from: 100.0, to: 500.0, over_s: 4.0 };
        let s = Schedule::new(Arrival::Constant, shape.clone(), Duration::from_secs(6), 0);
        // Due per second: the mean of the rate over it (150, 250, 350, 450), then 500.
        assert_eq!(per_second_sent(s, 6), [150, 250, 350, 450, 500, 500]);
        assert_eq!(shape.per_second(Duration::from_secs(6)), [150.0, 250.0, 350.0, 450.0, 500.0, 500.0]);
        assert_eq!(shape.rate_at(2.0), 300.0);
    }

    #[test]
    fn a_ramp_down_and_one_from_zero_are_exact() {
        let down = Schedule::new(
            Arrival::Constant,
            Shape::Ramp { from: 400.0, to: 0.0, over_s: 2.0 },
            Duration::from_secs(4),
            0,
        );
        assert_eq!(per_second_sent(down, 4), [300, 100, 0, 0]);
        let up = Schedule::new(
            Arrival::Constant,
            Shape::Ramp { from: 0.0, to: 200.0, over_s: 2.0 },
            Duration::from_secs(2),
            0,
        );
        let at: Vec<u64> = up.collect();
        assert_eq!(at.len(), 200);
        assert_eq!(at[0], 0);
        assert!(at.windows(2).all(|w| w[1] > w[0]), "gaps shrink as the rate rises, never reorder");
    }

    #[test]
    fn steps_hold_each_rate_for_their_length_and_skip_a_pause() {
        let shape = Shape::Step { rates: vec![100.0, 0.0, 300.0], every_s: 2.0 };
        let s = Schedule::new(Arrival::Constant, shape.clone(), Duration::from_secs(8), 0);
        // The last step holds past its two seconds.
        assert_eq!(per_second_sent(s, 8), [100, 100, 0, 0, 300, 300, 300, 300]);
        assert_eq!(shape.events_by(5.0), 500.0);
        assert_eq!(shape.rate_at(2.5), 0.0);
        assert_eq!(shape.describe(), "100, 0, 300/s, 2s each");
    }

    #[test]
    fn due_times_invert_the_rates_integral() {
        let shapes = [
            Shape::Constant { rate: 750.0 },
            Shape::Ramp { from: 50.0, to: 2_000.0, over_s: 3.0 },
            Shape::Ramp { from: 900.0, to: 10.0, over_s: 7.5 },
            Shape::Step { rates: vec![10.0, 400.0, 0.0, 25.0], every_s: 1.5 },
        ];
        for shape in shapes {
            for n in [0.0, 1.0, 17.0, 333.3, 1_234.0, 5_000.0] {
                let t = shape.time_of(n).unwrap();
                let back = shape.events_by(t);
                assert!((back - n).abs() < 1e-6 * n.max(1.0), "{shape:?}: n {n} at {t}s, integral {back}");
            }
        }
    }

    #[test]
    fn a_poisson_ramp_follows_the_ramp() {
        let shape = Shape::Ramp { from: 1_000.0, to: 3_000.0, over_s: 10.0 };
        let a = Schedule::new(Arrival::Poisson, shape, Duration::from_secs(10), 3);
        let per = per_second_sent(a, 10);
        // Due in second s: 1100 + 200 s; a Poisson count's sd is under 60, so 5 sd either side.
        for (s, n) in per.iter().enumerate() {
            let want = 1_100.0 + 200.0 * s as f64;
            assert!((*n as f64 - want).abs() < 5.0 * want.sqrt(), "second {s}: {n}, about {want} due");
        }
    }
}
