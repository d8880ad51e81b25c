//! The report's tables, built with polars: the per-second series of every profile, the
//! per-profile table (joined with its per-second stability and its run-to-run spread) and
//! the per-hop breakdown (each hop's share of the end-to-end time).
//!
//! Histograms are merged before anything reaches a table: a table holds percentiles of
//! merged histograms and never averages percentiles into new ones.

use crate::hlog::{Interval, counts_quantile_ms, merge_counts, quantile_ms};
use crate::runs::Profile;
use polars::prelude::*;
use std::collections::BTreeMap;

/// `warmup` or `measured`, in the per-second frame's `phase` column.
pub const WARMUP: &str = "warmup";
pub const MEASURED: &str = "measured";

type Bucket<'a> = (Vec<&'a Interval>, f64);

/// One row per profile, phase and second since the load began: `profile`, `phase`, `t_s`,
/// `count`, `rate` (events/s), `p50_ms`, `p99_ms`, `max_ms`. Runs of one profile are merged
/// second by second.
pub fn seconds(profiles: &[Profile]) -> PolarsResult<DataFrame> {
    let (mut profile, mut phase, mut t, mut count, mut rate, mut p50, mut p99, mut max) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in profiles {
        // (phase, second) -> the intervals that fall in it, and the longest interval length.
        let mut buckets: BTreeMap<(u8, u64), Bucket<'_>> = BTreeMap::new();
        for run in &p.runs {
            for (series, ph, shift) in [(&run.warmup, 0u8, 0.0), (&run.end_to_end, 1, run.result.warmup_s)] {
                for i in &series.intervals {
                    let sec = (i.start_s + shift).round().max(0.0) as u64;
                    let b = buckets.entry((ph, sec)).or_default();
                    b.0.push(i);
                    b.1 = b.1.max(i.length_s);
                }
            }
        }
        let runs = p.runs.len().max(1) as f64;
        for ((ph, sec), (intervals, length)) in buckets {
            let merged = merge_counts(intervals.iter().copied());
            let n: u64 = merged.iter().map(|c| c.1).sum();
            profile.push(p.name.clone());
            phase.push(if ph == 0 { WARMUP } else { MEASURED });
            t.push(sec as f64);
            count.push(n);
            rate.push(n as f64 / length.max(f64::EPSILON) / runs);
            p50.push(counts_quantile_ms(&merged, 0.5));
            p99.push(counts_quantile_ms(&merged, 0.99));
            max.push(counts_quantile_ms(&merged, 1.0));
        }
    }
    df!(
        "profile" => profile, "phase" => phase, "t_s" => t, "count" => count, "rate" => rate,
        "p50_ms" => p50, "p99_ms" => p99, "max_ms" => max
    )
}

/// One row per profile: its merged figures, how many runs it merges and their p99 range,
/// joined with the stability of its measured seconds against `sla_p99_ms` (seconds whose
/// p99 exceeded it, the worst second's p99).
pub fn profiles(profiles: &[Profile], seconds: &DataFrame, sla_p99_ms: Option<f64>) -> PolarsResult<DataFrame> {
    let (mut name, mut run_p99) = (vec![], vec![]);
    for p in profiles {
        for r in &p.runs {
            name.push(p.name.clone());
            run_p99.push(r.result.end_to_end.p99_ms);
        }
    }
    let per_run = df!("profile" => name, "run_p99_ms" => run_p99)?;
    let spread = per_run.lazy().group_by_stable([col("profile")]).agg([
        len().alias("runs"),
        col("run_p99_ms").min().alias("run_p99_min_ms"),
        col("run_p99_ms").max().alias("run_p99_max_ms"),
    ]);
    let limit = sla_p99_ms.unwrap_or(f64::INFINITY);
    let stability =
        seconds.clone().lazy().filter(col("phase").eq(lit(MEASURED))).group_by_stable([col("profile")]).agg([
            len().alias("seconds"),
            col("p99_ms").max().alias("worst_second_p99_ms"),
            col("p99_ms").median().alias("median_second_p99_ms"),
            col("p99_ms").gt(lit(limit)).cast(DataType::UInt32).sum().alias("seconds_over_sla"),
        ]);
    let r = |p: &Profile| p.result.clone();
    let all: Vec<_> = profiles.iter().map(r).collect();
    let base = df!(
        "profile" => all.iter().map(|r| r.profile.clone()).collect::<Vec<_>>(),
        "target_rate" => all.iter().map(|r| r.target_rate).collect::<Vec<_>>(),
        "achieved_rate" => all.iter().map(|r| r.achieved_rate).collect::<Vec<_>>(),
        "sent" => all.iter().map(|r| r.counts.sent).collect::<Vec<_>>(),
        "delivered" => all.iter().map(|r| r.counts.delivered).collect::<Vec<_>>(),
        "dead_lettered" => all.iter().map(|r| r.counts.dead_lettered).collect::<Vec<_>>(),
        "lost" => all.iter().map(|r| r.counts.lost).collect::<Vec<_>>(),
        "p50_ms" => all.iter().map(|r| r.end_to_end.p50_ms).collect::<Vec<_>>(),
        "p90_ms" => all.iter().map(|r| r.end_to_end.p90_ms).collect::<Vec<_>>(),
        "p99_ms" => all.iter().map(|r| r.end_to_end.p99_ms).collect::<Vec<_>>(),
        "p999_ms" => all.iter().map(|r| r.end_to_end.p999_ms).collect::<Vec<_>>(),
        "max_ms" => all.iter().map(|r| r.end_to_end.max_ms).collect::<Vec<_>>(),
        "mean_ms" => all.iter().map(|r| r.end_to_end.mean_ms).collect::<Vec<_>>(),
        "passed" => all.iter().map(|r| r.sla.passed).collect::<Vec<_>>(),
        // CPU seconds per 1,000 events sent, tailgate and a Faust agent's process together.
        "cpu_per_1k_s" => all.iter().map(|r| r.cpu.as_ref().map_or(f64::NAN, |c| c.per_1k_events_s)).collect::<Vec<_>>(),
        "agent_cpu_s" => all.iter().map(|r| r.cpu.as_ref().and_then(|c| c.agent_process_s).unwrap_or(f64::NAN)).collect::<Vec<_>>(),
    )?;
    let on = [col("profile")];
    base.lazy()
        .join(spread, on.clone(), on.clone(), JoinArgs::new(JoinType::Left))
        .join(stability, on.clone(), on, JoinArgs::new(JoinType::Left))
        .collect()
}

