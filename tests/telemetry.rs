//! Span export through whole runs on the embedded broker, into an OTLP collector inside the
//! test: over gRPC (the tonic trace service, decoded with `opentelemetry-proto`) every
//! delivered event is one trace from the load generator's send through every stage to the
//! audience's receive, each span the child of the one before, named and attributed per
//! the messaging conventions, and the latency histograms arrive as OTLP metrics; over HTTP/protobuf with sampling off, the events that broke
//! the SLA are still traced, rebuilt from their stamps; with the collector down the run
//! completes with exact accounting and counts the spans it could not export; and
//! `GET /metrics` scraped during a run shows every hop's histogram.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
mod support;

use support::run_text;

type Received = Arc<Mutex<Vec<Span>>>;
type Metrics = Arc<Mutex<Vec<Metric>>>;

fn keep(received: &Received, req: ExportTraceServiceRequest) {
    let spans = req.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
    received.lock().unwrap().extend(spans);
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct MetricsCollector(Metrics);

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let metrics = request.into_inner().resource_metrics.into_iter().flat_map(|r| r.scope_metrics);
        self.0.lock().unwrap().extend(metrics.flat_map(|s| s.metrics));
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// An OTLP/gRPC collector (traces and metrics) on a free loopback port.
async fn grpc_collector() -> (String, Received, Metrics) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received, metrics) = (Received::default(), Metrics::default());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(Arc::clone(&received))))
            .add_service(MetricsServiceServer::new(MetricsCollector(Arc::clone(&metrics))))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), received, metrics)
}

/// The count of the last exported data point of histogram `name` with attribute `hop`.
fn histogram_count(metrics: &Metrics, name: &str, hop: Option<&str>) -> u64 {
    let metrics = metrics.lock().unwrap();
    let points = metrics.iter().filter(|m| m.name == name).filter_map(|m| match &m.data {
        Some(metric::Data::Histogram(h)) => Some(h.data_points.clone()),
        _ => None,
    });
    let wanted = |p: &opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint| {
        hop.is_none_or(|hop| {
            p.attributes.iter().any(|kv| {
                kv.key == "hop" && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == hop)
            })
        })
    };
    points.flatten().filter(wanted).map(|p| p.count).next_back().unwrap_or(0)
}

/// The value of the last exported data point of counter `name` (`None` if never exported).
fn counter_value(metrics: &Metrics, name: &str) -> Option<i64> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
    let metrics = metrics.lock().unwrap();
    let points = metrics.iter().filter(|m| m.name == name).filter_map(|m| match &m.data {
        Some(metric::Data::Sum(s)) => Some(s.data_points.clone()),
        _ => None,
    });
    points
        .flatten()
        .filter_map(|p| match p.value {
            Some(N::AsInt(v)) => Some(v),
            _ => None,
        })
        .next_back()
}

