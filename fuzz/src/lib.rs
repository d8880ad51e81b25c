//! What tailgate reads from outside, each behind one entry point that takes arbitrary
//! bytes: the header codec, scenario files, `.hlog` interval logs, OMB workloads, gateway
//! requests, broker frames and record batches. `fuzz_targets/` runs each under libFuzzer
//! (`cargo +nightly fuzz run NAME`); `tests/smoke.rs` runs each on seeds and their
//! mutations in the test suite. An entry point returns normally for every input: a panic,
//! a hang or an abort is the bug it looks for.

use std::sync::OnceLock;
use std::time::Duration;

/// `traceparent`, `tg-intended` and `tg-stamps` values as a stage reads them from Kafka
/// headers. The input is split at its first two 0xFF bytes into the three values; a
/// traceparent that parses must encode back to itself.
pub fn headers(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let (trace, intended, stamps) =
        (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    if let Ok(t) = probes::TraceContext::parse(trace) {
        let again = probes::TraceContext::parse(&t.encode());
        assert_eq!(again.ok(), Some(t), "a parsed traceparent encodes back to itself");
        let _ = t.child();
    }
    let headers = [("traceparent", Some(trace)), ("tg-intended", Some(intended)), ("tg-stamps", Some(stamps))];
    let _ = probes::Incoming::from_headers(headers);
    let intended_ns = probes::headers::parse_intended(intended).unwrap_or(0);
    let _ = probes::StampIter::validate(stamps);
    // The audience's path: hops from the stamps, as a delivery is timed.
    let mut hops = probes::HopSet::new("source", &["connector", "agent"], "client", 0, Duration::from_secs(1));
    let _ = hops.record(intended_ns, stamps, intended_ns.saturating_add(1_000_000));
}

/// A scenario file: parsed and checked, or refused with located problems.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tailgate::scenario::Scenario::parse(std::path::Path::new("fuzz.toml"), text);
    }
}

/// An `.hlog` interval log, as the report and the gate read one.
pub fn hlog(data: &[u8]) {
    let _ = reports::hlog::Series::parse(data);
}

/// An OpenMessaging Benchmark workload (YAML); what it imports to is read back as a
/// scenario, as `tailgate run` would.
pub fn omb(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(imported) = tailgate::omb::import_text(text) {
        let _ = tailgate::scenario::Scenario::parse(std::path::Path::new("imported.toml"), &imported.scenario);
    }
}

/// Bytes a client sends the gateway on one connection, served by the gateway's own
/// connection handling and routes (no broker behind it). Streams that stay open are cut
/// after a moment.
pub fn gateway(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    runtime().block_on(async {
        let (ready, rx) = tokio::sync::watch::channel(true);
        let cancel = tokio_util::sync::CancellationToken::new();
        let state = pipeline::gateway::GatewayState::new(rx, cancel.clone());
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let app = pipeline::gateway::app(state);
        let serving = tokio::spawn(pipeline::gateway::serve_connection(
            hyper_util::rt::TokioIo::new(server),
            app,
            Duration::from_millis(50),
            cancel.clone(),
        ));
        let talk = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), talk).await;
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
        drop(ready);
    });
}

/// One Kafka request frame (without its size prefix), as the broker decodes it before
/// acting on it; a Produce request's records are then split and walked as an append does.
pub fn frames(data: &[u8]) {
    use broker::server::request::{Decoded, Request};
    let Ok(Decoded::Request { body: Request::Produce(p), .. }) =
        broker::server::request::decode(bytes::Bytes::copy_from_slice(data))
    else {
        return;
    };
    for t in p.topic_data {
        for records in t.partition_data.into_iter().filter_map(|pd| pd.records) {
            walk_batches(records);
        }
    }
}

/// Bytes a producer sends as a partition's records, with the first batch's CRC made right
/// (random bytes would almost never pass it), so that the checks and the record walk past
/// it are reached.
pub fn batches(data: &[u8]) {
    use broker::batch::HEADER_LEN;
    let mut b = data.to_vec();
    if b.len() >= HEADER_LEN {
        let crc = crc32c::crc32c(&b[CRC_COVERS..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    walk_batches(bytes::Bytes::from(b));
}

/// Where a batch's CRC-32C sits, and where the bytes it covers begin.
const CRC_AT: usize = 17;
const CRC_COVERS: usize = 21;

/// What an append does with a partition's records: split into checked batches, each one's
/// records walked, stamped with an offset and an append time, and compacted; a batch kept
/// whole by compaction must split again to itself.
fn walk_batches(records: bytes::Bytes) {
    let Ok(batches) = broker::batch::Batch::split(records) else { return };
    for b in batches {
        let _ = (b.last_offset(), b.last_sequence(), b.max_timestamp(), b.producer_epoch());
        let stamped = b.assign(7, Some(1_700_000_000_000));
        assert_eq!(stamped.len(), b.len(), "stamping keeps a batch's size");
        let Some(Ok(recs)) = b.records() else { continue };
        let kept = b.retain(&recs, |_| true);
        let again = broker::batch::Batch::split(kept.bytes().clone());
        assert!(again.is_ok_and(|a| a.len() == 1), "a batch compacted to all its records splits again");
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("a runtime: {e}"))
    })
}

/// Deterministic mutations of `seed` (bytes flipped, cut, repeated, spliced), `n` of them,
/// for a smoke run without libFuzzer.
pub fn mutations(seed: &[u8], n: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.len() as u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |i| {
        let mut m = seed.to_vec();
        let len = m.len().max(1) as u64;
        for _ in 0..=(i % 4) {
            let at = (next() % len) as usize;
            match next() % 5 {
                0 if !m.is_empty() => {
                    let at = at.min(m.len() - 1);
                    m[at] ^= 1 << (next() % 8);
                }
                1 => m.truncate(at),
                2 if !m.is_empty() => {
                    let at = at.min(m.len() - 1);
                    let byte = m[at];
                    m.splice(at..at, std::iter::repeat_n(byte, (next() % 64) as usize));
                }
                3 => m.insert(at.min(m.len()), [0, 0xFF, b'\n', b'"', b'[', b'9'][(next() % 6) as usize]),
                _ if !m.is_empty() => {
                    let at = at.min(m.len() - 1);
                    m[at] = (next() % 256) as u8;
                }
                _ => m.push((next() % 256) as u8),
            }
        }
        m
    })
}
