//! The coordinator's side: waits for the workers' hellos, measures each one's clock, and
//! merges what they report. Histograms are merged by adding counts: every worker's
//! intervals start on the same second boundaries (the plan's measuring start, on the
//! coordinator's clock), and are recorded again, in time order, bucket by bucket, so the
//! merged percentiles are the ones of all the events together, never an average.

use super::clock::{broker_bound, from_end, measure};
use super::{APPEND_TOPIC, CONTROL_TOPIC, Control, END_TO_END, Last, LoadDone, Report, UNCORRECTED};
use crate::result::{SINK, SOURCE};
use loadgen::clocks::{Estimate, Interval, estimate};
use loadgen::{DriveReport, Tally};
use pipeline::KafkaSettings;
use probes::{HopSet, LatencyRecorder};
use rdkafka::Message as _;
use reports::workers::{ClockOffset, WorkerFigures, WorkersInfo};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Pings per clock measurement, how far apart, and how many of the lowest-delay kept.
const PINGS: u64 = 24;
const PING_GAP: Duration = Duration::from_millis(5);
const KEEP: usize = 8;

/// The coordinator's clock.
pub fn now() -> i64 {
    probes::now_ns() as i64
}

/// A worker that said hello, and its clock as measured.
#[derive(Debug, Clone)]
pub struct Registered {
    pub name: String,
    pub clock: Estimate,
}

/// Waits up to `timeout` for `n` workers to say hello on the control topic, then measures
/// each one's clock offset: four-timestamp exchanges, narrowed by the broker's append
/// times where both sides could read them.
pub async fn register(kafka: &KafkaSettings, n: usize, timeout: Duration) -> Result<Vec<Registered>, String> {
    let control = from_end(kafka, CONTROL_TOPIC, "coordinator-hello").await?;
    let mine = broker_bound(kafka, APPEND_TOPIC, 10, now).await.ok();
    let until = Instant::now() + timeout;
    let mut hellos: Vec<(String, Option<Interval>)> = Vec::new();
    while hellos.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, control.recv()).await {
            Ok(m) => m.map_err(|e| format!("reading {CONTROL_TOPIC}: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "{} of {n} workers said hello within {} on {}: start `tailgate worker --bootstrap {}` on each \
                     load host{}",
                    hellos.len(),
                    humantime::format_duration(timeout),
                    kafka.names.of(CONTROL_TOPIC),
                    kafka.bootstrap,
                    if hellos.is_empty() { String::new() } else { format!(" (so far: {})", names(&hellos)) }
                ));
            }
        };
        let Some(Ok(Control::Hello { from, append_bound })) = m.payload().map(serde_json::from_slice::<Control>) else {
            continue;
        };
        if safe_name(&from) != from {
            eprintln!(
                "warning: a worker called {from:?} said hello; names are [A-Za-z0-9_.-], at most 64: passed over"
            );
        } else if !hellos.iter().any(|(n, _)| *n == from) {
            hellos.push((from, append_bound));
        }
    }
    // In name order, so that a run's ids and pairings do not depend on who spoke first.
    hellos.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (name, theirs) in hellos {
        let clock = measure_clock(kafka, &name, theirs.zip(mine)).await?;
        out.push(Registered { name, clock });
    }
    Ok(out)
}

/// One worker's offset: the exchanges, narrowed by `append` (its and the coordinator's
/// offsets from the broker) when known.
pub async fn measure_clock(
    kafka: &KafkaSettings,
    name: &str,
    append: Option<(Interval, Interval)>,
) -> Result<Estimate, String> {
    let exchanges = measure(kafka, name, PINGS, PING_GAP, now).await?;
    let e = estimate(&exchanges, KEEP)
        .ok_or_else(|| format!("worker {name} answered none of {PINGS} clock pings on {CONTROL_TOPIC}"))?;
    Ok(match append {
        Some((theirs, mine)) => e.narrowed(theirs.minus(mine), "ntp+log_append_time"),
        None => e,
    })
}

