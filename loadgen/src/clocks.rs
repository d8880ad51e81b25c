//! Clock offsets between hosts, measured rather than assumed: a latency sent on one host
//! and received on another is only as right as the two clocks agree.
//!
//! The method is NTP's four-timestamp exchange. The coordinator sends at `t1` (its clock),
//! the worker receives at `t2` and answers at `t3` (its clock), the coordinator receives at
//! `t4`. Whatever the delays each way, the worker's offset (its clock minus the
//! coordinator's) lies within `θ ± δ/2`, where `θ = ((t2 - t1) + (t3 - t4)) / 2` and
//! `δ = (t4 - t1) - (t3 - t2)` is the round trip less the worker's own time. Every
//! exchange gives such an interval; the true offset is in all of them, so the estimate is
//! the intersection of the lowest-delay ones (the tightest), its midpoint the offset and
//! its half-width the bound. A broker's `LogAppendTime` gives another interval of the same
//! kind ([`append_time_bound`]), intersected the same way.

use serde::{Deserialize, Serialize};

/// One exchange's four timestamps, nanoseconds: `t1`, `t4` on the coordinator's clock,
/// `t2`, `t3` on the worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub t1: i64,
    pub t2: i64,
    pub t3: i64,
    pub t4: i64,
}

impl Exchange {
    /// The round trip less the worker's time between receiving and answering.
    pub fn delay(&self) -> i64 {
        (self.t4 - self.t1) - (self.t3 - self.t2)
    }

    /// Where the worker's offset lies, whatever the delays each way were.
    pub fn interval(&self) -> Interval {
        // t2 = t1 + there + offset and t4 = t3 - offset + back, both ways at least 0: the
        // offset is at most t2 - t1 and at least t3 - t4 (θ ± δ/2, without halving).
        let lo = self.t3 - self.t4;
        let hi = self.t2 - self.t1;
        Interval { lo: lo.min(hi), hi: hi.max(lo) }
    }
}

/// A closed range of offsets, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: i64,
    pub hi: i64,
}

impl Interval {
    /// The offsets in both, or `None` when they do not meet.
    pub fn intersect(self, other: Interval) -> Option<Interval> {
        let (lo, hi) = (self.lo.max(other.lo), self.hi.min(other.hi));
        (lo <= hi).then_some(Interval { lo, hi })
    }

    pub fn mid(self) -> i64 {
        self.lo + (self.hi - self.lo) / 2
    }

    /// Half the width: how far the midpoint can be from the truth.
    pub fn half_width(self) -> i64 {
        (self.hi - self.lo + 1) / 2
    }

    pub fn contains(self, x: i64) -> bool {
        (self.lo..=self.hi).contains(&x)
    }

    /// The difference of two offsets known to lie in these intervals: with A - B in `self`
    /// and C - B in `other`, A - C lies in the result (two hosts' offsets from one broker
    /// give their offset from each other).
    pub fn minus(self, other: Interval) -> Interval {
        Interval { lo: self.lo - other.hi, hi: self.hi - other.lo }
    }
}

/// A worker's clock offset from the coordinator, as `result.json` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The worker's clock minus the coordinator's, nanoseconds.
    pub offset_ns: i64,
    /// The true offset is within `offset_ns ± bound_ns`.
    pub bound_ns: i64,
    /// How many exchanges were made, and how many of the lowest-delay ones were kept.
    pub samples: usize,
    pub kept: usize,
    /// `ntp` (four-timestamp exchanges), or `ntp+log_append_time` when a broker's append
    /// times narrowed it.
    pub method: String,
}

impl Estimate {
    pub fn interval(&self) -> Interval {
        Interval { lo: self.offset_ns - self.bound_ns, hi: self.offset_ns + self.bound_ns }
    }

    /// Narrowed by another interval known to hold the offset (a broker's append times);
    /// unchanged if they do not meet (one of the clocks moved between the measurements).
    pub fn narrowed(&self, by: Interval, method: &str) -> Estimate {
        match self.interval().intersect(by) {
            Some(i) => Estimate { offset_ns: i.mid(), bound_ns: i.half_width(), method: method.into(), ..self.clone() },
            None => self.clone(),
        }
    }
}

/// The estimate from `exchanges`: the intersection of the `keep` lowest-delay ones. Should
/// they not meet (a clock stepped while measuring), the lowest-delay one alone.
pub fn estimate(exchanges: &[Exchange], keep: usize) -> Option<Estimate> {
    let mut by_delay: Vec<&Exchange> = exchanges.iter().filter(|e| e.delay() >= 0).collect();
    by_delay.sort_by_key(|e| e.delay());
    let best = by_delay.first()?.interval();
    let kept = keep.clamp(1, by_delay.len());
    let interval = by_delay[..kept].iter().try_fold(best, |acc, e| acc.intersect(e.interval())).unwrap_or(best);
    Some(Estimate {
        offset_ns: interval.mid(),
        bound_ns: interval.half_width(),
        samples: exchanges.len(),
        kept,
        method: "ntp".into(),
    })
}

