//! The context sink: keeps the edge cache ([`crate::io::cache`]) from the compacted topic
//! `story.context`, as a Connect sink connector would, and seeds that topic for a run.
//!
//! The sink consumes `story.context` from its beginning, writes each record's value under
//! its session (a tombstone deletes it), and commits the offset only once the write is done,
//! so a restarted sink re-applies at most what it had not committed: writes are idempotent.

use crate::io::cache::EdgeCache;
use crate::io::kafka::KafkaSettings;
use crate::runtime::{Ack, Out, Stage};
use crate::{Error, Result, topics};
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The sink's name (its consumer group is `tailgate-context-sink`).
pub const SINK: &str = crate::topology::CONTEXT_SINK;

/// The context record of a session, as the run seeds `story.context` with it.
pub fn seed_context(session: u64) -> String {
    const CHARACTERS: [&str; 6] = [
        "a wary smuggler",
        "a retired knight",
        "an apprentice cartographer",
        "a tide witch",
        "a clockwork scout",
        "a disgraced herald",
    ];
    const WORLDS: [&str; 4] =
        ["a drowned city of bells", "a desert of glass dunes", "a forest that remembers", "an orbital monastery"];
    let c = CHARACTERS[(session % CHARACTERS.len() as u64) as usize];
    let w = WORLDS[(session / CHARACTERS.len() as u64 % WORLDS.len() as u64) as usize];
    serde_json::json!({ "character": c, "world": w }).to_string()
}

/// Writes [`seed_context`] for sessions `0..sessions` to `story.context`.
pub async fn seed(kafka: &KafkaSettings, sessions: u64) -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        kafka.producer_config("context-seed").create().map_err(|e| Error::Config(e.to_string()))?;
    for s in 0..sessions {
        let (key, value) = (crate::event::session_key(s), seed_context(s));
        let topic = kafka.names.of(topics::CONTEXT);
        let record = FutureRecord::<[u8], str>::to(&topic).key(&key[..]).payload(&value);
        producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .map_err(|(e, _)| Error::Kafka { context: format!("seed {}", topics::CONTEXT), source: e })?;
    }
    Ok(())
}

/// `[edge_cache]`: where the agents' context lives.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeCacheSection {
    /// `redis://host:port[/db]`, or the path of a SQLite file; absent: SQLite in the run
    /// directory.
    pub url: Option<String>,
}

impl EdgeCacheSection {
    /// Where the cache is: the URL, or a SQLite file at `default`.
    pub fn at(&self, default: &std::path::Path) -> crate::io::cache::CacheAt {
        self.url
            .as_deref()
            .map_or_else(|| crate::io::cache::CacheAt::Sqlite(default.to_path_buf()), crate::io::cache::CacheAt::parse)
    }

    /// Every problem of the section.
    pub fn validate(&self, p: &mut crate::config::Problems) {
        if let Some(url) = &self.url
            && url.contains("://")
            && !url.starts_with("redis://")
        {
            p.bad(
                "edge_cache",
                None,
                "url",
                format!(
                    "`{url}` is neither a redis:// URL nor a SQLite path (omit it for SQLite in the run directory)"
                ),
            );
        }
    }
}

/// Live figures of the sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Records written to the cache (tombstones included).
    pub applied: AtomicU64,
    /// Records that could not be read (no key, or a key that is not a session).
    pub skipped: AtomicU64,
}

/// The sink as a stage: each record's value written under its session, its offset stored
/// once the write is done (it produces nothing, so never dead-letters: a record it cannot
/// read is counted as skipped).
pub struct ContextSink {
    cache: EdgeCache,
    counters: Arc<SinkCounters>,
}

impl std::fmt::Debug for ContextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextSink").finish_non_exhaustive()
    }
}

impl ContextSink {
    /// Keeps `cache`, counting in `counters`.
    pub fn new(cache: EdgeCache, counters: Arc<SinkCounters>) -> Self {
        Self { cache, counters }
    }
}

impl Stage for ContextSink {
    const NAME: &'static str = SINK;
    const PRODUCES: bool = false;

    fn topics(&self) -> Vec<String> {
        vec![topics::CONTEXT.into()]
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, out: &mut Out<'_>) -> Result<Ack> {
        let session = msg.key().and_then(|k| <[u8; 8]>::try_from(k).ok()).map(u64::from_be_bytes);
        let value = msg.payload().map(String::from_utf8_lossy);
        match session {
            Some(s) => {
                // The cache may be restarting: the write is tried again until it is done
                // (writes are idempotent), so the offset is stored only after it.
                let mut failures = 0u64;
                while let Err(e) = self.cache.put(s, value.as_deref()).await {
                    if failures == 0 {
                        eprintln!("stage {SINK}: {e}; trying again");
                    }
                    failures += 1;
                    tokio::select! {
                        () = out.ctx.cancel.cancelled() => return Err(e),
                        () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    }
                }
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The write is done: the offset may be stored.
        Ok(Ack::Nothing)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_session_gets_a_character_and_a_world() {
        let v: serde_json::Value = serde_json::from_str(&super::seed_context(7)).unwrap();
        assert!(v["character"].is_string() && v["world"].is_string());
    }
}
