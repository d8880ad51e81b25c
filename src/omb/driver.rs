//! OpenMessaging Benchmark Kafka driver files (`driver-kafka/*.yaml`) imported as tuning
//! profiles: `producerConfig`, `consumerConfig` and `commonConfig` (Java properties) become
//! the profile's client settings where librdkafka has the same setting, `topicConfig` its
//! topic settings. A setting librdkafka does not have (a Java client's own), one that would
//! void the run's accounting, and every field with no meaning here are reported, never
//! dropped silently.

use pipeline::io::clients::voids_accounting;
use pipeline::io::kafka::{Client, check_setting};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A driver file as a profile: its `[profiles.NAME]` tables, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverProfile {
    pub name: String,
    /// The profile's tables (TOML), to append to a scenario.
    pub toml: String,
    /// `field: why it was not applied`.
    pub notes: Vec<String>,
}

/// Converts driver YAML `text`; `stem` (the file's name without `.yaml`) names the profile,
/// since OMB's driver files all call themselves `Kafka`.
pub fn import_driver(text: &str, stem: &str) -> Result<DriverProfile, String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!("line {}: ", l.line())).unwrap_or_default();
        format!("{at}not YAML: {e}")
    })?;
    let map = doc.as_mapping().ok_or("an OMB driver file is a YAML mapping of fields")?;
    let name = super::slug(stem, "_-", "omb-driver");
    let mut notes = Vec::new();
    let (mut producer, mut consumer, mut topic) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (k, v) in map {
        let key = k.as_str().ok_or("driver field names are strings")?;
        let props = |v: &serde_norway::Value| {
            v.as_str().map(properties).ok_or_else(|| format!("`{key}` must be Java properties text (key=value lines)"))
        };
        match key {
            "name" | "driverClass" => {}
            "producerConfig" => take(&mut producer, props(v)?, Client::Producer, key, &mut notes),
            "consumerConfig" => take(&mut consumer, props(v)?, Client::Consumer, key, &mut notes),
            "commonConfig" => {
                for (k, val) in props(v)? {
                    if k == "bootstrap.servers" {
                        notes.push(format!("{key}: bootstrap.servers: give --bootstrap or [broker] bootstrap ({val})"));
                        continue;
                    }
                    take(&mut producer, vec![(k.clone(), val.clone())], Client::Producer, key, &mut notes);
                    take(&mut consumer, vec![(k, val)], Client::Consumer, key, &mut notes);
                }
            }
            "topicConfig" => topic.extend(props(v)?),
            "replicationFactor" => notes.push(format!(
                "replicationFactor: {}: [broker] replication applies to every profile; set it there",
                super::yaml_inline(v)
            )),
            "reset" => notes.push("reset: every profile runs on fresh topics of its own already".into()),
            other => notes.push(format!("{other}: not an OMB Kafka driver field tailgate knows, not applied")),
        }
    }
    let mut toml = String::new();
    let _ = writeln!(toml, "\n[profiles.{name}]");
    let _ = writeln!(toml, "description = {}", quoted(&format!("OMB driver {stem}")));
    for (table, settings) in [("producer", &producer), ("consumer", &consumer), ("topic", &topic)] {
        if settings.is_empty() {
            continue;
        }
        let _ = writeln!(toml, "[profiles.{name}.{table}]");
        for (k, v) in settings {
            let _ = writeln!(toml, "{} = {}", quoted(k), quoted(v));
        }
    }
    Ok(DriverProfile { name, toml, notes })
}

/// Java properties: `key=value` (or `key: value`) per line; `#` and `!` start comments.
fn properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let at = l.find(['=', ':'])?;
            Some((l[..at].trim().to_owned(), l[at + 1..].trim().to_owned()))
        })
        .collect()
}

