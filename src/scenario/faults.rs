//! `[[faults]]`: what the run does to the embedded broker while the load goes, and when.

use pipeline::config::{Problems, duration, opt_duration};
use serde::Deserialize;
use std::time::Duration;

/// What a `[[faults]]` entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Every response of the embedded broker held back for `duration`.
    BrokerStall,
    /// Every client connection to the embedded broker closed.
    ConnectionsDrop,
    /// `latency` added to every fetch of `topic` by the embedded broker, for `duration`
    /// (absent: until the run ends).
    TopicLatency,
}

impl FaultKind {
    /// The name written in scenarios and results.
    pub fn name(self) -> &'static str {
        match self {
            Self::BrokerStall => "broker_stall",
            Self::ConnectionsDrop => "connections_drop",
            Self::TopicLatency => "topic_latency",
        }
    }

    /// The fields besides `kind` and `at` this kind takes.
    fn takes(self) -> &'static [&'static str] {
        match self {
            Self::BrokerStall => &["duration"],
            Self::ConnectionsDrop => &[],
            Self::TopicLatency => &["duration", "topic", "latency"],
        }
    }
}

/// A fault: at `at` into the load (warm-up included), one of [`FaultKind`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    pub kind: FaultKind,
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// `topic_latency`: which topic's fetches.
    pub topic: Option<String>,
    /// `topic_latency`: how much each fetch is delayed.
    #[serde(default, deserialize_with = "opt_duration")]
    pub latency: Option<Duration>,
}

impl FaultSection {
    /// The broker fault hook this entry uses.
    #[cfg(feature = "embedded")]
    pub fn broker_fault(&self) -> pipeline::embedded::Fault {
        use pipeline::embedded::Fault;
        match self.kind {
            FaultKind::BrokerStall => Fault::Stall(self.duration.unwrap_or_default()),
            FaultKind::ConnectionsDrop => Fault::DropConnections,
            FaultKind::TopicLatency => Fault::FetchLatency {
                topic: self.topic.clone().unwrap_or_default(),
                latency: self.latency.unwrap_or_default(),
                lasts: self.duration,
            },
        }
    }

    /// The entry's problems (it is the `i`-th; the load ends at `load_ends`; `external`:
    /// the run has a bootstrap address, and so no embedded broker).
    fn validate(&self, i: usize, load_ends: Duration, external: bool, p: &mut Problems) {
        let kind = self.kind.name();
        let mut bad = |key: &str, message: String| p.bad("faults", Some(i), key, message);
        if self.at >= load_ends {
            bad("at", format!("{:?} is after the load ends", self.at));
        }
        if external {
            bad(
                "kind",
                format!(
                    "`{kind}` uses the embedded broker's fault hooks; against `tailgate broker`, give that \
                     process its --stall, --drop-connections or --fetch-latency flags"
                ),
            );
        }
        match self.kind {
            FaultKind::BrokerStall if self.duration.is_none_or(|d| d.is_zero()) => {
                bad("duration", format!("`{kind}` needs a duration longer than zero"));
            }
            FaultKind::TopicLatency => {
                let topics = pipeline::topology::every_topic;
                match &self.topic {
                    None => bad("topic", format!("`{kind}` needs the topic to slow down")),
                    Some(t) if !topics().any(|k| k == t) => {
                        let names: Vec<&str> = topics().collect();
                        bad("topic", format!("`{t}` is not a topic of the run; one of {}", names.join(", ")));
                    }
                    Some(_) => {}
                }
                if self.latency.is_none_or(|d| d.is_zero()) {
                    bad("latency", format!("`{kind}` needs a latency longer than zero"));
                }
                if self.duration.is_some_and(|d| d.is_zero()) {
                    bad("duration", "must be longer than zero (or absent: to the end)".into());
                }
            }
            _ => {}
        }
        let given = [
            ("duration", self.duration.is_some()),
            ("topic", self.topic.is_some()),
            ("latency", self.latency.is_some()),
        ];
        for (key, given) in given {
            if given && !self.kind.takes().contains(&key) {
                bad(key, format!("`{kind}` takes no {key}"));
            }
        }
    }
}

/// Every problem of the scenario's faults.
pub fn validate(faults: &[FaultSection], load_ends: Duration, external: bool, p: &mut Problems) {
    for (i, f) in faults.iter().enumerate() {
        f.validate(i, load_ends, external, p);
    }
}
