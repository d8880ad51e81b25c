//! Latency recorders: an HdrHistogram for the whole measurement plus one per interval,
//! kept as a standard HdrHistogram interval log (`.hlog`), so runs and workers can be
//! re-aggregated by merging histograms instead of averaging percentiles.
//!
//! Values are recorded in microseconds with three significant digits (1 µs up to an hour).
//! Recording touches only preallocated counters; an interval is serialized on the cold path
//! when the next one begins, and kept in memory, or appended to a file for recorders that
//! run for hours ([`LatencyRecorder::spill_to`]), so that their memory stays bounded.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use serde::Serialize;
use std::time::Duration;

/// Highest value a recorder holds, in µs (one hour); larger values are clamped to it.
pub const HIGHEST_US: u64 = 3_600_000_000;

/// A fresh histogram with tailgate's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    #[allow(clippy::unwrap_used)]
    Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap()
}

/// Records one latency metric over time.
#[derive(Debug)]
pub struct LatencyRecorder {
    tag: String,
    total: Histogram<u64>,
    current: Histogram<u64>,
    base_ns: u64,
    interval_ns: u64,
    current_start_ns: u64,
    log_body: Vec<u8>,
    /// Where closed intervals go instead of `log_body`, once spilled.
    spill: Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl LatencyRecorder {
    /// A recorder whose intervals of `interval` start at `base_ns` (epoch ns). `tag` names
    /// the metric in the interval log.
    pub fn new(tag: &str, base_ns: u64, interval: Duration) -> Self {
        Self {
            tag: tag.replace([',', ' ', '\n'], "_"),
            total: new_histogram(),
            current: new_histogram(),
            base_ns,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1),
            current_start_ns: base_ns,
            log_body: Vec::new(),
            spill: None,
        }
    }

    /// Records a latency of `value_ns` observed at `at_ns` (epoch ns).
    #[inline]
    pub fn record(&mut self, value_ns: u64, at_ns: u64) {
        if at_ns >= self.current_start_ns.saturating_add(self.interval_ns) {
            self.roll(at_ns);
        }
        let us = value_ns / 1_000;
        self.total.saturating_record(us);
        self.current.saturating_record(us);
    }

    /// Records `n` latencies of `value_ns` observed at `at_ns`: a histogram's bucket
    /// recorded again, as when intervals from several recorders are merged in time order.
    pub fn record_n(&mut self, value_ns: u64, n: u64, at_ns: u64) {
        if at_ns >= self.current_start_ns.saturating_add(self.interval_ns) {
            self.roll(at_ns);
        }
        let us = value_ns / 1_000;
        self.total.saturating_record_n(us, n);
        self.current.saturating_record_n(us, n);
    }

    #[cold]
    fn roll(&mut self, at_ns: u64) {
        self.flush_current();
        let elapsed = at_ns.saturating_sub(self.base_ns);
        self.current_start_ns = self.base_ns + elapsed - elapsed % self.interval_ns;
    }

    fn flush_current(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let start = Duration::from_nanos(self.current_start_ns.saturating_sub(self.base_ns));
        let length = Duration::from_nanos(self.interval_ns);
        let mut serializer = V2DeflateSerializer::new();
        let mut line = Vec::new();
        if let Ok(mut w) =
            IntervalLogWriterBuilder::new().with_max_value_divisor(1000.0).begin_log_with(&mut line, &mut serializer)
        {
            // Serializing into memory fails only on a histogram hdrhistogram itself built.
            let _ = w.write_histogram(&self.current, start, length, Tag::new(&self.tag));
        }
        // The builder repeats the divisor header before each interval; the log has it once.
        let body = line.iter().position(|&b| b == b'\n').filter(|_| line.starts_with(b"#")).map_or(0, |i| i + 1);
        match &mut self.spill {
            Some((_, file)) => {
                use std::io::Write as _;
                // A full disk loses intervals of the log, never the totals.
                let _ = file.write_all(&line[body..]).and_then(|()| file.flush());
            }
            None => self.log_body.extend_from_slice(&line[body..]),
        }
        self.current.reset();
    }

