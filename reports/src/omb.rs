//! OpenMessaging Benchmark result files, so existing OMB chart scripts read tailgate runs.
//!
//! How tailgate's measurements map onto OMB's:
//! - end-to-end latency is tailgate's end to end (load generator's intended send time to
//!   the client's receipt), in milliseconds as OMB writes it;
//! - publish latency is the pipeline's first hop (the load generator's write until the
//!   first stage took the event in), in milliseconds;
//! - publish delay is the load generator's schedule lag (actual minus intended send), in
//!   microseconds as OMB writes it;
//! - per-period lists use OMB's 10-second reporting period, each period's figures from the
//!   merged one-second histograms of that period.

use crate::hlog::{Interval, Series, histogram_of};
use crate::runs::Run;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// OMB's reporting period.
pub const PERIOD_S: f64 = 10.0;
const QUANTILES: [(&str, f64); 8] = [
    ("50pct", 0.5),
    ("75pct", 0.75),
    ("95pct", 0.95),
    ("99pct", 0.99),
    ("999pct", 0.999),
    ("9999pct", 0.9999),
    ("99999pct", 0.99999),
    ("Max", 1.0),
];

/// The OMB `TestResult` JSON of one run.
pub fn export(run: &Run) -> Value {
    let r = &run.result;
    let lag = Series::read(&run.dir.join(crate::hlog_file("schedule_lag", false))).unwrap_or_default();
    let publish = run.hops.first().cloned().unwrap_or_default();
    let mut out = Map::new();
    out.insert("workload".into(), json!(r.scenario));
    out.insert("driver".into(), json!(format!("tailgate {} ({} {})", r.profile, r.broker.kind, r.broker.version)));
    out.insert("messageSize".into(), json!(r.payload_bytes));
    out.insert("topics".into(), json!(1));
    out.insert("partitions".into(), json!(r.broker.partitions));
    out.insert("producersPerTopic".into(), json!(1));
    out.insert("consumersPerTopic".into(), json!(1));

    let periods = periods(&[&run.end_to_end, &lag, &publish]);
    let sent: Vec<f64> = periods.iter().map(|p| p.count(&lag) as f64 / PERIOD_S).collect();
    let received: Vec<f64> = periods.iter().map(|p| p.count(&run.end_to_end) as f64 / PERIOD_S).collect();
    let mut backlog = Vec::new();
    let (mut s, mut c) = (0u64, 0u64);
    for p in &periods {
        s += p.count(&lag);
        c += p.count(&run.end_to_end);
        backlog.push(s.saturating_sub(c));
    }
    out.insert("publishRate".into(), json!(sent));
    out.insert("publishErrorRate".into(), json!(vec![0.0; periods.len()]));
    out.insert("consumeRate".into(), json!(received));
    out.insert("backlog".into(), json!(backlog));

    let ms = |h: &Histogram<u64>, q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
    let avg_ms = |h: &Histogram<u64>| if h.is_empty() { 0.0 } else { h.mean() / 1000.0 };
    let us = |h: &Histogram<u64>, q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
    let per_period = |series: &Series| -> Vec<Histogram<u64>> { periods.iter().map(|p| p.merged(series)).collect() };
    for (prefix, series, micros) in [
        ("publishLatency", &publish, false),
        ("publishDelayLatency", &lag, true),
        ("endToEndLatency", &run.end_to_end, false),
    ] {
        let hs = per_period(series);
        let total = series.total();
        let agg = format!("aggregated{}{}", prefix[..1].to_uppercase(), &prefix[1..]);
        if micros {
            out.insert(format!("{prefix}Avg"), json!(hs.iter().map(|h| avg_ms(h) * 1000.0).collect::<Vec<_>>()));
            out.insert(format!("{agg}Avg"), json!(avg_ms(&total) * 1000.0));
        } else {
            out.insert(format!("{prefix}Avg"), json!(hs.iter().map(avg_ms).collect::<Vec<_>>()));
            out.insert(format!("{agg}Avg"), json!(avg_ms(&total)));
        }
        for (suffix, q) in QUANTILES {
            if micros {
                out.insert(format!("{prefix}{suffix}"), json!(hs.iter().map(|h| us(h, q)).collect::<Vec<_>>()));
                out.insert(format!("{agg}{suffix}"), json!(us(&total, q)));
            } else {
                out.insert(format!("{prefix}{suffix}"), json!(hs.iter().map(|h| ms(h, q)).collect::<Vec<_>>()));
                out.insert(format!("{agg}{suffix}"), json!(ms(&total, q)));
            }
        }
        let quantiles: Map<String, Value> = if total.is_empty() {
            Map::new()
        } else {
            total
                .iter_quantiles(1)
                .map(|v| {
                    let key = format!("{:?}", (v.quantile_iterated_to() * 100.0 * 1e6).round() / 1e6);
                    let val = if micros {
                        json!(v.value_iterated_to())
                    } else {
                        json!(v.value_iterated_to() as f64 / 1000.0)
                    };
                    (key, val)
                })
                .collect()
        };
        out.insert(format!("{agg}Quantiles"), Value::Object(quantiles));
    }
    Value::Object(out)
}

/// One reporting period: `[start, start + PERIOD_S)` in seconds since the log's base.
#[derive(Debug, Clone, Copy)]
struct Period {
    start: f64,
}

impl Period {
    fn contains(&self, t: f64) -> bool {
        t >= self.start && t < self.start + PERIOD_S
    }
    fn merged(&self, s: &Series) -> Histogram<u64> {
        histogram_of(s.intervals.iter().filter(|i| self.contains(i.start_s)))
    }
    fn count(&self, s: &Series) -> u64 {
        s.intervals.iter().filter(|i| self.contains(i.start_s)).map(Interval::len).sum()
    }
}

fn periods(series: &[&Series]) -> Vec<Period> {
    let end = series.iter().flat_map(|s| s.intervals.iter().map(|i| i.start_s + i.length_s)).fold(0.0, f64::max);
    let n = (end / PERIOD_S).ceil() as usize;
    (0..n).map(|i| Period { start: i as f64 * PERIOD_S }).collect()
}
