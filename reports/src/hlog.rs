//! Interval logs read back: one HdrHistogram per interval, merged into whatever span a
//! report needs (a second across runs, a whole run, a profile). Percentiles are always taken
//! from merged histograms, never averaged.
//!
//! An interval is kept as its recorded buckets only (value, count), a few KB, not as a
//! dense histogram (hundreds of KB at tailgate's bounds): ten runs of ten minutes with ten
//! metrics are 60,000 intervals.

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
    /// The recorded buckets, ascending: (the bucket's highest equivalent value in µs, count).
    /// Values fit 32 bits (tailgate records at most an hour in µs), and so do a second's
    /// counts in one bucket.
    pub counts: Vec<(u32, u32)>,
}

impl Interval {
    /// The buckets of `hist`.
    pub fn of(start_s: f64, length_s: f64, hist: &Histogram<impl hdrhistogram::Counter>) -> Self {
        let narrow = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        let mut counts: Vec<(u32, u32)> = hist
            .iter_recorded()
            .map(|v| (narrow(v.value_iterated_to()), narrow(v.count_at_value().as_u64())))
            .collect();
        counts.shrink_to_fit();
        Self { start_s, length_s, counts }
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(c.1)).sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The dense histogram of the intervals merged.
pub fn histogram_of<'a>(intervals: impl IntoIterator<Item = &'a Interval>) -> Histogram<u64> {
    let mut h = probes::recorder::new_histogram();
    for i in intervals {
        for &(v, n) in &i.counts {
            h.saturating_record_n(u64::from(v), u64::from(n));
        }
    }
    h
}

/// The buckets of the intervals merged, ascending.
pub fn merge_counts<'a>(intervals: impl IntoIterator<Item = &'a Interval>) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> =
        intervals.into_iter().flat_map(|i| i.counts.iter().map(|&(v, n)| (u64::from(v), u64::from(n)))).collect();
    all.sort_unstable_by_key(|c| c.0);
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (v, n) in all {
        match out.last_mut() {
            Some(last) if last.0 == v => last.1 += n,
            _ => out.push((v, n)),
        }
    }
    out
}

/// The value at quantile `q` of merged buckets, in ms, by HdrHistogram's rule (the smallest
/// value with at least `ceil(q * total)` values at or below it); 0 when empty.
pub fn counts_quantile_ms(counts: &[(u64, u64)], q: f64) -> f64 {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for &(v, n) in counts {
        seen += n;
        if seen >= rank {
            return v as f64 / 1_000.0;
        }
    }
    counts.last().map_or(0.0, |c| c.0 as f64 / 1_000.0)
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
            bounded(&bytes).map_err(|e| format!("interval at {:?}: {e}", h.start_timestamp()))?;
            let (start_s, length_s) = (h.start_timestamp().as_secs_f64(), h.duration().as_secs_f64());
            // 16-bit counters take a quarter of the memory while decoding; an interval with a
            // bucket over 65535 is decoded again with 64-bit ones.
            let interval = match de.deserialize::<u16, _>(&mut &bytes[..]) {
                Ok(hist) => Interval::of(start_s, length_s, &hist),
                Err(_) => {
                    let hist: Histogram<u64> = de
                        .deserialize(&mut &bytes[..])
                        .map_err(|e| format!("interval at {:?}: bad histogram: {e:?}", h.start_timestamp()))?;
                    Interval::of(start_s, length_s, &hist)
                }
            };
            intervals.push(interval);
        }
        Ok(Self { intervals })
    }

    /// Every interval merged.
    pub fn total(&self) -> Histogram<u64> {
        histogram_of(&self.intervals)
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.intervals.iter().map(Interval::len).sum()
    }
}

/// The histogram encodings (V2, and V2 compressed with zlib) by their first four bytes.
const V2: u32 = 0x1c84_9313;
const V2_COMPRESSED: u32 = 0x1c84_9314;
/// The largest histogram an interval may ask for: payload, significant digits, highest value.
const MAX_PAYLOAD: u64 = 16 << 20;
const MAX_DIGITS: u64 = 5;
const MAX_HIGHEST: u64 = 1 << 48;

