//! Prometheus metrics of a running pipeline, in the text exposition format on
//! `GET /metrics` (the gateway's server, and [`serve`] on an address of the user's
//! choosing): end-to-end and per-hop latency histograms fed by the audience's deliveries,
//! events sent and delivered, each stage's outcomes, and the events waiting in front of
//! each stage.
//!
//! A scraper that accepts OpenMetrics (`Accept: application/openmetrics-text`, as
//! Prometheus does with exemplar storage on) gets that format instead, with an exemplar on
//! each latency bucket: the trace id of the last traced event that fell in it, so a slow
//! bucket leads to its traces.

use crate::runtime::StageCounters;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use probes::counts::{Counts, LATENCY_BOUNDS_S, StageCounts};
use probes::hops::{HopKind, for_each_hop, transit_name};
use probes::names::{self, Metric};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: no exemplars.
    Prometheus,
    /// OpenMetrics 1.0: exemplars on the latency buckets, `# EOF` at the end.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for.
    pub fn accepted(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The response's content type.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// An observation that belongs to a trace: the OpenMetrics exemplar of its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exemplar {
    trace: probes::TraceContext,
    /// Seconds.
    value: f64,
    /// Epoch seconds when it was observed.
    at: f64,
}

/// A histogram with fixed buckets, counted lock-free; each bucket keeps the last traced
/// observation as its exemplar.
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative); above the last bound counts only in `count`.
    buckets: [AtomicU64; LATENCY_BOUNDS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// One slot per bucket and one for `+Inf` (empty until a traced event is recorded).
    exemplars: std::sync::Mutex<Vec<Option<Exemplar>>>,
}

impl Histogram {
    fn record(&self, ns: u64, traced: Option<(&probes::TraceContext, u64)>) {
        let s = ns as f64 / 1e9;
        let bucket = LATENCY_BOUNDS_S.iter().position(|b| s <= *b);
        if let Some(i) = bucket {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some((trace, at_ns)) = traced
            && let Ok(mut ex) = self.exemplars.lock()
        {
            ex.resize(LATENCY_BOUNDS_S.len() + 1, None);
            ex[bucket.unwrap_or(LATENCY_BOUNDS_S.len())] =
                Some(Exemplar { trace: *trace, value: s, at: at_ns as f64 / 1e9 });
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, format: Format) {
        let sep = if labels.is_empty() { "" } else { "," };
        let exemplars = match format {
            Format::OpenMetrics => self.exemplars.lock().map(|e| e.clone()).unwrap_or_default(),
            Format::Prometheus => Vec::new(),
        };
        let exemplar = |i: usize| match exemplars.get(i).copied().flatten() {
            Some(e) => format!(
                " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                e.trace.trace_id_hex(),
                hex(&e.trace.span_id),
                e.value,
                e.at
            ),
            None => String::new(),
        };
        let mut cumulative = 0;
        for (i, (b, n)) in LATENCY_BOUNDS_S.iter().zip(&self.buckets).enumerate() {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}{}", exemplar(i));
        }
        let count = self.count.load(Ordering::Relaxed);
        let inf = exemplar(LATENCY_BOUNDS_S.len());
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}{inf}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One hop's histogram.
#[derive(Debug)]
struct HopMetric {
    name: String,
    kind: HopKind,
    latency: Histogram,
}

/// The metrics of one run; shared by the audience (which records), the stages (whose
/// counters it reads) and the servers (which render).
#[derive(Debug)]
pub struct Metrics {
    source: String,
    sink: String,
    end_to_end: Histogram,
    hops: Vec<HopMetric>,
    stages: Vec<(String, Arc<StageCounters>)>,
    sent: Arc<AtomicU64>,
    delivered: AtomicU64,
    /// Deliveries whose stamps could not be read (not in the hop histograms).
    unreadable: AtomicU64,
    /// Events the run's accounting found lost (set once, at its end).
    lost: AtomicU64,
    /// Consumer groups' lag as the broker's offsets show it (see [`follow_group_lags`]).
    group_lags: std::sync::Mutex<Vec<(String, u64)>>,
    /// Which deliveries become exemplars: `None`, none (no traces are exported); else
    /// sampled ones, and those at least this slow end to end (traced by the tail rule).
    exemplars_from_ns: Option<u64>,
    /// The gateway's client figures, when this process serves clients.
    clients: std::sync::OnceLock<ClientSource>,
}

/// The gateway's client figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientFigures {
    /// Streaming clients connected.
    pub connected: u64,
    /// Updates dropped from slow clients' queues.
    pub dropped: u64,
    /// Clients cut off for falling a whole buffer behind.
    pub disconnected: u64,
    /// Times the gateway's consumer paused because every client's queue was full.
    pub pauses: u64,
}

/// Where the gateway's client figures are read from at each scrape.
pub struct ClientSource(pub Box<dyn Fn() -> ClientFigures + Send + Sync>);

impl std::fmt::Debug for ClientSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSource")
    }
}

