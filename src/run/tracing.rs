//! The tracing phase: span export over OTLP when the scenario or the `OTEL_*` environment
//! names a collector, the run's metrics exported beside the spans, and what both did.

use super::{RunError, failed};
use crate::result::{SINK, SOURCE};
use crate::scenario::Scenario;
use std::sync::Arc;
use std::time::Duration;

/// Starts span export when the scenario or the `OTEL_*` environment names a collector.
pub(crate) fn start_tracer(scenario: &Scenario) -> Result<Option<Arc<telemetry::Tracer>>, RunError> {
    let requested =
        scenario.telemetry.requested(&scenario.sla).map_err(|(f, why)| failed(format!("telemetry.{f}: {why}")))?;
    let Some(config) = telemetry::TelemetryConfig::resolve(&requested, |k| std::env::var(k).ok()).map_err(failed)?
    else {
        return Ok(None);
    };
    let shapes = pipeline::topology::PIPELINE
        .iter()
        .map(|s| telemetry::StageShape {
            stage: s.name.to_owned(),
            consumes: s.input.zip(s.group()).map(|(t, g)| (t.to_owned(), g)),
            produces: s.output.map(str::to_owned),
        })
        .collect();
    eprintln!(
        "tracing: OTLP {} to {}, {:.0}% of events",
        config.protocol.name(),
        config.endpoint,
        config.sample_ratio * 100.0
    );
    telemetry::Tracer::start(config, shapes).map(Some).map_err(failed)
}

/// Exports the run's metrics over OTLP to the collector spans go to, every 5 s and at the end.
pub(super) fn start_metrics_export(
    config: &telemetry::TelemetryConfig,
    metrics: Arc<pipeline::metrics::Metrics>,
) -> Result<telemetry::metrics::MetricsExport, RunError> {
    let counts = Arc::new(move || metrics.snapshot());
    telemetry::metrics::MetricsExport::start(config, Duration::from_secs(5), SOURCE, SINK, counts).map_err(failed)
}

/// Exports what is left (waiting at most 10 s for the collector) and reports the counts.
pub(super) async fn stop_tracer(tracer: Arc<telemetry::Tracer>) -> reports::result::TelemetryInfo {
    let t = Arc::clone(&tracer);
    let stats = tokio::task::spawn_blocking(move || t.stop(Duration::from_secs(10))).await.unwrap_or_default();
    let c = tracer.config();
    reports::result::TelemetryInfo {
        endpoint: c.endpoint.clone(),
        protocol: c.protocol.name().into(),
        sample_ratio: c.sample_ratio,
        breach_ms: c.breach_ns.map(|b| b as f64 / 1e6),
        spans_exported: stats.exported,
        spans_dropped: stats.dropped,
        spans_failed: stats.failed,
        breach_traces: stats.breach_traces,
        last_error: stats.last_error,
        metric_exports_failed: 0,
    }
}

/// Starts exporting the run's metrics when spans go to a collector.
pub(super) async fn start_metrics(
    tracer: Option<&Arc<telemetry::Tracer>>,
    metrics: &Arc<pipeline::metrics::Metrics>,
) -> Result<Option<Arc<telemetry::metrics::MetricsExport>>, RunError> {
    let Some(t) = tracer else { return Ok(None) };
    // The exporter is built on a Tokio runtime of its own, which cannot start inside this one.
    let (config, m) = (t.config().clone(), Arc::clone(metrics));
    let started = tokio::task::spawn_blocking(move || start_metrics_export(&config, m)).await;
    Ok(Some(Arc::new(started.map_err(failed)??)))
}

/// Stops both exports and says what they did.
pub(super) async fn stop(
    tracer: Option<Arc<telemetry::Tracer>>,
    metrics: Option<Arc<telemetry::metrics::MetricsExport>>,
) -> Option<reports::result::TelemetryInfo> {
    let metric_exports_failed = match metrics {
        Some(m) => tokio::task::spawn_blocking(move || m.stop()).await.unwrap_or_default(),
        None => 0,
    };
    Some(reports::result::TelemetryInfo { metric_exports_failed, ..stop_tracer(tracer?).await })
}
