//! The connector (Kafka Connect style): change capture from the `story_actions` table of an
//! SQLite database to `story.actions`, keyed by session id.
//!
//! Capture reads the table in `seq` order after the last position whose records Kafka has
//! acknowledged; that position is kept in the database's `connector_offsets` table, so a
//! restarted connector resumes without missing a row (it may repeat the few rows produced
//! but not yet recorded, which downstream de-duplication counts). SQLite serializes writers
//! and `seq` is assigned inside the writing transaction, so rows become visible in `seq`
//! order and a reader past `seq = n` can never later find a row below `n`.

use crate::event::{StoryEvent, session_key};
use crate::kafka::KafkaSettings;
use crate::stage::{DeadLetters, MAX_IN_FLIGHT, StageCounters, open_producer, outgoing_headers, send_with_retry};
use crate::{Error, Result, topics};
use probes::{Incoming, Stamp, TraceContext};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The stage's name.
pub const NAME: &str = "connector";

/// The source table and the connector's offsets.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS story_actions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run         INTEGER NOT NULL,
    event_id    INTEGER NOT NULL,
    session     INTEGER NOT NULL,
    intended_ns INTEGER NOT NULL,
    traceparent TEXT    NOT NULL,
    action      TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS connector_offsets (
    connector TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL
);";

fn open(path: &Path) -> Result<Connection> {
    let err = |source| Error::Source { path: path.display().to_string(), source };
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(err)?;
    Ok(conn)
}

/// One story action as the players write it.
#[derive(Debug, Clone, Copy)]
pub struct ActionRow<'a> {
    pub run: u64,
    pub event_id: u64,
    pub session: u64,
    pub intended_ns: u64,
    pub traceparent: &'a str,
    pub action: &'a str,
}

/// Writes story actions into the source table (what the load generator's players use).
#[derive(Debug)]
pub struct SourceWriter {
    conn: Connection,
    path: PathBuf,
}

impl SourceWriter {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { conn: open(path)?, path: path.to_owned() })
    }

    /// Inserts one action (its own transaction).
    pub fn insert(&mut self, row: &ActionRow<'_>) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO story_actions (run, event_id, session, intended_ns, traceparent, action) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    row.run as i64,
                    row.event_id as i64,
                    row.session as i64,
                    row.intended_ns as i64,
                    row.traceparent,
                    row.action
                ])
            })
            .map(drop)
            .map_err(|source| Error::Source { path: self.path.display().to_string(), source })
    }
}

/// How the connector captures.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The source database.
    pub db: PathBuf,
    /// How long to wait before looking again when no new rows were found.
    pub poll_interval: Duration,
    /// Most rows read per look.
    pub batch: usize,
}

impl ConnectorConfig {
    pub fn new(db: impl Into<PathBuf>) -> Self {
        Self { db: db.into(), poll_interval: Duration::from_micros(500), batch: 512 }
    }
}

/// The position the connector resumes after, read from the database.
pub fn committed_position(db: &Path) -> Result<i64> {
    let conn = open(db)?;
    read_position(&conn).map_err(|source| Error::Source { path: db.display().to_string(), source })
}

fn read_position(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT seq FROM connector_offsets WHERE connector = ?1", [NAME], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

fn write_position(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO connector_offsets (connector, seq) VALUES (?1, ?2) \
         ON CONFLICT(connector) DO UPDATE SET seq = excluded.seq",
        params![NAME, seq],
    )
    .map(drop)
}

/// Captures until `cancel`, then waits for every produced record's acknowledgement and
/// records the final position.
pub async fn run(
    kafka: KafkaSettings,
    config: ConnectorConfig,
    counters: Arc<StageCounters>,
    cancel: CancellationToken,
) -> Result<()> {
    let producer = open_producer(&kafka, NAME)?;
    let dlq = DeadLetters::new(producer.clone(), NAME, Arc::clone(&counters));
    let start = committed_position(&config.db)?;
    let acked = Arc::new(AtomicI64::new(start));
    let (tx, mut rx) = mpsc::channel::<(i64, DeliveryFuture)>(MAX_IN_FLIGHT);

    let poller = {
        let (acked, cancel, config, counters) =
            (Arc::clone(&acked), cancel.clone(), config.clone(), Arc::clone(&counters));
        std::thread::Builder::new()
            .name("tailgate-connector".into())
            .spawn(move || capture(&config, start, &producer, &dlq, &counters, &acked, &tx, &cancel))
            .map_err(|e| Error::Stage { stage: NAME, reason: format!("cannot start capture thread: {e}") })?
    };
    let acker = {
        let (acked, cancel) = (Arc::clone(&acked), cancel.clone());
        tokio::spawn(async move {
            while let Some((seq, ack)) = rx.recv().await {
                match ack.await {
                    Ok(Ok(_)) => acked.store(seq, Ordering::Release),
                    Ok(Err((e, _))) => {
                        cancel.cancel();
                        return Err(Error::Stage {
                            stage: NAME,
                            reason: format!("record {seq} not acknowledged: {e}"),
                        });
                    }
                    Err(_) => return Err(Error::Stage { stage: NAME, reason: "the producer was dropped".into() }),
                }
            }
            Ok(())
        })
    };
    let captured = tokio::task::spawn_blocking(move || poller.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| Err(Error::Stage { stage: NAME, reason: "capture thread panicked".into() }));
    let acks = acker.await.unwrap_or_else(|e| Err(Error::Stage { stage: NAME, reason: e.to_string() }));
    let final_seq = acked.load(Ordering::Acquire);
    let db = config.db.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let conn = open(&db)?;
        write_position(&conn, final_seq).map_err(|source| Error::Source { path: db.display().to_string(), source })
    })
    .await
    .unwrap_or_else(|e| Err(Error::Stage { stage: NAME, reason: e.to_string() }));
    captured.and(acks).and(saved)
}