/// One row per profile and hop, in path order: `profile`, `hop`, `transit`, `mean_ms`,
/// `p50_ms`, `p99_ms` and `share` (of the sum of the profile's hop means, which is its
/// end-to-end mean).
pub fn hops(profiles: &[Profile]) -> PolarsResult<DataFrame> {
    let (mut profile, mut hop, mut order, mut transit, mut mean, mut p50, mut p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in profiles {
        for (i, (name, kind, h)) in p.hops.iter().enumerate() {
            profile.push(p.name.clone());
            hop.push(name.clone());
            order.push(i as u32);
            transit.push(*kind == probes::HopKind::Transit);
            mean.push(if h.is_empty() { 0.0 } else { h.mean() / 1_000.0 });
            p50.push(quantile_ms(h, 0.5));
            p99.push(quantile_ms(h, 0.99));
        }
    }
    let long = df!(
        "profile" => profile, "hop" => hop, "order" => order, "transit" => transit,
        "mean_ms" => mean, "p50_ms" => p50, "p99_ms" => p99
    )?
    .lazy();
    let totals = long.clone().group_by([col("profile")]).agg([col("mean_ms").sum().alias("total_mean_ms")]);
    long.join(totals, [col("profile")], [col("profile")], JoinArgs::new(JoinType::Left))
        .with_columns([(col("mean_ms") / col("total_mean_ms")).alias("share")])
        .collect()
}

/// A frame as JSON rows (`[{column: value, ...}, ...]`).
pub fn rows(df: &DataFrame) -> serde_json::Value {
    let columns = df.columns();
    let rows: Vec<serde_json::Value> = (0..df.height())
        .map(|i| {
            let mut row = serde_json::Map::new();
            for c in columns {
                let v = match c.get(i) {
                    Ok(AnyValue::String(s)) => serde_json::json!(s),
                    Ok(AnyValue::StringOwned(s)) => serde_json::json!(s.as_str()),
                    Ok(AnyValue::Boolean(b)) => serde_json::json!(b),
                    Ok(AnyValue::Null) | Err(_) => serde_json::Value::Null,
                    Ok(v) => v.extract::<f64>().map_or(serde_json::Value::Null, |f| {
                        if f.fract() == 0.0 && f.abs() < 9e15 && c.dtype().is_integer() {
                            serde_json::json!(f as i64)
                        } else {
                            serde_json::json!(f)
                        }
                    }),
                };
                row.insert(c.name().to_string(), v);
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The `f64` values of a column (nulls as NaN).
pub fn floats(df: &DataFrame, column: &str) -> Vec<f64> {
    df.column(column)
        .and_then(|c| c.cast(&DataType::Float64))
        .map(|c| c.f64().map(|ca| ca.iter().map(|v| v.unwrap_or(f64::NAN)).collect()).unwrap_or_default())
        .unwrap_or_default()
}

/// The string values of a column.
pub fn strings(df: &DataFrame, column: &str) -> Vec<String> {
    df.column(column)
        .ok()
        .and_then(|c| c.str().ok().map(|ca| ca.iter().map(|v| v.unwrap_or_default().to_owned()).collect()))
        .unwrap_or_default()
}