/// Where a worker's offset from a broker lies, from one record it produced to a topic with
/// `message.timestamp.type = LogAppendTime`: the append (broker clock, milliseconds)
/// happened after the worker sent (`sent_ns`) and before it had the acknowledgement
/// (`acked_ns`), both on the worker's clock. The offset is the worker's clock minus the
/// broker's.
pub fn append_time_bound(sent_ns: i64, append_ms: i64, acked_ns: i64) -> Interval {
    let append_lo = append_ms * 1_000_000;
    // The append time is truncated to the millisecond: it was up to 1 ms later.
    let append_hi = append_lo + 999_999;
    Interval { lo: sent_ns - append_hi, hi: acked_ns - append_lo }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const MS: i64 = 1_000_000;

    /// `n` exchanges with a worker whose clock is `offset` ahead, delays each way drawn
    /// from `base + exponential(mean)`, different each way (asymmetric), and a worker
    /// turnaround of up to 2 ms.
    fn exchanges(offset: i64, base: i64, mean: f64, n: usize, seed: u64) -> Vec<Exchange> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut exp = |m: f64| (-(1.0 - rng.random::<f64>()).ln() * m) as i64;
        let mut now = 1_700_000_000_000 * MS;
        (0..n)
            .map(|_| {
                let there = base + exp(mean);
                let back = base / 2 + exp(mean * 3.0);
                let turn = exp(0.5 * MS as f64).min(2 * MS);
                let t1 = now;
                let t2 = t1 + there + offset;
                let t3 = t2 + turn;
                let t4 = t3 - offset + back;
                now += 50 * MS;
                Exchange { t1, t2, t3, t4 }
            })
            .collect()
    }

    #[test]
    fn an_injected_offset_is_measured_within_its_own_bound() {
        for seed in 0..200 {
            let ex = exchanges(40 * MS, 2 * MS, 1.5 * MS as f64, 40, seed);
            let e = estimate(&ex, 8).unwrap();
            assert!(e.interval().contains(40 * MS), "seed {seed}: {e:?}");
            // Delays of a few milliseconds bound it to a few milliseconds.
            assert!(e.bound_ns < 4 * MS, "seed {seed}: {e:?}");
        }
    }

    #[test]
    fn keeping_the_lowest_delay_samples_narrows_the_bound() {
        let ex = exchanges(-7 * MS, 3 * MS, 4.0 * MS as f64, 60, 9);
        let one = estimate(&ex, 1).unwrap();
        let eight = estimate(&ex, 8).unwrap();
        assert!(eight.bound_ns <= one.bound_ns, "{eight:?} {one:?}");
        assert!(eight.interval().contains(-7 * MS) && one.interval().contains(-7 * MS));
        assert_eq!((eight.samples, eight.kept), (60, 8));
    }

    #[test]
    fn the_bound_is_half_the_best_round_trip_for_one_exchange() {
        // 10 ms there, 30 ms back, no turnaround, offset 0: θ = (10 - 30) / 2 = -10 ms,
        // δ = 40 ms, so the offset is within -10 ± 20 ms, and 0 is inside.
        let e = estimate(&[Exchange { t1: 0, t2: 10 * MS, t3: 10 * MS, t4: 40 * MS }], 4).unwrap();
        assert_eq!((e.offset_ns, e.bound_ns), (-10 * MS, 20 * MS));
    }

    #[test]
    fn no_usable_exchange_gives_no_estimate() {
        assert_eq!(estimate(&[], 4), None);
        // A negative delay: the timestamps are not of one exchange.
        assert_eq!(estimate(&[Exchange { t1: 0, t2: 0, t3: 100, t4: 10 }], 4), None);
    }

    #[test]
    fn a_brokers_append_time_bounds_the_offset_too() {
        // The worker's clock is 40 ms ahead of the broker's; the append happened 1.3 ms
        // after the send, the ack 0.8 ms after that.
        let sent = 1_700_000_000_000 * MS + 123_456;
        let append_true = sent - 40 * MS + 1_300_000;
        let append_ms = append_true.div_euclid(MS);
        let b = append_time_bound(sent, append_ms, sent + 2_100_000);
        assert!(b.contains(40 * MS), "{b:?}");
        assert!(b.hi - b.lo <= 2_100_000 + MS);
        let ntp = Estimate { offset_ns: 41 * MS, bound_ns: 3 * MS, samples: 10, kept: 4, method: "ntp".into() };
        let both = ntp.narrowed(b, "ntp+log_append_time");
        assert!(both.interval().contains(40 * MS) && both.bound_ns < ntp.bound_ns, "{both:?}");
        assert_eq!(both.method, "ntp+log_append_time");
        // Two hosts' bounds from one broker give theirs from each other.
        let worker = Interval { lo: 39 * MS, hi: 42 * MS };
        let coordinator = Interval { lo: -MS, hi: MS };
        assert_eq!(worker.minus(coordinator), Interval { lo: 38 * MS, hi: 43 * MS });
    }
}
