//! From tailgate's span records to the OpenTelemetry SDK's span data, and the OTLP
//! exporter for a configuration.

use crate::{Protocol, TelemetryConfig};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use probes::spans::{SpanRecord, Value};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// Builds the OTLP exporter (inside the export thread's runtime: the gRPC channel needs
/// one). The channel connects lazily, so a collector that is down is not an error here.
pub(crate) fn exporter(config: &TelemetryConfig) -> crate::Result<SpanExporter> {
    let built = match config.protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_http_client(http_client(config)?)
            .with_endpoint(config.endpoint.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(config.timeout)
            .build(),
    };
    let mut exporter = built.map_err(|source| crate::Error::Exporter {
        signal: "span",
        endpoint: config.endpoint.clone(),
        protocol: config.protocol.name(),
        source,
    })?;
    exporter.set_resource(&Resource::builder().with_service_name(config.service_name.clone()).build());
    Ok(exporter)
}

/// The async HTTP client the OTLP/HTTP exporters use (the blocking one would stall the
/// export thread's runtime).
pub(crate) fn http_client(config: &TelemetryConfig) -> crate::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(config.timeout).build()?)
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tailgate").with_version(env!("CARGO_PKG_VERSION")).build()
}

fn time(ns: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
}

pub(crate) fn span_data(s: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let kind = match s.kind {
        probes::spans::SpanKind::Producer => SpanKind::Producer,
        probes::spans::SpanKind::Consumer => SpanKind::Consumer,
        probes::spans::SpanKind::Internal => SpanKind::Internal,
    };
    let attributes = s
        .attributes
        .into_iter()
        .map(|(k, v)| match v {
            Value::Str(v) => KeyValue::new(k, v),
            Value::Int(v) => KeyValue::new(k, v),
        })
        .collect();
    let is_root = s.parent_span_id == [0; 8];
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(s.parent_span_id),
        // Every parent came from another stage, through Kafka headers.
        parent_span_is_remote: !is_root,
        span_kind: kind,
        name: Cow::Owned(s.name),
        start_time: time(s.start_ns),
        end_time: time(s.end_ns.max(s.start_ns)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}