/// Keeps the settings librdkafka has, and that keep the accounting; notes the rest.
fn take(
    into: &mut BTreeMap<String, String>,
    settings: Vec<(String, String)>,
    kind: Client,
    field: &str,
    notes: &mut Vec<String>,
) {
    for (k, v) in settings {
        if let Err(e) = check_setting(kind, &k, &v) {
            notes.push(format!("{field}: {k}={v}: {e}"));
        } else if let Some(why) = voids_accounting(kind, &k, &v) {
            notes.push(format!("{field}: {k}={v}: {why}"));
        } else {
            into.insert(k, v);
        }
    }
}

/// A TOML basic string: whatever the file held stays inside it (quotes, backslashes and
/// control characters escaped).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::path::Path;

    const DRIVER: &str = r#"
name: Kafka
driverClass: io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver
replicationFactor: 3
reset: true
topicConfig: |
  min.insync.replicas=2
commonConfig: |
  bootstrap.servers=localhost:9092
  request.timeout.ms=120000
producerConfig: |
  acks=all
  linger.ms=1
  batch.size=1048576
  buffer.memory=67108864
  key.serializer=org.apache.kafka.common.serialization.StringSerializer
consumerConfig: |
  auto.offset.reset=earliest
  enable.auto.commit=false
  max.partition.fetch.bytes=10485760
"#;

    #[test]
    fn a_driver_file_becomes_a_profile_of_the_settings_librdkafka_shares() {
        let d = import_driver(DRIVER, "kafka-latency").unwrap();
        assert_eq!(d.name, "kafka-latency");
        let scenario = format!("name = \"t\"\n[load]\nrate = 10\nduration = \"1s\"\n{}", d.toml);
        let s = Scenario::parse(Path::new("imported.toml"), &scenario).unwrap();
        let (name, p) = &s.profiles[0];
        assert_eq!(name, "kafka-latency");
        let c = &p.clients;
        assert_eq!(c.producer.get("linger.ms").map(String::as_str), Some("1"));
        assert_eq!(c.producer.get("batch.size").map(String::as_str), Some("1048576"));
        assert_eq!(c.producer.get("request.timeout.ms").map(String::as_str), Some("120000"));
        assert_eq!(c.consumer.get("max.partition.fetch.bytes").map(String::as_str), Some("10485760"));
        assert_eq!(c.topic.get("min.insync.replicas").map(String::as_str), Some("2"));
        let left: Vec<&str> = d.notes.iter().map(|n| n.split('=').next().unwrap()).collect();
        assert!(left.contains(&"producerConfig: buffer.memory"), "{:?}", d.notes);
        assert!(left.contains(&"producerConfig: key.serializer"), "{:?}", d.notes);
        assert!(d.notes.iter().any(|n| n.starts_with("commonConfig: bootstrap.servers")), "{:?}", d.notes);
        assert!(d.notes.iter().any(|n| n.starts_with("replicationFactor: 3")), "{:?}", d.notes);
    }

    #[test]
    fn a_setting_that_voids_the_accounting_is_left_out_with_why() {
        let d = import_driver("producerConfig: |\n  acks=0\n", "fire-and-forget").unwrap();
        assert!(!d.toml.contains("acks"), "{}", d.toml);
        assert!(d.notes[0].starts_with("producerConfig: acks=0: with acks=0 nothing is acknowledged"), "{:?}", d.notes);
    }

    #[test]
    fn quoted_strings_read_back_as_written() {
        for s in ["plain", "a\"b", "back\\slash", "new\nline [broker]", "tab\tand \u{7f}"] {
            let doc: toml::Table = toml::from_str(&format!("k = {}", quoted(s))).unwrap();
            assert_eq!(doc["k"].as_str(), Some(s));
        }
    }

    #[test]
    fn a_driver_cannot_write_toml_of_its_own() {
        let evil = "producerConfig: \"linger.ms=1\\\"\\n[broker]\\nbootstrap = 'evil:9092'\"\n";
        let d = import_driver(evil, "x").unwrap();
        let scenario = format!("name = \"t\"\n[load]\nrate = 10\nduration = \"1s\"\n{}", d.toml);
        let s = Scenario::parse(Path::new("imported.toml"), &scenario);
        assert!(s.as_ref().map_or(true, |s| s.broker.bootstrap.is_none()), "{}", d.toml);
    }
}
