//! `[connector]`: where the connector captures from, how it writes events, and what it does
//! to each record on the way, with its defaults and checks.

use super::transforms::TransformSpec;
use crate::config::{Around, Problems, duration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[connector]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSection {
    /// `sqlite` (a file in the run directory), `postgres` (logical decoding) or `http`
    /// (the gateway's `POST /sessions/{id}/actions`).
    #[serde(default)]
    pub source: SourceKind,
    /// `postgres://user:password@host:port/db`, for `source = "postgres"`.
    pub postgres: Option<String>,
    /// The SQLite source file, for `source = "sqlite"`; absent: `source.sqlite` in the run
    /// directory. Needed when the connector runs as a process of its own, which reads the
    /// file the run writes.
    pub sqlite: Option<PathBuf>,
    /// The SQLite source's wait before looking for new rows again.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// The replication slot (created when missing).
    #[serde(default = "default_slot")]
    pub slot: String,
    /// Parallel workers (`tasks.max`).
    #[serde(default = "default_tasks")]
    pub tasks: usize,
    /// `http` source: requests the players keep in flight at once.
    #[serde(default = "default_http_in_flight")]
    pub http_in_flight: usize,
    /// How story events are written on every pipeline topic.
    #[serde(default)]
    pub converter: crate::convert::Converter,
    /// Single message transforms, in order.
    #[serde(default)]
    pub transforms: Vec<TransformSpec>,
}

/// Connector sources a scenario may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Sqlite,
    Postgres,
    /// `POST /sessions/{id}/actions` on the gateway.
    Http,
}

const fn default_poll_interval() -> Duration {
    Duration::from_micros(500)
}
fn default_slot() -> String {
    "tailgate".into()
}
const fn default_tasks() -> usize {
    1
}
const fn default_http_in_flight() -> usize {
    256
}

impl Default for ConnectorSection {
    fn default() -> Self {
        Self {
            source: SourceKind::Sqlite,
            postgres: None,
            sqlite: None,
            poll_interval: default_poll_interval(),
            slot: default_slot(),
            tasks: default_tasks(),
            http_in_flight: default_http_in_flight(),
            converter: Default::default(),
            transforms: Vec::new(),
        }
    }
}

impl ConnectorSection {
    /// Every problem of the section (`around` for what depends on the rest of the scenario).
    pub fn validate(&self, around: &Around, p: &mut Problems) {
        const T: &str = "connector";
        match (&self.source, &self.postgres) {
            (SourceKind::Postgres, None) => p.bad(
                T,
                None,
                "postgres",
                "source = \"postgres\" needs `postgres = \"postgres://user:password@host:port/db\"`",
            ),
            (_, Some(url)) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                p.bad(T, None, "postgres", format!("`{}` is not a postgres:// URL", crate::io::postgres::redact(url)));
            }
            _ => {}
        }
        if !(1..=65_536).contains(&self.http_in_flight) {
            p.bad(T, None, "http_in_flight", format!("must be 1 to 65536, not {}", self.http_in_flight));
        }
        if !(1..=64).contains(&self.tasks) {
            p.bad(T, None, "tasks", format!("must be 1 to 64, not {}", self.tasks));
        }
        if self.slot.is_empty()
            || !self.slot.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            p.bad(T, None, "slot", format!("`{}` is not a slot name (a-z, 0-9, _)", self.slot));
        }
        for (i, t) in self.transforms.iter().enumerate() {
            for why in t.problems() {
                p.bad("connector.transforms", Some(i), "type", format!("{}: {why}", t.kind()));
            }
        }
        if around.external {
            self.validate_external(p);
        }
    }

    /// What a connector process needs that a run's own connector does not.
    fn validate_external(&self, p: &mut Problems) {
        match self.source {
            SourceKind::Http => p.bad(
                "connector",
                None,
                "source",
                "the http source lives in an in-process gateway; with external stages use sqlite or postgres",
            ),
            SourceKind::Sqlite if self.sqlite.is_none() => p.bad(
                "connector",
                None,
                "sqlite",
                "external stages need the source file the connector process reads, e.g. sqlite = \
                 \"/shared/source.sqlite\"",
            ),
            _ => {}
        }
    }

    /// Whether a transform drops events on purpose (which no topic then shows).
    pub fn filters(&self) -> bool {
        self.transforms.iter().any(|t| t.kind() == "filter")
    }

    /// The source the connector reads an SQLite file at `db` with this section's polling.
    pub fn sqlite_source(&self, db: impl Into<PathBuf>) -> super::Source {
        let mut source = super::Source::sqlite(db);
        if let super::Source::Sqlite { poll_interval, .. } = &mut source {
            *poll_interval = self.poll_interval;
        }
        source
    }

    /// The connector's settings for `source`.
    pub fn config(&self, source: super::Source) -> super::ConnectorConfig {
        super::ConnectorConfig { source, tasks: self.tasks, transforms: self.transforms.clone() }
    }
}
