//! What a fault cost, read off the end-to-end interval log: how long after the fault the
//! per-second p99 was back under a bound.

use crate::hlog::{Interval, counts_quantile_ms, merge_counts};

/// The p99 of one interval, in ms.
fn p99(i: &Interval) -> f64 {
    counts_quantile_ms(&merge_counts([i]), 0.99)
}

/// Seconds from `ended_s` until the per-second p99 was back under `bound_ms` for good: the
/// end of the last second over the bound (of those after the fault began, and before the
/// first second under it that starts after the fault ended), less `ended_s`; 0 when no
/// second was over it. `None` when no second after the fault's end was under the bound.
/// Times are seconds on the intervals' clock (`start_s`).
pub fn recovery_s(intervals: &[Interval], began_s: f64, ended_s: f64, bound_ms: f64) -> Option<f64> {
    let after: Vec<&Interval> =
        intervals.iter().filter(|i| !i.is_empty() && i.start_s + i.length_s > began_s).collect();
    let ok = after.iter().position(|i| i.start_s >= ended_s && p99(i) <= bound_ms)?;
    let last_bad = after[..ok].iter().rev().find(|i| p99(i) > bound_ms);
    Some(last_bad.map_or(0.0, |i| (i.start_s + i.length_s - ended_s).max(0.0)))
}

/// Twice the p99 of the seconds before `before_s`: the bound recovery is measured against
/// when the scenario sets no end-to-end p99 objective. `None` without such seconds.
pub fn baseline_bound_ms(intervals: &[Interval], before_s: f64) -> Option<f64> {
    let before: Vec<&Interval> = intervals.iter().filter(|i| i.start_s + i.length_s <= before_s).collect();
    let counts = merge_counts(before);
    (!counts.is_empty()).then(|| 2.0 * counts_quantile_ms(&counts, 0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One second starting at `start_s` whose every value is `ms`.
    fn second(start_s: f64, ms: u32) -> Interval {
        Interval { start_s, length_s: 1.0, counts: vec![(ms * 1_000, 100)] }
    }

    #[test]
    fn recovery_runs_from_the_end_of_the_fault_to_the_end_of_the_last_slow_second() {
        let log: Vec<Interval> =
            [5, 5, 5, 80, 90, 70, 5, 5].iter().enumerate().map(|(s, ms)| second(s as f64, *ms)).collect();
        // A fault from 3.0 to 3.5 s: seconds 3, 4 and 5 are over 50 ms, second 6 is not.
        assert_eq!(recovery_s(&log, 3.0, 3.5, 50.0), Some(2.5));
        // Nothing over the bound after the fault: recovered at once.
        assert_eq!(recovery_s(&log, 6.2, 6.4, 50.0), Some(0.0));
        // Never back under it.
        assert_eq!(recovery_s(&log, 3.0, 3.5, 1.0), None);
        // A slow second after a fast one, both after the end, counts: the first fast one
        // after the end is where the scan stops.
        let bumpy: Vec<Interval> = [5, 80, 5, 80, 5].iter().enumerate().map(|(s, ms)| second(s as f64, *ms)).collect();
        assert_eq!(recovery_s(&bumpy, 1.0, 1.0, 50.0), Some(1.0));
    }

    #[test]
    fn the_baseline_bound_is_twice_the_p99_before_the_fault() {
        let log: Vec<Interval> = [4, 5, 6, 90].iter().enumerate().map(|(s, ms)| second(s as f64, *ms)).collect();
        assert_eq!(baseline_bound_ms(&log, 3.0), Some(12.0));
        assert_eq!(baseline_bound_ms(&log, 0.5), None);
    }
}
