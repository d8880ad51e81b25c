//! OpenMessaging Benchmark workloads imported as tailgate scenarios, with its Kafka driver
//! files as tuning profiles ([`driver`]). Every field either becomes a scenario setting or
//! is reported with the reason it has no meaning here; nothing is dropped silently.

pub mod driver;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// An imported workload: the scenario text and what could not be carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// A complete scenario file (TOML).
    pub scenario: String,
    /// `field: why it was not applied`, one per workload field left out.
    pub notes: Vec<String>,
}

/// Converts an OMB workload file (YAML).
pub fn import(path: &Path) -> Result<Imported, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    import_text(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Converts an OMB workload file with driver files, each a tuning profile (named by its
/// file name) appended to the scenario.
pub fn import_with_drivers(workload: &Path, drivers: &[PathBuf]) -> Result<Imported, String> {
    let mut imported = import(workload)?;
    let mut names = Vec::new();
    for path in drivers {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let d = driver::import_driver(&text, &stem).map_err(|e| format!("{}: {e}", path.display()))?;
        if names.contains(&d.name) {
            return Err(format!(
                "{}: a second driver file named `{}`; each becomes a profile of that name",
                path.display(),
                d.name
            ));
        }
        for n in &d.notes {
            let _ = writeln!(imported.scenario, "# not applied (driver {}): {}", d.name, one_line(n));
        }
        imported.scenario.push_str(&d.toml);
        imported.notes.extend(d.notes.iter().map(|n| format!("driver {}: {n}", d.name)));
        names.push(d.name);
    }
    Ok(imported)
}

/// Converts OMB workload YAML text.
pub fn import_text(text: &str) -> Result<Imported, String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!("line {}: ", l.line())).unwrap_or_default();
        format!("{at}not YAML: {e}")
    })?;
    let map = doc.as_mapping().ok_or("an OMB workload is a YAML mapping of fields")?;
    let mut notes = Vec::new();
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in map {
        let key = k.as_str().ok_or("workload field names are strings")?.to_owned();
        fields.insert(key, v.clone());
    }
    let num = |k: &str| -> Result<Option<f64>, String> {
        match fields.get(k) {
            None | Some(serde_norway::Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| format!("`{k}` must be a number, not {v:?}")),
        }
    };
    let raw_name = fields.get("name").and_then(|v| v.as_str()).unwrap_or("omb-workload");
    let name = slug(raw_name, "_.-", "omb-workload");

    // producerRate 0 asks for the highest sustainable rate: a capacity search.
    let rate = match num("producerRate")? {
        Some(r) if r > 0.0 => Some(r),
        Some(_) => None,
        None => {
            notes.push("producerRate: absent; 1000/s used".into());
            Some(1000.0)
        }
    };
    let payload = num("messageSize")?.unwrap_or(256.0).max(0.0) as u64;
    let partitions = num("partitionsPerTopic")?.unwrap_or(1.0).max(1.0) as i64;
    let duration_min = num("testDurationMinutes")?.unwrap_or(15.0);
    let warmup_min = num("warmupDurationMinutes")?;
    let keys = match fields.get("keyDistributor").and_then(|v| v.as_str()) {
        None | Some("NO_KEY") => {
            notes.push("keyDistributor: NO_KEY has no meaning here; every event is keyed by its story session (64 sessions, uniform), which keeps each session in order".into());
            "uniform"
        }
        Some("KEY_ROUND_ROBIN" | "RANDOM_NANO") => "uniform",
        Some(other) => {
            return Err(format!("`keyDistributor`: `{other}` is not NO_KEY, KEY_ROUND_ROBIN or RANDOM_NANO"));
        }
    };
    unapplied(&fields, &mut notes);

    // Whatever the workload's text holds stays on its line: a comment, or a quoted string.
    let raw_name = one_line(raw_name);
    let mut s = String::new();
    let _ = writeln!(s, "# Imported from the OpenMessaging Benchmark workload `{raw_name}` by `tailgate import omb`.");
    for n in &notes {
        let _ = writeln!(s, "# not applied: {}", one_line(n));
    }
    let _ = writeln!(s, "\nname = \"{name}\"");
    let _ = writeln!(s, "description = \"OMB workload {}\"", raw_name.replace(['"', '\\'], "'"));
    let _ = writeln!(s, "\n[load]");
    if let Some(rate) = rate {
        let _ = writeln!(s, "rate = {rate}");
    }
    let _ = writeln!(s, "arrival = \"constant\"\nsessions = 64\nkey_distribution = \"{keys}\"");
    let _ = writeln!(s, "payload_bytes = {payload}");
    match warmup_min {
        Some(w) => {
            let _ = writeln!(s, "warmup = \"{}s\"", (w * 60.0).round() as u64);
        }
        None => {
            let _ = writeln!(s, "warmup = \"60s\"  # OMB's default warm-up of one minute");
        }
    }
    let _ = writeln!(s, "duration = \"{}s\"", (duration_min * 60.0).round().max(1.0) as u64);
    let _ = writeln!(s, "\n[broker]\npartitions = {partitions}");
    if rate.is_none() {
        let _ = writeln!(
            s,
            "\n# producerRate: 0, OMB's search for the highest sustainable rate: `tailgate run` searches\n\
             # (each step a run of its own; see docs/scenarios.md, Capacity search).\n[search]\nstart = 1000\n\
             step = \"30s\"\nwarmup = \"5s\""
        );
    }
    let _ = writeln!(s, "\n[[sla]]\nmetric = \"end_to_end.p99_ms\"\nmax = 50.0");
    Ok(Imported { scenario: s, notes })
}

