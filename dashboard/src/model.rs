//! What the dashboard knows: one HdrHistogram per second for end to end and for every hop
//! seen in the stamps (names are learned from the data, so any pipeline that forwards the
//! headers can be watched), merged on demand into the selected rolling window.

use hdrhistogram::Histogram;
use probes::hops::{HopKind, HopSpan, for_each_hop};
use std::collections::VecDeque;
use std::time::Duration;

/// Seconds of history kept (the longest window).
pub const HISTORY_S: u64 = 60;

/// One delivered (or tapped) event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub intended_ns: u64,
    pub received_ns: u64,
    /// The `tg-stamps` value.
    pub stamps: String,
}

/// How far one stage is behind its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLag {
    pub stage: String,
    pub events: u64,
}

/// Counters from the run (or the tap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub sent: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Events a connector transform dropped on purpose: settled, not in flight.
    pub filtered: u64,
    pub duplicates: u64,
    /// The load generator's largest schedule lag since the last progress, ms.
    pub schedule_lag_ms: Option<f64>,
    /// Events waiting in front of each stage.
    pub lags: Vec<StageLag>,
}

/// An SLA bound the view checks live (`max` objectives on latency metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `end_to_end.p99_ms`, `hops.agent.p99_ms`, ...
    pub metric: String,
    pub max: f64,
}

/// The run's outcome, shown once it is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub passed: bool,
    pub lines: Vec<String>,
}

/// What the dashboard is looking at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub title: String,
    pub profile: String,
    pub broker: String,
    /// Epoch ns the view started.
    pub started_ns: u64,
    /// How long the run is planned to take (none for `watch`).
    pub planned: Option<Duration>,
    pub budgets: Vec<Budget>,
    /// Where events end: `client` for a run, `tap` for `watch`.
    pub sink: String,
}

/// One message into the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// What is being watched, once it is known (replaces the initial header).
    Meta(Meta),
    Sample(Sample),
    Progress(Progress),
    Finished(Verdict),
    /// The run failed; the text says why.
    Failed(String),
    /// A scheduled fault began, or ended (the same `kind` and `began_ns` again).
    Fault(FaultMark),
}

/// A fault the run applied, marked on the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultMark {
    pub kind: String,
    /// Epoch ns.
    pub began_ns: u64,
    /// Epoch ns; `None` while it lasts.
    pub ended_ns: Option<u64>,
}

/// Rolling window lengths the user cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowSize {
    OneSecond,
    #[default]
    TenSeconds,
    OneMinute,
}

impl WindowSize {
    pub const fn seconds(self) -> u64 {
        match self {
            Self::OneSecond => 1,
            Self::TenSeconds => 10,
            Self::OneMinute => 60,
        }
    }

    pub const fn next(self) -> Self {
        match self {
            Self::OneSecond => Self::TenSeconds,
            Self::TenSeconds => Self::OneMinute,
            Self::OneMinute => Self::OneSecond,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Self::OneSecond => "1s",
            Self::TenSeconds => "10s",
            Self::OneMinute => "1m",
        }
    }
}

/// Panels `tab` moves the focus between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Panel {
    #[default]
    Latency,
    Hops,
    Histogram,
    Throughput,
}

impl Panel {
    pub const fn next(self) -> Self {
        match self {
            Self::Latency => Self::Hops,
            Self::Hops => Self::Histogram,
            Self::Histogram => Self::Throughput,
            Self::Throughput => Self::Latency,
        }
    }
}

fn histogram() -> Histogram<u32> {
    // Two significant digits keep a minute of per-second histograms small.
    #[allow(clippy::unwrap_used)]
    Histogram::new_with_bounds(1, probes::recorder::HIGHEST_US, 2).unwrap()
}

#[derive(Debug)]
struct Bucket {
    second: u64,
    e2e: Histogram<u32>,
    hops: Vec<Histogram<u32>>,
}

/// Percentiles of one metric over a window, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    fn of(h: &Histogram<u32>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }

    /// The statistic a metric path ends in (`p99_ms`, ...).
    pub fn get(&self, stat: &str) -> Option<f64> {
        Some(match stat {
            "p50_ms" => self.p50,
            "p90_ms" => self.p90,
            "p99_ms" => self.p99,
            "p999_ms" => self.p999,
            "max_ms" => self.max,
            "mean_ms" => self.mean,
            _ => return None,
        })
    }
}

