//! [`ClientSettings`]: librdkafka settings for every stage (and for one stage where it
//! needs its own), and the topic settings topics are created with. `[kafka]` is one, each
//! `[profiles.NAME]` carries one over it, and a run's stages take theirs from the merge, in
//! one place ([`ClientSettings::for_stage`]).

use super::kafka::{Client, KafkaSettings, check_setting};
use crate::config::{Problems, settings};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Where a SASL password may come from instead of the scenario: used when
/// `[kafka.client]` sets no `sasl.password`.
pub const SASL_PASSWORD_ENV: &str = "TAILGATE_KAFKA_SASL_PASSWORD";

/// Every client's, producer, consumer and topic settings, and per-stage client settings
/// over them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Settings every client takes, producers, consumers and the admin client alike:
    /// where the connection is secured (`security.protocol`, `sasl.*`, `ssl.*`).
    #[serde(default, deserialize_with = "settings")]
    pub client: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer: BTreeMap<String, String>,
    /// Topic settings the topics are created with (`compression.type`, `segment.bytes`...).
    #[serde(default, deserialize_with = "settings")]
    pub topic: BTreeMap<String, String>,
    /// Per-stage client settings (`[kafka.stages.agent.producer]`).
    #[serde(default)]
    pub stages: BTreeMap<String, StageClients>,
}

/// One stage's own client settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageClients {
    #[serde(default, deserialize_with = "settings")]
    pub producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer: BTreeMap<String, String>,
}

impl ClientSettings {
    /// `over` on top of these: every map extended, the later value winning.
    pub fn merged(&self, over: &Self) -> Self {
        let mut m = self.clone();
        m.client.extend(over.client.clone());
        m.producer.extend(over.producer.clone());
        m.consumer.extend(over.consumer.clone());
        m.topic.extend(over.topic.clone());
        for (stage, own) in &over.stages {
            let s = m.stages.entry(stage.clone()).or_default();
            s.producer.extend(own.producer.clone());
            s.consumer.extend(own.consumer.clone());
        }
        m
    }

    /// The clients every stage shares, on `bootstrap` with `partitions` per topic. A SASL
    /// password not given in `[kafka.client]` is taken from [`SASL_PASSWORD_ENV`] when set.
    pub fn kafka(&self, bootstrap: &str, partitions: i32) -> KafkaSettings {
        let mut k = KafkaSettings::new(bootstrap);
        k.partitions = partitions;
        k.client.clone_from(&self.client);
        if !k.client.contains_key("sasl.password")
            && let Ok(password) = std::env::var(SASL_PASSWORD_ENV)
        {
            k.client.insert("sasl.password".into(), password);
        }
        k.producer.clone_from(&self.producer);
        k.consumer.clone_from(&self.consumer);
        k
    }

    /// `base` with `stage`'s own settings over everyone's.
    pub fn for_stage(&self, base: &KafkaSettings, stage: &str) -> KafkaSettings {
        let mut k = base.clone();
        if let Some(own) = self.stages.get(stage) {
            k.producer.extend(own.producer.clone());
            k.consumer.extend(own.consumer.clone());
        }
        k
    }

    /// The topic settings as the admin client takes them.
    pub fn topic_settings(&self) -> Vec<(&str, &str)> {
        self.topic.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// Settings librdkafka refuses and stages that do not exist, each under `table`
    /// (`kafka`, `profiles.fast`).
    pub fn validate(&self, table: &str, p: &mut Problems) {
        check(p, &format!("{table}.client"), &self.client, Client::Producer);
        check(p, &format!("{table}.client"), &self.client, Client::Consumer);
        check(p, &format!("{table}.producer"), &self.producer, Client::Producer);
        check(p, &format!("{table}.consumer"), &self.consumer, Client::Consumer);
        for (stage, own) in &self.stages {
            check(p, &format!("{table}.stages.{stage}.producer"), &own.producer, Client::Producer);
            check(p, &format!("{table}.stages.{stage}.consumer"), &own.consumer, Client::Consumer);
        }
    }

    /// Per-stage settings for stages the pipeline does not have.
    pub fn validate_stages(&self, table: &str, p: &mut Problems) {
        for stage in self.stages.keys() {
            if !crate::STAGES.contains(&stage.as_str()) {
                p.bad(
                    &format!("{table}.stages"),
                    None,
                    stage,
                    format!("no stage `{stage}`; stages are {}", crate::STAGES.join(", ")),
                );
            }
        }
    }
}

fn check(p: &mut Problems, table: &str, settings: &BTreeMap<String, String>, kind: Client) {
    for (k, v) in settings {
        if let Err(e) = check_setting(kind, k, v) {
            p.bad(table, None, k, e);
        } else if let Some(why) = voids_accounting(kind, k, v) {
            p.bad(table, None, k, why);
        }
    }
}

/// Why a setting would void the run's at-least-once accounting, if it would.
pub fn voids_accounting(kind: Client, key: &str, value: &str) -> Option<&'static str> {
    let on = matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "1");
    match (kind, key) {
        (Client::Consumer, "enable.auto.offset.store") if on => Some(
            "tailgate stores an offset only once the outputs it led to are acknowledged; storing them on receipt \
             would let a stopped stage lose events",
        ),
        (Client::Consumer, "group.id") => {
            Some("each stage reads in its own group (tailgate-<stage>, see the README's topics and groups)")
        }
        (Client::Producer, "acks" | "request.required.acks") if value.trim() == "0" => {
            Some("with acks=0 nothing is acknowledged, so no offset could be stored safely; use 1 or all")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn settings_that_would_void_at_least_once_are_refused() {
        let mut bad = ClientSettings::default();
        bad.producer.insert("acks".into(), "0".into());
        bad.consumer.insert("enable.auto.offset.store".into(), "true".into());
        bad.consumer.insert("group.id".into(), "mine".into());
        let mut p = Problems::default();
        bad.validate("kafka", &mut p);
        let fields: Vec<String> = p.0.iter().map(crate::config::Problem::field).collect();
        assert_eq!(
            fields,
            ["kafka.producer.acks", "kafka.consumer.enable.auto.offset.store", "kafka.consumer.group.id"]
        );
        let mut fine = ClientSettings::default();
        fine.producer.insert("acks".into(), "1".into());
        fine.consumer.insert("enable.auto.offset.store".into(), "false".into());
        let mut p = Problems::default();
        fine.validate("kafka", &mut p);
        assert!(p.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn a_stage_gets_its_own_settings_over_everyones() {
        let mut base = ClientSettings { producer: map(&[("linger.ms", "5"), ("acks", "all")]), ..Default::default() };
        base.stages.insert("agent".into(), StageClients { producer: map(&[("linger.ms", "0")]), ..Default::default() });
        let over = ClientSettings { producer: map(&[("acks", "1")]), ..Default::default() };
        let merged = base.merged(&over);
        let shared = merged.kafka("127.0.0.1:9092", 3);
        assert_eq!(shared.producer, map(&[("linger.ms", "5"), ("acks", "1")]));
        assert_eq!(merged.for_stage(&shared, "agent").producer, map(&[("linger.ms", "0"), ("acks", "1")]));
        assert_eq!(merged.for_stage(&shared, "gateway").producer, shared.producer);
    }
}
