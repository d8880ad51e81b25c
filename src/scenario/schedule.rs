//! `[load.schedule]`: a target rate that changes over the load, a ramp or steps, in place
//! of `load.rate`. Its times count from the start of the load, warm-up included, as the
//! faults' `at` does; events are spaced as `load.arrival` says, at the rate of the moment.

use loadgen::Shape;
use pipeline::config::{Problems, opt_duration};
use serde::Deserialize;
use std::time::Duration;

/// Which shape of schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// From `from` to `to` events per second, linearly over `over`, then `to` to the end.
    Ramp,
    /// Each of `rates` for `every`, in order; the last one holds to the end.
    Step,
}

/// `[load.schedule]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    pub kind: ScheduleKind,
    /// `ramp`: the rate at the start, events per second.
    pub from: Option<f64>,
    /// `ramp`: the rate at the end of `over`, and after it.
    pub to: Option<f64>,
    /// `ramp`: how long the rate takes to go from `from` to `to`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub over: Option<Duration>,
    /// `step`: the rates, events per second, in order.
    pub rates: Option<Vec<f64>>,
    /// `step`: how long each rate holds (the last one: to the end).
    #[serde(default, deserialize_with = "opt_duration")]
    pub every: Option<Duration>,
}

const TABLE: &str = "load.schedule";

impl ScheduleSection {
    /// The shape the load generator follows. Only for a section that validated.
    pub fn shape(&self) -> Shape {
        let secs = |d: Option<Duration>| d.unwrap_or(Duration::from_secs(1)).as_secs_f64();
        match self.kind {
            ScheduleKind::Ramp => Shape::Ramp {
                from: self.from.unwrap_or_default(),
                to: self.to.unwrap_or_default(),
                over_s: secs(self.over),
            },
            ScheduleKind::Step => {
                Shape::Step { rates: self.rates.clone().unwrap_or_default(), every_s: secs(self.every) }
            }
        }
    }

    pub(super) fn validate(&self, p: &mut Problems) {
        let (takes, other): (&[&str], &[(&str, bool)]) = match self.kind {
            ScheduleKind::Ramp => {
                (&["from", "to", "over"], &[("rates", self.rates.is_some()), ("every", self.every.is_some())])
            }
            ScheduleKind::Step => (
                &["rates", "every"],
                &[("from", self.from.is_some()), ("to", self.to.is_some()), ("over", self.over.is_some())],
            ),
        };
        let kind = match self.kind {
            ScheduleKind::Ramp => "ramp",
            ScheduleKind::Step => "step",
        };
        for (key, given) in other {
            if *given {
                p.bad(
                    TABLE,
                    None,
                    key,
                    format!("is not a setting of a {kind} schedule (it takes {})", takes.join(", ")),
                );
            }
        }
        let rate_ok = |r: f64| r.is_finite() && (0.0..=10_000_000.0).contains(&r);
        let mut rate = |key: &str, r: Option<f64>| match r {
            None => p.bad(TABLE, None, key, format!("missing: a {kind} schedule needs {}", takes.join(", "))),
            Some(r) if !rate_ok(r) => {
                p.bad(TABLE, None, key, format!("must be 0 to 10000000 events per second, not {r}"));
            }
            Some(_) => {}
        };
        match self.kind {
            ScheduleKind::Ramp => {
                rate("from", self.from);
                rate("to", self.to);
                if self.from.is_some_and(|f| f <= 0.0) && self.to.is_some_and(|t| t <= 0.0) {
                    p.bad(TABLE, None, "to", "a ramp from 0 to 0 sends nothing");
                }
                length(p, "over", self.over, kind, takes);
            }
            ScheduleKind::Step => {
                match &self.rates {
                    None => p.bad(TABLE, None, "rates", "missing: a step schedule needs rates, every"),
                    Some(r) if r.is_empty() || r.len() > 1000 => {
                        p.bad(TABLE, None, "rates", format!("must list 1 to 1000 rates, not {}", r.len()));
                    }
                    Some(r) if !r.iter().all(|r| rate_ok(*r)) => {
                        p.bad(TABLE, None, "rates", "each must be 0 to 10000000 events per second");
                    }
                    Some(r) if r.iter().all(|r| *r <= 0.0) => {
                        p.bad(TABLE, None, "rates", "every rate is 0: nothing would be sent")
                    }
                    Some(_) => {}
                }
                length(p, "every", self.every, kind, takes);
            }
        }
    }
}

/// A ramp's `over` or a step's `every`: given, and longer than zero.
fn length(p: &mut Problems, key: &str, d: Option<Duration>, kind: &str, takes: &[&str]) {
    match d {
        None => p.bad(TABLE, None, key, format!("missing: a {kind} schedule needs {}", takes.join(", "))),
        Some(d) if d.is_zero() => p.bad(TABLE, None, key, "must be longer than zero"),
        Some(_) => {}
    }
}