impl Metrics {
    /// Metrics for the path `source -> stages... -> sink`, reading each stage's counters and
    /// the run's live `sent` count.
    pub fn new(source: &str, stages: Vec<(String, Arc<StageCounters>)>, sink: &str, sent: Arc<AtomicU64>) -> Self {
        let names: Vec<String> = stages.iter().map(|(s, _)| s.clone()).collect();
        Self { stages, ..Self::for_path(source, &names, sink, sent) }
    }

    /// Metrics for the path `source -> stages... -> sink` of a pipeline whose stages'
    /// counters this process cannot read (one `watch` taps): the latency histograms and
    /// the counts only.
    pub fn for_path(source: &str, stages: &[String], sink: &str, sent: Arc<AtomicU64>) -> Self {
        let mut hops = Vec::with_capacity(2 * stages.len() + 1);
        let mut prev = source;
        for stage in stages {
            hops.push(HopMetric {
                name: transit_name(prev, stage),
                kind: HopKind::Transit,
                latency: Histogram::default(),
            });
            hops.push(HopMetric { name: stage.clone(), kind: HopKind::Service, latency: Histogram::default() });
            prev = stage;
        }
        hops.push(HopMetric { name: transit_name(prev, sink), kind: HopKind::Transit, latency: Histogram::default() });
        Self {
            source: source.to_owned(),
            sink: sink.to_owned(),
            end_to_end: Histogram::default(),
            hops,
            stages: Vec::new(),
            sent,
            delivered: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            group_lags: std::sync::Mutex::default(),
            exemplars_from_ns: None,
            clients: std::sync::OnceLock::new(),
        }
    }

    /// Keeps exemplars of the deliveries whose traces are exported: sampled ones, and
    /// those at least `breach_ns` slow end to end (`u64::MAX`: sampled ones only).
    #[must_use]
    pub fn with_exemplars(mut self, breach_ns: u64) -> Self {
        self.exemplars_from_ns = Some(breach_ns);
        self
    }

    /// Records the run's final count of lost events, for the last export.
    pub fn set_lost(&self, lost: u64) {
        self.lost.store(lost, Ordering::Relaxed);
    }

    /// Replaces the consumer groups' lag (groups with no committed offsets are left out).
    pub fn set_group_lags(&self, lags: &[(String, Option<u64>)]) {
        if let Ok(mut l) = self.group_lags.lock() {
            *l = lags.iter().filter_map(|(g, lag)| Some((g.clone(), (*lag)?))).collect();
        }
    }

    /// Records one distinct delivery: its end-to-end time and each hop's.
    pub fn observe(&self, intended_ns: u64, stamps: &str, received_ns: u64) {
        self.observe_traced(intended_ns, stamps, received_ns, None);
    }

    /// [`Metrics::observe`], with the delivery's trace context (its `traceparent`) for the
    /// buckets' exemplars.
    pub fn observe_traced(
        &self,
        intended_ns: u64,
        stamps: &str,
        received_ns: u64,
        trace: Option<&probes::TraceContext>,
    ) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let e2e = received_ns.saturating_sub(intended_ns);
        let traced = match (self.exemplars_from_ns, trace) {
            (Some(breach), Some(t)) if t.is_sampled() || e2e >= breach => Some((t, received_ns)),
            _ => None,
        };
        self.end_to_end.record(e2e, traced);
        let recorded = for_each_hop(&self.source, intended_ns, stamps.as_bytes(), received_ns, &self.sink, |h| {
            if let Some(m) = self.hops.iter().find(|m| h.is(&m.name)) {
                m.latency.record(h.ns, traced);
            }
        });
        if recorded.is_err() {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        self.render_as(Format::Prometheus)
    }

