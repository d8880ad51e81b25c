//! Where the tests find PostgreSQL and Redis. `TAILGATE_TEST_POSTGRES` and
//! `TAILGATE_TEST_REDIS` name them (defaults: the ones `scripts/services` starts). When one
//! does not answer, its tests say so and skip, unless `TAILGATE_REQUIRE_SERVICES=1` (set by
//! `.ci/run`), where they fail.

#![allow(dead_code)]

pub const DEFAULT_POSTGRES: &str = "postgres://tailgate:tailgate@127.0.0.1:5432/tailgate";
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379/0";

fn required() -> bool {
    std::env::var("TAILGATE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn skip_or_fail(what: &str, url: &str, why: &str) -> Option<String> {
    assert!(
        !required(),
        "{what} at {url} is required (TAILGATE_REQUIRE_SERVICES=1) but does not answer: {why}. Run scripts/services."
    );
    eprintln!("SKIPPED: {what} at {url} does not answer ({why}); run scripts/services to test against it");
    None
}

/// The PostgreSQL URL to test against, or `None` (after saying why) to skip.
pub async fn postgres() -> Option<String> {
    let url = std::env::var("TAILGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
    match pipeline::io::postgres::connect(&url).await {
        Ok(_) => Some(url),
        Err(e) => skip_or_fail("PostgreSQL", &url, &e.to_string()),
    }
}

/// The Redis URL to test against, or `None` (after saying why) to skip.
pub async fn redis() -> Option<String> {
    let url = std::env::var("TAILGATE_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS.into());
    match pipeline::io::cache::EdgeCache::open(&pipeline::io::cache::CacheAt::Redis(url.clone())).await {
        Ok(_) => Some(url),
        Err(e) => skip_or_fail("Redis", &url, &e.to_string()),
    }
}