/// A note for each field of the workload tailgate does not apply, with why.
fn unapplied(fields: &std::collections::BTreeMap<String, serde_norway::Value>, notes: &mut Vec<String>) {
    let known = [
        "name",
        "producerRate",
        "messageSize",
        "partitionsPerTopic",
        "testDurationMinutes",
        "warmupDurationMinutes",
        "keyDistributor",
    ];
    for (k, v) in fields {
        if known.contains(&k.as_str()) {
            continue;
        }
        let why = match k.as_str() {
            "topics" if v.as_f64() == Some(1.0) => continue,
            "topics" => "the reference pipeline has its own chain of topics; the load enters through one",
            "producersPerTopic" => {
                "the load generator is one open-loop producer; its schedule, not a producer count, sets the rate"
            }
            "subscriptionsPerTopic" | "consumerPerSubscription" => {
                "each stage is one consumer group; scale a stage by running replicas of it"
            }
            "useRandomizedPayloads" | "randomBytesRatio" | "randomizedPayloadPoolSize" | "payloadFile" => {
                "payloads are generated story actions of messageSize bytes"
            }
            "consumerBacklogSizeGB" | "backlogDrainRatio" | "producerPauseBeforeDrain" | "producerPauseDuringDrain"
                if v.as_f64().unwrap_or(0.0) == 0.0 =>
            {
                continue;
            }
            "consumerBacklogSizeGB" | "backlogDrainRatio" | "producerPauseBeforeDrain" | "producerPauseDuringDrain" => {
                "backlog build-up and drain tests are not a tailgate scenario"
            }
            "producerStartRate"
            | "producerIncrementRate"
            | "producerIncrementSeconds"
            | "acceptableBacklog"
            | "messageRateReceivedForSubscription" => {
                "rate searches and ramps are not applied; the scenario runs producerRate"
            }
            _ => "not an OMB workload field tailgate knows",
        };
        notes.push(format!("{k}: {why} (value {}), not applied", yaml_inline(v)));
    }
}

