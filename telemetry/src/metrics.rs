//! Metrics over OTLP, beside the Prometheus text the run serves: end-to-end and per-hop
//! latency histograms recorded from every delivery, and counters and gauges read from the
//! run's own counts at each export.
//!
//! The SDK's periodic reader exports from a thread of its own; the OTLP exporter is driven
//! there on a runtime this module owns, so a collector that is down costs that thread
//! only.

use crate::{Protocol, TelemetryConfig};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_otlp::{MetricExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use probes::counts::{Counts, LATENCY_BOUNDS_S};
use probes::hops::{HopKind, for_each_hop};
use probes::names::{self, Metric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Reads the run's counts when the SDK collects.
pub type CountsFn = Arc<dyn Fn() -> Counts + Send + Sync>;

/// The OTLP metric exporter, run on a runtime of its own.
#[derive(Debug)]
struct OnOwnRuntime {
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    exporter: MetricExporter,
    failed: Arc<AtomicU64>,
}

impl Drop for OnOwnRuntime {
    fn drop(&mut self) {
        // The last owner may be dropped on an async runtime, where blocking is not allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PushMetricExporter for OnOwnRuntime {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let Some(runtime) = &self.runtime else { return Ok(()) };
        // The periodic reader's thread is not a runtime's, so blocking on ours is allowed.
        let result = runtime.block_on(self.exporter.export(metrics));
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.exporter.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Exports the run's metrics every `interval` and once more on [`Self::stop`].
#[derive(Debug)]
pub struct MetricsExport {
    provider: SdkMeterProvider,
    end_to_end: Histogram<f64>,
    hops: Histogram<f64>,
    source: String,
    sink: String,
    failed: Arc<AtomicU64>,
}

impl MetricsExport {
    /// Starts exporting to `config`'s collector; the path is `source -> stages -> sink`.
    /// Blocks briefly on a runtime of its own: call it off any async runtime (for example
    /// in `spawn_blocking`).
    pub fn start(
        config: &TelemetryConfig,
        interval: Duration,
        source: &str,
        sink: &str,
        counts: CountsFn,
    ) -> crate::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Start { what: "metrics export runtime", source })?;
        let exporter = runtime.block_on(async { build(config) })?;
        let failed = Arc::new(AtomicU64::new(0));
        let exporter = OnOwnRuntime { runtime: Some(runtime), exporter, failed: Arc::clone(&failed) };
        let reader = PeriodicReader::builder(exporter).with_interval(interval).build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let meter = provider.meter("tailgate");
        let histogram = |m: Metric| {
            meter
                .f64_histogram(m.otlp)
                .with_unit("s")
                .with_description(m.help)
                .with_boundaries(LATENCY_BOUNDS_S.to_vec())
                .build()
        };
        let (end_to_end, hops) = (histogram(names::END_TO_END), histogram(names::HOP_LATENCY));
        let total = |m: Metric, of: fn(&Counts) -> u64| {
            let c = Arc::clone(&counts);
            meter
                .u64_observable_counter(m.otlp)
                .with_description(m.help)
                .with_callback(move |o| o.observe(of(&c()), &[]))
                .build();
        };
        total(names::EVENTS_SENT, |c| c.sent);
        total(names::EVENTS_DELIVERED, |c| c.delivered);
        total(names::EVENTS_LOST, |c| c.lost);
        let c = Arc::clone(&counts);
        let m = names::EVENTS_IN_FLIGHT;
        meter
            .u64_observable_gauge(m.otlp)
            .with_description(m.help)
            .with_callback(move |o| o.observe(c().in_flight, &[]))
            .build();
        let c = Arc::clone(&counts);
        meter
            .u64_observable_counter(names::STAGE_EVENTS.otlp)
            .with_description(names::STAGE_EVENTS.help)
            .with_callback(move |o| {
                for s in c().stages {
                    for (outcome, v) in
                        names::OUTCOMES.into_iter().zip([s.forwarded, s.dead_lettered, s.filtered, s.duplicates])
                    {
                        o.observe(
                            v,
                            &[KeyValue::new(names::STAGE, s.stage.clone()), KeyValue::new(names::OUTCOME, outcome)],
                        );
                    }
                }
            })
            .build();
        let c = counts;
        meter
            .u64_observable_gauge(names::STAGE_WAITING.otlp)
            .with_description(names::STAGE_WAITING.help)
            .with_callback(move |o| {
                for s in c().stages {
                    o.observe(s.waiting, &[KeyValue::new(names::STAGE, s.stage)]);
                }
            })
            .build();
        Ok(Self { provider, end_to_end, hops, source: source.to_owned(), sink: sink.to_owned(), failed })
    }

    /// Records one distinct delivery.
    pub fn observe(&self, intended_ns: u64, stamps: &str, received_ns: u64) {
        self.end_to_end.record(received_ns.saturating_sub(intended_ns) as f64 / 1e9, &[]);
        let _ = for_each_hop(&self.source, intended_ns, stamps.as_bytes(), received_ns, &self.sink, |h| {
            let kind = if h.kind == HopKind::Service { names::SERVICE } else { names::TRANSIT };
            self.hops
                .record(h.ns as f64 / 1e9, &[KeyValue::new(names::HOP, h.name()), KeyValue::new(names::KIND, kind)]);
        });
    }

    /// Exports a last time and stops; returns how many exports failed.
    pub fn stop(&self) -> u64 {
        let _ = self.provider.shutdown();
        self.failed.load(Ordering::Relaxed)
    }
}

fn build(config: &TelemetryConfig) -> crate::Result<MetricExporter> {
    let built = match config.protocol {
        Protocol::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build(),
        Protocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_http_client(crate::convert::http_client(config)?)
            .with_endpoint(metrics_url(&config.endpoint))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(config.timeout)
            .build(),
    };
    built.map_err(|source| crate::Error::Exporter {
        signal: "metric",
        endpoint: config.endpoint.clone(),
        protocol: config.protocol.name(),
        source,
    })
}

/// The metrics URL beside a traces URL (`.../v1/traces` becomes `.../v1/metrics`).
fn metrics_url(traces: &str) -> String {
    match traces.strip_suffix("/v1/traces") {
        Some(base) => format!("{base}/v1/metrics"),
        None => traces.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metrics_url_sits_beside_the_traces_url() {
        assert_eq!(super::metrics_url("http://c:4318/v1/traces"), "http://c:4318/v1/metrics");
        assert_eq!(super::metrics_url("http://c:4318/custom"), "http://c:4318/custom");
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;

    #[test]
    fn stopping_with_the_collector_down_counts_the_failed_export() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = crate::Requested { endpoint: Some(format!("http://127.0.0.1:{port}")), ..Default::default() };
        let mut config = crate::TelemetryConfig::resolve(&req, |_| None).unwrap().unwrap();
        config.timeout = Duration::from_millis(500);
        let m = MetricsExport::start(&config, Duration::from_secs(5), "source", "client", Arc::new(Counts::default))
            .unwrap();
        m.observe(0, "a:1:2", 3);
        let failed = m.stop();
        assert_eq!(failed, 1, "the final export failed and was counted");
    }
}
