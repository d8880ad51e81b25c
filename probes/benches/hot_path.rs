//! The per-event hot path of every stage and of the audience: header decode + encode,
//! recording one latency, and building a stage's span record when tracing is on. Each
//! must stay well under a microsecond or two.

use criterion::{Criterion, criterion_group, criterion_main};
use probes::headers::{INTENDED, STAMPS, TRACEPARENT, push_u64};
use probes::{HopSet, Incoming, LatencyRecorder, Stamp, TraceContext};
use std::hint::black_box;
use std::time::Duration;

fn codec(c: &mut Criterion) {
    let trace = TraceContext::new_root().encode();
    let mut intended = Vec::new();
    push_u64(&mut intended, 1_764_000_000_123_456_789);
    let stamps =
        b"connector:1764000000123556789:1764000000123656789,agent:1764000000124556789:1764000000124656789".to_vec();
    let mut out_stamps = Vec::with_capacity(256);
    c.bench_function("headers: decode + child span + append stamp", |b| {
        b.iter(|| {
            let incoming = Incoming::from_headers([
                (TRACEPARENT, Some(black_box(&trace[..]))),
                (INTENDED, Some(black_box(&intended[..]))),
                (STAMPS, Some(black_box(&stamps[..]))),
            ])
            .expect("valid headers");
            let child = incoming.trace.child().encode();
            Stamp { stage: "streamjob", ingress_ns: incoming.intended_ns, egress_ns: incoming.intended_ns + 5 }
                .append_to(incoming.stamps, &mut out_stamps);
            black_box((child, &out_stamps));
        });
    });
}

fn record(c: &mut Criterion) {
    let mut r = LatencyRecorder::new("e2e", 0, Duration::from_secs(1));
    let mut v = 1_000u64;
    c.bench_function("recorder: record one latency", |b| {
        b.iter(|| {
            v = v.wrapping_mul(6364136223846793005).wrapping_add(1) % 50_000_000;
            r.record(black_box(v), 10);
        });
    });
    let mut set =
        HopSet::new("source", &["connector", "agent", "streamjob", "gateway"], "client", 0, Duration::from_secs(1));
    let stamps = b"connector:1000:2000,agent:3000:4000,streamjob:5000:6000,gateway:7000:8000";
    c.bench_function("hops: record one delivered event (end to end + 9 hops)", |b| {
        b.iter(|| set.record(black_box(0), black_box(stamps), black_box(9_000)).expect("valid"));
    });
}

fn spans(c: &mut Criterion) {
    use probes::spans::{Consumed, SpanRecord};
    let parent = TraceContext::new_root();
    let consumed = Consumed { topic: "story.beats", partition: 2, offset: 41_234, group: "tailgate-streamjob" };
    c.bench_function("spans: child context + one stage's span record", |b| {
        b.iter(|| {
            let span = parent.child();
            black_box(SpanRecord::stage(
                "streamjob",
                black_box(&parent),
                &span,
                (1, 2),
                Some(consumed),
                Some("story.updates"),
                black_box(7),
            ))
        });
    });
}

criterion_group!(benches, codec, record, spans);
criterion_main!(benches);
