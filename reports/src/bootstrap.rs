//! How much a latency statistic moves by chance, estimated from the run's own intervals:
//! a moving-block bootstrap over the one-second histograms of the baseline and of the
//! candidate gives a confidence interval for the difference of the statistic.
//!
//! Blocks of consecutive intervals are resampled (not single intervals) because a second's
//! latency is not independent of the next one (queues drain slowly). Resampling works on
//! the recorded values of each interval, so a resample's statistic comes from merged
//! counts, exactly as the report's figures do.

use crate::hlog::{Series, Stat};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One run's intervals in a form cheap to resample: per interval its (value index, count)
/// pairs over one shared, sorted table of distinct values.
#[derive(Debug)]
struct Compact {
    intervals: Vec<Vec<(u32, u64)>>,
}

/// The difference `candidate - baseline` of one statistic, with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub baseline: f64,
    pub candidate: f64,
    /// `candidate - baseline` on all the data.
    pub delta: f64,
    /// Bounds of the confidence interval of `delta`.
    pub lower: f64,
    pub upper: f64,
}

impl Difference {
    /// Half the width of the confidence interval: the noise margin.
    pub fn margin(&self) -> f64 {
        (self.upper - self.lower) / 2.0
    }
}

/// Settings of the estimate.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub resamples: usize,
    /// Two-sided confidence level (0.95).
    pub confidence: f64,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self { resamples: 1000, confidence: 0.95, seed: 0x7a11_6a7e }
    }
}

impl Bootstrap {
    /// The difference of `stat` between two runs' intervals, or `None` when either has no
    /// data.
    pub fn difference(&self, baseline: &Series, candidate: &Series, stat: Stat) -> Option<Difference> {
        let mut values: Vec<u64> = Vec::new();
        for s in [baseline, candidate] {
            for i in &s.intervals {
                values.extend(i.hist.iter_recorded().map(|v| v.value_iterated_to()));
            }
        }
        values.sort_unstable();
        values.dedup();
        let (b, c) = (compact(baseline, &values), compact(candidate, &values));
        if b.intervals.is_empty() || c.intervals.is_empty() {
            return None;
        }
        let all = |x: &Compact| (0..x.intervals.len()).collect::<Vec<_>>();
        let mut counts = vec![0u64; values.len()];
        let base = statistic(&b, &all(&b), &values, stat, &mut counts);
        let cand = statistic(&c, &all(&c), &values, stat, &mut counts);
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut deltas: Vec<f64> = (0..self.resamples.max(1))
            .map(|_| {
                let (pb, pc) = (resample(&mut rng, b.intervals.len()), resample(&mut rng, c.intervals.len()));
                statistic(&c, &pc, &values, stat, &mut counts) - statistic(&b, &pb, &values, stat, &mut counts)
            })
            .collect();
        deltas.sort_unstable_by(f64::total_cmp);
        let tail = (1.0 - self.confidence) / 2.0;
        let at = |q: f64| deltas[((q * (deltas.len() - 1) as f64).round() as usize).min(deltas.len() - 1)];
        Some(Difference { baseline: base, candidate: cand, delta: cand - base, lower: at(tail), upper: at(1.0 - tail) })
    }
}

fn compact(s: &Series, values: &[u64]) -> Compact {
    let intervals = s
        .intervals
        .iter()
        .filter(|i| !i.hist.is_empty())
        .map(|i| {
            i.hist
                .iter_recorded()
                .map(|v| {
                    let idx = values.binary_search(&v.value_iterated_to()).unwrap_or_default();
                    (u32::try_from(idx).unwrap_or(u32::MAX), v.count_at_value())
                })
                .collect()
        })
        .collect();
    Compact { intervals }
}

/// Interval indexes of one moving-block resample of `n` intervals.
fn resample(rng: &mut SmallRng, n: usize) -> Vec<usize> {
    let block = ((n as f64).cbrt().ceil() as usize).clamp(1, n);
    let mut picks = Vec::with_capacity(n + block);
    while picks.len() < n {
        let start = rng.random_range(0..=n - block);
        picks.extend(start..start + block);
    }
    picks.truncate(n);
    picks
}

