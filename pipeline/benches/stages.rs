//! The per-event work of the connector and the agent, without Kafka: converting an event
//! (JSON and Protobuf, both ways), a three-step transform chain, decoding one pgoutput
//! insert, composing a beat from state and context (the agent's CPU before its model
//! call and its store write), and recording one delivery in the `/metrics` histograms. Together with the runs' service-time hops these bound what
//! one connector task or agent worker can do per second.

use criterion::{Criterion, criterion_group, criterion_main};
use pipeline::agent::compose;
use pipeline::agent::state::{SessionState, Store, state_key};
use pipeline::connector::transforms::{Chain, Record, TransformSpec};
use pipeline::convert::Converter;
use pipeline::event::{Beat, StoryEvent};
use pipeline::io::postgres::Decoder;
use std::hint::black_box;

fn event() -> StoryEvent {
    StoryEvent {
        run: 42,
        id: 123_456,
        session: 17,
        action: "x".repeat(256),
        beat: Some(Beat { number: 9, prompt: "p".repeat(200), text: "t".repeat(60) }),
        window: None,
        enrichment: None,
    }
}

fn converters(c: &mut Criterion) {
    let e = event();
    for conv in [Converter::Json, Converter::Protobuf] {
        let bytes = conv.encode(&e);
        c.bench_function(&format!("convert: {} encode", conv.name()), |b| b.iter(|| black_box(conv.encode(&e))));
        c.bench_function(&format!("convert: {} decode", conv.name()), |b| {
            b.iter(|| black_box(conv.decode(black_box(&bytes)).expect("valid")))
        });
    }
}

fn transforms(c: &mut Criterion) {
    let specs: Vec<TransformSpec> = [
        "type = \"mask\"\nfields = [\"action\"]",
        "type = \"filter\"\nfield = \"session\"\nequals = 3",
        "type = \"insert_header\"\nname = \"x-source\"\nvalue = \"cdc\"",
    ]
    .iter()
    .map(|t| toml::from_str(t).expect("valid spec"))
    .collect();
    let chain = Chain::new(&specs);
    let e = StoryEvent { beat: None, ..event() };
    c.bench_function("transforms: to record, mask + filter + header, back to event", |b| {
        b.iter(|| {
            let serde_json::Value::Object(value) = serde_json::to_value(&e).expect("serializes") else {
                unreachable!()
            };
            let r =
                Record { topic: "story.actions".into(), key: e.session.to_be_bytes().to_vec(), value, headers: vec![] };
            let out = chain.apply(r).expect("applies").expect("kept");
            black_box(serde_json::from_value::<StoryEvent>(serde_json::Value::Object(out.value)).expect("event"))
        });
    });
}

fn pgoutput(c: &mut Criterion) {
    let mut d = Decoder::default();
    let mut rel = vec![b'R'];
    rel.extend_from_slice(&16384u32.to_be_bytes());
    rel.extend_from_slice(b"public\0story_actions\0d");
    let cols = ["seq", "run", "event_id", "session", "intended_ns", "traceparent", "action"];
    rel.extend_from_slice(&(cols.len() as u16).to_be_bytes());
    for name in cols {
        rel.push(0);
        rel.extend_from_slice(name.as_bytes());
        rel.push(0);
        rel.extend_from_slice(&[0; 8]);
    }
    d.decode(&rel).expect("relation");
    let mut insert = vec![b'I'];
    insert.extend_from_slice(&16384u32.to_be_bytes());
    insert.push(b'N');
    insert.extend_from_slice(&(cols.len() as u16).to_be_bytes());
    let tp = probes::TraceContext::new_root().to_string();
    let action = "x".repeat(256);
    for v in ["1", "42", "123456", "17", "1764000000123456789", tp.as_str(), action.as_str()] {
        insert.push(b't');
        insert.extend_from_slice(&(v.len() as u32).to_be_bytes());
        insert.extend_from_slice(v.as_bytes());
    }
    c.bench_function("pgoutput: decode one insert", |b| b.iter(|| black_box(d.decode(black_box(&insert)))));
}

fn agent(c: &mut Criterion) {
    let context = r#"{"character": "a tide witch", "world": "a drowned city of bells"}"#;
    let mut state = SessionState::default();
    let mut e = StoryEvent { beat: None, ..event() };
    c.bench_function("agent: compose a beat (state + context + prompt)", |b| {
        b.iter(|| {
            e.id += 1;
            black_box(compose(&mut state, &e, e.id as i64, Some(context), 3))
        });
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    c.bench_function("agent: write one session's state to the local store", |b| {
        b.iter(|| black_box(store.put(&state_key(42, 17), &state).expect("written")));
    });
}

fn metrics(c: &mut Criterion) {
    use pipeline::metrics::Metrics;
    use std::sync::Arc;
    let stages = pipeline::STAGES.iter().map(|s| ((*s).to_owned(), Arc::default())).collect();
    let m = Metrics::new("source", stages, "client", Arc::default());
    let stamps = "connector:1000:2000,agent:3000:4000,streamjob:5000:6000,gateway:7000:8000";
    c.bench_function("metrics: record one delivery (end to end + 9 hop histograms)", |b| {
        b.iter(|| m.observe(black_box(0), black_box(stamps), black_box(9_000)));
    });
    let traced = Metrics::new(
        "source",
        pipeline::STAGES.iter().map(|s| ((*s).to_owned(), Arc::default())).collect(),
        "client",
        Arc::default(),
    )
    .with_exemplars(u64::MAX);
    let trace = probes::TraceContext::new_root();
    c.bench_function("metrics: record one traced delivery (and its 10 exemplars)", |b| {
        b.iter(|| traced.observe_traced(black_box(0), black_box(stamps), black_box(9_000), Some(&trace)));
    });
}

criterion_group!(benches, converters, transforms, pgoutput, agent, metrics);
criterion_main!(benches);
