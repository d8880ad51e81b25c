//! The open-loop driver: sleeps until each event's intended time and hands it to the
//! source. A slow source makes sends late (recorded as schedule lag) and the next ones
//! burst to catch up; it never moves the intended times, which is what latency counts from.

use crate::keys::{KeyDist, Keys};
use crate::payload::Payloads;
use crate::schedule::Schedule;
use probes::LatencyRecorder;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Time as the driver sees it, so tests can drive a virtual clock.
pub trait Clock {
    /// Nanoseconds since the Unix epoch.
    fn now_ns(&self) -> u64;
    /// Returns at `ns` or later.
    fn sleep_until_ns(&self, ns: u64);
}

/// The process clock ([`probes::now_ns`]) with thread sleeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        probes::now_ns()
    }

    fn sleep_until_ns(&self, ns: u64) {
        let now = probes::now_ns();
        if ns > now {
            std::thread::sleep(Duration::from_nanos(ns - now));
        }
    }
}

/// One event handed to the source.
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    pub id: u64,
    pub session: u64,
    pub intended_ns: u64,
    pub payload: &'a str,
}

/// What the driver did.
#[derive(Debug)]
pub struct DriveReport {
    /// Events the source accepted (warm-up included).
    pub sent: u64,
    /// Of those, sent during warm-up.
    pub warmup_sent: u64,
    /// Actual minus intended send time, for events after warm-up.
    pub schedule_lag: LatencyRecorder,
    /// Whether the run was stopped before the schedule ended.
    pub stopped_early: bool,
}

/// Drives one schedule into a source.
#[derive(Debug)]
pub struct Driver {
    pub schedule: Schedule,
    pub keys: Keys,
    pub payloads: Payloads,
    /// Epoch ns at which offset 0 of the schedule is due.
    pub start_ns: u64,
    /// Epoch ns at which warm-up ends and statistics begin.
    pub measure_from_ns: u64,
    /// The largest schedule lag (ns) since a reader last swapped it to 0, for live views.
    pub lag_live: Arc<AtomicU64>,
}

impl Driver {
    /// A driver for `schedule` with session keys from `dist` over `sessions`.
    pub fn new(schedule: Schedule, dist: KeyDist, sessions: u64, payload_bytes: usize, seed: u64) -> Self {
        Self {
            schedule,
            keys: Keys::new(dist, sessions, seed ^ 0x5eed),
            payloads: Payloads::new(payload_bytes, seed),
            start_ns: 0,
            measure_from_ns: 0,
            lag_live: Arc::default(),
        }
    }