/// A hop's statistics in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct HopView {
    pub name: String,
    pub transit: bool,
    pub stats: Stats,
    /// Share of the end-to-end mean, 0..=1.
    pub share: f64,
    /// The budget it breaks, if any.
    pub over: Option<Budget>,
}

/// Everything a frame shows about latency in the current window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowView {
    pub end_to_end: Stats,
    pub end_to_end_over: Option<Budget>,
    pub hops: Vec<HopView>,
    /// (upper bound ms, count) bins of the end-to-end distribution.
    pub bins: Vec<(f64, u64)>,
    /// Per second of the history: (seconds ago, p50, p99).
    pub series: Vec<(f64, f64, f64)>,
    /// Deliveries per second over the window.
    pub delivered_per_s: f64,
}

/// The dashboard's state.
#[derive(Debug)]
pub struct DashState {
    pub meta: Meta,
    pub window: WindowSize,
    pub paused: bool,
    pub focus: Panel,
    /// Clock of the view, epoch ns (frozen while paused).
    pub now_ns: u64,
    pub progress: Progress,
    pub verdict: Option<Verdict>,
    pub failure: Option<String>,
    /// Samples the feed dropped because the view was behind.
    pub dropped: u64,
    /// Samples whose stamps could not be read.
    pub unreadable: u64,
    /// The run's faults so far, the latest [`Self::MAX_FAULTS`].
    pub faults: Vec<FaultMark>,
    hop_names: Vec<(String, bool)>,
    buckets: VecDeque<Bucket>,
}

impl DashState {
    pub fn new(meta: Meta) -> Self {
        Self {
            now_ns: meta.started_ns,
            meta,
            window: WindowSize::default(),
            paused: false,
            focus: Panel::default(),
            progress: Progress::default(),
            verdict: None,
            failure: None,
            dropped: 0,
            unreadable: 0,
            faults: Vec::new(),
            hop_names: Vec::new(),
            buckets: VecDeque::new(),
        }
    }

    /// Takes one feed message.
    pub fn apply(&mut self, feed: Feed) {
        match feed {
            // A new profile of a sweep starts a new picture.
            Feed::Meta(m) if m.profile != self.meta.profile && !self.meta.profile.is_empty() => {
                let (window, focus) = (self.window, self.focus);
                *self = Self { window, focus, ..Self::new(m) };
            }
            Feed::Meta(m) => self.meta = m,
            Feed::Sample(s) => self.ingest(&s),
            Feed::Progress(p) => self.progress = p,
            Feed::Finished(v) => self.verdict = Some(v),
            Feed::Failed(why) => self.failure = Some(why),
            Feed::Fault(f) => self.mark(f),
        }
    }

    /// Faults kept for the chart.
    pub const MAX_FAULTS: usize = 16;

    fn mark(&mut self, f: FaultMark) {
        if let Some(known) = self.faults.iter_mut().find(|k| k.kind == f.kind && k.began_ns == f.began_ns) {
            *known = f;
            return;
        }
        if self.faults.len() >= Self::MAX_FAULTS {
            self.faults.remove(0);
        }
        self.faults.push(f);
    }

    /// Advances the view's clock (ignored while paused).
    pub fn tick(&mut self, now_ns: u64) {
        if !self.paused {
            self.now_ns = now_ns;
        }
    }

    /// The slot of `span`'s hop, adding one (in every bucket) for a hop not seen before.
    fn hop_index(hop_names: &mut Vec<(String, bool)>, buckets: &mut VecDeque<Bucket>, span: &HopSpan<'_>) -> usize {
        if let Some(i) = hop_names.iter().position(|(n, _)| span.is(n)) {
            return i;
        }
        hop_names.push((span.name(), span.kind == HopKind::Transit));
        for b in buckets {
            b.hops.push(histogram());
        }
        hop_names.len() - 1
    }

    fn bucket(&mut self, second: u64) -> Option<&mut Bucket> {
        let newest = self.buckets.back().map_or(0, |b| b.second);
        if second + HISTORY_S <= newest {
            return None; // older than the history
        }
        if second > newest || self.buckets.is_empty() {
            let hops = self.hop_names.len();
            self.buckets.push_back(Bucket { second, e2e: histogram(), hops: (0..hops).map(|_| histogram()).collect() });
            while self.buckets.front().is_some_and(|b| b.second + HISTORY_S <= second) {
                self.buckets.pop_front();
            }
            return self.buckets.back_mut();
        }
        let at = self.buckets.iter().position(|b| b.second >= second)?;
        if self.buckets[at].second != second {
            let hops = self.hop_names.len();
            let b = Bucket { second, e2e: histogram(), hops: (0..hops).map(|_| histogram()).collect() };
            self.buckets.insert(at, b);
        }
        self.buckets.get_mut(at)
    }

