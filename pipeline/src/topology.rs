//! The reference pipeline's shape in one table: its stages in path order, the topic each
//! consumes and produces, the consumer group it reads with, and every topic and group a
//! run uses. Runs, stage processes, `watch` and telemetry take the shape from here, and a
//! test holds the README's list of topics and groups to it.

/// Topic names: the contract between the stages.
pub mod topics {
    /// Connector output: one record per story action, keyed by session id.
    pub const ACTIONS: &str = "story.actions";
    /// Agent output: one beat per action.
    pub const BEATS: &str = "story.beats";
    /// Stream job output: enriched beats for the gateway.
    pub const UPDATES: &str = "story.updates";
    /// Dead letters from every stage, with the reason in a header.
    pub const DLQ: &str = "story.dlq";
    /// Character and world context per session (compacted), kept in the edge cache.
    pub const CONTEXT: &str = "story.context";
    /// Every change of the agent's session state (compacted), to rebuild it from.
    pub const AGENT_CHANGELOG: &str = "story.agent-changelog";
    /// Source positions of the connector (compacted), as Kafka Connect keeps them.
    pub const CONNECT_OFFSETS: &str = "tailgate.connect-offsets";
    /// The stream job's rules (compacted, keyed by rule name), broadcast to every instance.
    pub const RULES: &str = "story.rules";
    /// Every decision the stream job makes (windows fired, late events, pattern matches).
    pub const AUDIT: &str = "story.audit";
    /// The stream job's pattern signals (e.g. `binge`).
    pub const SIGNALS: &str = "story.signals";
    /// Copies of the events that came after their windows had fired.
    pub const LATE: &str = "story.late";
    /// Every change of the stream job's per-session windows and pattern progress
    /// (compacted, co-partitioned with its input), to rebuild them from.
    pub const STREAMJOB_CHANGELOG: &str = "story.streamjob-changelog";
    /// Every event and side-output topic a run needs, in pipeline order.
    pub const ALL: [&str; 7] = [ACTIONS, BEATS, UPDATES, DLQ, AUDIT, SIGNALS, LATE];
    /// The compacted topics: state and positions, last value per key wins.
    pub const COMPACTED: [&str; 5] = [CONTEXT, AGENT_CHANGELOG, CONNECT_OFFSETS, RULES, STREAMJOB_CHANGELOG];
}

/// Every topic a run creates, the compacted ones last.
pub fn every_topic() -> impl Iterator<Item = &'static str> {
    topics::ALL.into_iter().chain(topics::COMPACTED)
}

/// Stage names as they appear in stamps, reports and group names.
pub const CONNECTOR: &str = "connector";
pub const AGENT: &str = "agent";
pub const STREAMJOB: &str = "streamjob";
pub const GATEWAY: &str = "gateway";

/// One stage: what it reads and writes on Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    pub name: &'static str,
    /// The topic it consumes (none for the connector, which reads its source).
    pub input: Option<&'static str>,
    /// The topic it produces to (none for the gateway, which pushes to clients).
    pub output: Option<&'static str>,
}

impl StageSpec {
    /// The consumer group it reads its input with.
    pub fn group(&self) -> Option<String> {
        self.input.map(|_| group_of(self.name))
    }
}

/// The stages in path order.
pub const PIPELINE: [StageSpec; 4] = [
    StageSpec { name: CONNECTOR, input: None, output: Some(topics::ACTIONS) },
    StageSpec { name: AGENT, input: Some(topics::ACTIONS), output: Some(topics::BEATS) },
    StageSpec { name: STREAMJOB, input: Some(topics::BEATS), output: Some(topics::UPDATES) },
    StageSpec { name: GATEWAY, input: Some(topics::UPDATES), output: None },
];

/// Stage names in path order.
pub const STAGES: [&str; 4] = [CONNECTOR, AGENT, STREAMJOB, GATEWAY];

/// The stage named `name`.
pub fn stage(name: &str) -> Option<&'static StageSpec> {
    PIPELINE.iter().find(|s| s.name == name)
}

/// The consumer group of a stage or helper named `name`: `tailgate-<name>`.
pub fn group_of(name: &str) -> String {
    format!("tailgate-{name}")
}

/// The consumer groups of the stages that consume, in path order (what `watch` reads the
/// lag of by default).
pub fn stage_groups() -> Vec<String> {
    PIPELINE.iter().filter_map(StageSpec::group).collect()
}

/// The edge cache's sink, which keeps the cache from `story.context`.
pub const CONTEXT_SINK: &str = "context-sink";
/// The stream job's reader of `story.rules` (every instance reads every rule).
pub const STREAMJOB_RULES: &str = "streamjob-rules";
/// The run's reader of topics it reads back to their end (the dead-letter audit).
pub const READ_BACK: &str = "read-back";

/// Every consumer group a run's own clients commit with, besides the stages'.
pub fn helper_groups() -> [String; 3] {
    [group_of(CONTEXT_SINK), group_of(STREAMJOB_RULES), group_of(READ_BACK)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_is_written_by_the_stage_before_the_one_that_reads_it() {
        for pair in PIPELINE.windows(2) {
            assert_eq!(pair[0].output, pair[1].input, "{} -> {}", pair[0].name, pair[1].name);
        }
        assert_eq!(PIPELINE.map(|s| s.name), STAGES);
        assert_eq!(stage_groups(), ["tailgate-agent", "tailgate-streamjob", "tailgate-gateway"]);
        assert_eq!(stage(STREAMJOB).and_then(|s| s.input), Some(topics::BEATS));
        for t in PIPELINE.iter().flat_map(|s| [s.input, s.output]).flatten() {
            assert!(topics::ALL.contains(&t), "{t} is created by every run");
        }
    }
}