    /// The exposition in `format`.
    pub fn render_as(&self, format: Format) -> String {
        let mut out = String::with_capacity(8192);
        // OpenMetrics names a counter's family without the `_total` of its sample.
        let family = |name: &'static str| match format {
            Format::OpenMetrics => name.strip_suffix("_total").unwrap_or(name),
            Format::Prometheus => name,
        };
        let histogram = |out: &mut String, m: Metric| {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", m.prometheus, m.help, m.prometheus);
        };
        let gauge = |out: &mut String, m: Metric| {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", m.prometheus, m.help, m.prometheus);
        };
        let counter = |out: &mut String, m: Metric| {
            let f = family(m.prometheus);
            let _ = writeln!(out, "# HELP {f} {}\n# TYPE {f} counter", m.help);
        };
        histogram(&mut out, names::END_TO_END);
        self.end_to_end.render(&mut out, names::END_TO_END.prometheus, "", format);
        histogram(&mut out, names::HOP_LATENCY);
        for m in &self.hops {
            let kind = if m.kind == HopKind::Service { names::SERVICE } else { names::TRANSIT };
            let labels = format!("{}=\"{}\",{}=\"{kind}\"", names::HOP, m.name, names::KIND);
            m.latency.render(&mut out, names::HOP_LATENCY.prometheus, &labels, format);
        }
        let single = |out: &mut String, m: Metric, v: u64| {
            counter(out, m);
            let _ = writeln!(out, "{} {v}", m.prometheus);
        };
        let snap = self.snapshot();
        single(&mut out, names::EVENTS_SENT, snap.sent);
        single(&mut out, names::EVENTS_DELIVERED, snap.delivered);
        single(&mut out, names::EVENTS_LOST, snap.lost);
        single(&mut out, names::DELIVERIES_UNREADABLE, self.unreadable.load(Ordering::Relaxed));
        counter(&mut out, names::STAGE_EVENTS);
        for s in &snap.stages {
            for (outcome, v) in
                names::OUTCOMES.into_iter().zip([s.forwarded, s.dead_lettered, s.filtered, s.duplicates])
            {
                let (m, stage, key) = (names::STAGE_EVENTS.prometheus, names::STAGE, names::OUTCOME);
                let _ = writeln!(out, "{m}{{{stage}=\"{}\",{key}=\"{outcome}\"}} {v}", s.stage);
            }
        }
        gauge(&mut out, names::STAGE_WAITING);
        for s in &snap.stages {
            let _ =
                writeln!(out, "{}{{{}=\"{}\"}} {}", names::STAGE_WAITING.prometheus, names::STAGE, s.stage, s.waiting);
        }
        gauge(&mut out, names::EVENTS_IN_FLIGHT);
        let _ = writeln!(out, "{} {}", names::EVENTS_IN_FLIGHT.prometheus, snap.in_flight);
        gauge(&mut out, names::CONSUMER_GROUP_LAG);
        for (group, n) in self.group_lags.lock().map(|l| l.clone()).unwrap_or_default() {
            let _ = writeln!(out, "{}{{{}=\"{group}\"}} {n}", names::CONSUMER_GROUP_LAG.prometheus, names::GROUP);
        }
        if let Some(read) = self.clients.get() {
            let f = (read.0)();
            gauge(&mut out, names::GATEWAY_CLIENTS);
            let _ = writeln!(out, "{} {}", names::GATEWAY_CLIENTS.prometheus, f.connected);
            single(&mut out, names::GATEWAY_DROPPED, f.dropped);
            single(&mut out, names::GATEWAY_DISCONNECTED, f.disconnected);
            single(&mut out, names::GATEWAY_PAUSES, f.pauses);
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }

    /// Also renders the gateway's client figures, read from `source` at each scrape.
    pub fn watch_clients(&self, source: ClientSource) {
        let _ = self.clients.set(source);
    }
}

