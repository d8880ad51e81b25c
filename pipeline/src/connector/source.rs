//! Where the connector's rows come from: the SQLite table (and the writer players use to
//! fill it), PostgreSQL logical decoding, and the gateway's HTTP ingress, each captured on a
//! thread or task of its own and handed to the connector's tasks in source order.

use super::{Captured, NAME, Position, Source};
use crate::table::{ACTION_COLUMNS, ActionRow, CapturedRow, SCHEMA};
use crate::{Error, Result};
use rusqlite::{Connection, params};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Opens (creating if needed) the SQLite source with WAL and the `story_actions` table.
fn open(path: &Path) -> Result<Connection> {
    let err = |source| Error::Source { path: path.display().to_string(), source };
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(err)?;
    Ok(conn)
}

/// The id `db` was created with (made on first open): whoever opens the file first, the
/// writer or the connector, the other reads the same id.
pub fn file_id(db: &Path) -> Result<String> {
    let err = |source| Error::Source { path: db.display().to_string(), source };
    let conn = open(db)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS tailgate_source (slot INTEGER PRIMARY KEY CHECK (slot = 1), id TEXT NOT NULL)",
    )
    .map_err(err)?;
    let fresh = format!("{:016x}", rand::random::<u64>());
    conn.execute("INSERT INTO tailgate_source (slot, id) VALUES (1, ?1) ON CONFLICT DO NOTHING", [fresh])
        .map_err(err)?;
    conn.query_row("SELECT id FROM tailgate_source WHERE slot = 1", [], |r| r.get(0)).map_err(err)
}

/// The insert a player's writer binds each row to.
static SQLITE_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("INSERT INTO story_actions ({ACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
});

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
            .prepare_cached(&SQLITE_INSERT)
            .and_then(|mut s| {
                s.execute(params![
                    row.run as i64,
                    row.event_id as i64,
                    row.session as i64,
                    row.intended_ns as i64,
                    &*row.traceparent,
                    &*row.action
                ])
            })
            .map(drop)
            .map_err(|source| Error::Source { path: self.path.display().to_string(), source })
    }
}

pub(super) fn spawn_source(
    source: Source,
    resume: Position,
    tx: mpsc::Sender<Captured>,
    confirmed: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    Ok(match source {
        Source::Sqlite { db, poll_interval, batch } => {
            let from = match resume {
                Position::Sqlite { seq } => seq,
                _ => 0,
            };
            let thread = std::thread::Builder::new()
                .name("tailgate-connector".into())
                .spawn(move || capture_sqlite(&db, poll_interval, batch, from, &tx, &cancel))
                .map_err(|e| Error::Stage { stage: NAME, reason: format!("cannot start capture thread: {e}") })?;
            tokio::task::spawn_blocking(move || {
                thread.join().unwrap_or_else(|_| Err(Error::Stage { stage: NAME, reason: "capture panicked".into() }))
            })
        }
        Source::Postgres { url, slot } => tokio::spawn(capture_postgres(url, slot, resume, tx, confirmed, cancel)),
        Source::Http(mut rx) => tokio::spawn(async move {
            loop {
                let ingress = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tx.closed() => return Ok(()),
                    i = rx.recv() => match i { Some(i) => i, None => return Ok(()) },
                };
                let c = Captured {
                    position: Position::Start,
                    row: Some(Ok(ingress.row)),
                    ingress_ns: ingress.received_ns,
                    reply: Some(ingress.reply),
                };
                if tx.send(c).await.is_err() {
                    return Ok(());
                }
            }
        }),
    })
}

pub(super) fn capture_sqlite(
    db: &Path,
    poll_interval: Duration,
    batch: usize,
    from: i64,
    tx: &mpsc::Sender<Captured>,
    cancel: &CancellationToken,
) -> Result<()> {
    let conn = open(db)?;
    let db_err = |source| Error::Source { path: db.display().to_string(), source };
    let mut stmt = conn
        .prepare(
            "SELECT seq, run, event_id, session, intended_ns, traceparent, action \
             FROM story_actions WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(db_err)?;
    let mut position = from;
    // Until cancelled, or until nothing reads what it captures (the connector stopped).
    while !cancel.is_cancelled() && !tx.is_closed() {
        let mut rows = stmt.query(params![position, batch as i64]).map_err(db_err)?;
        let ingress_ns = probes::now_ns();
        let mut any = false;
        while let Some(row) = rows.next().map_err(db_err)? {
            any = true;
            let seq: i64 = row.get(0).map_err(db_err)?;
            let captured = CapturedRow {
                run: row.get::<_, i64>(1).map_err(db_err)? as u64,
                event_id: row.get::<_, i64>(2).map_err(db_err)? as u64,
                session: row.get::<_, i64>(3).map_err(db_err)? as u64,
                intended_ns: row.get::<_, i64>(4).map_err(db_err)? as u64,
                traceparent: Cow::Owned(row.get(5).map_err(db_err)?),
                action: Cow::Owned(row.get(6).map_err(db_err)?),
            };
            let c = Captured { position: Position::Sqlite { seq }, row: Some(Ok(captured)), ingress_ns, reply: None };
            if tx.blocking_send(c).is_err() {
                return Ok(()); // the connector stopped; it says why
            }
            position = seq;
        }
        drop(rows);
        if !any {
            std::thread::sleep(poll_interval);
        }
    }
    Ok(())
}

/// Reads a captured PostgreSQL row from its columns, or says why it cannot.
pub(super) fn pg_row(columns: Vec<(String, Option<String>)>) -> std::result::Result<CapturedRow, (String, Vec<u8>)> {
    let raw = || serde_json::to_vec(&columns.iter().cloned().collect::<HashMap<_, _>>()).unwrap_or_default();
    let text = |name: &str| columns.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone());
    let num = |name: &str| {
        text(name)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| (format!("column `{name}` is missing or not an integer"), raw()))
    };
    Ok(CapturedRow {
        run: num("run")?,
        event_id: num("event_id")?,
        session: num("session")?,
        intended_ns: num("intended_ns")?,
        traceparent: text("traceparent").unwrap_or_default().into(),
        action: text("action").ok_or_else(|| ("column `action` is missing".to_owned(), raw()))?.into(),
    })
}