    /// From now on, writes the interval log to `path` as intervals close (the header and
    /// what was kept so far first) and keeps none of it in memory. [`Self::interval_log`]
    /// then reads the file back.
    pub fn spill_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        file.write_all(&self.log_header())?;
        file.write_all(&std::mem::take(&mut self.log_body))?;
        file.flush()?;
        self.spill = Some((path.to_owned(), file));
        Ok(())
    }

    /// The interval log's lines of the intervals closed since last asked (all of them with
    /// `flush`), taken out of the recorder: a worker sends its log a second at a time. A
    /// spilled recorder has none to give.
    pub fn take_closed(&mut self, flush: bool) -> Vec<u8> {
        if flush {
            self.flush_current();
        }
        std::mem::take(&mut self.log_body)
    }

    /// The interval log's header, which the lines of [`Self::take_closed`] follow.
    pub fn header(&self) -> Vec<u8> {
        self.log_header()
    }

    /// Closes the open interval; the recorder can keep recording afterwards.
    pub fn flush(&mut self) {
        self.flush_current();
    }

    /// Everything recorded so far.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.total
    }

    /// Percentiles of everything recorded so far.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.total)
    }

    /// The interval log: the standard `.hlog` text, which HdrHistogram's own tools read.
    pub fn interval_log(&mut self) -> Vec<u8> {
        self.flush_current();
        if let Some((path, _)) = &self.spill {
            return std::fs::read(path).unwrap_or_default();
        }
        let mut out = self.log_header();
        out.extend_from_slice(&self.log_body);
        out
    }

    /// The interval log's header: its comment, start time, divisor and column names.
    fn log_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let base = std::time::UNIX_EPOCH + Duration::from_nanos(self.base_ns);
        let mut serializer = V2DeflateSerializer::new();
        let header = IntervalLogWriterBuilder::new()
            .add_comment(&format!("tailgate latency log for `{}`, values in microseconds", self.tag))
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)
            .map(drop);
        debug_assert!(header.is_ok());
        out.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        out
    }
}

/// Encodes one histogram the way interval logs do (V2 deflate, base64 is the log's job).
pub fn serialize(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = V2DeflateSerializer::new().serialize(h, &mut out);
    out
}

/// The statistics tailgate reports for one latency metric, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarizes a histogram of microsecond values.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean().round() / 1_000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_spilled_log_on_disk_is_the_log_kept_in_memory_and_memory_keeps_none_of_it() {
        let (mut kept, mut spilled) = (
            LatencyRecorder::new("e2e", 0, Duration::from_secs(1)),
            LatencyRecorder::new("e2e", 0, Duration::from_secs(1)),
        );
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("e2e.hlog");
        for second in 0..120u64 {
            if second == 3 {
                spilled.spill_to(&path).expect("spills");
            }
            for i in 0..50 {
                let (value, at) = ((second % 7 + 1) * 1_000_000 + i * 1_000, second * S + i * 1_000_000);
                kept.record(value, at);
                spilled.record(value, at);
            }
        }
        assert!(spilled.log_body.is_empty());
        assert_eq!(spilled.interval_log(), kept.interval_log());
        assert_eq!(spilled.summary(), kept.summary());
    }

    #[test]
    fn summary_is_in_milliseconds() {
        let mut r = LatencyRecorder::new("e2e", 0, Duration::from_secs(1));
        for i in 1..=1000u64 {
            r.record(i * 1_000_000, 10);
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!((s.min_ms - 1.0).abs() < 0.01);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert!((s.mean_ms - 500.5).abs() < 0.5, "{s:?}");
    }

    #[test]
    fn interval_log_reads_back_and_merges_to_the_total() {
        let base = 1_700_000_000 * S;
        let mut r = LatencyRecorder::new("agent", base, Duration::from_secs(1));
        r.record(2_000_000, base + S / 2);
        r.record(3_000_000, base + S / 2);
        r.record(9_000_000, base + 2 * S + 1);
        let log = r.interval_log();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        assert_eq!(text.matches("MaxValueDivisor").count(), 1, "{text}");
        // Intervals carry their tag, start (s since the base time), length and max (ms).
        let first = text.lines().find(|l| l.starts_with("Tag=")).unwrap();
        assert!(first.starts_with("Tag=agent,0.000,1.000,3.0"), "{first}");

        let mut merged = new_histogram();
        let mut starts = Vec::new();
        for entry in IntervalLogIterator::new(&log) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                assert_eq!(h.tag().map(|t| t.as_str()), Some("agent"));
                starts.push(h.start_timestamp().as_secs());
                let bytes = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                merged.add(&hist).unwrap();
            }
        }
        assert_eq!(starts, [0, 2]);
        assert_eq!(merged.len(), 3);
        assert_eq!(Summary::of(&merged), r.summary());
    }

    // Minimal base64 reader for the test (the log's own alphabet, with padding).
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &v)| n | u32::from(v) << (18 - 6 * i));
            let take = chunk.len() * 6 / 8;
            out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
        }
        out
    }

    #[test]
    fn values_beyond_an_hour_are_clamped_not_lost() {
        let mut r = LatencyRecorder::new("x", 0, Duration::from_secs(1));
        r.record(u64::MAX, 0);
        assert_eq!(r.summary().count, 1);
    }
}