fn names(hellos: &[(String, Option<Interval>)]) -> String {
    hellos.iter().map(|h| h.0.as_str()).collect::<Vec<_>>().join(", ")
}

/// A worker's name as the run directory may use it: `[A-Za-z0-9_.-]`, at most 64.
pub fn safe_name(name: &str) -> String {
    let s: String =
        name.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
    if s.is_empty() { "worker".into() } else { s }
}

/// Whose events each worker's audience follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Following {
    /// Its own: sent and received on one host, on one clock.
    Own,
    /// The next worker's: every latency crosses hosts.
    Crossed,
}

impl Following {
    /// The index of the worker whose events worker `k` of `n` follows.
    pub fn of(self, k: usize, n: usize) -> usize {
        match self {
            Self::Own => k,
            Self::Crossed => (k + 1) % n,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Crossed => "crossed",
        }
    }
}

/// The most a corrected end-to-end latency can be off by, ns: for each receiver following
/// another host's events, the two offsets' bounds added.
pub fn uncertainty_ns(workers: &[Registered], following: Following) -> i64 {
    let n = workers.len();
    (0..n)
        .filter(|&k| following.of(k, n) != k)
        .map(|k| workers[k].clock.bound_ns + workers[following.of(k, n)].clock.bound_ns)
        .max()
        .unwrap_or(0)
}

/// What the coordinator knows of one worker.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    delivered: u64,
    /// `.hlog` lines per metric, in the order they came.
    logs: BTreeMap<String, Vec<u8>>,
    load: Option<LoadDone>,
    last: Option<Last>,
    heard: Option<Instant>,
    lost: Option<String>,
}

impl Seen {
    /// Events it sent: its load's final count once it has one.
    fn sent(&self) -> u64 {
        self.load.as_ref().map_or(self.sent, |l| l.sent.max(self.sent))
    }
}

/// The workers' reports, merged as they come.
#[derive(Debug)]
pub struct Collector {
    run: u64,
    /// Where every worker's intervals start (the measuring start, coordinator's clock).
    base_ns: u64,
    start_ns: u64,
    names: Vec<String>,
    seen: Vec<Seen>,
}

impl Collector {
    pub fn new(run: u64, start_ns: u64, base_ns: u64, workers: &[Registered]) -> Self {
        let heard = Some(Instant::now());
        Self {
            run,
            base_ns,
            start_ns,
            names: workers.iter().map(|w| w.name.clone()).collect(),
            seen: workers.iter().map(|_| Seen { heard, ..Seen::default() }).collect(),
        }
    }

    /// Takes one report; whether it was of this run from one of its workers.
    pub fn take(&mut self, r: Report) -> bool {
        let Some(k) = self.names.iter().position(|n| *n == r.from).filter(|_| r.run == self.run) else {
            return false;
        };
        let s = &mut self.seen[k];
        if s.lost.is_some() {
            // A worker taken for lost that speaks again: its figures still count.
            s.lost = None;
        }
        (s.sent, s.delivered, s.heard) = (s.sent.max(r.sent), s.delivered.max(r.delivered), Some(Instant::now()));
        for (metric, lines) in r.logs {
            s.logs.entry(metric).or_default().extend_from_slice(lines.as_bytes());
        }
        if r.load.is_some() {
            s.load = r.load;
        }
        if r.last.is_some() {
            s.last = r.last;
        }
        true
    }

    /// Events sent and delivered, as reported so far.
    pub fn sent(&self) -> u64 {
        self.seen.iter().map(Seen::sent).sum()
    }

    pub fn delivered(&self) -> u64 {
        self.seen.iter().map(|s| s.delivered).sum()
    }

