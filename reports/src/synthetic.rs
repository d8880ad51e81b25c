//! Synthetic run directories with known latency distributions, for the report's and the
//! gate's tests and for benchmarking `tailgate report` on large inputs. Nothing here comes
//! from a broker: every run written says so (`broker.kind = "synthetic"`).

use crate::result::{BrokerInfo, Counts, Machine, Objective, RunResult};
use crate::{END_TO_END_TAG, WARMUP_TAG};
use probes::hops::HopSummary;
use probes::{HopKind, LatencyRecorder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::path::Path;
use std::time::Duration;

/// The reference pipeline's path, as the synthetic runs record it.
pub const PATH: [(&str, HopKind); 9] = [
    ("source->connector", HopKind::Transit),
    ("connector", HopKind::Service),
    ("connector->agent", HopKind::Transit),
    ("agent", HopKind::Service),
    ("agent->streamjob", HopKind::Transit),
    ("streamjob", HopKind::Service),
    ("streamjob->gateway", HopKind::Transit),
    ("gateway", HopKind::Service),
    ("gateway->client", HopKind::Transit),
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub scenario: String,
    pub profile: String,
    pub rate: f64,
    pub warmup_s: u64,
    pub seconds: u64,
    /// Median of each transit hop, ms (service hops take a twentieth of it).
    pub transit_median_ms: f64,
    /// Lognormal sigma of every hop.
    pub sigma: f64,
    pub seed: u64,
    pub objectives: Vec<Objective>,
}

impl Spec {
    /// A run of `seconds` at `rate` whose transit hops have median `transit_median_ms`.
    pub fn new(profile: &str, seconds: u64, rate: f64, transit_median_ms: f64, seed: u64) -> Self {
        Self {
            scenario: "synthetic".into(),
            profile: profile.into(),
            rate,
            warmup_s: 2,
            seconds,
            transit_median_ms,
            sigma: 0.35,
            seed,
            objectives: vec![Objective { metric: "end_to_end.p99_ms".into(), max: Some(50.0), min: None }],
        }
    }
}

/// Writes a run directory for `spec` into `dir` and returns its result.
pub fn write_run(dir: &Path, spec: &Spec) -> std::io::Result<RunResult> {
    std::fs::create_dir_all(dir)?;
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let dist = |median: f64| LogNormal::new((median * 1e6).ln(), spec.sigma).map_err(std::io::Error::other);
    let transit = dist(spec.transit_median_ms)?;
    let service = dist(spec.transit_median_ms / 20.0)?;
    let base = 1_800_000_000_000_000_000u64;
    let measure_from = base + spec.warmup_s * 1_000_000_000;
    let interval = Duration::from_secs(1);
    let mut e2e = LatencyRecorder::new(END_TO_END_TAG, measure_from, interval);
    let mut warm = LatencyRecorder::new(WARMUP_TAG, base, interval);
    let mut lag = LatencyRecorder::new("schedule_lag", measure_from, interval);
    let mut hops: Vec<LatencyRecorder> =
        PATH.iter().map(|(n, _)| LatencyRecorder::new(n, measure_from, interval)).collect();
    let total_s = spec.warmup_s + spec.seconds;
    let events = (spec.rate * total_s as f64) as u64;
    let gap = 1e9 / spec.rate;
    let mut times = [0u64; PATH.len()];
    for i in 0..events {
        let at = base + (i as f64 * gap) as u64;
        let mut sum = 0u64;
        for (t, (_, kind)) in times.iter_mut().zip(PATH) {
            let d = if kind == HopKind::Transit { &transit } else { &service };
            *t = d.sample(&mut rng) as u64;
            sum += *t;
        }
        let received = at + sum;
        if at < measure_from {
            warm.record(sum, received);
            continue;
        }
        e2e.record(sum, received);
        lag.record(rng.random_range(1_000..50_000), at);
        for (h, t) in hops.iter_mut().zip(times) {
            h.record(t, received);
        }
    }
    let measured = e2e.summary().count;
    let mut result = RunResult {
        tailgate_version: env!("CARGO_PKG_VERSION").into(),
        mode: crate::result::MODE_RUN.into(),
        scenario: spec.scenario.clone(),
        profile: spec.profile.clone(),
        run_id: spec.seed,
        broker: BrokerInfo {
            kind: "synthetic".into(),
            version: "-".into(),
            bootstrap: "-".into(),
            storage: "none: generated lognormal latencies".into(),
            producer: Default::default(),
            consumer: Default::default(),
            partitions: 1,
            topic: Default::default(),
            stages: Default::default(),
            ..BrokerInfo::default()
        },
        started_at: "2027-01-15T08:00:00Z".into(),
        duration_s: spec.seconds as f64,
        warmup_s: spec.warmup_s as f64,
        target_rate: spec.rate,
        schedule: None,
        target_per_s: vec![spec.rate; (spec.warmup_s + spec.seconds) as usize],
        payload_bytes: 256,
        achieved_rate: measured as f64 / spec.seconds.max(1) as f64,
        counts: Counts { sent: events, delivered: events, warmup_sent: events - measured, ..Counts::default() },
        end_to_end: e2e.summary(),
        hops: PATH
            .iter()
            .zip(&hops)
            .map(|((n, k), h)| HopSummary { name: (*n).into(), kind: *k, stats: h.summary() })
            .collect(),
        schedule_lag: lag.summary(),
        machine: Machine::this(),
        ..RunResult::default()
    };
    result.evaluate(&spec.objectives);
    let logs = crate::runs::RunLogs {
        end_to_end: e2e.interval_log(),
        warmup: Some(warm.interval_log()),
        schedule_lag: lag.interval_log(),
        hops: PATH.iter().zip(&mut hops).map(|((n, _), h)| ((*n).to_owned(), h.interval_log())).collect(),
    };
    crate::runs::write_run(dir, &result, &logs)?;
    Ok(result)
}
