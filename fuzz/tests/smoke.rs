//! A short smoke run of every fuzz target, in the test suite: each target on its seeds
//! and on deterministic mutations of them. The coverage-guided runs are
//! `cargo +nightly fuzz run TARGET` (docs/fuzzing.md); this keeps every entry point
//! building and keeps the inputs that once crashed one from crashing it again.

#![allow(clippy::unwrap_used)]

use kafka_protocol::messages::{ApiKey, MetadataRequest, ProduceRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Runs `target` on each seed and `n` mutations of it.
fn smoke(target: fn(&[u8]), seeds: &[Vec<u8>], n: usize) {
    assert!(!seeds.is_empty());
    for seed in seeds {
        target(seed);
        for m in fuzzing::mutations(seed, n) {
            target(&m);
        }
    }
}

fn files(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn headers() {
    let seed = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\xff1700000000000000000\xffconnector:1700000000000000100:1700000000000000200,agent:1700000000000000300:1700000000000000400";
    smoke(fuzzing::headers, &[seed.to_vec(), Vec::new()], 2000);
}

#[test]
fn scenarios() {
    let mut seeds = files("../scenarios", "toml");
    seeds.extend(files("../scenarios/invalid", "toml"));
    smoke(fuzzing::scenario, &seeds, 100);
}

#[test]
fn hlog() {
    let mut r = probes::LatencyRecorder::new("end_to_end", 1_000_000_000, std::time::Duration::from_secs(1));
    for i in 0..3_000u64 {
        r.record(1_000_000 + i * 7_919, 1_000_000_000 + i * 1_000_000);
    }
    smoke(fuzzing::hlog, &[r.interval_log()], 300);
}

#[test]
fn omb() {
    let seed = b"name: w\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 128\nproducerRate: 200\nkeyDistributor: KEY_ROUND_ROBIN\ntestDurationMinutes: 1\nwarmupDurationMinutes: 1\n";
    smoke(fuzzing::omb, &[seed.to_vec()], 500);
}

#[test]
fn gateway() {
    let seeds = [
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        "GET /poll?cursor=0&wait=0&max=10 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        "GET /sessions/7/poll?cursor=3&wait=0.01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "POST /sessions/7/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            33, r#"{"run":1,"id":1,"action":"look"}"#
        ),
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n".to_owned(),
    ];
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.clone().into_bytes()).collect();
    smoke(fuzzing::gateway, &seeds, 40);
}

/// A request frame as a client sends it, without the size prefix.
fn frame<R: Encodable>(api: ApiKey, version: i16, header_version: i16, body: &R) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    let mut h = RequestHeader::default();
    h.request_api_key = api as i16;
    h.request_api_version = version;
    h.correlation_id = 7;
    h.client_id = Some(StrBytes::from_static_str("fuzz"));
    h.encode(&mut buf, header_version).unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

#[test]
fn frames() {
    let seeds = vec![
        frame(ApiKey::Metadata, 12, 2, &MetadataRequest::default()),
        frame(ApiKey::Produce, 9, 2, &ProduceRequest::default()),
        frame(ApiKey::Produce, 3, 1, &ProduceRequest::default()),
        vec![0, 18, 0, 3, 0, 0, 0, 1],
    ];
    smoke(fuzzing::frames, &seeds, 3000);
}