#[allow(clippy::too_many_arguments)]
fn capture(
    config: &ConnectorConfig,
    start: i64,
    producer: &FutureProducer,
    dlq: &DeadLetters,
    counters: &StageCounters,
    acked: &AtomicI64,
    tx: &mpsc::Sender<(i64, DeliveryFuture)>,
    cancel: &CancellationToken,
) -> Result<()> {
    let conn = open(&config.db)?;
    let db_err = |source| Error::Source { path: config.db.display().to_string(), source };
    let mut stmt = conn
        .prepare(
            "SELECT seq, run, event_id, session, intended_ns, traceparent, action \
             FROM story_actions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(db_err)?;
    let (mut position, mut saved, mut saved_at) = (start, start, Instant::now());
    let mut stamps = Vec::with_capacity(128);
    while !cancel.is_cancelled() {
        let mut rows = stmt.query(params![position, config.batch as i64]).map_err(db_err)?;
        let ingress_ns = probes::now_ns();
        let mut any = false;
        while let Some(row) = rows.next().map_err(db_err)? {
            any = true;
            let seq: i64 = row.get(0).map_err(db_err)?;
            let event = StoryEvent {
                run: row.get::<_, i64>(1).map_err(db_err)? as u64,
                id: row.get::<_, i64>(2).map_err(db_err)? as u64,
                session: row.get::<_, i64>(3).map_err(db_err)? as u64,
                action: row.get(6).map_err(db_err)?,
                beat: None,
                window: None,
            };
            let intended_ns = row.get::<_, i64>(4).map_err(db_err)? as u64;
            let traceparent: String = row.get(5).map_err(db_err)?;
            let value = serde_json::to_vec(&event).map_err(|e| Error::Stage { stage: NAME, reason: e.to_string() })?;
            let key = session_key(event.session);
            let ack = match TraceContext::parse(traceparent.as_bytes()) {
                Err(e) => dlq.send(Some(&key), Some(&value), None, &format!("row {seq}: {e}"))?,
                Ok(trace) => {
                    let incoming = Incoming { trace, intended_ns, stamps: b"" };
                    let stamp = Stamp { stage: NAME, ingress_ns, egress_ns: probes::now_ns() };
                    let headers = outgoing_headers(None, &incoming, stamp, &mut stamps);
                    let record = FutureRecord::<[u8], [u8]>::to(topics::ACTIONS)
                        .key(&key[..])
                        .payload(&value[..])
                        .headers(headers);
                    let ack = send_with_retry(producer, record, NAME)?;
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                    ack
                }
            };
            if tx.blocking_send((seq, ack)).is_err() {
                return Ok(()); // the acker stopped; it reports why
            }
            position = seq;
        }
        drop(rows);
        let done = acked.load(Ordering::Acquire);
        if done != saved && saved_at.elapsed() >= Duration::from_millis(100) {
            write_position(&conn, done).map_err(db_err)?;
            (saved, saved_at) = (done, Instant::now());
        }
        if !any {
            std::thread::sleep(config.poll_interval);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_positions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("source.sqlite");
        let mut w = SourceWriter::open(&db).unwrap();
        let tp = TraceContext::new_root().to_string();
        for i in 0..3 {
            w.insert(&ActionRow { run: 1, event_id: i, session: 2, intended_ns: 5, traceparent: &tp, action: "go" })
                .unwrap();
        }
        assert_eq!(committed_position(&db).unwrap(), 0);
        let conn = open(&db).unwrap();
        write_position(&conn, 2).unwrap();
        write_position(&conn, 3).unwrap();
        assert_eq!(committed_position(&db).unwrap(), 3);
        let n: i64 = conn.query_row("SELECT count(*) FROM story_actions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 3);
    }
}
