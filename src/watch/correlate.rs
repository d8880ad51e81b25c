//! Latency from trace context alone (`watch --correlate traceparent`): a pipeline that
//! carries only the W3C `traceparent` its OpenTelemetry instrumentation propagates. Each
//! record on a topic is matched to its record on the topic before by trace id (the trace id
//! survives a stage; the span id changes), and each hop is timed from the two records'
//! timestamps (CreateTime or LogAppendTime, whichever the topic uses). End to end runs from
//! the first topic to the last.
//!
//! The tap reads every topic at once, so a record may arrive before its upstream one: a
//! trace stays open until it has been seen on every topic, or for as long as the window. A
//! record whose upstream record never came is unmatched: counted, never timed. Memory is
//! bounded by time (the window) and by count (the capacity); traces the capacity forces
//! out early are counted as evicted.

use probes::LatencyRecorder;
use probes::hops::{HopKind, HopSummary, transit_name};
use rdkafka::Timestamp;
use reports::result::{CorrelatedTopic, Correlation};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// A record's trace id.
type TraceId = [u8; 16];

/// One trace as the tap has seen it so far: its record's timestamp on each topic.
#[derive(Debug)]
struct Trace {
    /// Per topic, ms.
    ts_ms: Vec<Option<i64>>,
    /// When the tap first saw the trace, ns (for the window).
    first_seen_ns: u64,
}

/// The matcher and its recorders.
#[derive(Debug)]
pub(super) struct Correlator {
    topics: Vec<String>,
    window_ns: u64,
    capacity: usize,
    /// Traces not yet seen on every topic.
    open: HashMap<TraceId, Trace>,
    /// The open traces, oldest first; traces completed since are skipped at the front.
    order: VecDeque<(TraceId, u64)>,
    /// Hop `i` is topic `i` to topic `i + 1`.
    pub hops: Vec<(String, LatencyRecorder)>,
    pub end_to_end: LatencyRecorder,
    records: Vec<u64>,
    /// Per topic: CreateTime seen, LogAppendTime seen.
    kinds: Vec<(bool, bool)>,
    foreign: u64,
    unmatched: u64,
    evicted: u64,
    /// A second record of a trace on the same topic (timed once, by the first).
    repeated: u64,
}

impl Correlator {
    /// A matcher for `topics` in path order (at least two), remembering an open trace for
    /// `window` and at most `capacity` of them.
    pub fn new(topics: &[String], window: Duration, capacity: usize, base_ns: u64) -> Self {
        let hops = topics
            .windows(2)
            .map(|w| {
                let name = transit_name(&w[0], &w[1]);
                let recorder = LatencyRecorder::new(&name, base_ns, Duration::from_secs(1));
                (name, recorder)
            })
            .collect();
        Self {
            topics: topics.to_vec(),
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            capacity,
            open: HashMap::new(),
            order: VecDeque::new(),
            hops,
            end_to_end: LatencyRecorder::new(reports::END_TO_END_TAG, base_ns, Duration::from_secs(1)),
            records: vec![0; topics.len()],
            kinds: vec![(false, false); topics.len()],
            foreign: 0,
            unmatched: 0,
            evicted: 0,
            repeated: 0,
        }
    }

