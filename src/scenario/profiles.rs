//! Tuning profiles (`[profiles.NAME]`): client, topic and partition settings over
//! `[broker]` and `[kafka]`, run in the order written; and [`Resolved`], the settings one
//! run of a scenario uses.

use super::Scenario;
use pipeline::agent::config::AgentKind;
use pipeline::config::{Problems, settings, valid_name};
use pipeline::io::clients::{ClientSettings, StageClients};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The profile name of a scenario without profiles.
pub const DEFAULT_PROFILE: &str = "default";

/// A tuning profile: the same client settings `[kafka]` takes, over it, and the partition
/// count over `[broker]`'s.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "ProfileTable")]
pub struct Profile {
    pub description: String,
    /// Partitions per topic, over `broker.partitions`.
    pub partitions: Option<i32>,
    /// The agent's implementation, over `agent.kind`: a profile can compare the Rust agent
    /// with the Faust one under the same load.
    pub agent: Option<AgentKind>,
    pub clients: ClientSettings,
}

/// How a profile is written: its description and partitions beside `[kafka]`'s keys. (Read
/// field by field rather than flattened, so that every problem keeps its line.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileTable {
    #[serde(default)]
    description: String,
    partitions: Option<i32>,
    agent: Option<AgentKind>,
    #[serde(default, deserialize_with = "settings")]
    client: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    producer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    consumer: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    topic: BTreeMap<String, String>,
    #[serde(default)]
    stages: BTreeMap<String, StageClients>,
}

impl From<ProfileTable> for Profile {
    fn from(t: ProfileTable) -> Self {
        let clients = ClientSettings {
            client: t.client,
            producer: t.producer,
            consumer: t.consumer,
            topic: t.topic,
            stages: t.stages,
        };
        Self { description: t.description, partitions: t.partitions, agent: t.agent, clients }
    }
}

/// The settings one run of a scenario uses: `[broker]` and `[kafka]` with a profile over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The profile's name (`default` without profiles).
    pub name: String,
    pub description: String,
    pub partitions: i32,
    /// The profile's agent implementation, when it names one.
    pub agent: Option<AgentKind>,
    pub clients: ClientSettings,
}

impl Scenario {
    /// The runs `only` selects (every profile when empty), in the order written.
    pub fn resolve(&self, only: &[String]) -> Result<Vec<Resolved>, String> {
        let names: Vec<&str> = self.profiles.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(unknown) =
            only.iter().find(|o| !(names.contains(&o.as_str()) || names.is_empty() && *o == DEFAULT_PROFILE))
        {
            return Err(if names.is_empty() {
                format!(
                    "--profile `{unknown}`: scenario `{}` has no profiles (its one run is `{DEFAULT_PROFILE}`)",
                    self.name
                )
            } else {
                format!("--profile `{unknown}`: scenario `{}` has the profiles {}", self.name, names.join(", "))
            });
        }
        let base = Resolved {
            name: DEFAULT_PROFILE.into(),
            description: String::new(),
            partitions: self.broker.partitions,
            agent: None,
            clients: self.kafka.clone(),
        };
        if self.profiles.is_empty() {
            return Ok(vec![base]);
        }
        Ok(self
            .profiles
            .iter()
            .filter(|(name, _)| only.is_empty() || only.contains(name))
            .map(|(name, p)| Resolved {
                name: name.clone(),
                description: p.description.clone(),
                partitions: p.partitions.unwrap_or(base.partitions),
                agent: p.agent,
                clients: base.clients.merged(&p.clients),
            })
            .collect())
    }
}

/// Client settings librdkafka refuses, partitions out of range, unknown stages and
/// profile names, in `[kafka]` and every profile.
pub fn validate(kafka: &ClientSettings, profiles: &[(String, Profile)], p: &mut Problems) {
    kafka.validate("kafka", p);
    for (name, profile) in profiles {
        profile.clients.validate(&format!("profiles.{name}"), p);
    }
    for (name, profile) in profiles {
        let t = format!("profiles.{name}");
        if !valid_name(name) {
            p.bad(&t, None, "", "a profile name uses only a-z, 0-9, `_`, `.`, `-`");
        }
        if let Some(n) = profile.partitions
            && !(1..=super::MAX_PARTITIONS).contains(&n)
        {
            p.bad(&t, None, "partitions", format!("must be 1 to {}, not {n}", super::MAX_PARTITIONS));
        }
        profile.clients.validate_stages(&t, p);
    }
    kafka.validate_stages("kafka", p);
}
