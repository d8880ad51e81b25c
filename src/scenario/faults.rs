//! `[[faults]]`: what the run does to the embedded broker, a stage, or a database the
//! stages use, while the load goes, and when.

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
    /// The embedded broker stopped as a crash would and started again from its on-disk log
    /// after `duration` (absent: at once). The run keeps the log on disk for it.
    BrokerRestart,
    /// `stage` stopped abruptly (its task aborted: nothing drained, nothing committed) and
    /// started again after `duration` (absent: at once).
    StageKill,
    /// `stage` stopped in order (drained, offsets committed, group left) and started again
    /// after `duration` (absent: at once).
    StageRestart,
    /// Every connection of the stages to PostgreSQL closed and new ones refused for
    /// `duration`, as a server restart does to its clients.
    PostgresRestart,
    /// No byte between the stages and Redis for `duration`; connections stay open.
    RedisStall,
}

impl FaultKind {
    /// The name written in scenarios and results.
    pub fn name(self) -> &'static str {
        match self {
            Self::BrokerStall => "broker_stall",
            Self::ConnectionsDrop => "connections_drop",
            Self::TopicLatency => "topic_latency",
            Self::BrokerRestart => "broker_restart",
            Self::StageKill => "stage_kill",
            Self::StageRestart => "stage_restart",
            Self::PostgresRestart => "postgres_restart",
            Self::RedisStall => "redis_stall",
        }
    }

    /// Whether it acts on a stage (applied by the watch, which owns the pipeline).
    pub fn on_stage(self) -> bool {
        matches!(self, Self::StageKill | Self::StageRestart)
    }

    /// Whether it needs the embedded broker.
    fn on_broker(self) -> bool {
        matches!(self, Self::BrokerStall | Self::ConnectionsDrop | Self::TopicLatency | Self::BrokerRestart)
    }

    /// Whether `duration` must be given, and longer than zero.
    fn needs_duration(self) -> bool {
        matches!(self, Self::BrokerStall | Self::PostgresRestart | Self::RedisStall)
    }

    /// The fields besides `kind` and `at` this kind takes.
    fn takes(self) -> &'static [&'static str] {
        match self {
            Self::BrokerStall => &["duration"],
            Self::ConnectionsDrop => &[],
            Self::TopicLatency => &["duration", "topic", "latency"],
            Self::BrokerRestart | Self::PostgresRestart | Self::RedisStall => &["duration"],
            Self::StageKill | Self::StageRestart => &["stage", "duration"],
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
    /// `stage_kill`, `stage_restart`: `agent` or `streamjob`.
    pub stage: Option<String>,
}

/// The stages a fault can stop and start again: those that keep state.
pub const RESTARTABLE: [&str; 2] = [pipeline::topology::AGENT, pipeline::topology::STREAMJOB];

/// What the scenario's stages reach, for the faults that act on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Targets {
    /// The run has a bootstrap address, and so no embedded broker.
    pub external_broker: bool,
    /// The stages run as processes of their own.
    pub external_stages: bool,
    /// A stage uses PostgreSQL (the change-data-capture source, or the enrichment).
    pub postgres: bool,
    /// The edge cache is Redis.
    pub redis: bool,
}

impl FaultSection {
    /// When it ends, after the load starts: its start plus its length (at once for a fault
    /// without one; a latency without a length lasts to `load_ends`).
    pub fn ends(&self, load_ends: Duration) -> Duration {
        match (self.kind, self.duration) {
            (FaultKind::TopicLatency, None) => load_ends,
            (_, d) => self.at + d.unwrap_or_default(),
        }
    }

    /// The broker fault hook this entry uses, for the kinds the hooks apply.
    #[cfg(feature = "embedded")]
    pub fn broker_fault(&self) -> Option<pipeline::embedded::Fault> {
        use pipeline::embedded::Fault;
        match self.kind {
            FaultKind::BrokerStall => Some(Fault::Stall(self.duration.unwrap_or_default())),
            FaultKind::ConnectionsDrop => Some(Fault::DropConnections),
            FaultKind::TopicLatency => Some(Fault::FetchLatency {
                topic: self.topic.clone().unwrap_or_default(),
                latency: self.latency.unwrap_or_default(),
                lasts: self.duration,
            }),
            _ => None,
        }
    }

    /// The entry's problems (it is the `i`-th; the load ends at `load_ends`).
    fn validate(&self, i: usize, load_ends: Duration, targets: Targets, p: &mut Problems) {
        let kind = self.kind.name();
        let mut bad = |key: &str, message: String| p.bad("faults", Some(i), key, message);
        if self.at >= load_ends {
            bad("at", format!("{:?} is after the load ends", self.at));
        }
        if targets.external_broker && self.kind.on_broker() {
            bad(
                "kind",
                format!(
                    "`{kind}` uses the embedded broker's fault hooks; against `tailgate broker`, give that \
                     process its --stall, --drop-connections or --fetch-latency flags"
                ),
            );
        }
        if targets.external_stages && !self.kind.on_broker() {
            bad(
                "kind",
                format!(
                    "`{kind}` acts on stages this run hosts; the stages run as processes of their own, so stop \
                     them (kill -9 PID) or their databases yourself: the run accounts for what that loses"
                ),
            );
        }
        match self.kind {
            k if k.needs_duration() && self.duration.is_none_or(|d| d.is_zero()) => {
                bad("duration", format!("`{kind}` needs a duration longer than zero"));
            }
            FaultKind::StageKill | FaultKind::StageRestart => match self.stage.as_deref() {
                None => bad("stage", format!("`{kind}` needs the stage: one of {}", RESTARTABLE.join(", "))),
                Some(s) if !RESTARTABLE.contains(&s) => {
                    bad(
                        "stage",
                        format!("`{s}` cannot be stopped and started again; one of {}", RESTARTABLE.join(", ")),
                    );
                }
                Some(_) => {}
            },
            FaultKind::PostgresRestart if !targets.postgres => bad(
                "kind",
                format!(
                    "`{kind}` needs a stage on PostgreSQL ([connector] source = \"postgres\", or [streamjob.enrich] url)"
                ),
            ),
            FaultKind::RedisStall if !targets.redis => {
                bad("kind", format!("`{kind}` needs the edge cache on Redis ([edge_cache] url = \"redis://...\")"));
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
            ("stage", self.stage.is_some()),
        ];
        for (key, given) in given {
            if given && !self.kind.takes().contains(&key) {
                bad(key, format!("`{kind}` takes no {key}"));
            }
        }
    }
}

/// Every problem of the scenario's faults.
pub fn validate(faults: &[FaultSection], load_ends: Duration, targets: Targets, p: &mut Problems) {
    for (i, f) in faults.iter().enumerate() {
        f.validate(i, load_ends, targets, p);
    }
}
