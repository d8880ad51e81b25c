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

/// One run's intervals in a form cheap to resample: per interval, how many of its values
/// are at or below each of the distinct values both runs recorded (a row of cumulative
/// counts), its total, sum and smallest value. A resample's quantile is then a binary
/// search over the shared values, each step summing one column over the picked intervals.
#[derive(Debug)]
struct Prepared {
    /// `cum[i * width + j]`: values of interval `i` at or below `values[j]`.
    cum: Vec<u32>,
    width: usize,
    totals: Vec<u64>,
    sums: Vec<f64>,
    mins: Vec<usize>,
}

impl Prepared {
    fn len(&self) -> usize {
        self.totals.len()
    }
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
                values.extend(i.counts.iter().map(|c| u64::from(c.0)));
            }
        }
        values.sort_unstable();
        values.dedup();
        let (b, c) = (prepare(baseline, &values), prepare(candidate, &values));
        if b.len() == 0 || c.len() == 0 {
            return None;
        }
        let all = |x: &Prepared| (0..x.len()).collect::<Vec<_>>();
        let base = statistic(&b, &all(&b), &values, stat);
        let cand = statistic(&c, &all(&c), &values, stat);
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut deltas: Vec<f64> = (0..self.resamples.max(1))
            .map(|_| {
                let (pb, pc) = (resample(&mut rng, b.len()), resample(&mut rng, c.len()));
                statistic(&c, &pc, &values, stat) - statistic(&b, &pb, &values, stat)
            })
            .collect();
        deltas.sort_unstable_by(f64::total_cmp);
        let tail = (1.0 - self.confidence) / 2.0;
        let at = |q: f64| deltas[((q * (deltas.len() - 1) as f64).round() as usize).min(deltas.len() - 1)];
        Some(Difference { baseline: base, candidate: cand, delta: cand - base, lower: at(tail), upper: at(1.0 - tail) })
    }
}

fn prepare(s: &Series, values: &[u64]) -> Prepared {
    let width = values.len();
    let intervals: Vec<_> = s.intervals.iter().filter(|i| !i.is_empty()).collect();
    let mut p = Prepared {
        cum: vec![0; intervals.len() * width],
        width,
        totals: Vec::with_capacity(intervals.len()),
        sums: Vec::with_capacity(intervals.len()),
        mins: Vec::with_capacity(intervals.len()),
    };
    for (row, i) in p.cum.chunks_mut(width.max(1)).zip(&intervals) {
        let (mut j, mut running, mut sum) = (0usize, 0u64, 0f64);
        for &(v, n) in &i.counts {
            let at = values.binary_search(&u64::from(v)).unwrap_or_default();
            row[j..at].fill(u32::try_from(running).unwrap_or(u32::MAX));
            running += u64::from(n);
            sum += f64::from(v) * f64::from(n);
            j = at;
        }
        row[j..].fill(u32::try_from(running).unwrap_or(u32::MAX));
        p.totals.push(running);
        p.sums.push(sum);
        p.mins.push(i.counts.first().map_or(0, |c| values.binary_search(&u64::from(c.0)).unwrap_or_default()));
    }
    p
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
fn statistic(p: &Prepared, picks: &[usize], values: &[u64], stat: Stat) -> f64 {
    let total: u64 = picks.iter().map(|&i| p.totals[i]).sum();
    if total == 0 {
        return 0.0;
    }
    let ms = |v: u64| v as f64 / 1_000.0;
    match stat {
        Stat::Mean => picks.iter().map(|&i| p.sums[i]).sum::<f64>() / total as f64 / 1_000.0,
        Stat::Min => picks.iter().map(|&i| p.mins[i]).min().map_or(0.0, |j| ms(values[j])),
        Stat::Quantile(q) => {
            // HdrHistogram's rule: the smallest value with at least ceil(q * total) values at
            // or below it. Binary search over the values; each probe sums one column.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let at_or_below = |j: usize| picks.iter().map(|&i| u64::from(p.cum[i * p.width + j])).sum::<u64>();
            let (mut lo, mut hi) = (0usize, p.width - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if at_or_below(mid) >= rank { hi = mid } else { lo = mid + 1 }
            }
            ms(values[lo])
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
                Interval::of(s as f64, 1.0, &hist)
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
        // Buckets are kept at their highest equivalent value: within 0.1% of the mean.
        assert!((d.baseline - total.mean() / 1000.0).abs() < 0.001 * d.baseline, "{d:?}");
        let d = Bootstrap::default().difference(&s, &s, Stat::Min).unwrap();
        assert!((d.baseline - total.min() as f64 / 1000.0).abs() < 0.01, "{d:?}");
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
