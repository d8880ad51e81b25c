//! Percentiles of an interval log over fixed windows (a minute by default), from merged
//! histograms: how a long run's latency moved over time.
//!
//!   cargo run --release -p tailgate-reports --example windows -- RUN/end_to_end.hlog [SECONDS]

use reports::hlog::{Series, histogram_of, quantile_ms};
use std::collections::BTreeMap;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: windows FILE.hlog [SECONDS]");
        std::process::exit(2);
    };
    let window: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let series = match Series::read(std::path::Path::new(&path)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let mut by_window: BTreeMap<u64, Vec<&reports::hlog::Interval>> = BTreeMap::new();
    for i in &series.intervals {
        by_window.entry((i.start_s / window) as u64).or_default().push(i);
    }
    let first = by_window.keys().next().copied().unwrap_or(0);
    println!("| window | count | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (w, intervals) in by_window {
        let h = histogram_of(intervals);
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            w - first + 1,
            h.len(),
            quantile_ms(&h, 0.5),
            quantile_ms(&h, 0.99),
            quantile_ms(&h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
}
