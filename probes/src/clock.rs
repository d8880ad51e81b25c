//! The clock stamps are taken with: nanoseconds since the Unix epoch, read from a monotonic
//! clock anchored once per process to the wall clock, so stamps never run backwards within
//! a process and stay comparable with other processes' stamps (up to their clock skew).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();

fn anchor() -> &'static (Instant, u64) {
    ANCHOR.get_or_init(|| anchored(0))
}

fn anchored(skew_ns: i64) -> (Instant, u64) {
    let wall =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    (Instant::now(), wall.saturating_add_signed(skew_ns))
}

/// Anchors this process's clock `skew_ns` away from the wall clock, as a host whose clock
/// is off by that much would read it (testing clock-offset measurement). Only before the
/// first stamp; whether it took.
pub fn anchor_skewed(skew_ns: i64) -> bool {
    ANCHOR.set(anchored(skew_ns)).is_ok()
}

/// Nanoseconds since the Unix epoch, monotonic within this process.
#[inline]
pub fn now_ns() -> u64 {
    let (at, wall) = anchor();
    wall + u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX - wall)
}

/// The [`Instant`] that corresponds to an epoch-nanosecond stamp of this process's clock
/// (stamps before the anchor map to the anchor).
pub fn instant_at(ns: u64) -> Instant {
    let (at, wall) = anchor();
    *at + std::time::Duration::from_nanos(ns.saturating_sub(*wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_runs_backwards_and_tracks_the_wall_clock() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        // Anchored to the wall clock: within a second of it.
        assert!(wall.abs_diff(b) < 1_000_000_000, "{wall} vs {b}");
    }

    #[test]
    fn a_skewed_anchor_is_refused_once_the_clock_has_stamped() {
        let _ = now_ns();
        assert!(!anchor_skewed(40_000_000));
    }

    #[test]
    fn instant_at_inverts_now() {
        let ns = now_ns() + 5_000_000;
        let i = instant_at(ns);
        let back = instant_at(ns - 5_000_000);
        assert_eq!(i - back, std::time::Duration::from_millis(5));
    }
}
