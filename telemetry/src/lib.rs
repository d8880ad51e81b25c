//! OpenTelemetry export for tailgate: the spans the stages and the audience record
//! ([`probes::spans`]) and the run's metrics ([`metrics`]) leave over OTLP, gRPC or
//! HTTP/protobuf, with `opentelemetry-otlp`.
//!
//! Export never gets in the pipeline's way: spans go into a bounded queue that a thread of
//! its own drains in batches; when the queue is full a span is dropped and counted, and a
//! collector that is slow or down costs the exporter's timeout on that thread only. The
//! counts are in the run's results.
//!
//! Sampling: the `traceparent` sampled flag, set by ratio where a trace starts, and every
//! trace whose end-to-end time broke the SLA, rebuilt at the audience from the per-hop
//! stamps it carries ([`Tracer::delivered`]).

mod convert;
mod error;
pub use error::{Error, Result};
pub mod metrics;

use probes::spans::{Consumed, SpanKind, SpanRecord, SpanSink};
use probes::{StampIter, TraceContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (the collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl Protocol {
    /// Reads the `OTEL_EXPORTER_OTLP_PROTOCOL` spelling (`grpc`, `http/protobuf`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(Error::UnknownProtocol(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector: `http://host:4317` for gRPC; for HTTP a base URL (`/v1/traces` is
    /// added when it has no path) or the full traces URL.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Fraction of traces sampled where they start (0 to 1).
    pub sample_ratio: f64,
    /// Keep every trace whose end-to-end time exceeds this, sampled or not.
    pub breach_ns: Option<u64>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// The longest one export may take.
    pub timeout: Duration,
}

/// The environment variables read, in the standard's names.
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub const ENV_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// What a scenario says (each field optional); the environment fills in the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub sample_ratio: Option<f64>,
    pub breach_ns: Option<u64>,
}

impl TelemetryConfig {
    /// The scenario's settings over the `OTEL_*` variables `env` gives. `None` (export off)
    /// when neither names an endpoint.
    pub fn resolve(req: &Requested, env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let protocol = match (req.protocol, env(ENV_PROTOCOL)) {
            (Some(p), _) => p,
            (None, Some(p)) => {
                Protocol::parse(&p).map_err(|e| Error::InVariable { var: ENV_PROTOCOL, source: Box::new(e) })?
            }
            (None, None) => Protocol::Grpc,
        };
        let endpoint = match (&req.endpoint, env(ENV_TRACES_ENDPOINT), env(ENV_ENDPOINT)) {
            (Some(e), _, _) => base_endpoint(e, protocol),
            (None, Some(e), _) => e,
            (None, None, Some(e)) => base_endpoint(&e, protocol),
            (None, None, None) => return Ok(None),
        };
        let sample_ratio = match (req.sample_ratio, env(ENV_SAMPLER_ARG)) {
            (Some(r), _) => r,
            (None, Some(r)) => r.parse().map_err(|_| Error::NotANumber { var: ENV_SAMPLER_ARG, value: r.clone() })?,
            (None, None) => 1.0,
        };
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(Error::SampleRatio(sample_ratio));
        }
        Ok(Some(Self {
            endpoint,
            protocol,
            sample_ratio,
            breach_ns: req.breach_ns,
            service_name: env(ENV_SERVICE_NAME).unwrap_or_else(|| "tailgate".into()),
            queue: 65_536,
            timeout: Duration::from_secs(5),
        }))
    }
}

/// For HTTP, a base URL gets the traces path, as the standard does with
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn base_endpoint(e: &str, protocol: Protocol) -> String {
    let after_scheme = e.split_once("://").map_or(e, |(_, rest)| rest);
    if protocol == Protocol::HttpProtobuf && !after_scheme.trim_end_matches('/').contains('/') {
        format!("{}/v1/traces", e.trim_end_matches('/'))
    } else {
        e.to_owned()
    }
}

/// How one stage's span is named and attributed when a trace is rebuilt from its stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageShape {
    pub stage: String,
    /// The topic and consumer group it consumes, if it reads from Kafka.
    pub consumes: Option<(String, String)>,
    /// The topic it produces to, if any.
    pub produces: Option<String>,
}

/// Export counts, for the run's results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full (or export had stopped).
    pub dropped: u64,
    /// Spans in batches the collector refused or did not answer in time.
    pub failed: u64,
    /// Traces kept although unsampled, because they broke the SLA.
    pub breach_traces: u64,
    /// The last export error, if any.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    breach_traces: AtomicU64,
    last_error: Mutex<Option<String>>,
}

enum Msg {
    Span(SpanRecord),
    /// Export what is queued, answer, and stop.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The span sink the stages and the audience share.
#[derive(Debug)]
pub struct Tracer {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    config: TelemetryConfig,
    shapes: Vec<StageShape>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Span(_) => "Span",
            Self::Flush(_) => "Flush",
        })
    }
}

/// The batch the export thread sends at most at once.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(200);

