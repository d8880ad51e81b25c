//! `[workers]`: the load comes from `tailgate worker` processes on other hosts, which the
//! run coordinates over the cluster's control topic (`tailgate run --workers N` sets
//! `count`).

use pipeline::config::{Problems, duration};
use serde::Deserialize;
use std::time::Duration;

/// `[workers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// How many workers the run waits for; each sends `1/count` of the rate.
    pub count: u64,
    /// Where the embedded broker listens, `host:port`, which the workers are started
    /// with (`tailgate worker --bootstrap`); the gateway listens on the same host. With
    /// `[broker] bootstrap`, only the host is used, for the gateway.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Whose events each worker's audience follows: `own`, or `crossed` (the next
    /// worker's, so that every latency crosses hosts).
    #[serde(default)]
    pub audience: AudienceKind,
    /// How long to wait for every worker's hello.
    #[serde(default = "default_register", deserialize_with = "duration")]
    pub register_timeout: Duration,
    /// The most clock uncertainty a cross-host latency may carry, as a share of the
    /// SLA's end-to-end bound, before the verdict fails.
    #[serde(default = "default_max_uncertainty")]
    pub max_uncertainty: f64,
    /// Judge the run even when its clock uncertainty is over `max_uncertainty`.
    #[serde(default)]
    pub allow_uncertain: bool,
}

/// `[workers] audience`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudienceKind {
    #[default]
    Own,
    Crossed,
}

fn default_listen() -> String {
    "127.0.0.1:9092".into()
}
const fn default_register() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_uncertainty() -> f64 {
    0.10
}

impl WorkersSection {
    /// `count` workers with every other field defaulted (`--workers N`).
    pub fn of(count: u64) -> Self {
        Self {
            count,
            listen: default_listen(),
            audience: AudienceKind::default(),
            register_timeout: default_register(),
            max_uncertainty: default_max_uncertainty(),
            allow_uncertain: false,
        }
    }

    /// The host the broker and the gateway listen on.
    pub fn host(&self) -> &str {
        self.listen.rsplit_once(':').map_or(self.listen.as_str(), |(h, _)| h)
    }

    /// Every problem of the section.
    pub fn validate(&self, p: &mut Problems) {
        if !(1..=MAX_WORKERS).contains(&self.count) {
            p.bad("workers", None, "count", format!("must be 1 to {MAX_WORKERS}, not {}", self.count));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.bad("workers", None, "listen", format!("`{}` is not an ip:port to listen on", self.listen));
        }
        if !(self.max_uncertainty > 0.0 && self.max_uncertainty <= 1.0) {
            p.bad("workers", None, "max_uncertainty", "a share of the SLA bound, above 0 and at most 1");
        }
    }
}

/// The most workers a run takes.
pub const MAX_WORKERS: u64 = 256;