impl Metrics {
    /// The counts now.
    pub fn snapshot(&self) -> Counts {
        let sent = self.sent.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed);
        let (mut upstream, mut settled) = (sent, delivered);
        let stages = self
            .stages
            .iter()
            .map(|(stage, c)| {
                let s = StageCounts {
                    stage: stage.clone(),
                    forwarded: c.forwarded.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                    filtered: c.filtered.load(Ordering::Relaxed),
                    duplicates: c.duplicates.load(Ordering::Relaxed),
                    waiting: 0,
                };
                settled += s.dead_lettered + s.filtered;
                let waiting = upstream.saturating_sub(s.forwarded + s.dead_lettered + s.filtered);
                upstream = s.forwarded;
                StageCounts { waiting, ..s }
            })
            .collect();
        let lost = self.lost.load(Ordering::Relaxed);
        Counts { sent, delivered, in_flight: sent.saturating_sub(settled + lost), lost, stages }
    }
}

/// Keeps `metrics`' consumer group lag fresh, reading `groups`' committed offsets and the
/// high watermarks from the broker every `every`, until `cancel`. A broker that does not
/// answer leaves the last figures.
pub async fn follow_group_lags(
    kafka: crate::KafkaSettings,
    groups: Vec<String>,
    metrics: Arc<Metrics>,
    every: std::time::Duration,
    cancel: CancellationToken,
) -> crate::Result<()> {
    loop {
        if let Ok(lags) = crate::tap::group_lags(&kafka, &groups, std::time::Duration::from_secs(5)).await {
            metrics.set_group_lags(&lags);
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// `tailgate_stage_events_total` read back from a `/metrics` page: what a run with external
/// stages learns of each stage's outcomes. Replicas of a stage add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes(std::collections::BTreeMap<(String, String), u64>);

impl Outcomes {
    /// The stage outcome counters of a text exposition; other lines are passed over.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(names::STAGE_EVENTS.prometheus).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else { continue };
            let label = |name: &str| {
                labels.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
            };
            if let (Some(stage), Some(outcome), Ok(v)) = (label("stage"), label("outcome"), value.trim().parse::<u64>())
            {
                *out.0.entry((stage.to_owned(), outcome.to_owned())).or_default() += v;
            }
        }
        out
    }

    /// Adds another page's counters (another replica's).
    pub fn add(&mut self, other: &Self) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// One stage's count of one outcome (`forwarded`, `dead_lettered`, `filtered`, `duplicate`).
    pub fn get(&self, stage: &str, outcome: &str) -> u64 {
        self.0.get(&(stage.to_owned(), outcome.to_owned())).copied().unwrap_or(0)
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` for a router: OpenMetrics when the scraper accepts it, else Prometheus
/// text.
pub async fn handler(
    State(m): State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::accepted(accept);
    ([(axum::http::header::CONTENT_TYPE, format.content_type())], m.render_as(format))
}

/// Serves `GET /metrics` on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> crate::Result<()> {
    serve_when_ready(listener, Arc::new(std::sync::OnceLock::from(metrics)), cancel).await
}

/// Serves `GET /metrics` on `listener` until `cancel`, from metrics that may be made later
/// (once a watch's first event names the path); a comment line until then.
pub async fn serve_when_ready(
    listener: tokio::net::TcpListener,
    cell: Arc<std::sync::OnceLock<Arc<Metrics>>>,
    cancel: CancellationToken,
) -> crate::Result<()> {
    use axum::response::IntoResponse;
    let app = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let cell = Arc::clone(&cell);
            async move {
                match cell.get() {
                    Some(m) => handler(State(Arc::clone(m)), headers).await.into_response(),
                    None => "# tailgate watch: no event with tailgate's headers yet\n".into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(|e| crate::Error::Stage { stage: "metrics", reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (Metrics, Arc<StageCounters>) {
        let c = Arc::new(StageCounters::default());
        let stages = vec![("connector".to_owned(), Arc::clone(&c)), ("agent".to_owned(), Arc::default())];
        let sent = Arc::new(AtomicU64::new(5));
        (Metrics::new("source", stages, "client", sent), c)
    }

    #[test]
    fn deliveries_fill_the_hop_histograms() {
        let (m, c) = metrics();
        c.forwarded.store(3, Ordering::Relaxed);
        c.dead_lettered.store(1, Ordering::Relaxed);
        // source->connector 1 ms, connector 3 ms, connector->agent 1 ms, agent 0, agent->client 5 ms.
        let ms = 1_000_000;
        let stamps = format!("connector:{}:{},agent:{}:{}", ms, 4 * ms, 5 * ms, 5 * ms);
        m.observe(0, &stamps, 10 * ms);
        m.set_group_lags(&[("tailgate-agent".into(), Some(4)), ("tailgate-none".into(), None)]);
        let text = m.render();
        for line in [
            "tailgate_end_to_end_latency_seconds_bucket{le=\"0.01\"} 1",
            "tailgate_end_to_end_latency_seconds_bucket{le=\"0.005\"} 0",
            "tailgate_end_to_end_latency_seconds_count 1",
            "tailgate_hop_latency_seconds_bucket{hop=\"connector\",kind=\"service\",le=\"0.002\"} 0",
            "tailgate_hop_latency_seconds_bucket{hop=\"connector\",kind=\"service\",le=\"0.005\"} 1",
            "tailgate_hop_latency_seconds_count{hop=\"agent->client\",kind=\"transit\"} 1",
            "tailgate_hop_latency_seconds_sum{hop=\"source->connector\",kind=\"transit\"} 0.001",
            "tailgate_events_sent_total 5",
            "tailgate_stage_events_total{stage=\"connector\",outcome=\"dead_lettered\"} 1",
            "tailgate_stage_waiting_events{stage=\"connector\"} 1",
            "tailgate_stage_waiting_events{stage=\"agent\"} 3",
            "tailgate_events_delivered_total 1",
            "tailgate_events_in_flight 3",
            "tailgate_consumer_group_lag{group=\"tailgate-agent\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("tailgate-none"), "a group with no committed offsets has no lag yet");
    }

    #[test]
    fn unreadable_stamps_are_counted_not_recorded_as_hops() {
        let (m, _) = metrics();
        m.observe(0, "connector:garbage", 1_000);
        let text = m.render();
        assert!(text.contains("tailgate_deliveries_unreadable_total 1"));
        assert!(text.contains("tailgate_hop_latency_seconds_count{hop=\"connector\",kind=\"service\"} 0"));
    }

    #[test]
    fn outcomes_read_back_from_the_page_and_add_up_over_replicas() {
        let (m, c) = metrics();
        c.forwarded.store(7, Ordering::Relaxed);
        c.filtered.store(2, Ordering::Relaxed);
        let page = Outcomes::parse(&m.render());
        assert_eq!((page.get("connector", "forwarded"), page.get("connector", "filtered")), (7, 2));
        assert_eq!(page.get("agent", "forwarded"), 0);
        let mut two = page.clone();
        two.add(&page);
        assert_eq!(two.get("connector", "forwarded"), 14);
        assert_eq!(Outcomes::parse("garbage\ntailgate_stage_events_total{stage=\"x\"} 1"), Outcomes::default());
    }

    #[test]
    fn openmetrics_carries_exemplars_of_traced_deliveries_only() {
        let (m, _) = metrics();
        let m = m.with_exemplars(u64::MAX);
        let ms = 1_000_000;
        let sampled = probes::TraceContext::new_root();
        let unsampled = probes::TraceContext { flags: 0, ..probes::TraceContext::new_root() };
        m.observe_traced(0, "connector:1000000:2000000,agent:3000000:4000000", 3 * ms, Some(&sampled));
        m.observe_traced(0, "connector:1000000:2000000,agent:3000000:4000000", 30 * ms, Some(&unsampled));
        let om = m.render_as(Format::OpenMetrics);
        let bucket =
            om.lines().find(|l| l.starts_with("tailgate_end_to_end_latency_seconds_bucket{le=\"0.005\"}")).unwrap();
        let want =
            format!("1 # {{trace_id=\"{}\",span_id=\"{}\"}} 0.003 ", sampled.trace_id_hex(), hex(&sampled.span_id));
        assert!(bucket.contains(&want), "{bucket}");
        assert_eq!(om.matches("trace_id=").count(), 1 + 5, "end to end and the five hops of the sampled event only");
        assert!(om.contains("# TYPE tailgate_events_sent counter\ntailgate_events_sent_total 5"));
        assert!(om.ends_with("# EOF\n"));
        // Prometheus text has no exemplars; without exporting traces there are none either.
        assert!(!m.render().contains("trace_id"));
        let (plain, _) = metrics();
        plain.observe_traced(0, "", ms, Some(&sampled));
        assert!(!plain.render_as(Format::OpenMetrics).contains("trace_id"));
        assert_eq!(Format::accepted(Some("application/openmetrics-text;version=1.0.0")), Format::OpenMetrics);
        assert_eq!(Format::accepted(Some("text/plain")), Format::Prometheus);
    }
}
