//! Interval logs read back: one HdrHistogram per interval, merged into whatever span a
//! report needs (a second across runs, a whole run, a profile). Percentiles are always taken
//! from merged histograms, never averaged.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use std::path::Path;

/// One interval of a log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Seconds since the log's base time.
    pub start_s: f64,
    pub length_s: f64,
    /// Values in microseconds.
    pub hist: Histogram<u64>,
}

/// An interval log: a metric over time.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub intervals: Vec<Interval>,
}

impl Series {
    /// Reads an interval log file; a missing file is an empty series.
    pub fn read(path: &Path) -> crate::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).map_err(|e| crate::bad(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(crate::Error::Io { path: path.to_owned(), source: e }),
        }
    }

    /// Parses interval log text.
    pub fn parse(log: &[u8]) -> Result<Self, String> {
        let mut intervals = Vec::new();
        let mut de = Deserializer::new();
        for entry in IntervalLogIterator::new(log) {
            let LogEntry::Interval(h) = entry.map_err(|e| format!("not an interval log: {e:?}"))? else {
                continue;
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .map_err(|e| format!("interval at {:?}: bad base64: {e}", h.start_timestamp()))?;
            let hist: Histogram<u64> = de
                .deserialize(&mut &bytes[..])
                .map_err(|e| format!("interval at {:?}: bad histogram: {e:?}", h.start_timestamp()))?;
            intervals.push(Interval {
                start_s: h.start_timestamp().as_secs_f64(),
                length_s: h.duration().as_secs_f64(),
                hist,
            });
        }
        Ok(Self { intervals })
    }

    /// Every interval merged.
    pub fn total(&self) -> Histogram<u64> {
        merge(self.intervals.iter().map(|i| &i.hist))
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.intervals.iter().map(|i| i.hist.len()).sum()
    }
}

/// Merges histograms (an empty iterator gives an empty histogram).
pub fn merge<'a>(hists: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = probes::recorder::new_histogram();
    for h in hists {
        // Histograms of tailgate's own bounds always add; values beyond them saturate.
        if total.add(h).is_err() {
            for v in h.iter_recorded() {
                total.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
    total
}

/// The value at quantile `q` in milliseconds (0 for an empty histogram).
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1_000.0 }
}

/// A statistic of a latency metric, as `result.json` names it (`p99_ms`, `mean_ms`...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    Quantile(f64),
    Mean,
    Min,
}

impl Stat {
    /// The statistic a `result.json` field name stands for (`count` is none: not a latency).
    pub fn parse(field: &str) -> Option<Self> {
        Some(match field {
            "min_ms" => Self::Min,
            "mean_ms" => Self::Mean,
            "p50_ms" => Self::Quantile(0.50),
            "p90_ms" => Self::Quantile(0.90),
            "p99_ms" => Self::Quantile(0.99),
            "p999_ms" => Self::Quantile(0.999),
            "max_ms" => Self::Quantile(1.0),
            _ => return None,
        })
    }

    /// The statistic of `h`, in ms.
    pub fn of(self, h: &Histogram<u64>) -> f64 {
        match self {
            _ if h.is_empty() => 0.0,
            Self::Quantile(q) => quantile_ms(h, q),
            Self::Mean => h.mean() / 1_000.0,
            Self::Min => h.min() as f64 / 1_000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probes::LatencyRecorder;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn log(values_ms: &[(u64, u64)]) -> Vec<u8> {
        let base = 1_800_000_000 * S;
        let mut r = LatencyRecorder::new("end_to_end", base, Duration::from_secs(1));
        for &(second, ms) in values_ms {
            r.record(ms * 1_000_000, base + second * S + 1);
        }
        r.interval_log()
    }

    #[test]
    fn a_log_reads_back_interval_by_interval() {
        let s = Series::parse(&log(&[(0, 1), (0, 2), (3, 40)])).unwrap();
        let starts: Vec<f64> = s.intervals.iter().map(|i| i.start_s).collect();
        assert_eq!(starts, [0.0, 3.0]);
        assert_eq!(s.intervals[0].hist.len(), 2);
        assert!((s.intervals[0].length_s - 1.0).abs() < 1e-9);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn merging_keeps_every_value_and_percentiles_come_from_the_merge() {
        // Two runs: one fast (1..=99 ms, one value each), one with a slow tail.
        let a: Vec<(u64, u64)> = (1..=99).map(|ms| (ms % 5, ms)).collect();
        let b: Vec<(u64, u64)> = (0..99).map(|i| (i % 5, if i < 90 { 1 } else { 1000 })).collect();
        let (sa, sb) = (Series::parse(&log(&a)).unwrap(), Series::parse(&log(&b)).unwrap());
        let merged = merge([&sa.total(), &sb.total()]);
        assert_eq!(merged.len(), 198);
        // Averaging the two p99s would give ~545 ms; the merged p99 is the real one.
        let p99 = quantile_ms(&merged, 0.99);
        assert!((p99 - 1000.0).abs() < 1.0, "{p99}");
        let p50 = quantile_ms(&merged, 0.5);
        assert!((p50 - 1.0).abs() < 0.01 || p50 < 50.0, "{p50}");
        assert_eq!(Stat::parse("max_ms").unwrap().of(&merged), quantile_ms(&merged, 1.0));
        assert!(Stat::parse("count").is_none());
    }

    #[test]
    fn a_missing_log_is_empty_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Series::read(&dir.path().join("nope.hlog")).unwrap().count(), 0);
        std::fs::write(dir.path().join("bad.hlog"), "Tag=x,0.0,1.0,2.0,!!!notbase64\n").unwrap();
        let e = Series::read(&dir.path().join("bad.hlog")).unwrap_err().to_string();
        assert!(e.contains("bad.hlog"), "{e}");
    }
}