    /// One tapped record, seen at `now_ns`; whether it completed its trace's end to end.
    pub fn record(&mut self, topic: &str, traceparent: Option<&[u8]>, timestamp: Timestamp, now_ns: u64) -> bool {
        let Some(i) = self.topics.iter().position(|t| t == topic) else { return false };
        self.records[i] += 1;
        let trace = traceparent.and_then(|v| probes::TraceContext::parse(v).ok()).map(|t| t.trace_id);
        let (Some(id), Some(ts_ms)) = (trace, timestamp.to_millis()) else {
            self.foreign += 1;
            return false;
        };
        match timestamp {
            Timestamp::LogAppendTime(_) => self.kinds[i].1 = true,
            _ => self.kinds[i].0 = true,
        }
        self.expire(now_ns);
        let n = self.topics.len();
        let t = self.open.entry(id).or_insert_with(|| {
            self.order.push_back((id, now_ns));
            Trace { ts_ms: vec![None; n], first_seen_ns: now_ns }
        });
        if t.ts_ms[i].is_some() {
            self.repeated += 1;
            return false;
        }
        t.ts_ms[i] = Some(ts_ms);
        // The hops this record closes: from the topic before, and to the topic after
        // (whose record may have come first); and end to end, if it is an end.
        let up = i.checked_sub(1).and_then(|u| t.ts_ms[u]);
        let down = t.ts_ms.get(i + 1).copied().flatten();
        let ends = if i == 0 || i == n - 1 { t.ts_ms[0].zip(t.ts_ms[n - 1]) } else { None };
        let complete = t.ts_ms.iter().all(Option::is_some);
        if let Some(up) = up {
            self.hops[i - 1].1.record(ms_to_ns(ts_ms - up), now_ns);
        }
        if let Some(down) = down {
            self.hops[i].1.record(ms_to_ns(down - ts_ms), now_ns);
        }
        if let Some((first, last)) = ends {
            self.end_to_end.record(ms_to_ns(last - first), now_ns);
        }
        if complete {
            self.open.remove(&id);
        } else if self.open.len() > self.capacity {
            self.forget_oldest(|_| true);
        }
        ends.is_some()
    }

    /// Closes the open traces first seen longer than the window ago.
    fn expire(&mut self, now_ns: u64) {
        let before = now_ns.saturating_sub(self.window_ns);
        self.forget_oldest(|seen| seen < before);
    }

    /// Closes open traces from the oldest while `close(first_seen_ns)` says so (one, for
    /// the capacity); each record in them whose upstream record never came is unmatched.
    fn forget_oldest(&mut self, close: impl Fn(u64) -> bool) {
        let over = self.open.len() > self.capacity;
        while let Some(&(id, seen)) = self.order.front() {
            let open = self.open.get(&id).is_some_and(|t| t.first_seen_ns == seen);
            if open && !close(seen) {
                return;
            }
            self.order.pop_front();
            if let Some(t) = open.then(|| self.open.remove(&id)).flatten() {
                self.unmatched += unmatched_in(&t);
                if over {
                    self.evicted += 1;
                    return;
                }
            }
        }
    }

    /// Ends the watch: the records of open traces whose upstream never came are unmatched.
    pub fn finish(&mut self) {
        self.unmatched += self.open.values().map(unmatched_in).sum::<u64>();
        self.open.clear();
        self.order.clear();
    }

    /// The hops' statistics, in path order.
    pub fn summaries(&self) -> Vec<HopSummary> {
        self.hops
            .iter()
            .map(|(name, r)| HopSummary { name: name.clone(), kind: HopKind::Transit, stats: r.summary() })
            .collect()
    }

    /// What `result.json` says of the matching.
    pub fn figures(&self) -> Correlation {
        Correlation {
            topics: self
                .topics
                .iter()
                .zip(&self.records)
                .zip(&self.kinds)
                .map(|((topic, records), kinds)| CorrelatedTopic {
                    topic: topic.clone(),
                    records: *records,
                    timestamp: match kinds {
                        (true, true) => "CreateTime and LogAppendTime",
                        (false, true) => "LogAppendTime",
                        (true, false) => "CreateTime",
                        (false, false) => "none seen",
                    }
                    .into(),
                })
                .collect(),
            foreign: self.foreign,
            unmatched: self.unmatched,
            evicted: self.evicted,
            repeated: self.repeated,
            window_s: self.window_ns as f64 / 1e9,
            capacity: self.capacity as u64,
        }
    }
}

/// Records of `t` on a topic after the first whose record on the topic before is missing.
fn unmatched_in(t: &Trace) -> u64 {
    t.ts_ms.windows(2).filter(|w| w[0].is_none() && w[1].is_some()).count() as u64
}

