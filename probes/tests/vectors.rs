//! The header protocol's shared test vectors (`clients/protocol-vectors.json`), which the
//! Python probe library's tests read too: what each set of headers decodes to, or the exact
//! error, how a stamp is appended, and which stage names are valid.

#![allow(clippy::unwrap_used)]

use probes::headers::{Stamp, StampIter, valid_stage_name};
use probes::{Incoming, TraceContext};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/protocol-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A header value: a string, null, or `{"hex": ...}` for bytes that are not UTF-8.
fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Object(o) => {
            let hex = o["hex"].as_str().unwrap();
            Some((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect())
        }
        other => panic!("not a header value: {other}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn every_receive_vector_decodes_as_written() {
    let v = vectors();
    let cases = v["receive"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let headers: Vec<(String, Option<Vec<u8>>)> = case["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().to_owned(), bytes(&h[1])))
            .collect();
        let got = Incoming::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        match (&got, case.get("ok"), case.get("error")) {
            (Ok(i), Some(ok), None) => {
                assert_eq!(hex(&i.trace.trace_id), ok["trace_id"].as_str().unwrap(), "{name}");
                assert_eq!(hex(&i.trace.span_id), ok["span_id"].as_str().unwrap(), "{name}");
                assert_eq!(u64::from(i.trace.flags), ok["flags"].as_u64().unwrap(), "{name}");
                assert_eq!(i.intended_ns, ok["intended_ns"].as_u64().unwrap(), "{name}");
                let stamps: Vec<Value> = StampIter::new(i.stamps)
                    .unwrap()
                    .map(|s| {
                        let s = s.unwrap();
                        serde_json::json!([s.stage, s.ingress_ns, s.egress_ns])
                    })
                    .collect();
                assert_eq!(Value::Array(stamps), ok["stamps"], "{name}");
            }
            (Err(e), None, Some(want)) => assert_eq!(e.to_string(), want.as_str().unwrap(), "{name}"),
            _ => panic!("{name}: got {got:?}, the vector says {case}"),
        }
    }
}

#[test]
fn appending_a_stamp_writes_what_the_vectors_say() {
    for case in vectors()["append"].as_array().unwrap() {
        let stage = case["stage"].as_str().unwrap();
        let (ingress_ns, egress_ns) = (case["ingress_ns"].as_u64().unwrap(), case["egress_ns"].as_u64().unwrap());
        let mut out = Vec::new();
        Stamp { stage, ingress_ns, egress_ns }.append_to(case["existing"].as_str().unwrap().as_bytes(), &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), case["value"].as_str().unwrap());
    }
}

#[test]
fn stage_names_are_valid_as_the_vectors_say() {
    let v = vectors();
    for n in v["stage_names"]["valid"].as_array().unwrap() {
        assert!(valid_stage_name(n.as_str().unwrap()), "{n}");
    }
    for n in v["stage_names"]["invalid"].as_array().unwrap() {
        assert!(!valid_stage_name(n.as_str().unwrap()), "{n}");
    }
    // And a child keeps the trace and the flags, with a new span id.
    let t = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let c = t.child();
    assert_eq!((c.trace_id, c.flags), (t.trace_id, t.flags));
    assert_ne!(c.span_id, t.span_id);
}