    /// Workers not heard from for `silence` are taken for lost; their names, newly so.
    pub fn mark_silent(&mut self, silence: Duration) -> Vec<String> {
        let at_s = probes::now_ns().saturating_sub(self.start_ns) as f64 / 1e9;
        let mut out = Vec::new();
        for (k, s) in self.seen.iter_mut().enumerate() {
            let quiet = s.heard.is_some_and(|h| h.elapsed() > silence);
            if quiet && s.lost.is_none() && s.last.is_none() {
                s.lost = Some(format!(
                    "no report for {} at {at_s:.1} s into the load; its last: {} sent, {} received",
                    humantime::format_duration(silence),
                    s.sent,
                    s.delivered
                ));
                out.push(self.names[k].clone());
            }
        }
        out
    }

    /// Every worker's load is over, or it is lost.
    pub fn loads_over(&self) -> bool {
        self.seen.iter().all(|s| s.load.is_some() || s.lost.is_some())
    }

    /// Every worker still there has sent its last report.
    pub fn all_last(&self) -> bool {
        self.seen.iter().all(|s| s.last.is_some() || s.lost.is_some())
    }

    /// The names of the lost workers.
    pub fn lost(&self) -> Vec<&str> {
        self.names.iter().zip(&self.seen).filter(|(_, s)| s.lost.is_some()).map(|(n, _)| n.as_str()).collect()
    }

    /// The loads together: counts added, schedule lags merged.
    pub fn drive_report(&self) -> DriveReport {
        let mut lag = LatencyRecorder::new("schedule_lag", self.base_ns, Duration::from_secs(1));
        let loads: Vec<&LoadDone> = self.seen.iter().filter_map(|s| s.load.as_ref()).collect();
        merge_into(&mut lag, self.base_ns, loads.iter().map(|l| l.schedule_lag.as_bytes()));
        DriveReport {
            sent: self.sent(),
            warmup_sent: loads.iter().map(|l| l.warmup_sent).sum(),
            schedule_lag: lag,
            stopped_early: loads.iter().any(|l| l.stopped_early) || self.seen.iter().any(|s| s.lost.is_some()),
        }
    }

