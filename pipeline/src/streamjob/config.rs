//! `[streamjob]`: the window, the watermark's bound, the patterns, the rule changes a run
//! publishes, the changelog, a scheduled restart and `[streamjob.enrich]`, with their
//! defaults and checks.

use super::enrich::{EnrichAt, EnrichConfig, ResultOrder};
use super::{Pattern, Rule, StreamJobConfig};
use crate::config::{Around, NAME_RULE, Problems, duration, opt_duration, valid_name};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// `[streamjob]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamJobSection {
    /// The window's length.
    #[serde(default = "default_window", deserialize_with = "duration")]
    pub window: Duration,
    /// How often a window starts; absent: windows tumble (slide = window).
    #[serde(default, deserialize_with = "opt_duration")]
    pub slide: Option<Duration>,
    /// How far the watermark trails the highest event time seen.
    #[serde(default = "default_out_of_orderness", deserialize_with = "duration")]
    pub out_of_orderness: Duration,
    /// `[[streamjob.patterns]]`: signals to emit per session.
    #[serde(default)]
    pub patterns: Vec<PatternSection>,
    /// `[[streamjob.rules]]`: pattern changes the run publishes to `story.rules` while the
    /// load goes, for every stream job instance to apply without a restart.
    #[serde(default)]
    pub rules: Vec<RuleSection>,
    /// Keep window state in `story.streamjob-changelog` to survive restarts (default true).
    pub changelog: Option<bool>,
    /// Stop the stream job abruptly this long after the load starts, and start it again.
    #[serde(default, deserialize_with = "opt_duration")]
    pub restart_at: Option<Duration>,
    /// `[streamjob.enrich]`: look each beat's session profile up in a database.
    pub enrich: Option<EnrichSection>,
}

const fn default_window() -> Duration {
    Duration::from_secs(1)
}
const fn default_out_of_orderness() -> Duration {
    Duration::from_millis(200)
}

impl Default for StreamJobSection {
    fn default() -> Self {
        Self {
            window: default_window(),
            slide: None,
            out_of_orderness: default_out_of_orderness(),
            patterns: Vec::new(),
            rules: Vec::new(),
            changelog: None,
            restart_at: None,
            enrich: None,
        }
    }
}

/// One pattern: `times` actions (containing `contains`, if given) within `within`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSection {
    /// The signal's name, e.g. `binge`.
    pub name: String,
    pub times: u32,
    #[serde(deserialize_with = "duration")]
    pub within: Duration,
    pub contains: Option<String>,
}

impl PatternSection {
    fn pattern(&self) -> Pattern {
        Pattern { name: self.name.clone(), times: self.times, within: self.within, contains: self.contains.clone() }
    }
}

/// A rule change: at `at` into the load, publish pattern `name` (or disable it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    pub name: String,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default = "default_times")]
    pub times: u32,
    #[serde(default = "default_within", deserialize_with = "duration")]
    pub within: Duration,
    pub contains: Option<String>,
}

const fn default_enabled() -> bool {
    true
}
const fn default_times() -> u32 {
    2
}
const fn default_within() -> Duration {
    Duration::from_secs(1)
}

impl RuleSection {
    /// The rule as `story.rules` carries it, published now.
    pub fn rule(&self) -> Rule {
        let pattern = Pattern {
            name: self.name.clone(),
            times: self.times,
            within: self.within,
            contains: self.contains.clone(),
        };
        Rule::of(&pattern, self.enabled)
    }
}

/// `[streamjob.enrich]`: async I/O enrichment (see [`super::enrich`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSection {
    /// `postgres://...`, or the path of a SQLite file; absent: SQLite in the run directory.
    pub url: Option<String>,
    /// One parameter (the session id), one text column; absent: `story_profiles`.
    pub query: Option<String>,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// `ordered` (default) or `unordered`.
    #[serde(default)]
    pub order: ResultOrder,
    #[serde(default = "default_enrich_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Profiles the LRU cache holds; 0 turns it off.
    #[serde(default = "default_enrich_cache")]
    pub cache: usize,
    #[serde(default = "default_connections")]
    pub connections: usize,
}

const fn default_in_flight() -> usize {
    64
}
const fn default_enrich_timeout() -> Duration {
    Duration::from_millis(20)
}
fn default_fallback() -> String {
    "unknown".into()
}
const fn default_enrich_cache() -> usize {
    10_000
}
const fn default_connections() -> usize {
    4
}

