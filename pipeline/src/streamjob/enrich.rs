//! Async I/O enrichment, as Flink's `AsyncDataStream` does it: the stream job looks up each
//! beat's session profile in a database without blocking its stream.
//!
//! - **Bounded in flight**: at most `max_in_flight` lookups (waiting for the database, or
//!   for their turn to be emitted) at once; the stage stops reading its input while the
//!   bound is reached, so a slow database slows consumption instead of growing a queue.
//! - **Result order**: `ordered` emits events in the order they came; `unordered` emits
//!   each as soon as its lookup is done (the input offsets are still stored in order).
//! - **Timeout and fallback**: a lookup that takes longer than `timeout` (or fails, or
//!   finds no row) gives the event the `fallback` profile, marked as such. The job's
//!   service time is then bounded by the timeout plus the wait for earlier events
//!   (ordered mode).
//! - **LRU cache** in front of the database: `cache` profiles, most recently used kept.
//!
//! The database is SQLite (a file, embedded) or PostgreSQL (a `postgres://` URL), queried
//! over a pool of `connections`, one query per connection at a time. Both are queried
//! with one statement taking the session id and returning one text column: by default from `story_profiles`, which
//! [`super::profiles::seed`] fills. [`Later`] produces an event whose lookup was not cached, from a task of
//! its own.

use crate::event::{Enrichment, StoryEvent};
use crate::runtime::{Carried, Emitter, From, Upstream};
use crate::{Error, Result};
use rdkafka::producer::DeliveryFuture;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The table [`super::profiles::seed`] fills and the default query reads.
pub const TABLE: &str = "story_profiles";

/// Where the profiles live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrichAt {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server, `postgres://user:password@host:port/db`.
    Postgres(String),
}

impl EnrichAt {
    /// `postgres://...` (or `postgresql://`) is PostgreSQL; anything else a SQLite path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Self::Postgres(s.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(s))
        }
    }

    /// How reports name it (without a password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("SQLite {}", p.display()),
            Self::Postgres(url) => format!("PostgreSQL {}", crate::io::postgres::redact(url)),
        }
    }

    /// The default lookup statement in this database's parameter style.
    pub fn default_query(&self) -> String {
        match self {
            Self::Sqlite(_) => format!("SELECT profile FROM {TABLE} WHERE session = ?1"),
            Self::Postgres(_) => format!("SELECT profile FROM {TABLE} WHERE session = $1"),
        }
    }
}

/// In which order enriched events leave the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultOrder {
    /// As they came in.
    #[default]
    Ordered,
    /// As their lookups complete.
    Unordered,
}

/// Enrichment settings, as `[streamjob.enrich]` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichConfig {
    pub at: EnrichAt,
    /// The lookup statement: one parameter (the session id), one text column. `None`: the
    /// default query on [`TABLE`].
    pub query: Option<String>,
    pub max_in_flight: usize,
    pub order: ResultOrder,
    pub timeout: Duration,
    pub fallback: String,
    /// Profiles the LRU cache holds; 0 turns it off.
    pub cache: usize,
    /// Database connections lookups share.
    pub connections: usize,
}

impl EnrichConfig {
    /// The defaults: ordered, 64 in flight, 20 ms timeout, 10,000 cached, 4 connections.
    pub fn new(at: EnrichAt) -> Self {
        Self {
            at,
            query: None,
            max_in_flight: 64,
            order: ResultOrder::Ordered,
            timeout: Duration::from_millis(20),
            fallback: "unknown".to_owned(),
            cache: 10_000,
            connections: 4,
        }
    }
}

/// What enrichment did so far, readable while it runs.
#[derive(Debug, Default)]
pub struct EnrichStats {
    /// Events enriched (from any source).
    pub events: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Lookups the database answered with a row in time.
    pub db_hits: AtomicU64,
    /// Lookups that found no row (fallback).
    pub missing: AtomicU64,
    /// Lookups that took longer than the timeout (fallback).
    pub timeouts: AtomicU64,
    /// Lookups the database refused (fallback).
    pub errors: AtomicU64,
    /// Events admitted and not yet emitted.
    pub in_flight: AtomicU64,
    /// The most ever in flight at once.
    pub peak_in_flight: AtomicU64,
    /// The first database error, for the report.
    pub first_error: Mutex<Option<String>>,
}

enum Db {
    /// Blocking connections, each used by one lookup at a time on the blocking pool, and
    /// a handle to interrupt each.
    Sqlite(Vec<(Arc<Mutex<rusqlite::Connection>>, Arc<rusqlite::InterruptHandle>)>),
    /// Connections with the lookup prepared; queries on one connection are pipelined. A
    /// connection the server closed is opened again by the next lookup that leases it.
    Postgres(Vec<Mutex<Arc<PgConn>>>),
}