/// `stat` (ms) of the merge of intervals `picks`.
fn statistic(c: &Compact, picks: &[usize], values: &[u64], stat: Stat, counts: &mut [u64]) -> f64 {
    counts.fill(0);
    let mut total = 0u64;
    for &p in picks {
        for &(idx, n) in &c.intervals[p] {
            counts[idx as usize] += n;
            total += n;
        }
    }
    if total == 0 {
        return 0.0;
    }
    let ms = |v: u64| v as f64 / 1_000.0;
    match stat {
        Stat::Mean => ms(1) * counts.iter().zip(values).map(|(&n, &v)| n as f64 * v as f64).sum::<f64>() / total as f64,
        Stat::Min => counts.iter().position(|&n| n > 0).map_or(0.0, |i| ms(values[i])),
        Stat::Quantile(q) => {
            // The same rule as HdrHistogram's value_at_quantile: the smallest value with at
            // least ceil(q * total) values at or below it.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0u64;
            for (i, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return ms(values[i]);
                }
            }
            ms(values[values.len() - 1])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlog::Interval;
    use rand_distr::{Distribution, LogNormal};

    /// `seconds` one-second intervals of 500 lognormal latencies around `median_ms`, each
    /// second's level wandering a little (as real runs do).
    fn synthetic(seed: u64, seconds: usize, median_ms: f64) -> Series {
        let mut rng = SmallRng::seed_from_u64(seed);
        let intervals = (0..seconds)
            .map(|s| {
                let level = 1.0 + 0.1 * (rng.random::<f64>() - 0.5);
                let d = LogNormal::new((median_ms * level * 1000.0).ln(), 0.4).unwrap();
                let mut hist = probes::recorder::new_histogram();
                for _ in 0..500 {
                    hist.saturating_record(d.sample(&mut rng) as u64);
                }
                Interval { start_s: s as f64, length_s: 1.0, hist }
            })
            .collect();
        Series { intervals }
    }

    #[test]
    fn the_full_sample_statistic_matches_hdrhistogram() {
        let s = synthetic(1, 20, 10.0);
        let total = s.total();
        let d = Bootstrap::default().difference(&s, &s, Stat::Quantile(0.99)).unwrap();
        assert!((d.baseline - crate::hlog::quantile_ms(&total, 0.99)).abs() < 1e-9, "{d:?}");
        let d = Bootstrap::default().difference(&s, &s, Stat::Mean).unwrap();
        assert!((d.baseline - total.mean() / 1000.0).abs() < 0.01, "{d:?}");
    }

    #[test]
    fn the_same_data_is_no_regression() {
        let s = synthetic(2, 30, 10.0);
        let d = Bootstrap::default().difference(&s, &s, Stat::Quantile(0.99)).unwrap();
        assert_eq!(d.delta, 0.0);
        assert!(d.lower <= 0.0 && d.upper >= 0.0, "{d:?}");
    }

    /// How often `shift` (candidate median over baseline median) is called worse, over 40
    /// pairs of independent 30-second samples.
    fn flagged(shift: f64) -> usize {
        (0..40)
            .filter(|seed| {
                let (a, b) = (synthetic(1000 + seed, 30, 10.0), synthetic(5000 + seed, 30, 10.0 * shift));
                let d = Bootstrap::default().difference(&a, &b, Stat::Quantile(0.99)).unwrap();
                assert!(d.margin() > 0.0);
                d.lower > 0.0
            })
            .count()
    }

    #[test]
    fn another_sample_of_the_same_system_is_rarely_called_worse() {
        // A one-sided 2.5% error rate expects one in 40; these seeds give exactly one.
        assert!(flagged(1.0) <= 2, "{}", flagged(1.0));
    }

    #[test]
    fn a_ten_percent_slower_system_is_always_called_worse() {
        assert_eq!(flagged(1.1), 40);
    }

    #[test]
    fn a_slower_system_is_outside_the_margin() {
        let (a, b) = (synthetic(3, 30, 10.0), synthetic(4, 30, 12.0));
        let d = Bootstrap::default().difference(&a, &b, Stat::Quantile(0.99)).unwrap();
        // Lognormal with sigma 0.4: p99 = median * e^(2.326 * 0.4) ~ 2.54 * median.
        assert!((d.delta - 2.54 * 2.0).abs() < 1.5, "{d:?}");
        assert!(d.lower > 0.0, "{d:?}");
        let faster = Bootstrap::default().difference(&b, &a, Stat::Quantile(0.99)).unwrap();
        assert!(faster.upper < 0.0, "{faster:?}");
    }

    #[test]
    fn resamples_are_blocks_of_the_right_length() {
        let mut rng = SmallRng::seed_from_u64(0);
        let picks = resample(&mut rng, 27);
        assert_eq!(picks.len(), 27);
        assert!(picks.chunks(3).all(|c| c[1] == c[0] + 1 && c[2] == c[1] + 1), "{picks:?}");
        assert_eq!(resample(&mut rng, 1), [0]);
    }
}
