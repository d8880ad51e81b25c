//! Splits one delivered event's end-to-end time into hops: a transit hop between every two
//! consecutive stamps (produce, broker, fetch) and a service hop inside every stage. The hops
//! telescope, so their sum is exactly the end-to-end time.

use crate::headers::{HeaderError, StampIter};
use crate::recorder::{LatencyRecorder, Summary};
use serde::Serialize;
use std::time::Duration;

/// Whether a hop is time between stages or time inside one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HopKind {
    Transit,
    Service,
}

/// One hop's recorder.
#[derive(Debug)]
pub struct Hop {
    pub name: String,
    pub kind: HopKind,
    pub recorder: LatencyRecorder,
}

/// A hop's statistics, as `result.json` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HopSummary {
    pub name: String,
    pub kind: HopKind,
    #[serde(flatten)]
    pub stats: Summary,
}

/// Where events start, in hop names.
pub const SOURCE: &str = "source";
/// Where events end (the client the gateway pushes to), in hop names.
pub const SINK: &str = "client";

/// Name of the transit hop from `from` to `to`.
pub fn transit_name(from: &str, to: &str) -> String {
    format!("{from}->{to}")
}

/// One hop of one event: between `from` and `to` (transit), or inside the stage
/// `from == to` (service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopSpan<'a> {
    pub kind: HopKind,
    pub from: &'a str,
    pub to: &'a str,
    pub ns: u64,
}

impl HopSpan<'_> {
    /// Whether this hop is the one called `name` (compared without allocating).
    pub fn is(&self, name: &str) -> bool {
        match self.kind {
            HopKind::Service => name == self.from,
            HopKind::Transit => name
                .strip_prefix(self.from)
                .and_then(|rest| rest.strip_prefix("->"))
                .is_some_and(|rest| rest == self.to),
        }
    }

    /// The hop's name, as reports list it.
    pub fn name(&self) -> String {
        match self.kind {
            HopKind::Service => self.from.to_owned(),
            HopKind::Transit => transit_name(self.from, self.to),
        }
    }
}

/// Splits one delivered event's time from `intended_ns` to `received_ns` into its hops, in
/// path order (`source -> first stage`, first stage, ..., `last stage -> sink`), calling
/// `f` for each. The hops telescope to the end-to-end time. Checks every stamp before the
/// first call, so `f` sees a whole path or nothing. Allocates nothing.
pub fn for_each_hop<'a>(
    source: &'a str,
    intended_ns: u64,
    stamps: &'a [u8],
    received_ns: u64,
    sink: &'a str,
    mut f: impl FnMut(HopSpan<'a>),
) -> Result<(), HeaderError> {
    StampIter::validate(stamps)?;
    let (mut prev, mut at) = (source, intended_ns);
    // Checked above: every stamp parses.
    for s in StampIter::new(stamps)?.flatten() {
        f(HopSpan { kind: HopKind::Transit, from: prev, to: s.stage, ns: s.ingress_ns.saturating_sub(at) });
        f(HopSpan { kind: HopKind::Service, from: s.stage, to: s.stage, ns: s.egress_ns - s.ingress_ns });
        (prev, at) = (s.stage, s.egress_ns);
    }
    f(HopSpan { kind: HopKind::Transit, from: prev, to: sink, ns: received_ns.saturating_sub(at) });
    Ok(())
}

/// Most hops a [`HopSet`] path may have (31 stages).
pub const MAX_HOPS: usize = 63;

/// The recorders for end-to-end and every hop of one pipeline path.
#[derive(Debug)]
pub struct HopSet {
    pub end_to_end: LatencyRecorder,
    source: String,
    sink: String,
    hops: Vec<Hop>,
    /// Events whose stamps named other stages than the expected path (recorded end to end only).
    pub off_path: u64,
}

impl HopSet {
    /// Recorders for the path `source -> stages... -> sink`.
    pub fn new(source: &str, stages: &[&str], sink: &str, base_ns: u64, interval: Duration) -> Self {
        let mut hops = Vec::with_capacity(stages.len() * 2 + 1);
        let mut push = |name: String, kind| {
            let recorder = LatencyRecorder::new(&name, base_ns, interval);
            hops.push(Hop { name, kind, recorder });
        };
        let mut prev = source;
        for stage in stages {
            push(transit_name(prev, stage), HopKind::Transit);
            push((*stage).to_owned(), HopKind::Service);
            prev = stage;
        }
        push(transit_name(prev, sink), HopKind::Transit);
        Self {
            end_to_end: LatencyRecorder::new("end_to_end", base_ns, interval),
            source: source.to_owned(),
            sink: sink.to_owned(),
            hops,
            off_path: 0,
        }
    }