/// An OTLP/HTTP collector (protobuf bodies on `/v1/traces`) on a free loopback port.
async fn http_collector() -> (String, Received) {
    use prost::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let r = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            match ExportTraceServiceRequest::decode(body) {
                Ok(req) => {
                    keep(&r, req);
                    (axum::http::StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
                }
                Err(_) => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

fn scenario(name: &str, telemetry: &str) -> String {
    format!(
        r#"
name = "{name}"
[load]
rate = 100
sessions = 8
payload_bytes = 32
warmup = "0s"
duration = "2s"
drain = "60s"
[agent]
model_latency = "0ms"
[telemetry]
{telemetry}
"#
    )
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// The traces received, each ordered from its root down the parent links; panics on a
/// trace whose spans do not form one chain.
fn chains(received: &Received) -> HashMap<Vec<u8>, Vec<Span>> {
    let mut by_trace: HashMap<Vec<u8>, Vec<Span>> = HashMap::new();
    for s in received.lock().unwrap().iter() {
        by_trace.entry(s.trace_id.clone()).or_default().push(s.clone());
    }
    by_trace
        .into_iter()
        .map(|(trace, mut spans)| {
            let mut chain = Vec::with_capacity(spans.len());
            let mut parent: Vec<u8> = Vec::new();
            while !spans.is_empty() {
                let i = spans
                    .iter()
                    .position(|s| s.parent_span_id == parent || (parent.is_empty() && s.parent_span_id.is_empty()))
                    .unwrap_or_else(|| panic!("trace {trace:02x?}: no span under {parent:02x?} among {spans:#?}"));
                let s = spans.remove(i);
                parent.clone_from(&s.span_id);
                chain.push(s);
            }
            (trace, chain)
        })
        .collect()
}

const NAMES: [&str; 6] = [
    "send story action",
    "send story.actions",
    "process story.actions",
    "process story.beats",
    "process story.updates",
    "receive story update",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_one_trace_across_every_stage_over_grpc() {
    let (endpoint, received, metrics) = grpc_collector().await;
    let addr = free_addr();
    let (scraper, done) = scrape_during(&addr, "application/openmetrics-text; version=1.0.0");
    let cfg = format!("endpoint = \"{endpoint}\"\nprotocol = \"grpc\"\nmetrics = \"{addr}\"");
    let r = run_text(&scenario("traced", &cfg)).await;
    done.cancel();
    let page = scraper.await.unwrap().expect("/metrics answered during the run");
    let c = r.counts;
    assert_eq!((c.delivered, c.lost), (c.sent, 0), "{c:?}");
    let t = r.telemetry.unwrap();
    assert_eq!((t.protocol.as_str(), t.sample_ratio), ("grpc", 1.0));
    assert_eq!((t.spans_dropped, t.spans_failed), (0, 0), "{t:?}");
    assert_eq!(t.spans_exported, 6 * c.sent, "six spans per event: {t:?}");

    let chains = chains(&received);
    assert_eq!(chains.len() as u64, c.sent, "one trace per event");
    for chain in chains.values() {
        let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, NAMES);
        let id = text(&chain[0], "messaging.message.id");
        assert!(chain.iter().all(|s| text(s, "messaging.message.id") == id), "one event per trace");
        for s in &chain[1..5] {
            assert_eq!(text(s, "messaging.system"), Some("kafka"), "{s:?}");
            assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
        }
        let agent = &chain[2];
        assert_eq!(text(agent, "messaging.operation.type"), Some("process"));
        assert_eq!(text(agent, "messaging.destination.name"), Some("story.actions"));
        assert_eq!(text(agent, "messaging.consumer.group.name"), Some("tailgate-agent"));
        assert!(matches!(attr(agent, "messaging.kafka.offset"), Some(Value::IntValue(o)) if *o >= 0));
        assert!(text(agent, "messaging.destination.partition.id").is_some());
        assert_eq!(text(&chain[1], "messaging.operation.type"), Some("send"));
    }

    // The metrics went to the same collector; the last export counts every delivery.
    assert_eq!(t.metric_exports_failed, 0);
    assert_eq!(histogram_count(&metrics, "tailgate.end_to_end.duration", None), c.delivered);
    let count = |name| counter_value(&metrics, name).and_then(|v| u64::try_from(v).ok());
    assert_eq!(count("tailgate.events.delivered"), Some(c.delivered));
    assert_eq!(count("tailgate.events.lost"), Some(0), "the last export carries the run's accounting");
    for hop in ["source->connector", "agent", "streamjob->gateway", "gateway->client"] {
        assert_eq!(histogram_count(&metrics, "tailgate.hop.duration", Some(hop)), c.delivered, "{hop}");
    }

    // Scraped as OpenMetrics, the latency buckets carry exemplars naming exported traces.
    assert!(page.contains("content-type: application/openmetrics-text; version=1.0.0"), "{page}");
    assert!(page.ends_with("# EOF\n"), "{page}");
    assert!(page.contains("# TYPE tailgate_events_delivered counter\ntailgate_events_delivered_total "), "{page}");
    let exemplars: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("tailgate_end_to_end_latency_seconds_bucket"))
        .filter_map(|l| l.split("# {trace_id=\"").nth(1)?.split('"').next())
        .collect();
    assert!(!exemplars.is_empty(), "{page}");
    let traces: Vec<String> = chains.keys().map(|t| t.iter().map(|b| format!("{b:02x}")).collect()).collect();
    for e in exemplars {
        assert!(traces.iter().any(|t| t == e), "exemplar {e} is not an exported trace");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_events_over_the_sla_are_still_traced_over_http() {
    let (endpoint, received) = http_collector().await;
    // Nothing is sampled at the start; every event is slower than 1 ns end to end.
    let cfg = format!("endpoint = \"{endpoint}\"\nprotocol = \"http/protobuf\"\nsample_ratio = 0.0\nbreach = \"1ns\"");
    let r = run_text(&scenario("breaches", &cfg)).await;
    let t = r.telemetry.unwrap();
    assert_eq!(t.endpoint, format!("{endpoint}/v1/traces"));
    assert_eq!(t.breach_traces, r.counts.delivered, "{t:?}");
    assert_eq!((t.spans_dropped, t.spans_failed), (0, 0), "{t:?}");
    let chains = chains(&received);
    assert_eq!(chains.len() as u64, r.counts.delivered);
    for chain in chains.values() {
        let names: Vec<&str> = chain.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, NAMES, "the rebuilt trace has every hop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_break_the_run() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = run_text(&scenario("no-collector", &format!("endpoint = \"http://127.0.0.1:{port}\""))).await;
    let c = r.counts;
    assert_eq!((c.delivered, c.lost), (c.sent, 0), "{c:?}");
    let t = r.telemetry.unwrap();
    assert_eq!(t.spans_exported, 0);
    assert_eq!(t.spans_failed + t.spans_dropped, 6 * c.sent, "every span is accounted for: {t:?}");
    assert!(t.last_error.is_some());
    assert!(t.metric_exports_failed >= 1, "the final metrics export failed and was counted: {t:?}");
}

/// `GET /metrics` over plain HTTP/1.0 (asking for `accept`); `None` until something answers 200.
async fn scrape(addr: &str, accept: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: tailgate\r\nAccept: {accept}\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    body.starts_with("HTTP/1.0 200").then_some(body)
}

/// Scrapes `addr` every 100 ms until the token is cancelled; the task returns the last
/// page taken.
fn scrape_during(addr: &str, accept: &'static str) -> (tokio::task::JoinHandle<Option<String>>, CancellationToken) {
    let done = CancellationToken::new();
    let (addr, stop) = (addr.to_owned(), done.clone());
    let task = tokio::spawn(async move {
        let mut last = None;
        while !stop.is_cancelled() {
            if let Some(text) = scrape(&addr, accept).await {
                last = Some(text);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        last
    });
    (task, done)
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

fn count_of(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_a_run_show_the_hop_histograms() {
    let addr = free_addr();
    let (scraper, done) = scrape_during(&addr, "text/plain");
    let r = run_text(&scenario("scraped", &format!("metrics = \"{addr}\""))).await;
    done.cancel();
    assert!(r.telemetry.is_none(), "no endpoint, no span export");
    let text = scraper.await.unwrap().expect("/metrics answered during the run");
    assert!(text.contains("content-type: text/plain; version=0.0.4"), "{text}");
    for hop in ["source->connector", "connector", "agent->streamjob", "gateway", "gateway->client"] {
        let kind = if hop.contains("->") { "transit" } else { "service" };
        let series = format!("tailgate_hop_latency_seconds_count{{hop=\"{hop}\",kind=\"{kind}\"}}");
        assert!(count_of(&text, &series) > 0, "no {series} in\n{text}");
    }
    let delivered = count_of(&text, "tailgate_events_delivered_total");
    assert!(delivered > 0 && delivered <= r.counts.delivered, "{delivered}");
    assert_eq!(count_of(&text, "tailgate_end_to_end_latency_seconds_count"), delivered);
    assert!(text.contains("tailgate_stage_events_total{stage=\"agent\",outcome=\"forwarded\"}"));
}

/// A headless watch exports OTLP metrics to a collector it is given: the same end-to-end
/// and hop histograms a run exports, from the events it tapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_watch_exports_its_histograms_over_otlp() {
    let (endpoint, _, metrics) = grpc_collector().await;
    let (broker, _kafka) = testkit::broker(3).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = "name = \"exported\"\n[load]\nrate = 200\nwarmup = \"1s\"\nduration = \"9s\"\n";
    let feeding = tokio::spawn(tailgate::run::run(support::against(broker.bootstrap(), dir.path(), scenario)));
    // The watch judges nothing but that it saw events: this test is about the export.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_tailgate"));
    watch
        .args(["watch", "--bootstrap", broker.bootstrap(), "--for", "7s", "--sla-p99", "600000"])
        .args(["--otlp", &endpoint, "--no-report", "--out"])
        .arg(dir.path().join("watch"));
    // Waited for off the runtime, whose two threads the feeding run needs.
    let watch = tokio::task::spawn_blocking(move || watch.output()).await.unwrap().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&watch.stdout), String::from_utf8_lossy(&watch.stderr));
    assert_eq!(watch.status.code(), Some(0), "{said}");
    feeding.await.unwrap().unwrap();
    let r: tailgate::result::RunResult =
        serde_json::from_slice(&std::fs::read(dir.path().join("watch/result.json")).unwrap()).unwrap();
    let exported = histogram_count(&metrics, "tailgate.end_to_end.duration", None);
    assert!(exported > 0);
    assert_eq!(exported, r.end_to_end.count, "the last export carries every event the watch timed");
    assert!(histogram_count(&metrics, "tailgate.hop.duration", Some("agent")) > 0);
    let t = r.telemetry.unwrap();
    assert_eq!((t.protocol.as_str(), t.metric_exports_failed), ("grpc", 0));
}
