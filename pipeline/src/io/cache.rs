//! The edge cache: character and world context per story session, kept by the context
//! sink ([`crate::context_sink`]) from the compacted topic `story.context` and read by the
//! agent. SQLite in a file by default; Redis when a `redis://` URL is given (keys
//! `tailgate:context:{session}`).

use crate::{Error, Result};
use redis::AsyncCommands;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the edge cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAt {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis server, `redis://host:port[/db]`.
    Redis(String),
}

impl CacheAt {
    /// `redis://...` (or `rediss://`) is Redis; anything else a SQLite path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            Self::Redis(s.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(s))
        }
    }

    /// How reports name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("SQLite {}", p.display()),
            Self::Redis(url) => format!("Redis {}", super::secrets::redact_url(url)),
        }
    }
}

/// The longest a Redis call (or a reconnection attempt) may take before it is an error.
pub const REDIS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connection to the edge cache; clones share it.
#[derive(Clone)]
pub enum EdgeCache {
    Sqlite {
        conn: Arc<Mutex<Connection>>,
        path: PathBuf,
    },
    /// Reconnects by itself after Redis restarts; every call answers within [`REDIS_WAIT`].
    Redis {
        conn: redis::aio::ConnectionManager,
        url: String,
    },
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path, .. } => write!(f, "EdgeCache(SQLite {})", path.display()),
            Self::Redis { url, .. } => write!(f, "EdgeCache(Redis {url})"),
        }
    }
}

fn redis_key(session: u64) -> String {
    format!("tailgate:context:{session}")
}

fn cache_err(at: &str, e: impl Into<crate::Cause>) -> Error {
    Error::Cache { at: super::secrets::redact_url(at), source: e.into() }
}

fn open_sqlite(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute("CREATE TABLE IF NOT EXISTS context (session INTEGER PRIMARY KEY, value TEXT NOT NULL)", [])?;
    Ok(conn)
}

impl EdgeCache {
    /// Connects (Redis: answers a PING; SQLite: opens or creates the file and its table).
    pub async fn open(at: &CacheAt) -> Result<Self> {
        match at {
            CacheAt::Sqlite(path) => {
                let conn = open_sqlite(path).map_err(|e| cache_err(&path.display().to_string(), e))?;
                Ok(Self::Sqlite { conn: Arc::new(Mutex::new(conn)), path: path.clone() })
            }
            CacheAt::Redis(url) => {
                let unreachable = |e: redis::RedisError| {
                    let why = format!(
                        "cannot reach Redis: {e}. Check that redis-server runs there (or drop [edge_cache].url to use \
                         SQLite)"
                    );
                    cache_err(url, why)
                };
                let client = redis::Client::open(url.as_str()).map_err(unreachable)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_WAIT)
                    .set_response_timeout(REDIS_WAIT)
                    .set_number_of_retries(2)
                    .set_max_delay(500);
                let mut conn = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| cache_err(url, "cannot reach Redis: no answer within 5s"))?
                .map_err(unreachable)?;
                let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unreachable)?;
                Ok(Self::Redis { conn, url: url.clone() })
            }
        }
    }

    /// The context of `session`, if the cache has one.
    pub async fn get(&self, session: u64) -> Result<Option<String>> {
        match self {
            Self::Sqlite { conn, path } => {
                let conn = conn.lock().map_err(|_| cache_err(&path.display().to_string(), "poisoned lock"))?;
                conn.prepare_cached("SELECT value FROM context WHERE session = ?1")
                    .and_then(|mut s| s.query_row([session as i64], |r| r.get(0)).optional())
                    .map_err(|e| cache_err(&path.display().to_string(), e))
            }
            Self::Redis { conn, url } => conn.clone().get(redis_key(session)).await.map_err(|e| cache_err(url, e)),
        }
    }

    /// Sets (`Some`) or deletes (`None`) the context of `session`.
    pub async fn put(&self, session: u64, value: Option<&str>) -> Result<()> {
        match self {
            Self::Sqlite { conn, path } => {
                let conn = conn.lock().map_err(|_| cache_err(&path.display().to_string(), "poisoned lock"))?;
                match value {
                    Some(v) => conn
                        .prepare_cached(
                            "INSERT INTO context (session, value) VALUES (?1, ?2) \
                         ON CONFLICT(session) DO UPDATE SET value = excluded.value",
                        )
                        .and_then(|mut s| s.execute(params![session as i64, v])),
                    None => conn
                        .prepare_cached("DELETE FROM context WHERE session = ?1")
                        .and_then(|mut s| s.execute([session as i64])),
                }
                .map(drop)
                .map_err(|e| cache_err(&path.display().to_string(), e))
            }
            Self::Redis { conn, url } => {
                let mut c = conn.clone();
                match value {
                    Some(v) => c.set::<_, _, ()>(redis_key(session), v).await,
                    None => c.del::<_, ()>(redis_key(session)).await,
                }
                .map_err(|e| cache_err(url, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_cache_sets_replaces_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EdgeCache::open(&CacheAt::parse(dir.path().join("c.sqlite").to_str().unwrap())).await.unwrap();
        assert_eq!(cache.get(1).await.unwrap(), None);
        cache.put(1, Some("a")).await.unwrap();
        cache.put(1, Some("b")).await.unwrap();
        cache.put(2, Some("c")).await.unwrap();
        assert_eq!(cache.get(1).await.unwrap().as_deref(), Some("b"));
        cache.put(1, None).await.unwrap();
        assert_eq!(cache.get(1).await.unwrap(), None);
        assert_eq!(cache.get(2).await.unwrap().as_deref(), Some("c"));
    }

    #[test]
    fn urls_choose_the_store() {
        assert_eq!(CacheAt::parse("redis://127.0.0.1:6379/0"), CacheAt::Redis("redis://127.0.0.1:6379/0".into()));
        assert_eq!(CacheAt::parse("/tmp/c.sqlite"), CacheAt::Sqlite("/tmp/c.sqlite".into()));
    }
}
