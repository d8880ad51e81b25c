//! What tailgate's integration tests share, so each policy is written once:
//!
//! - [`needs`]: a test that needs something outside the process (a PostgreSQL or Redis
//!   server, the Python environment, a Docker engine) says so and skips when it is
//!   missing, unless `TAILGATE_REQUIRE` names it (or says `all`), where it fails. `.ci/run`
//!   requires everything CI provides.
//! - with the `pipeline` feature: [`broker`], a fresh embedded broker with the pipeline's
//!   topics, and [`postgres`] / [`redis`], the servers to test against.
//! - [`layout`]: which module of a crate imports which, for the tests that keep every
//!   crate free of import cycles.
//! - [`tls`]: a certificate authority and a server certificate, for TLS listeners.

pub mod layout;
pub mod tls;

/// The variable naming what a test run requires: a comma-separated list of `postgres`,
/// `redis`, `python`, `docker`, `netns` (network namespaces, which need root), or `all`.
pub const REQUIRE: &str = "TAILGATE_REQUIRE";

/// Whether `TAILGATE_REQUIRE` (read from `value`) requires `what`.
pub fn required_by(value: Option<&str>, what: &str) -> bool {
    value.is_some_and(|v| v.split(',').map(str::trim).any(|w| w == what || w == "all"))
}

/// Reports that `what` is missing (`why`): fails the test when it is required, else says
/// the test is skipped and returns `None`, for `let Some(..) = ... else { return }`.
pub fn missing<T>(test: &str, what: &str, why: &str) -> Option<T> {
    let value = std::env::var(REQUIRE).ok();
    assert!(
        !required_by(value.as_deref(), what),
        "{test}: {what} is required ({REQUIRE}={}) but missing: {why}",
        value.unwrap_or_default()
    );
    // Straight to the process's stderr, so `cargo test` shows it for a passing test too.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {what} is missing: {why}");
    None
}

/// `Some(value)` when `found` has it; otherwise [`missing`].
pub fn needs<T, E: std::fmt::Display>(test: &str, what: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(e) => missing(test, what, &e.to_string()),
    }
}

#[cfg(feature = "pipeline")]
mod with_pipeline {
    use pipeline::KafkaSettings;
    use pipeline::embedded::EmbeddedBroker;

    /// The PostgreSQL the tests use unless `TAILGATE_TEST_POSTGRES` names another (the one
    /// `scripts/services` starts).
    pub const DEFAULT_POSTGRES: &str = "postgres://tailgate:tailgate@127.0.0.1:5432/tailgate";
    /// The Redis the tests use unless `TAILGATE_TEST_REDIS` names another.
    pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379/0";

    /// A fresh embedded broker and client settings for it, with every topic of the
    /// pipeline created (`partitions` each; the compacted ones compacted).
    pub async fn broker(partitions: i32) -> (EmbeddedBroker, KafkaSettings) {
        let broker = EmbeddedBroker::start().await.expect("the embedded broker starts");
        let mut kafka = KafkaSettings::new(broker.bootstrap());
        kafka.partitions = partitions;
        kafka.ensure_pipeline_topics(&[]).await.expect("the pipeline's topics");
        (broker, kafka)
    }

    /// The PostgreSQL URL to test against, or `None` (after saying why) to skip.
    pub async fn postgres(test: &str) -> Option<String> {
        let url = std::env::var("TAILGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let found = pipeline::io::postgres::connect(&url).await.map(drop).map_err(|e| format!("{url}: {e}"));
        crate::needs(test, "postgres", found).map(|()| url)
    }

    /// A PostgreSQL URL whose password no file of the repository holds except
    /// `scripts/services` (`TAILGATE_TEST_POSTGRES_SECRET`), or `None` to skip: for tests
    /// that look for credentials where they must not be.
    pub async fn postgres_with_secret(test: &str) -> Option<String> {
        let found = match std::env::var("TAILGATE_TEST_POSTGRES_SECRET") {
            Ok(url) => pipeline::io::postgres::connect(&url).await.map(|_| url).map_err(|e| e.to_string()),
            Err(_) => Err("TAILGATE_TEST_POSTGRES_SECRET is not set (scripts/services sets it)".into()),
        };
        crate::needs(test, "postgres", found)
    }

    /// A Redis URL with a password (`TAILGATE_TEST_REDIS_SECRET`), or `None` to skip.
    pub async fn redis_with_secret(test: &str) -> Option<String> {
        use pipeline::io::cache::{CacheAt, EdgeCache};
        let found = match std::env::var("TAILGATE_TEST_REDIS_SECRET") {
            Ok(url) => EdgeCache::open(&CacheAt::Redis(url.clone())).await.map(|_| url).map_err(|e| e.to_string()),
            Err(_) => Err("TAILGATE_TEST_REDIS_SECRET is not set (scripts/services sets it)".into()),
        };
        crate::needs(test, "redis", found)
    }

    /// The Redis URL to test against, or `None` (after saying why) to skip.
    pub async fn redis(test: &str) -> Option<String> {
        use pipeline::io::cache::{CacheAt, EdgeCache};
        let url = std::env::var("TAILGATE_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS.into());
        let found = EdgeCache::open(&CacheAt::Redis(url.clone())).await.map(drop).map_err(|e| format!("{url}: {e}"));
        crate::needs(test, "redis", found).map(|()| url)
    }
}

#[cfg(feature = "pipeline")]
pub use with_pipeline::{
    DEFAULT_POSTGRES, DEFAULT_REDIS, broker, postgres, postgres_with_secret, redis, redis_with_secret,
};

#[cfg(test)]
mod tests {
    use super::required_by;

    #[test]
    fn a_need_is_required_when_named_or_when_all_are() {
        assert!(required_by(Some("postgres, redis"), "redis"));
        assert!(required_by(Some("all"), "docker"));
        assert!(!required_by(Some("postgres,redis,python"), "docker"));
        assert!(!required_by(None, "postgres"));
        assert!(!required_by(Some(""), "postgres"));
    }
}