    /// Why a worker's load went wrong, and the gateway's refusals, as notes.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, s) in self.names.iter().zip(&self.seen) {
            if let Some(l) = &s.load {
                if let Some(e) = &l.error {
                    out.push(format!("worker {name}: its load stopped: {e}"));
                }
                if l.refused > 0 {
                    let first = l.first_refusal.as_deref().unwrap_or("?");
                    out.push(format!(
                        "worker {name}: the gateway refused {} actions (lost); first: {first}",
                        l.refused
                    ));
                }
            }
            if let Some(e) = s.last.as_ref().and_then(|l| l.error.as_ref()) {
                out.push(format!("worker {name}: its audience: {e}"));
            }
        }
        out
    }

    /// Actions the gateway refused, over every worker.
    pub fn refused(&self) -> u64 {
        self.seen.iter().filter_map(|s| s.load.as_ref()).map(|l| l.refused).sum()
    }

    /// The audiences together: a tally of `run` whose counts are the workers' added and
    /// whose recorders hold every worker's intervals, merged.
    pub fn tally(&self) -> Tally {
        let hops = HopSet::new(SOURCE, &pipeline::STAGES, SINK, self.base_ns, Duration::from_secs(1));
        let mut t = Tally::new(self.run, self.base_ns, hops);
        let lasts: Vec<&Last> = self.seen.iter().filter_map(|s| s.last.as_ref()).collect();
        t.delivered = self.delivered();
        t.warmup_delivered = lasts.iter().map(|l| l.warmup_delivered).sum();
        t.duplicates = lasts.iter().map(|l| l.duplicates).sum();
        t.reordered = lasts.iter().map(|l| l.reordered).sum();
        t.unexpected = lasts.iter().map(|l| l.unexpected).sum();
        t.unreadable = lasts.iter().map(|l| l.unreadable).sum();
        let base = self.base_ns;
        merge_into(&mut t.hops.end_to_end, base, self.logs_of(END_TO_END));
        for h in t.hops.hops_mut() {
            let logs: Vec<&[u8]> = self.logs_of(&h.name).collect();
            merge_into(&mut h.recorder, base, logs);
        }
        t
    }

    fn logs_of<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.seen.iter().filter_map(move |s| s.logs.get(metric).map(Vec::as_slice))
    }

    /// Each worker's interval logs as the run directory keeps them: `workers/NAME.hlog`
    /// (end to end, corrected) and `workers/NAME.uncorrected.hlog`.
    pub fn worker_logs(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (name, s) in self.names.iter().zip(&self.seen) {
            for (metric, file) in
                [(END_TO_END, format!("{name}.hlog")), (UNCORRECTED, format!("{name}.uncorrected.hlog"))]
            {
                let mut log = LatencyRecorder::new(metric, self.base_ns, Duration::from_secs(1)).header();
                log.extend_from_slice(s.logs.get(metric).map_or(&[][..], Vec::as_slice));
                out.push((file, log));
            }
        }
        out
    }

    /// What `result.json` says of the workers. `unreported`: events the pipeline took in
    /// beyond what the workers reported sending (a lost worker's last moments).
    pub fn info(&self, workers: &[Registered], following: Following, unreported: u64) -> WorkersInfo {
        let n = workers.len();
        let lost = self.lost().len() as u64;
        let summary = |logs: Vec<&[u8]>| {
            let mut r = LatencyRecorder::new(END_TO_END, self.base_ns, Duration::from_secs(1));
            merge_into(&mut r, self.base_ns, logs);
            r.summary()
        };
        let figures = (0..n)
            .map(|k| {
                let s = &self.seen[k];
                let log = |m: &str| s.logs.get(m).map_or(&[][..], Vec::as_slice);
                // Unreported sends are shared out among the lost workers, the first taking the rest.
                let share = if s.lost.is_some() {
                    let first = self.seen.iter().position(|s| s.lost.is_some()) == Some(k);
                    unreported / lost + if first { unreported % lost } else { 0 }
                } else {
                    0
                };
                WorkerFigures {
                    name: self.names[k].clone(),
                    index: k as u64,
                    state: if s.lost.is_some() { "lost" } else { "finished" }.into(),
                    lost: s.lost.clone(),
                    sent: s.sent(),
                    unreported_sent: share,
                    follows: self.names[following.of(k, n)].clone(),
                    delivered: s.delivered,
                    end_to_end: summary(vec![log(END_TO_END)]),
                    uncorrected: summary(vec![log(UNCORRECTED)]),
                    interval_log: format!("workers/{}.hlog", self.names[k]),
                }
            })
            .collect();
        WorkersInfo {
            audience: following.name().into(),
            workers: figures,
            clock_uncertainty_ms: uncertainty_ns(workers, following) as f64 / 1e6,
            max_uncertainty_ms: None,
            uncorrected_end_to_end: summary(self.logs_of(UNCORRECTED).collect()),
        }
    }
}

/// The clocks as `result.json` gives them; `after`: the same measured after the load.
pub fn clock_offsets(workers: &[Registered], after: &[Option<Estimate>]) -> Vec<ClockOffset> {
    let ms = |ns: i64| ns as f64 / 1e6;
    workers
        .iter()
        .enumerate()
        .map(|(k, w)| ClockOffset {
            worker: w.name.clone(),
            offset_ms: ms(w.clock.offset_ns),
            bound_ms: ms(w.clock.bound_ns),
            method: w.clock.method.clone(),
            samples: w.clock.samples,
            kept: w.clock.kept,
            drift_ms: after.get(k).and_then(Option::as_ref).map(|a| ms(a.offset_ns - w.clock.offset_ns)),
        })
        .collect()
}

