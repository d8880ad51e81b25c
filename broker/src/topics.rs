//! Topics: names, ids, partitions and per-topic configuration. Every Kafka topic config
//! name is accepted (and described back); the ones that shape what this broker stores and
//! serves are interpreted: `cleanup.policy`, `retention.bytes`, `retention.ms`,
//! `delete.retention.ms`, `max.message.bytes` and `message.timestamp.type`.

use crate::log::{Log, Partition, Retention};
use crate::store::Segment;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

/// Apache Kafka's topic-level configuration names (4.x).
pub const KNOWN_CONFIGS: [&str; 31] = [
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// The broker-wide defaults a topic's own configs override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// `log.retention.bytes` per partition; `-1` keeps any amount.
    pub retention_bytes: i64,
    /// `log.retention.ms`; `-1` keeps forever.
    pub retention_ms: i64,
    /// `log.cleaner.delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `message.max.bytes`: the largest record batch accepted.
    pub max_message_bytes: i32,
}

impl Default for Defaults {
    /// Bounded, so an embedded broker's memory stays flat over a long run: 64 MiB per
    /// partition, one hour. Tombstones and the batch limit are Kafka's own defaults.
    fn default() -> Self {
        Self {
            retention_bytes: 64 << 20,
            retention_ms: 3_600_000,
            delete_retention_ms: 86_400_000,
            max_message_bytes: 1_048_588,
        }
    }
}

/// A topic's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The configs set at creation, as given.
    pub set: BTreeMap<String, String>,
    pub retention: Retention,
    pub max_message_bytes: i32,
    pub log_append_time: bool,
}

impl TopicConfig {
    /// Parses `set` over `defaults`; names the first config that is unknown or invalid.
    pub fn parse(set: BTreeMap<String, String>, defaults: &Defaults) -> Result<Self, String> {
        let int = |k: &str, default: i64| -> Result<i64, String> {
            match set.get(k) {
                None => Ok(default),
                Some(v) => v.trim().parse::<i64>().map_err(|_| format!("{k} = {v:?} is not a number")),
            }
        };
        if let Some(k) = set.keys().find(|k| !KNOWN_CONFIGS.contains(&k.as_str())) {
            return Err(format!("unknown topic config {k:?}"));
        }
        let policy = set.get("cleanup.policy").map_or("delete", String::as_str);
        let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
        if policies.iter().any(|p| !matches!(*p, "delete" | "compact")) {
            return Err(format!("cleanup.policy = {policy:?}: expected delete, compact or both"));
        }
        let compact = policies.contains(&"compact");
        let delete = policies.contains(&"delete");
        let bound = |v: i64| u64::try_from(v).ok();
        let bytes = int("retention.bytes", defaults.retention_bytes)?;
        let ms = int("retention.ms", defaults.retention_ms)?;
        let timestamp = set.get("message.timestamp.type").map_or("CreateTime", String::as_str);
        let log_append_time = match timestamp {
            "CreateTime" => false,
            "LogAppendTime" => true,
            other => return Err(format!("message.timestamp.type = {other:?}: expected CreateTime or LogAppendTime")),
        };
        let max = int("max.message.bytes", i64::from(defaults.max_message_bytes))?;
        let max_message_bytes = i32::try_from(max)
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| format!("max.message.bytes = {max} is out of range"))?;
        Ok(Self {
            retention: Retention {
                // A compacted-only topic keeps every key's newest value whatever its age.
                bytes: if delete { bound(bytes) } else { None },
                ms: if delete { (ms >= 0).then_some(ms) } else { None },
                compact,
                delete_retention_ms: int("delete.retention.ms", defaults.delete_retention_ms)?,
            },
            max_message_bytes,
            log_append_time,
            set,
        })
    }

    /// Every config with its value, as DescribeConfigs answers: `(name, value, is_default)`.
    pub fn describe(&self, defaults: &Defaults) -> Vec<(String, String, bool)> {
        let mut out: Vec<(String, String, bool)> =
            self.set.iter().map(|(k, v)| (k.clone(), v.clone(), false)).collect();
        let implied = [
            ("cleanup.policy", "delete".to_owned()),
            ("retention.bytes", defaults.retention_bytes.to_string()),
            ("retention.ms", defaults.retention_ms.to_string()),
            ("delete.retention.ms", defaults.delete_retention_ms.to_string()),
            ("max.message.bytes", defaults.max_message_bytes.to_string()),
            ("message.timestamp.type", "CreateTime".to_owned()),
        ];
        for (k, v) in implied {
            if !self.set.contains_key(k) {
                out.push((k.to_owned(), v, true));
            }
        }
        out.sort();
        out
    }
}

/// One topic.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// A new topic, its partitions' files under `dir` when the broker keeps data on disk.
    pub fn create(
        name: String,
        id: Uuid,
        partitions: i32,
        config: TopicConfig,
        dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        let parts = (0..partitions)
            .map(|p| {
                let segment = match dir {
                    Some(d) => Some(Segment::open(d, p)?.0),
                    None => None,
                };
                Ok(Arc::new(Partition::new(Log::new(segment))))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { name, id, config, partitions: parts })
    }

    pub fn partition(&self, p: i32) -> Option<&Arc<Partition>> {
        usize::try_from(p).ok().and_then(|p| self.partitions.get(p))
    }
}

/// Whether `name` is a legal Kafka topic name.
pub fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!("topic name is {} characters; at most 249", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} has {c:?}; only ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<TopicConfig, String> {
        TopicConfig::parse(
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            &Defaults::default(),
        )
    }

    #[test]
    fn a_compacted_topic_has_no_size_or_age_bound_unless_it_also_deletes() {
        let c = cfg(&[("cleanup.policy", "compact")]).expect("valid");
        assert!(c.retention.compact && c.retention.bytes.is_none() && c.retention.ms.is_none());
        let c = cfg(&[("cleanup.policy", "compact,delete"), ("retention.ms", "1000")]).expect("valid");
        assert!(c.retention.compact && c.retention.ms == Some(1000));
        let c = cfg(&[("retention.bytes", "-1")]).expect("valid");
        assert_eq!(c.retention.bytes, None);
    }

    #[test]
    fn unknown_or_invalid_configs_are_named() {
        assert!(cfg(&[("retention.msec", "1")]).expect_err("typo").contains("retention.msec"));
        assert!(cfg(&[("message.timestamp.type", "Now")]).expect_err("bad").contains("message.timestamp.type"));
        assert!(cfg(&[("max.message.bytes", "0")]).expect_err("bad").contains("max.message.bytes"));
        assert!(cfg(&[("message.timestamp.type", "LogAppendTime")]).expect("valid").log_append_time);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_name("story.actions").is_ok());
        assert!(valid_name("a b").is_err());
        assert!(valid_name("..").is_err());
        assert!(valid_name(&"x".repeat(250)).is_err());
    }
}
