//! Converters (Kafka Connect's term): how a story event is written in a Kafka value. `json`
//! is self-describing text; `protobuf` is a schema-aware binary form, framed as Confluent's
//! wire format does (a zero magic byte and a 4-byte schema id before the Protobuf bytes),
//! so a reader knows which schema wrote a value and refuses one it does not know.
//!
//! The Protobuf messages are declared here with prost's derive (no `protoc` needed); their
//! schema, as a `.proto` file, is [`STORY_PROTO`].

use crate::event::{Beat, Enrichment, StoryEvent, Window};
use prost::Message as _;
use serde::{Deserialize, Serialize};

/// The value format of every pipeline topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Converter {
    #[default]
    Json,
    Protobuf,
}

/// The schema id `protobuf` values carry: `tailgate.story.v1.StoryEvent`.
pub const SCHEMA_ID: u32 = 1;

/// The Protobuf schema of [`Converter::Protobuf`] values, for readers in other languages.
pub const STORY_PROTO: &str = r#"syntax = "proto3";
package tailgate.story.v1;

message StoryEvent {
  uint64 run = 1;
  uint64 id = 2;
  uint64 session = 3;
  string action = 4;
  optional Beat beat = 5;
  optional Window window = 6;
  optional Enrichment enrichment = 7;
}

message Beat {
  uint64 number = 1;
  string prompt = 2;
  string text = 3;
}

message Window {
  uint64 start_ms = 1;
  uint64 count = 2;
  bool late = 3;
}

message Enrichment {
  string profile = 1;
  string from = 2;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
struct PbEvent {
    #[prost(uint64, tag = "1")]
    run: u64,
    #[prost(uint64, tag = "2")]
    id: u64,
    #[prost(uint64, tag = "3")]
    session: u64,
    #[prost(string, tag = "4")]
    action: String,
    #[prost(message, optional, tag = "5")]
    beat: Option<PbBeat>,
    #[prost(message, optional, tag = "6")]
    window: Option<PbWindow>,
    #[prost(message, optional, tag = "7")]
    enrichment: Option<PbEnrichment>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbEnrichment {
    #[prost(string, tag = "1")]
    profile: String,
    #[prost(string, tag = "2")]
    from: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbBeat {
    #[prost(uint64, tag = "1")]
    number: u64,
    #[prost(string, tag = "2")]
    prompt: String,
    #[prost(string, tag = "3")]
    text: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct PbWindow {
    #[prost(uint64, tag = "1")]
    start_ms: u64,
    #[prost(uint64, tag = "2")]
    count: u64,
    #[prost(bool, tag = "3")]
    late: bool,
}

impl Converter {
    /// The name scenarios and reports use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }

    /// Writes `event` in this format.
    pub fn encode(self, event: &StoryEvent) -> Vec<u8> {
        match self {
            // A struct of strings, integers and booleans always serializes.
            Self::Json => serde_json::to_vec(event).unwrap_or_default(),
            Self::Protobuf => {
                let pb = PbEvent {
                    run: event.run,
                    id: event.id,
                    session: event.session,
                    action: event.action.clone(),
                    beat: event.beat.as_ref().map(|b| PbBeat {
                        number: b.number,
                        prompt: b.prompt.clone(),
                        text: b.text.clone(),
                    }),
                    window: event.window.map(|w| PbWindow { start_ms: w.start_ms, count: w.count, late: w.late }),
                    enrichment: event
                        .enrichment
                        .as_ref()
                        .map(|e| PbEnrichment { profile: e.profile.clone(), from: e.from.clone() }),
                };
                let mut out = Vec::with_capacity(5 + pb.encoded_len());
                out.push(0);
                out.extend_from_slice(&SCHEMA_ID.to_be_bytes());
                pb.encode(&mut out).unwrap_or_default(); // a Vec grows as needed
                out
            }
        }
    }

    /// Reads a value written in this format, or says why it cannot.
    pub fn decode(self, value: &[u8]) -> Result<StoryEvent, String> {
        match self {
            Self::Json => {
                serde_json::from_slice(value).map_err(|e| format!("the value is not a JSON story event: {e}"))
            }
            Self::Protobuf => {
                let [0, a, b, c, d, body @ ..] = value else {
                    return Err("the value is not in the Protobuf wire format (no magic byte and schema id)".into());
                };
                let id = u32::from_be_bytes([*a, *b, *c, *d]);
                if id != SCHEMA_ID {
                    return Err(format!("unknown schema id {id} (this reader knows {SCHEMA_ID})"));
                }
                let pb = PbEvent::decode(body).map_err(|e| format!("the value is not a Protobuf story event: {e}"))?;
                Ok(StoryEvent {
                    run: pb.run,
                    id: pb.id,
                    session: pb.session,
                    action: pb.action,
                    beat: pb.beat.map(|b| Beat { number: b.number, prompt: b.prompt, text: b.text }),
                    window: pb.window.map(|w| Window { start_ms: w.start_ms, count: w.count, late: w.late }),
                    enrichment: pb.enrichment.map(|e| Enrichment { profile: e.profile, from: e.from }),
                })
            }
        }
    }
}

impl std::str::FromStr for Converter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "protobuf" => Ok(Self::Protobuf),
            other => Err(format!("unknown converter `{other}`: use \"json\" or \"protobuf\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StoryEvent {
        StoryEvent {
            run: 7,
            id: 42,
            session: 3,
            action: "open the dóor".into(),
            beat: Some(Beat { number: 2, prompt: "p".into(), text: "t".into() }),
            window: Some(Window { start_ms: 1000, count: 4, late: true }),
            enrichment: Some(Enrichment { profile: "noir/teen".into(), from: "db".into() }),
        }
    }

    #[test]
    fn both_converters_round_trip_with_and_without_optional_parts() {
        let bare = StoryEvent { beat: None, window: None, enrichment: None, ..full() };
        for c in [Converter::Json, Converter::Protobuf] {
            for e in [full(), bare.clone()] {
                assert_eq!(c.decode(&c.encode(&e)).unwrap(), e, "{c:?}");
            }
        }
    }

    #[test]
    fn protobuf_is_framed_and_smaller_than_json() {
        let pb = Converter::Protobuf.encode(&full());
        assert_eq!(&pb[..5], &[0, 0, 0, 0, 1]);
        assert!(pb.len() < Converter::Json.encode(&full()).len());
    }

    #[test]
    fn undecodable_values_are_refused_with_a_reason() {
        let json = Converter::Json.encode(&full());
        let e = Converter::Protobuf.decode(&json).unwrap_err();
        assert!(e.contains("wire format"), "{e}");
        let e = Converter::Protobuf.decode(&[0, 0, 0, 0, 9, 1, 2]).unwrap_err();
        assert!(e.contains("unknown schema id 9"), "{e}");
        let e = Converter::Protobuf.decode(&[0, 0, 0, 0, 1, 0xff, 0xff]).unwrap_err();
        assert!(e.contains("not a Protobuf story event"), "{e}");
        let e = Converter::Json.decode(&Converter::Protobuf.encode(&full())).unwrap_err();
        assert!(e.contains("not a JSON story event"), "{e}");
        assert!("avro".parse::<Converter>().unwrap_err().contains("json"));
    }
}