/// Records the intervals of `logs` (`.hlog` lines, header or not) into `into`, in time
/// order, each bucket at its interval's start: counts added, intervals aligned.
pub fn merge_into<'a>(into: &mut LatencyRecorder, base_ns: u64, logs: impl IntoIterator<Item = &'a [u8]>) {
    let mut all: Vec<reports::hlog::Interval> =
        logs.into_iter().filter_map(|l| reports::hlog::Series::parse(l).ok()).flat_map(|s| s.intervals).collect();
    all.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    for i in &all {
        let at_ns = base_ns + (i.start_s * 1e9).round() as u64;
        for &(v, n) in &i.counts {
            into.record_n(u64::from(v) * 1_000, u64::from(n), at_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(name: &str, bound_ms: i64) -> Registered {
        let clock =
            Estimate { offset_ns: 0, bound_ns: bound_ms * 1_000_000, samples: 10, kept: 8, method: "ntp".into() };
        Registered { name: name.into(), clock }
    }

    /// A worker's log of `values` (µs) recorded in the seconds given.
    fn log(base_ns: u64, values: &[(u64, u64)]) -> String {
        let mut r = LatencyRecorder::new(END_TO_END, base_ns, Duration::from_secs(1));
        for &(second, us) in values {
            r.record(us * 1_000, base_ns + second * 1_000_000_000 + 1);
        }
        String::from_utf8(r.take_closed(true)).unwrap_or_default()
    }

    #[test]
    fn merged_histograms_add_counts_second_by_second() {
        let base = 1_700_000_000_000_000_000;
        let workers = [registered("a", 1), registered("b", 1)];
        let mut c = Collector::new(7, base, base, &workers);
        let a = log(base, &[(0, 1_000), (0, 2_000), (1, 3_000)]);
        let b = log(base, &[(0, 10_000), (2, 20_000)]);
        for (from, l, sent) in [("a", a, 3), ("b", b, 2)] {
            let report = Report {
                from: from.into(),
                run: 7,
                sent,
                delivered: sent,
                logs: vec![(END_TO_END.into(), l)],
                ..Report::default()
            };
            assert!(c.take(report));
        }
        assert!(!c.take(Report { from: "a".into(), run: 8, ..Report::default() }), "another run's");
        let mut t = c.tally();
        assert_eq!((t.delivered, c.sent()), (5, 5));
        let s = t.hops.end_to_end.summary();
        assert_eq!(s.count, 5);
        assert!((s.max_ms - 20.0).abs() < 0.1, "{s:?}");
        let merged = reports::hlog::Series::parse(&t.hops.end_to_end.interval_log()).unwrap_or_default();
        let per_second: Vec<(f64, u64)> = merged.intervals.iter().map(|i| (i.start_s, i.len())).collect();
        assert_eq!(per_second, [(0.0, 3), (1.0, 1), (2.0, 1)]);
    }

    #[test]
    fn a_silent_worker_is_lost_by_name_and_its_load_counts_as_over() {
        let workers = [registered("a", 1), registered("b", 1)];
        let mut c = Collector::new(1, 0, 0, &workers);
        c.take(Report { from: "a".into(), run: 1, load: Some(LoadDone::default()), ..Report::default() });
        assert!(!c.loads_over());
        c.seen[1].heard = Some(Instant::now() - Duration::from_secs(10));
        assert_eq!(c.mark_silent(Duration::from_secs(3)), ["b"]);
        assert!(c.loads_over() && c.mark_silent(Duration::from_secs(3)).is_empty());
        assert_eq!(c.lost(), ["b"]);
        let info = c.info(&workers, Following::Own, 5);
        assert_eq!((info.workers[1].state.as_str(), info.workers[1].unreported_sent), ("lost", 5));
    }

    #[test]
    fn only_latencies_that_cross_hosts_carry_clock_uncertainty() {
        let workers = [registered("a", 1), registered("b", 2), registered("c", 4)];
        assert_eq!(uncertainty_ns(&workers, Following::Own), 0);
        // c follows a: 4 + 1; b follows c: 2 + 4, the most.
        assert_eq!(uncertainty_ns(&workers, Following::Crossed), 6_000_000);
        assert_eq!(Following::Crossed.of(2, 3), 0);
        assert_eq!(safe_name("w/../1 x"), "w_.._1_x");
    }
}