/// Checks an encoded histogram's header before it is decoded, which sizes its buffers and
/// counts from that header: a crafted one would otherwise have gigabytes allocated.
fn bounded(bytes: &[u8]) -> Result<(), String> {
    use std::io::Read as _;
    // Cookie, payload length, normalizing offset, digits, lowest, highest, ratio: 40 bytes.
    let mut header = [0u8; 40];
    match bytes.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])) {
        Some(V2) => {
            let n = bytes.len().min(header.len());
            header[..n].copy_from_slice(&bytes[..n]);
        }
        Some(V2_COMPRESSED) => {
            let mut inflate = flate2::read::ZlibDecoder::new(bytes.get(8..).unwrap_or_default());
            inflate.read_exact(&mut header).map_err(|e| format!("bad histogram: {e}"))?;
        }
        _ => return Err("bad histogram: not a V2 encoding".into()),
    }
    let field = |at: usize, len: usize| header[at..at + len].iter().fold(0u64, |v, b| v << 8 | u64::from(*b));
    let (payload, digits, highest) = (field(4, 4), field(12, 4), field(24, 8));
    if payload > MAX_PAYLOAD || digits > MAX_DIGITS || highest > MAX_HIGHEST {
        return Err(format!(
            "bad histogram: it asks for a {payload}-byte payload, {digits} digits and values up to {highest} (at most \
             {MAX_PAYLOAD}, {MAX_DIGITS} and {MAX_HIGHEST})"
        ));
    }
    Ok(())
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

    #[test]
    fn a_crafted_histogram_is_refused_before_anything_is_allocated_for_it() {
        use base64::Engine as _;
        let mut h = Vec::new();
        h.extend(0x1c84_9313u32.to_be_bytes()); // V2
        h.extend(0xffff_fff0u32.to_be_bytes()); // a 4 GiB payload
        h.extend(0u32.to_be_bytes()); // normalizing offset
        h.extend(3u32.to_be_bytes()); // digits
        h.extend(1u64.to_be_bytes()); // lowest
        h.extend(3_600_000_000u64.to_be_bytes()); // highest
        h.extend(1.0f64.to_be_bytes());
        let line = format!("0.0,1.0,2.0,{}\n", base64::engine::general_purpose::STANDARD.encode(&h));
        let e = Series::parse(line.as_bytes()).unwrap_err();
        assert!(e.contains("4294967280-byte payload"), "{e}");
    }
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
        assert_eq!(s.intervals[0].len(), 2);
        assert!((s.intervals[0].length_s - 1.0).abs() < 1e-9);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn merging_keeps_every_value_and_percentiles_come_from_the_merge() {
        // Two runs: one fast (1..=99 ms, one value each), one with a slow tail.
        let a: Vec<(u64, u64)> = (1..=99).map(|ms| (ms % 5, ms)).collect();
        let b: Vec<(u64, u64)> = (0..99).map(|i| (i % 5, if i < 90 { 1 } else { 1000 })).collect();
        let (sa, sb) = (Series::parse(&log(&a)).unwrap(), Series::parse(&log(&b)).unwrap());
        let merged = histogram_of(sa.intervals.iter().chain(&sb.intervals));
        assert_eq!(merged.len(), 198);
        // Averaging the two p99s would give ~545 ms; the merged p99 is the real one.
        let p99 = quantile_ms(&merged, 0.99);
        assert!((p99 - 1000.0).abs() < 1.0, "{p99}");
        let p50 = quantile_ms(&merged, 0.5);
        assert!((p50 - 1.0).abs() < 0.01 || p50 < 50.0, "{p50}");
        assert_eq!(Stat::parse("max_ms").unwrap().of(&merged), quantile_ms(&merged, 1.0));
        // The bucket lists give the same percentiles as the dense histograms.
        let counts = merge_counts(sa.intervals.iter().chain(&sb.intervals));
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(counts_quantile_ms(&counts, q), quantile_ms(&merged, q), "q {q}");
        }
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
