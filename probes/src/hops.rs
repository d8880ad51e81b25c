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

/// Name of the transit hop from `from` to `to`.
pub fn transit_name(from: &str, to: &str) -> String {
    format!("{from}->{to}")
}

/// The recorders for end-to-end and every hop of one pipeline path.
#[derive(Debug)]
pub struct HopSet {
    pub end_to_end: LatencyRecorder,
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
        Self { end_to_end: LatencyRecorder::new("end_to_end", base_ns, interval), hops, off_path: 0 }
    }

    /// Records one delivered event. Allocates nothing.
    pub fn record(&mut self, intended_ns: u64, stamps: &[u8], received_ns: u64) -> Result<(), HeaderError> {
        let n_stages = self.hops.len() / 2;
        let (mut count, mut on_path) = (0, true);
        for (i, s) in StampIter::new(stamps)?.enumerate() {
            let s = s?;
            count += 1;
            on_path &= i < n_stages && self.hops[2 * i + 1].name == s.stage;
        }
        self.end_to_end.record(received_ns.saturating_sub(intended_ns), received_ns);
        if !on_path || count != n_stages {
            self.off_path += 1;
            return Ok(());
        }
        let mut prev = intended_ns;
        // Checked above: every stamp parses.
        for (i, s) in StampIter::new(stamps)?.flatten().enumerate() {
            self.hops[2 * i].recorder.record(s.ingress_ns.saturating_sub(prev), received_ns);
            self.hops[2 * i + 1].recorder.record(s.egress_ns - s.ingress_ns, received_ns);
            prev = s.egress_ns;
        }
        self.hops[2 * n_stages].recorder.record(received_ns.saturating_sub(prev), received_ns);
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