/// One PostgreSQL connection and the lookup prepared on it.
type PgConn = (tokio_postgres::Client, tokio_postgres::Statement);

/// Opens a connection to `url` and prepares `query` on it.
async fn pg_open(at: &EnrichAt, url: &str, query: &str) -> Result<PgConn> {
    let client = crate::io::postgres::connect(url).await?;
    let stmt = client.prepare(query).await.map_err(|e| enrich_err(at, format!("query {query:?}: {e}")))?;
    Ok((client, stmt))
}

struct Inner {
    db: Db,
    query: String,
    at: EnrichAt,
    pool: Arc<Pool>,
    cache: Option<Mutex<lru::LruCache<u64, Arc<str>>>>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    fallback: Arc<str>,
    order: ResultOrder,
    stats: Arc<EnrichStats>,
}

/// An open enrichment: the database connections, the cache and the in-flight bound. Clones
/// share them.
#[derive(Clone)]
pub struct Enricher(Arc<Inner>);

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher").field("at", &self.0.at).field("order", &self.0.order).finish_non_exhaustive()
    }
}

pub(super) fn enrich_err(at: &EnrichAt, e: impl Into<crate::Cause>) -> Error {
    Error::Enrich { at: at.describe(), source: e.into() }
}

/// An admitted event's place in flight; dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    stats: Arc<EnrichStats>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Enricher {
    /// Opens `config.connections` connections and prepares the lookup, so a wrong query or
    /// an unreachable database is reported before any event is read.
    pub async fn open(config: &EnrichConfig) -> Result<Self> {
        let query = config.query.clone().unwrap_or_else(|| config.at.default_query());
        let n = config.connections.max(1);
        let db = match &config.at {
            EnrichAt::Sqlite(path) => {
                if !path.exists() {
                    return Err(enrich_err(&config.at, "no such file; the run seeds it, or give an existing one"));
                }
                let mut conns = Vec::with_capacity(n);
                for _ in 0..n {
                    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                        .map_err(|e| enrich_err(&config.at, e))?;
                    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| enrich_err(&config.at, e))?;
                    conn.prepare_cached(&query).map_err(|e| enrich_err(&config.at, format!("query {query:?}: {e}")))?;
                    let interrupt = Arc::new(conn.get_interrupt_handle());
                    conns.push((Arc::new(Mutex::new(conn)), interrupt));
                }
                Db::Sqlite(conns)
            }
            EnrichAt::Postgres(url) => {
                let mut conns = Vec::with_capacity(n);
                for _ in 0..n {
                    conns.push(Mutex::new(Arc::new(pg_open(&config.at, url, &query).await?)));
                }
                Db::Postgres(conns)
            }
        };
        let cache = NonZeroUsize::new(config.cache).map(|n| Mutex::new(lru::LruCache::new(n)));
        Ok(Self(Arc::new(Inner {
            db,
            query,
            at: config.at.clone(),
            pool: Arc::new(Pool { idle: Mutex::new((0..n).collect()), permits: Arc::new(Semaphore::new(n)) }),
            cache,
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            timeout: config.timeout,
            fallback: config.fallback.as_str().into(),
            order: config.order,
            stats: Arc::default(),
        })))
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<EnrichStats> {
        &self.0.stats
    }

    /// The result order.
    pub fn order(&self) -> ResultOrder {
        self.0.order
    }

    /// Waits for a place in flight.
    pub async fn admit(&self) -> Admission {
        let permit = Arc::clone(&self.0.permits).acquire_owned().await.expect("the semaphore is never closed");
        let stats = &self.0.stats;
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Admission { _permit: permit, stats: Arc::clone(stats) }
    }

    /// The profile of `session` if the cache has it (counted as an event enriched), else
    /// `None` (not counted: [`Self::lookup`] follows).
    pub fn cached(&self, session: u64) -> Option<Enrichment> {
        let inner = &*self.0;
        let hit = inner.cache.as_ref().and_then(|c| c.lock().ok()?.get(&session).cloned())?;
        inner.stats.events.fetch_add(1, Ordering::Relaxed);
        inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(Enrichment { profile: hit.to_string(), from: "cache".into() })
    }

    /// The profile of `session`: from the cache, else the database within the timeout,
    /// else the fallback. Never fails.
    pub async fn lookup(&self, session: u64) -> Enrichment {
        if let Some(hit) = self.cached(session) {
            return hit;
        }
        let inner = &*self.0;
        inner.stats.events.fetch_add(1, Ordering::Relaxed);
        let fallback = |from: &str| Enrichment { profile: inner.fallback.to_string(), from: from.into() };
        match tokio::time::timeout(inner.timeout, self.query(session)).await {
            Err(_) => {
                inner.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                fallback("timeout")
            }
            Ok(Ok(Some(profile))) => {
                inner.stats.db_hits.fetch_add(1, Ordering::Relaxed);
                if let Some(mut c) = inner.cache.as_ref().and_then(|c| c.lock().ok()) {
                    c.put(session, profile.as_str().into());
                }
                Enrichment { profile, from: "db".into() }
            }
            Ok(Ok(None)) => {
                inner.stats.missing.fetch_add(1, Ordering::Relaxed);
                fallback("missing")
            }
            Ok(Err(e)) => {
                inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = inner.stats.first_error.lock() {
                    first.get_or_insert(e);
                }
                fallback("error")
            }
        }
    }

    /// One database query on an idle connection of the pool. Each connection runs one
    /// query at a time and is leased until the database answers, even when the lookup
    /// waiting for it has timed out: a slow database never has more than `connections`
    /// queries at once, and a lookup that finds none idle waits (within its timeout)
    /// instead of queueing at the database. A timed-out SQLite statement is interrupted; a
    /// PostgreSQL one finishes on the server and its answer is dropped.
    async fn query(&self, session: u64) -> Result<Option<String>, String> {
        let inner = &*self.0;
        let id = session as i64;
        let lease = Lease::take(&inner.pool).await;
        let i = lease.index;
        let task = match &inner.db {
            Db::Sqlite(conns) => {
                let (conn, interrupt) = &conns[i];
                let (conn, query) = (Arc::clone(conn), inner.query.clone());
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut guard = Interrupt { handle: Some(Arc::clone(interrupt)), done: Arc::clone(&done) };
                let task = tokio::task::spawn_blocking(move || {
                    let _lease = lease;
                    let answer = (|| {
                        let conn = conn.lock().map_err(|_| "a lookup panicked".to_owned())?;
                        let mut stmt = conn.prepare_cached(&query).map_err(|e| e.to_string())?;
                        let mut rows = stmt.query([id]).map_err(|e| e.to_string())?;
                        match rows.next().map_err(|e| e.to_string())? {
                            Some(row) => row.get::<_, String>(0).map(Some).map_err(|e| e.to_string()),
                            None => Ok(None),
                        }
                    })();
                    done.store(true, Ordering::Release);
                    answer
                });
                let answer = task.await.map_err(|e| e.to_string());
                guard.handle = None; // answered: nothing to interrupt
                return answer?;
            }
            Db::Postgres(conns) => {
                let current = conns[i].lock().map(|c| Arc::clone(&c)).map_err(|_| "a lookup panicked".to_owned())?;
                let conn = if current.0.is_closed() {
                    // The server closed it (a restart, say): open it again, for this lookup and later ones.
                    let EnrichAt::Postgres(url) = &inner.at else { return Err("not a PostgreSQL lookup".into()) };
                    let fresh = Arc::new(pg_open(&inner.at, url, &inner.query).await.map_err(|e| e.to_string())?);
                    if let Ok(mut c) = conns[i].lock() {
                        *c = Arc::clone(&fresh);
                    }
                    fresh
                } else {
                    current
                };
                tokio::spawn(async move {
                    let _lease = lease;
                    let row = conn.0.query_opt(&conn.1, &[&id]).await.map_err(|e| e.to_string())?;
                    row.map(|r| r.try_get::<_, String>(0)).transpose().map_err(|e| e.to_string())
                })
            }
        };
        task.await.map_err(|e| e.to_string())?
    }
}