/// `text` with every control character (a newline most of all) made a space.
/// `raw` as a name tailgate accepts: lowercase, with every character outside ASCII
/// letters, digits and `keep` made `-`, no `-` at either end; `fallback` when nothing is left.
fn slug(raw: &str, keep: &str, fallback: &str) -> String {
    let name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || keep.contains(c) { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() { fallback.to_owned() } else { name.to_owned() }
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn yaml_inline(v: &serde_norway::Value) -> String {
    serde_norway::to_string(v).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    const WORKLOAD: &str = "
name: 1 topic / 16 partitions / 1kb
topics: 1
partitionsPerTopic: 16
messageSize: 1024
payloadFile: payload/payload-1Kb.data
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
warmupDurationMinutes: 2
keyDistributor: KEY_ROUND_ROBIN
";

    #[test]
    fn a_workload_becomes_a_valid_scenario_and_what_has_no_meaning_is_reported() {
        let i = import_text(WORKLOAD).unwrap();
        let s = Scenario::parse(Path::new("imported.toml"), &i.scenario).unwrap();
        assert_eq!(s.name, "1-topic---16-partitions---1kb");
        assert_eq!(s.load.rate, Some(50000.0));
        assert_eq!(s.load.payload_bytes, 1024);
        assert_eq!(s.broker.partitions, 16);
        assert_eq!(s.load.duration, std::time::Duration::from_secs(900));
        assert_eq!(s.load.warmup, std::time::Duration::from_secs(120));
        let reported: Vec<&str> = i.notes.iter().map(|n| n.split(':').next().unwrap()).collect();
        assert_eq!(reported, ["consumerPerSubscription", "payloadFile", "producersPerTopic", "subscriptionsPerTopic"]);
        assert!(i.scenario.contains("# not applied: payloadFile"), "{}", i.scenario);
    }

    #[test]
    fn a_workload_cannot_write_toml_of_its_own_into_the_scenario() {
        let evil = "name: \"x\\n[broker]\\nbootstrap = 'evil:9092'\"\nproducerRate: 10\nbacklog: \"a\\n[kafka.producer]\\nacks = '0'\"\n";
        let i = import_text(evil).unwrap();
        let s = Scenario::parse(Path::new("imported.toml"), &i.scenario).unwrap();
        assert_eq!(s.broker.bootstrap, None, "{}", i.scenario);
        assert!(s.kafka.producer.is_empty(), "{}", i.scenario);
        assert!(i.scenario.lines().all(|l| !l.starts_with("[kafka")), "{}", i.scenario);
    }

    #[test]
    fn bad_workloads_are_refused_with_the_field() {
        assert!(import_text("producerRate: fast\n").unwrap_err().contains("`producerRate` must be a number"));
        assert!(import_text("keyDistributor: ZIPF\n").unwrap_err().contains("keyDistributor"));
        assert!(import_text("- a\n- b\n").unwrap_err().contains("mapping"));
        let e = import_text("name: x\n  bad: [indent\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let i = import_text("producerRate: 0\nextraThing: 3\n").unwrap();
        assert!(i.notes.iter().any(|n| n.starts_with("extraThing: not an OMB workload field")));
    }

    #[test]
    fn a_producer_rate_of_zero_becomes_a_capacity_search() {
        let i = import_text("name: find\nproducerRate: 0\n").unwrap();
        let s = Scenario::parse(Path::new("imported.toml"), &i.scenario).unwrap();
        let search = s.search.expect("a [search] section");
        assert_eq!(search.start, 1000.0);
        assert_eq!(search.step, std::time::Duration::from_secs(30));
        assert_eq!(s.load.rate, None);
        assert!(i.notes.iter().all(|n| !n.starts_with("producerRate")), "{:?}", i.notes);
    }

    #[test]
    fn the_largest_partition_counts_of_omb_workloads_are_accepted() {
        let i = import_text("name: max\npartitionsPerTopic: 10000\nproducerRate: 100\n").unwrap();
        let s = Scenario::parse(Path::new("imported.toml"), &i.scenario).unwrap();
        assert_eq!(s.broker.partitions, 10_000);
        let i = import_text("partitionsPerTopic: 10001\nproducerRate: 100\n").unwrap();
        let e = Scenario::parse(Path::new("imported.toml"), &i.scenario).unwrap_err().to_string();
        assert!(e.contains("`broker.partitions`: must be 1 to 10000, not 10001"), "{e}");
    }
}