    /// Records one sample.
    pub fn ingest(&mut self, s: &Sample) {
        let Self { meta, hop_names, buckets, .. } = self;
        let sink = if meta.sink.is_empty() { "client" } else { meta.sink.as_str() };
        let mut hops: Vec<(usize, u64)> = Vec::with_capacity(12);
        let walked = for_each_hop("source", s.intended_ns, s.stamps.as_bytes(), s.received_ns, sink, |span| {
            hops.push((Self::hop_index(hop_names, buckets, &span), span.ns));
        });
        if walked.is_err() {
            self.unreadable += 1;
            return;
        }
        let e2e = s.received_ns.saturating_sub(s.intended_ns);
        if let Some(b) = self.bucket(s.received_ns / 1_000_000_000) {
            b.e2e.saturating_record(e2e / 1000);
            for (i, v) in hops {
                b.hops[i].saturating_record(v / 1000);
            }
        }
    }

    /// The budget `metric` breaks with `stats`, if any.
    fn over(&self, prefix: &str, stats: &Stats) -> Option<Budget> {
        self.meta.budgets.iter().find_map(|b| {
            let stat = b.metric.strip_prefix(prefix)?.strip_prefix('.')?;
            (stats.count > 0 && stats.get(stat)? > b.max).then(|| b.clone())
        })
    }

    /// The current window, merged.
    pub fn view(&self) -> WindowView {
        let now_s = self.now_ns / 1_000_000_000;
        let from = now_s.saturating_sub(self.window.seconds() - 1);
        let in_window = || self.buckets.iter().filter(move |b| b.second >= from && b.second <= now_s);
        let mut e2e = histogram();
        let mut hops: Vec<Histogram<u32>> = (0..self.hop_names.len()).map(|_| histogram()).collect();
        for b in in_window() {
            let _ = e2e.add(&b.e2e);
            for (h, bh) in hops.iter_mut().zip(&b.hops) {
                let _ = h.add(bh);
            }
        }
        let end_to_end = Stats::of(&e2e);
        let hop_views = self
            .hop_names
            .iter()
            .zip(&hops)
            .map(|((name, transit), h)| {
                let stats = Stats::of(h);
                let share = if end_to_end.mean > 0.0 { stats.mean / end_to_end.mean } else { 0.0 };
                HopView {
                    name: name.clone(),
                    transit: *transit,
                    stats,
                    share,
                    over: self.over(&format!("hops.{name}"), &stats),
                }
            })
            .collect();
        let series = self
            .buckets
            .iter()
            .filter(|b| b.second <= now_s && !b.e2e.is_empty())
            .map(|b| {
                let s = Stats::of(&b.e2e);
                (-((now_s - b.second) as f64), s.p50, s.p99)
            })
            .collect();
        WindowView {
            end_to_end_over: self.over("end_to_end", &end_to_end),
            end_to_end,
            hops: hop_views,
            bins: bins(&e2e),
            series,
            delivered_per_s: end_to_end.count as f64 / self.window.seconds() as f64,
        }
    }
}