/// The idle connections (their indexes) and a permit per connection.
#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<usize>>,
    permits: Arc<Semaphore>,
}

/// One connection, leased until dropped.
struct Lease {
    index: usize,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    async fn take(pool: &Arc<Pool>) -> Self {
        let permit = Arc::clone(&pool.permits).acquire_owned().await.expect("never closed");
        // A permit guarantees an idle connection.
        let index = pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop().unwrap_or(0);
        Self { index, pool: Arc::clone(pool), _permit: permit }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(self.index);
    }
}

/// Interrupts a SQLite connection's running statement when dropped (when the lookup
/// waiting for it is dropped at its timeout), unless the statement is done.
struct Interrupt {
    handle: Option<Arc<rusqlite::InterruptHandle>>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && !self.done.load(Ordering::Acquire)
        {
            h.interrupt();
        }
    }
}

/// Enriches `event` at once when its profile is cached and nothing before it is still in
/// flight (ordered mode), so a cache hit costs no task; true when it did.
pub fn enriched_inline(
    enricher: &Enricher,
    event: &mut StoryEvent,
    previous: &mut Option<oneshot::Receiver<()>>,
) -> bool {
    use tokio::sync::oneshot::error::TryRecvError;
    let pending = previous.as_mut().is_some_and(|rx| matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    if pending {
        return false;
    }
    *previous = None;
    match enricher.cached(event.session) {
        Some(hit) => {
            event.enrichment = Some(hit);
            true
        }
        None => false,
    }
}

/// One event to enrich and produce from a task of its own.
pub struct Later {
    pub emitter: Emitter,
    pub enricher: Enricher,
    pub admission: Admission,
    pub from: From,
    /// Ordered mode: the previous event's signal (it has produced) and this one's to give.
    pub order: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Later").finish_non_exhaustive()
    }
}