/// Streams the slot from `resume` until `cancel`. A connection lost once streaming has
/// begun (a server restart, a network blip) is opened again, with backoff, from the last
/// change handed on, so nothing is captured twice or skipped; the first connection's
/// failure, and an undecodable change, end the capture.
async fn capture_postgres(
    url: String,
    slot: String,
    resume: Position,
    tx: mpsc::Sender<Captured>,
    confirmed: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<()> {
    let mut at = match resume {
        Position::Postgres { lsn, txn, rows } => (lsn, txn, rows),
        _ => (0, 0, 0),
    };
    confirmed.store(at.0, Ordering::Release);
    let (mut streamed, mut backoff) = (false, Duration::from_millis(100));
    loop {
        match stream_postgres(&url, &slot, &mut at, &mut streamed, &tx, &confirmed, &cancel).await {
            Ok(()) => return Ok(()),
            Err(Lost::Fatal(e)) => return Err(e),
            Err(Lost::Connection(e)) if !streamed => return Err(e),
            Err(Lost::Connection(e)) => {
                eprintln!("connector: {e}; connecting again in {backoff:?}");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Why streaming stopped.
enum Lost {
    /// The connection: worth opening again.
    Connection(Error),
    /// The stream itself: opening again would only meet it again.
    Fatal(Error),
}

/// One replication connection, streaming from `at` (the commit LSN to start after, and
/// the transaction and rows of it already handed on), which it keeps up to date.
async fn stream_postgres(
    url: &str,
    slot: &str,
    at: &mut (u64, u64, u64),
    streamed: &mut bool,
    tx: &mpsc::Sender<Captured>,
    confirmed: &AtomicU64,
    cancel: &CancellationToken,
) -> std::result::Result<(), Lost> {
    use crate::io::postgres::{Change, Decoder, Replication, Streamed, TABLE};
    let (from, skip_txn, skip_rows) = *at;
    let mut repl = Replication::connect(url).await.map_err(Lost::Connection)?;
    repl.start(slot, from).await.map_err(Lost::Connection)?;
    *streamed = true;
    let mut decoder = Decoder::default();
    let (mut done_lsn, mut txn, mut rows) = (from, 0u64, 0u64);
    let mut status = tokio::time::interval(Duration::from_secs(1));
    loop {
        let streamed = tokio::select! {
            () = cancel.cancelled() => break,
            () = tx.closed() => break, // the connector stopped

            _ = status.tick() => {
                repl.status(confirmed.load(Ordering::Acquire)).await.map_err(Lost::Connection)?;
                continue;
            }
            s = repl.next() => s.map_err(Lost::Connection)?,
        };
        let (bytes, received_ns) = match streamed {
            Streamed::ReplyRequested => {
                repl.status(confirmed.load(Ordering::Acquire)).await.map_err(Lost::Connection)?;
                continue;
            }
            Streamed::Data { bytes, received_ns } => (bytes, received_ns),
        };
        let change = decoder.decode(&bytes).map_err(|e| {
            Lost::Fatal(Error::Postgres {
                at: "replication stream".into(),
                source: format!("undecodable pgoutput message: {e}").into(),
            })
        })?;
        let captured = match change {
            Change::Begin { final_lsn, .. } => {
                (txn, rows) = (final_lsn, 0);
                continue;
            }
            Change::Insert { table, columns } if table == TABLE => {
                rows += 1;
                if txn == skip_txn && rows <= skip_rows {
                    continue; // handed on before
                }
                Captured {
                    position: Position::Postgres { lsn: done_lsn, txn, rows },
                    row: Some(pg_row(columns)),
                    ingress_ns: received_ns,
                    reply: None,
                }
            }
            Change::Commit { end_lsn } => {
                (done_lsn, txn, rows) = (end_lsn, 0, 0);
                Captured {
                    position: Position::Postgres { lsn: end_lsn, txn: 0, rows: 0 },
                    row: None,
                    ingress_ns: 0,
                    reply: None,
                }
            }
            Change::Insert { .. } | Change::Other(_) => continue,
        };
        if let Position::Postgres { lsn, txn, rows } = captured.position {
            *at = (lsn, txn, rows);
        }
        if tx.send(captured).await.is_err() {
            break;
        }
    }
    let _ = repl.status(confirmed.load(Ordering::Acquire)).await;
    Ok(())
}