impl EnrichSection {
    /// The enrichment settings, with the database at the section's URL or, without one, a
    /// SQLite file at `default` (which the run seeds).
    pub fn config(&self, default: &Path) -> EnrichConfig {
        let at = match &self.url {
            Some(url) => EnrichAt::parse(url),
            None => EnrichAt::Sqlite(default.to_path_buf()),
        };
        EnrichConfig {
            at,
            query: self.query.clone(),
            max_in_flight: self.max_in_flight,
            order: self.order,
            timeout: self.timeout,
            fallback: self.fallback.clone(),
            cache: self.cache,
            connections: self.connections,
        }
    }

    fn validate(&self, around: &Around, p: &mut Problems) {
        const T: &str = "streamjob.enrich";
        if self.max_in_flight == 0 {
            p.bad(T, None, "max_in_flight", "must be at least 1");
        }
        if self.connections == 0 || self.connections > self.max_in_flight.max(1) {
            p.bad(T, None, "connections", "must be between 1 and max_in_flight");
        }
        if self.timeout.is_zero() {
            p.bad(T, None, "timeout", "must be longer than zero");
        }
        if self.url.is_none() && around.external {
            p.bad(
                T,
                None,
                "url",
                "external stages need the database the stream job process reads, e.g. \
                 url = \"/shared/profiles.sqlite\" or a postgres:// URL",
            );
        }
    }
}

impl StreamJobSection {
    /// The job's window and pattern settings.
    pub fn config(&self) -> StreamJobConfig {
        StreamJobConfig {
            window: self.window,
            slide: self.slide.unwrap_or(self.window),
            out_of_orderness: self.out_of_orderness,
            changelog: self.changelog.unwrap_or(true),
            patterns: self.patterns.iter().map(PatternSection::pattern).collect(),
        }
    }

    /// Every problem of the section (`around` for what depends on the rest of the scenario).
    pub fn validate(&self, around: &Around, p: &mut Problems) {
        if self.window.is_zero() {
            p.bad("streamjob", None, "window", "must be longer than zero");
        }
        if let Some(slide) = self.slide
            && (slide.is_zero() || slide > self.window)
        {
            p.bad(
                "streamjob",
                None,
                "slide",
                format!("must be longer than zero and at most the window ({:?})", self.window),
            );
        }
        self.validate_patterns(p);
        self.validate_rules(around, p);
        if let Some(at) = self.restart_at {
            if at >= around.load_ends {
                p.bad("streamjob", None, "restart_at", format!("{at:?} is after the load ends"));
            }
            if around.external {
                p.bad(
                    "streamjob",
                    None,
                    "restart_at",
                    "restarts the in-process stream job; with external stages, restart its process",
                );
            }
        }
        if let Some(e) = &self.enrich {
            e.validate(around, p);
        }
    }

    fn validate_patterns(&self, p: &mut Problems) {
        const T: &str = "streamjob.patterns";
        let mut names = std::collections::BTreeSet::new();
        for (i, q) in self.patterns.iter().enumerate() {
            if !valid_name(&q.name) {
                p.bad(T, Some(i), "name", NAME_RULE);
            } else if !names.insert(q.name.as_str()) {
                p.bad(T, Some(i), "name", format!("`{}` is named twice", q.name));
            }
            if q.times < 2 {
                p.bad(T, Some(i), "times", format!("must be at least 2, not {}", q.times));
            }
            if q.within.is_zero() {
                p.bad(T, Some(i), "within", "must be longer than zero");
            }
        }
    }

    fn validate_rules(&self, around: &Around, p: &mut Problems) {
        const T: &str = "streamjob.rules";
        for (i, r) in self.rules.iter().enumerate() {
            if !valid_name(&r.name) {
                p.bad(T, Some(i), "name", NAME_RULE);
            }
            if r.enabled && r.times < 2 {
                p.bad(T, Some(i), "times", format!("must be at least 2, not {}", r.times));
            }
            if r.enabled && r.within.is_zero() {
                p.bad(T, Some(i), "within", "must be longer than zero");
            }
            if r.at >= around.load_ends {
                p.bad(T, Some(i), "at", format!("{:?} is after the load ends", r.at));
            }
        }
    }
}