    /// Runs the schedule to its end (or until `stop`), calling `source` for each event at
    /// its intended time. `sent` is bumped after each accepted event, for live progress.
    /// The first error from the source ends the run and is returned.
    pub fn run<C, F, E>(
        mut self,
        clock: &C,
        stop: &AtomicBool,
        sent: &AtomicU64,
        mut source: F,
    ) -> Result<DriveReport, E>
    where
        C: Clock,
        F: FnMut(&Send<'_>) -> Result<(), E>,
    {
        let mut report = DriveReport {
            sent: 0,
            warmup_sent: 0,
            schedule_lag: LatencyRecorder::new("schedule_lag", self.measure_from_ns, Duration::from_secs(1)),
            stopped_early: false,
        };
        for (id, offset) in (0u64..).zip(self.schedule.by_ref()) {
            if stop.load(Ordering::Relaxed) {
                report.stopped_early = true;
                break;
            }
            let intended_ns = self.start_ns + offset;
            clock.sleep_until_ns(intended_ns);
            let event = Send { id, session: self.keys.next_session(), intended_ns, payload: self.payloads.get(id) };
            let actual = clock.now_ns();
            source(&event)?;
            self.lag_live.fetch_max(actual.saturating_sub(intended_ns), Ordering::Relaxed);
            if intended_ns >= self.measure_from_ns {
                report.schedule_lag.record(actual.saturating_sub(intended_ns), actual);
            } else {
                report.warmup_sent += 1;
            }
            report.sent += 1;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        report.schedule_lag.flush();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Arrival;
    use std::cell::Cell;
    use std::convert::Infallible;

    /// Time moves only when someone sleeps or works.
    struct VirtualClock(Cell<u64>);

    impl Clock for VirtualClock {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
        fn sleep_until_ns(&self, ns: u64) {
            self.0.set(self.0.get().max(ns));
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_stalled_source_does_not_move_intended_times() {
        let clock = VirtualClock(Cell::new(0));
        let schedule = Schedule::constant(Arrival::Constant, 1000.0, Duration::from_millis(100), 0);
        let mut driver = Driver::new(schedule, KeyDist::Uniform, 4, 8, 1);
        driver.start_ns = 10 * MS;
        driver.measure_from_ns = 10 * MS;
        let mut seen = Vec::new();
        let report = driver
            .run(&clock, &AtomicBool::new(false), &AtomicU64::new(0), |e: &Send<'_>| {
                seen.push((e.id, e.intended_ns, clock.now_ns()));
                // The source stalls for 50 ms on event 20.
                if e.id == 20 {
                    clock.0.set(clock.0.get() + 50 * MS);
                }
                Ok::<_, Infallible>(())
            })
            .unwrap();
        assert_eq!(report.sent, 100);
        // Intended times follow the schedule regardless of the stall.
        for (i, (id, intended, _)) in seen.iter().enumerate() {
            assert_eq!(*id, i as u64);
            assert_eq!(*intended, 10 * MS + i as u64 * MS);
        }
        // Events due during the stall go out late, all at once, and the lag says by how much.
        assert_eq!(seen[21].2, 10 * MS + 70 * MS);
        assert_eq!(seen[21].2 - seen[21].1, 49 * MS);
        assert_eq!(seen[70].2, seen[70].1, "caught up once the stall is over");
        let lag = report.schedule_lag.summary();
        assert_eq!(lag.count, 100);
        assert!((lag.max_ms - 49.0).abs() < 0.1, "{lag:?}");
    }

    #[test]
    fn warmup_is_sent_but_not_measured_and_stop_ends_the_run() {
        let clock = VirtualClock(Cell::new(0));
        let schedule = Schedule::constant(Arrival::Constant, 100.0, Duration::from_secs(1), 0);
        let mut driver = Driver::new(schedule, KeyDist::Uniform, 4, 8, 1);
        driver.measure_from_ns = 500 * MS;
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let report = driver
            .run(&clock, &stop, &sent, |e: &Send<'_>| {
                if e.id == 79 {
                    stop.store(true, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(())
            })
            .unwrap();
        assert_eq!(report.sent, 80);
        assert_eq!(sent.load(Ordering::Relaxed), 80);
        assert_eq!(report.warmup_sent, 50);
        assert_eq!(report.schedule_lag.summary().count, 30);
        assert!(report.stopped_early);
    }

    #[test]
    fn a_source_error_ends_the_run() {
        let clock = VirtualClock(Cell::new(0));
        let schedule = Schedule::constant(Arrival::Constant, 100.0, Duration::from_secs(1), 0);
        let driver = Driver::new(schedule, KeyDist::Uniform, 4, 8, 1);
        let err =
            driver
                .run(&clock, &AtomicBool::new(false), &AtomicU64::new(0), |e: &Send<'_>| {
                    if e.id == 3 { Err("disk full") } else { Ok(()) }
                })
                .unwrap_err();
        assert_eq!(err, "disk full");
    }

    #[test]
    fn ramp_and_step_schedules_send_at_their_rates_on_a_virtual_clock() {
        use crate::Shape;
        let shapes = [
            (Shape::Ramp { from: 100.0, to: 300.0, over_s: 2.0 }, vec![150, 250, 300]),
            (Shape::Step { rates: vec![50.0, 200.0], every_s: 1.0 }, vec![50, 200, 200]),
        ];
        for (shape, want) in shapes {
            let clock = VirtualClock(Cell::new(0));
            let schedule = Schedule::new(Arrival::Constant, shape.clone(), Duration::from_secs(3), 0);
            let driver = Driver::new(schedule, KeyDist::Uniform, 4, 8, 1);
            let mut per_second = vec![0; 3];
            let report = driver
                .run(&clock, &AtomicBool::new(false), &AtomicU64::new(0), |e: &Send<'_>| {
                    assert_eq!(clock.now_ns(), e.intended_ns, "sent when due");
                    per_second[(e.intended_ns / 1_000_000_000) as usize] += 1;
                    Ok::<_, Infallible>(())
                })
                .unwrap();
            assert_eq!(per_second, want, "{shape:?}");
            assert_eq!(report.sent, want.iter().sum::<u64>());
            assert_eq!(report.schedule_lag.summary().max_ms, 0.0);
        }
    }
}