impl Later {
    /// Looks the event up, waits for its predecessor when ordered, produces it, and
    /// answers on the returned channel with every delivery (`sides` included).
    pub fn spawn(
        self,
        mut event: StoryEvent,
        carried: Carried,
        sides: Vec<DeliveryFuture>,
    ) -> oneshot::Receiver<std::result::Result<Vec<DeliveryFuture>, String>> {
        let (ack, answer) = oneshot::channel();
        tokio::spawn(async move {
            let _admission = self.admission;
            event.enrichment = Some(self.enricher.lookup(event.session).await);
            let _done = match self.order {
                Some((previous, done)) => {
                    if let Some(previous) = previous {
                        let _ = previous.await; // sent or dropped: the predecessor has produced
                    }
                    Some(done)
                }
                None => None,
            };
            let mut stamps = Vec::with_capacity(512);
            let sent =
                self.emitter.emit(&event, Upstream::Carried(&carried), self.from, crate::topics::UPDATES, &mut stamps);
            let _ = ack.send(sent.map_err(|e| e.to_string()).map(|main| {
                let mut all = sides;
                all.extend(main);
                all
            }));
        });
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamjob::profiles::{seed, seed_profile};

    async fn sqlite(dir: &tempfile::TempDir, sessions: u64) -> EnrichConfig {
        let at = EnrichAt::Sqlite(dir.path().join("profiles.sqlite"));
        seed(&at, sessions).await.unwrap();
        EnrichConfig::new(at)
    }

    #[tokio::test]
    async fn looks_up_caches_and_falls_back_for_a_missing_row() {
        let dir = tempfile::tempdir().unwrap();
        let e = Enricher::open(&sqlite(&dir, 10).await).await.unwrap();
        let first = e.lookup(7).await;
        assert_eq!((first.profile.as_str(), first.from.as_str()), (seed_profile(7).as_str(), "db"));
        assert_eq!(e.lookup(7).await.from, "cache");
        let missing = e.lookup(99).await;
        assert_eq!((missing.profile.as_str(), missing.from.as_str()), ("unknown", "missing"));
        let s = e.stats();
        let counts = [&s.events, &s.db_hits, &s.cache_hits, &s.missing, &s.timeouts].map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [3, 1, 1, 1, 0]);
    }

    #[tokio::test]
    async fn a_lookup_slower_than_the_timeout_gets_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite(&dir, 10).await;
        // A real slow statement: a recursive count SQLite takes far longer than 1 ms over.
        config.query = Some(format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) \
             SELECT profile FROM {TABLE}, (SELECT max(i) FROM n) WHERE session = ?1"
        ));
        config.timeout = Duration::from_millis(1);
        config.fallback = "plain".into();
        let e = Enricher::open(&config).await.unwrap();
        let got = e.lookup(3).await;
        assert_eq!((got.profile.as_str(), got.from.as_str()), ("plain", "timeout"));
        assert_eq!(e.stats().timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn admission_holds_the_in_flight_bound_and_records_the_peak() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite(&dir, 1).await;
        config.max_in_flight = 2;
        let e = Enricher::open(&config).await.unwrap();
        let a = e.admit().await;
        let b = e.admit().await;
        let third = tokio::time::timeout(Duration::from_millis(50), e.admit()).await;
        assert!(third.is_err(), "a third admission must wait while two are in flight");
        drop(a);
        let _c = e.admit().await;
        drop(b);
        assert_eq!(e.stats().peak_in_flight.load(Ordering::Relaxed), 2);
        assert_eq!(e.stats().in_flight.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_query_the_database_refuses_is_reported_before_any_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sqlite(&dir, 1).await;
        config.query = Some("SELECT profil FROM story_profiles WHERE session = ?1".into());
        let e = Enricher::open(&config).await.unwrap_err().to_string();
        assert!(e.contains("profiles.sqlite") && e.contains("profil"), "{e}");
    }
}