    /// Records one delivered event. Allocates nothing.
    pub fn record(&mut self, intended_ns: u64, stamps: &[u8], received_ns: u64) -> Result<(), HeaderError> {
        // One walk: check the path and keep each hop's time on the stack, then record.
        let mut times = [0u64; MAX_HOPS];
        let (mut n, mut on_path) = (0, self.hops.len() <= MAX_HOPS);
        for_each_hop(&self.source, intended_ns, stamps, received_ns, &self.sink, |span| {
            on_path &= n < MAX_HOPS && self.hops.get(n).is_some_and(|h| span.is(&h.name));
            if on_path {
                times[n] = span.ns;
            }
            n += 1;
        })?;
        self.end_to_end.record(received_ns.saturating_sub(intended_ns), received_ns);
        if !on_path || n != self.hops.len() {
            self.off_path += 1;
            return Ok(());
        }
        for (h, ns) in self.hops.iter_mut().zip(times) {
            h.recorder.record(ns, received_ns);
        }
        Ok(())
    }

    /// The hops in path order.
    pub fn hops(&self) -> &[Hop] {
        &self.hops
    }

    /// Mutable access, to write interval logs.
    pub fn hops_mut(&mut self) -> &mut [Hop] {
        &mut self.hops
    }

    /// Statistics for every hop, in path order.
    pub fn summaries(&self) -> Vec<HopSummary> {
        self.hops
            .iter()
            .map(|h| HopSummary { name: h.name.clone(), kind: h.kind, stats: h.recorder.summary() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_telescope_to_end_to_end() {
        let mut set = HopSet::new("source", &["a", "b"], "client", 0, Duration::from_secs(1));
        let names: Vec<_> = set.hops().iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["source->a", "a", "a->b", "b", "b->client"]);
        // intended 0, a: 1ms..3ms, b: 6ms..10ms, received 15ms
        set.record(0, b"a:1000000:3000000,b:6000000:10000000", 15_000_000).unwrap();
        let means: Vec<f64> = set.summaries().iter().map(|h| h.stats.mean_ms).collect();
        // HdrHistogram keeps three significant digits.
        for (got, want) in means.iter().zip([1.0, 2.0, 3.0, 4.0, 5.0]) {
            assert!((got - want).abs() <= want * 1e-3, "{means:?}");
        }
        assert!((set.end_to_end.summary().mean_ms - 15.0).abs() <= 15.0 * 1e-3);
        assert_eq!(set.off_path, 0);
    }

    #[test]
    fn spans_match_names_without_allocating_and_telescope() {
        let mut spans = Vec::new();
        for_each_hop("source", 0, b"a:2:5,b:9:10", 12, "client", |s| spans.push((s.name(), s.ns))).unwrap();
        let want = [("source->a", 2), ("a", 3), ("a->b", 4), ("b", 1), ("b->client", 2)];
        assert_eq!(spans, want.map(|(n, v)| (n.to_owned(), v)));
        let span = HopSpan { kind: HopKind::Transit, from: "a", to: "b", ns: 0 };
        assert!(span.is("a->b") && !span.is("a->bb") && !span.is("a") && !span.is("a-b"));
        let mut called = false;
        assert!(for_each_hop("s", 0, b"a:1:2,bad", 3, "c", |_| called = true).is_err());
        assert!(!called, "a broken path is reported before any hop");
    }

    #[test]
    fn an_unexpected_path_counts_end_to_end_only() {
        let mut set = HopSet::new("source", &["a", "b"], "client", 0, Duration::from_secs(1));
        set.record(0, b"a:1000000:3000000", 15_000_000).unwrap();
        set.record(0, b"b:1000000:3000000,a:4000000:5000000", 15_000_000).unwrap();
        assert_eq!(set.off_path, 2);
        assert_eq!(set.end_to_end.summary().count, 2);
        assert_eq!(set.hops()[0].recorder.summary().count, 0);
        assert!(set.record(0, b"a:x:1", 2).is_err());
    }
}