/// Log-spaced bins (1-1.5-2-3-5-7 steps, ms) covering the histogram's values.
fn bins(h: &Histogram<u32>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut edges = Vec::new();
    let mut decade = 0.01;
    while edges.last().is_none_or(|&e: &f64| e * 1000.0 < h.max() as f64) {
        for m in [1.0, 1.5, 2.0, 3.0, 5.0, 7.0] {
            edges.push(decade * m);
        }
        decade *= 10.0;
    }
    let first = edges.iter().position(|&e| e * 1000.0 >= h.min() as f64).unwrap_or(0);
    let mut out: Vec<(f64, u64)> = edges[first..].iter().map(|&e| (e, 0)).collect();
    for v in h.iter_recorded() {
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        let i = out.iter().position(|(e, _)| ms <= *e).unwrap_or(out.len() - 1);
        out[i].1 += u64::from(v.count_at_value());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    pub(crate) fn sample(at_s: u64, e2e_ms: u64) -> Sample {
        let intended = at_s * S;
        let a_in = intended + MS;
        let a_out = a_in + MS;
        Sample { intended_ns: intended, received_ns: intended + e2e_ms * MS, stamps: format!("agent:{a_in}:{a_out}") }
    }

    pub(crate) fn state(budgets: Vec<Budget>) -> DashState {
        DashState::new(Meta { title: "t".into(), started_ns: 100 * S, budgets, ..Meta::default() })
    }

    #[test]
    fn learns_hops_from_stamps_and_windows_roll() {
        let mut st = state(vec![]);
        for i in 0..100 {
            st.apply(Feed::Sample(sample(100, 10 + i % 5)));
            st.apply(Feed::Sample(sample(105, 40)));
        }
        st.tick(105 * S + 500 * MS);
        st.window = WindowSize::OneSecond;
        let v = st.view();
        assert_eq!(v.end_to_end.count, 100);
        assert!((v.end_to_end.p50 - 40.0).abs() < 0.5, "{:?}", v.end_to_end);
        let names: Vec<&str> = v.hops.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["source->agent", "agent", "agent->client"]);
        st.window = WindowSize::TenSeconds;
        assert_eq!(st.view().end_to_end.count, 200);
        assert_eq!(st.view().series.len(), 2);
    }

    #[test]
    fn the_next_profile_of_a_sweep_starts_a_new_picture() {
        let mut st = state(vec![]);
        st.apply(Feed::Meta(Meta { profile: "low-latency".into(), started_ns: 100 * S, ..Meta::default() }));
        st.apply(Feed::Sample(sample(100, 10)));
        st.window = WindowSize::OneMinute;
        st.tick(100 * S);
        assert_eq!(st.view().end_to_end.count, 1);
        // The same profile's header again changes nothing; the next profile's clears the view.
        st.apply(Feed::Meta(Meta { profile: "low-latency".into(), started_ns: 100 * S, ..Meta::default() }));
        assert_eq!(st.view().end_to_end.count, 1);
        st.apply(Feed::Meta(Meta { profile: "balanced".into(), started_ns: 130 * S, ..Meta::default() }));
        st.tick(130 * S);
        assert_eq!(st.view().end_to_end.count, 0);
        assert_eq!(st.meta.profile, "balanced");
        assert_eq!(st.window, WindowSize::OneMinute, "the user's window choice stays");
    }

    #[test]
    fn budgets_flag_the_hop_and_the_end_to_end_over_them() {
        let mut st = state(vec![
            Budget { metric: "end_to_end.p99_ms".into(), max: 50.0 },
            Budget { metric: "hops.agent->client.p99_ms".into(), max: 20.0 },
        ]);
        st.apply(Feed::Sample(sample(100, 60)));
        st.tick(100 * S);
        let v = st.view();
        assert!(v.end_to_end_over.is_some());
        let over: Vec<&str> = v.hops.iter().filter(|h| h.over.is_some()).map(|h| h.name.as_str()).collect();
        assert_eq!(over, ["agent->client"]);
    }

    #[test]
    fn pausing_freezes_the_view_and_unreadable_stamps_are_counted() {
        let mut st = state(vec![]);
        st.apply(Feed::Sample(sample(100, 10)));
        st.tick(100 * S);
        st.paused = true;
        st.apply(Feed::Sample(sample(101, 10)));
        st.tick(101 * S);
        assert_eq!(st.view().end_to_end.count, 1);
        st.paused = false;
        st.tick(101 * S);
        assert_eq!(st.view().end_to_end.count, 2);
        st.apply(Feed::Sample(Sample { intended_ns: 0, received_ns: 1, stamps: "bad".into() }));
        assert_eq!(st.unreadable, 1);
    }

    #[test]
    fn history_is_bounded_to_a_minute() {
        let mut st = state(vec![]);
        for s in 0..200 {
            st.apply(Feed::Sample(sample(100 + s, 10)));
        }
        assert!(st.buckets.len() <= HISTORY_S as usize);
    }

    #[test]
    fn bins_cover_every_value() {
        let mut h = histogram();
        for v in [150, 900, 4_000, 12_000, 48_000] {
            h.record(v).unwrap();
        }
        let b = bins(&h);
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 5);
        assert!(b.first().unwrap().0 <= 0.2 && b.last().unwrap().0 >= 48.0, "{b:?}");
    }
}