impl Tracer {
    /// Builds the exporter and starts the export thread. Fails only on a configuration the
    /// exporter refuses (a malformed endpoint); an unreachable collector shows as failed
    /// exports, not here.
    pub fn start(config: TelemetryConfig, shapes: Vec<StageShape>) -> Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let thread = {
            let (config, counters) = (config.clone(), Arc::clone(&counters));
            std::thread::Builder::new()
                .name("tailgate-otlp".into())
                .spawn(move || export_thread(&config, &rx, &counters, &built_tx))
                .map_err(|source| Error::Start { what: "export thread", source })?
        };
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::ThreadStopped),
        }
        Ok(Arc::new(Self {
            tx,
            counters,
            config,
            shapes,
            thread: Mutex::new(Some(thread)),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn config(&self) -> &TelemetryConfig {
        &self.config
    }

    /// Exports what is queued (waiting at most `timeout`), stops the export thread and
    /// returns the counts. Spans recorded afterwards are dropped and counted.
    pub fn stop(&self, timeout: Duration) -> ExportStats {
        self.stopped.store(true, Ordering::Relaxed);
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        let mut flushed = false;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => {
                    flushed = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok();
                    break;
                }
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
        // After a flush the thread ends at once; otherwise it is stuck on the collector
        // and is left to finish on its own.
        if flushed
            && let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
        self.stats()
    }

    pub fn stats(&self) -> ExportStats {
        let c = &self.counters;
        ExportStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            breach_traces: c.breach_traces.load(Ordering::Relaxed),
            last_error: c.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn shape(&self, stage: &str) -> Option<&StageShape> {
        self.shapes.iter().find(|s| s.stage == stage)
    }

    /// The whole trace of an unsampled event, from its stamps: the send, each stage, the
    /// receive, chained parent to child. Span ids are new (nothing of this trace was
    /// exported before), the trace id is the event's.
    fn rebuild(&self, trace: &TraceContext, event_id: u64, intended_ns: u64, stamps: &str, received_ns: u64) {
        let Ok(stamps) = StampIter::new(stamps.as_bytes()) else { return };
        let root = TraceContext { flags: 1, ..trace.child() };
        let mut spans = Vec::with_capacity(8);
        let mut first_ingress = None;
        let mut parent = root;
        for st in stamps.flatten() {
            first_ingress.get_or_insert(st.ingress_ns);
            let span = parent.child();
            let shape = self.shape(st.stage);
            let consumed = shape.and_then(|s| s.consumes.as_ref()).map(|(topic, group)| Consumed {
                topic,
                partition: -1,
                offset: -1,
                group,
            });
            // Partition and offset are not in the stamps: unknown, so left out.
            let rec = SpanRecord::stage(
                st.stage,
                &parent,
                &span,
                (st.ingress_ns, st.egress_ns),
                consumed,
                shape.and_then(|s| s.produces.as_deref()),
                event_id,
            );
            spans.push(rec);
            parent = span;
        }
        let root_rec = send_span(&root, event_id, intended_ns, first_ingress.unwrap_or(received_ns));
        self.record(root_rec);
        for s in spans {
            self.record(s);
        }
        self.record(receive_span(&parent, event_id, received_ns));
        self.counters.breach_traces.fetch_add(1, Ordering::Relaxed);
    }
}

/// The load generator's send: the root of an event's trace, from its intended time to
/// when the first stage took it.
pub fn send_span(root: &TraceContext, event_id: u64, start_ns: u64, end_ns: u64) -> SpanRecord {
    SpanRecord {
        trace_id: root.trace_id,
        span_id: root.span_id,
        parent_span_id: [0; 8],
        name: "send story action".into(),
        kind: SpanKind::Producer,
        start_ns,
        end_ns,
        attributes: vec![
            (probes::spans::attr::STAGE, "loadgen".into()),
            (probes::spans::attr::MESSAGE_ID, event_id.to_string().into()),
        ],
    }
}

/// The audience's receive of an event pushed by the gateway (whose span is `parent`).
fn receive_span(parent: &TraceContext, event_id: u64, received_ns: u64) -> SpanRecord {
    let span = parent.child();
    SpanRecord {
        trace_id: parent.trace_id,
        span_id: span.span_id,
        parent_span_id: parent.span_id,
        name: "receive story update".into(),
        kind: SpanKind::Consumer,
        start_ns: received_ns,
        end_ns: received_ns,
        attributes: vec![
            (probes::spans::attr::STAGE, "audience".into()),
            (probes::spans::attr::OPERATION_TYPE, "receive".into()),
            (probes::spans::attr::MESSAGE_ID, event_id.to_string().into()),
        ],
    }
}

impl SpanSink for Tracer {
    fn record(&self, span: SpanRecord) {
        if self.stopped.load(Ordering::Relaxed) || self.tx.try_send(Msg::Span(span)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn delivered(&self, trace: &TraceContext, event_id: u64, intended_ns: u64, stamps: &str, received_ns: u64) {
        if trace.is_sampled() {
            self.record(receive_span(trace, event_id, received_ns));
        } else if self.config.breach_ns.is_some_and(|b| received_ns.saturating_sub(intended_ns) > b) {
            self.rebuild(trace, event_id, intended_ns, stamps, received_ns);
        }
    }
}

fn export_thread(
    config: &TelemetryConfig,
    rx: &Receiver<Msg>,
    counters: &Counters,
    built: &std::sync::mpsc::Sender<Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = built.send(Err(Error::Start { what: "export runtime", source: e }));
            return;
        }
    };
    let exporter = match runtime.block_on(async { convert::exporter(config) }) {
        Ok(e) => e,
        Err(e) => {
            let _ = built.send(Err(e));
            return;
        }
    };
    let _ = built.send(Ok(()));
    let scope = convert::scope();
    let export = |batch: &mut Vec<SpanRecord>| {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let data = batch.drain(..).map(|s| convert::span_data(s, &scope)).collect();
        let result = runtime.block_on(async {
            use opentelemetry_sdk::trace::SpanExporter as _;
            tokio::time::timeout(config.timeout, exporter.export(data)).await
        });
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {:?}", config.timeout)),
        };
        match error {
            None => counters.exported.fetch_add(n, Ordering::Relaxed),
            Some(e) => {
                if let Ok(mut last) = counters.last_error.lock() {
                    *last = Some(e);
                }
                counters.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut oldest: Option<Instant> = None;
    loop {
        let wait = oldest.map_or(LINGER, |t| LINGER.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                oldest.get_or_insert_with(Instant::now);
                batch.push(s);
                if batch.len() >= BATCH {
                    export(&mut batch);
                    oldest = None;
                }
            }
            Ok(Msg::Flush(ack)) => {
                while let Ok(Msg::Span(s)) = rx.try_recv() {
                    batch.push(s);
                    if batch.len() >= BATCH {
                        export(&mut batch);
                    }
                }
                export(&mut batch);
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch);
                oldest = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        assert_eq!(TelemetryConfig::resolve(&Requested::default(), env(&[])).unwrap(), None);
        let c =
            TelemetryConfig::resolve(&Requested::default(), env(&[(ENV_ENDPOINT, "http://c:4317")])).unwrap().unwrap();
        assert_eq!((c.endpoint.as_str(), c.protocol, c.sample_ratio), ("http://c:4317", Protocol::Grpc, 1.0));
    }

    #[test]
    fn the_scenario_wins_and_the_environment_fills_in() {
        let req = Requested { sample_ratio: Some(0.1), ..Requested::default() };
        let e = env(&[(ENV_ENDPOINT, "http://c:4318"), (ENV_PROTOCOL, "http/protobuf"), (ENV_SAMPLER_ARG, "0.5")]);
        let c = TelemetryConfig::resolve(&req, e).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://c:4318/v1/traces", "a base URL gets the traces path");
        assert_eq!((c.protocol, c.sample_ratio), (Protocol::HttpProtobuf, 0.1));
        let e = env(&[(ENV_TRACES_ENDPOINT, "http://c:4318/custom"), (ENV_PROTOCOL, "http/protobuf")]);
        let c = TelemetryConfig::resolve(&Requested::default(), e).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://c:4318/custom", "the per-signal variable is used as it is");
    }

    #[test]
    fn bad_values_are_named() {
        let e = env(&[(ENV_ENDPOINT, "http://c:4317"), (ENV_PROTOCOL, "http/json")]);
        let err = TelemetryConfig::resolve(&Requested::default(), e).unwrap_err().to_string();
        assert!(err.starts_with(ENV_PROTOCOL), "{err}");
        let req = Requested { endpoint: Some("http://c:4317".into()), sample_ratio: Some(2.0), ..Requested::default() };
        assert!(TelemetryConfig::resolve(&req, env(&[])).unwrap_err().to_string().contains("between 0 and 1"));
    }

    #[test]
    fn a_collector_that_is_down_costs_failed_spans_not_the_caller() {
        // A port nothing listens on: exports fail, recording stays instant.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = Requested { endpoint: Some(format!("http://127.0.0.1:{port}")), ..Requested::default() };
        let mut config = TelemetryConfig::resolve(&req, env(&[])).unwrap().unwrap();
        config.timeout = Duration::from_millis(500);
        let tracer = Tracer::start(config, vec![]).unwrap();
        let root = TraceContext::new_root();
        let began = Instant::now();
        for i in 0..1000 {
            tracer.record(send_span(&root.child(), i, 1, 2));
        }
        assert!(began.elapsed() < Duration::from_secs(2), "recording does not wait for the collector");
        let stats = tracer.stop(Duration::from_secs(10));
        assert_eq!(stats.exported, 0);
        assert_eq!(stats.failed + stats.dropped, 1000, "{stats:?}");
        assert!(stats.last_error.is_some());
        tracer.record(send_span(&root, 0, 1, 2));
        assert_eq!(tracer.stats().dropped, stats.dropped + 1, "after stop, spans are dropped and counted");
    }
}