/// A timestamp difference as a latency; a negative one (producers' clocks apart) is 0.
fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn tp(trace: u8, span: u8) -> Vec<u8> {
        format!("00-{:032x}-{:016x}-01", u128::from(trace) + 1, u64::from(span) + 1).into_bytes()
    }

    fn topics() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    #[test]
    fn hops_are_timed_by_trace_id_whatever_order_the_topics_arrive_in() {
        let mut c = Correlator::new(&topics(), Duration::from_secs(10), 100, 0);
        // Trace 1 in path order; trace 2 with its last record first, then its first.
        c.record("a", Some(&tp(1, 1)), Timestamp::CreateTime(1_000), S);
        c.record("b", Some(&tp(1, 2)), Timestamp::CreateTime(1_004), S);
        c.record("c", Some(&tp(1, 3)), Timestamp::LogAppendTime(1_010), S);
        c.record("c", Some(&tp(2, 3)), Timestamp::LogAppendTime(2_009), S);
        c.record("b", Some(&tp(2, 2)), Timestamp::CreateTime(2_004), S);
        c.record("a", Some(&tp(2, 1)), Timestamp::CreateTime(2_000), S);
        c.finish();
        // HdrHistogram keeps three significant digits: whole milliseconds come back rounded.
        let ms = |v: f64| (v * 10.0).round() / 10.0;
        let hops: Vec<(String, u64, f64, f64)> = c
            .summaries()
            .into_iter()
            .map(|h| (h.name, h.stats.count, ms(h.stats.min_ms), ms(h.stats.max_ms)))
            .collect();
        assert_eq!(hops, [("a->b".to_owned(), 2, 4.0, 4.0), ("b->c".to_owned(), 2, 5.0, 6.0)]);
        let e2e = c.end_to_end.summary();
        assert_eq!((e2e.count, ms(e2e.min_ms), ms(e2e.max_ms)), (2, 9.0, 10.0));
        let f = c.figures();
        assert_eq!((f.foreign, f.unmatched, f.evicted), (0, 0, 0));
        let kinds: Vec<&str> = f.topics.iter().map(|t| t.timestamp.as_str()).collect();
        assert_eq!(kinds, ["CreateTime", "CreateTime", "LogAppendTime"]);
    }

    #[test]
    fn records_without_trace_context_are_foreign_and_orphans_past_the_window_unmatched() {
        let mut c = Correlator::new(&topics(), Duration::from_secs(2), 100, 0);
        c.record("a", None, Timestamp::CreateTime(1), S);
        c.record("b", Some(b"00-not-a-trace"), Timestamp::CreateTime(1), S);
        c.record("a", Some(&tp(3, 1)), Timestamp::NotAvailable, S);
        // Downstream of a trace never seen upstream: waits, then is unmatched.
        c.record("b", Some(&tp(4, 2)), Timestamp::CreateTime(5), S);
        // Upstream whose downstream never comes: closed by the window, nothing unmatched.
        c.record("a", Some(&tp(5, 1)), Timestamp::CreateTime(5), S);
        c.record("a", Some(&tp(6, 1)), Timestamp::CreateTime(9), 10 * S);
        let f = c.figures();
        assert_eq!((f.foreign, f.unmatched, f.evicted), (3, 1, 0));
        assert_eq!(c.open.len(), 1, "only the newest trace is still open");
        assert_eq!(c.summaries()[0].stats.count, 0, "nothing was timed");
        assert_eq!((f.topics[0].records, f.topics[1].records), (4, 2));
    }

    #[test]
    fn the_capacity_bounds_what_waits_and_counts_what_it_forgets() {
        let mut c = Correlator::new(&topics(), Duration::from_secs(3600), 10, 0);
        for t in 0..50u8 {
            c.record("a", Some(&tp(t, 1)), Timestamp::CreateTime(i64::from(t)), S);
        }
        assert!(c.open.len() <= 10);
        assert_eq!(c.figures().evicted, 40);
        // The newest are still matched.
        c.record("b", Some(&tp(49, 2)), Timestamp::CreateTime(52), S);
        assert_eq!(c.summaries()[0].stats.count, 1);
    }
}
