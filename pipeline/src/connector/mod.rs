//! The connector (Kafka Connect style): captures story actions from a source, passes each
//! through the scenario's chain of single message transforms, writes it with the
//! scenario's converter to `story.actions` (keyed by session), and records how far it got
//! in the compacted topic `tailgate.connect-offsets`, as Connect keeps source offsets.
//!
//! Sources ([`Source`]):
//! - `sqlite`: the `story_actions` table of an SQLite file, read in `seq` order after the
//!   last recorded position. SQLite serializes writers and `seq` is assigned inside the
//!   writing transaction, so rows become visible in `seq` order.
//! - `postgres`: logical decoding of `story_actions` through a replication slot
//!   ([`crate::io::postgres`]), in commit order. The position is the last fully delivered
//!   transaction's end LSN plus how many rows of the next were delivered, so a restart
//!   mid-transaction neither loses nor repeats a row; the slot is told the same position.
//!
//! `tasks` workers share the rows by session (a session always goes to the same worker,
//! so its order holds); positions advance only over rows whose records are acknowledged,
//! in source order. A row that cannot be read or transformed goes to the dead-letter
//! topic with the reason; a row a filter drops is counted as filtered.

pub mod transforms;

use crate::convert::Converter;
use crate::event::{StoryEvent, session_key};
use crate::io::kafka::KafkaSettings;
use crate::stage::{
    Ack, DeadLetters, MAX_IN_FLIGHT, StageCounters, StageSpan, open_producer, outgoing_headers, send_with_retry,
};
pub use crate::table::{ACTION_COLUMNS, ActionRow, CapturedRow, SCHEMA};
use crate::{Error, Result, topics};
use probes::{Incoming, Stamp, TraceContext};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use transforms::{Chain, Record, TransformSpec};

/// The stage's name.
pub const NAME: &str = crate::topology::CONNECTOR;

fn open(path: &Path) -> Result<Connection> {
    let err = |source| Error::Source { path: path.display().to_string(), source };
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(err)?;
    Ok(conn)
}

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

/// Where the connector captures from.
#[derive(Debug)]
pub enum Source {
    /// The `story_actions` table of an SQLite file, looked at again after `poll_interval`
    /// when no new rows were found, at most `batch` rows per look.
    Sqlite { db: PathBuf, poll_interval: Duration, batch: usize },
    /// Logical decoding of `story_actions` through the replication slot `slot`.
    Postgres { url: String, slot: String },
    /// Requests handed over by the gateway's ingress route.
    Http(mpsc::Receiver<Ingress>),
}

impl Source {
    /// An SQLite source with the default polling.
    pub fn sqlite(db: impl Into<PathBuf>) -> Self {
        Self::Sqlite { db: db.into(), poll_interval: Duration::from_micros(500), batch: 512 }
    }

    /// The key of this source's position in the offsets topic, as Connect writes it.
    pub fn offsets_key(&self) -> String {
        let partition = match self {
            Self::Sqlite { db, .. } => serde_json::json!({ "source": "sqlite", "db": db.display().to_string() }),
            Self::Postgres { slot, .. } => serde_json::json!({ "source": "postgres", "slot": slot }),
            Self::Http(_) => serde_json::json!({ "source": "http" }),
        };
        serde_json::json!([format!("tailgate-{NAME}"), partition]).to_string()
    }
}

/// How the connector runs.
#[derive(Debug)]
pub struct ConnectorConfig {
    pub source: Source,
    /// Parallel workers (`tasks.max`).
    pub tasks: usize,
    /// The transform chain, in order.
    pub transforms: Vec<TransformSpec>,
}

impl ConnectorConfig {
    /// One task, no transforms.
    pub fn new(source: Source) -> Self {
        Self { source, tasks: 1, transforms: Vec::new() }
    }
}

/// How far the connector has delivered, in the source's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Position {
    /// Nothing delivered yet.
    #[default]
    Start,
    /// Every row up to `seq` delivered.
    Sqlite { seq: i64 },
    /// Every transaction that ended by `lsn` delivered, and the first `rows` rows of the
    /// transaction whose commit LSN is `txn` (0: none).
    Postgres { lsn: u64, txn: u64, rows: u64 },
}

/// One request of the HTTP source: the row, when it arrived, and where to say whether
/// Kafka has it.
#[derive(Debug)]
pub struct Ingress {
    pub row: CapturedRow,
    pub received_ns: u64,
    pub reply: oneshot::Sender<std::result::Result<(), String>>,
}

/// What the source hands the connector: a row (or why it is unreadable, with its raw
/// form), or only a new position (a transaction's end), and when it was captured.
#[derive(Debug)]
struct Captured {
    position: Position,
    row: Option<std::result::Result<CapturedRow, (String, Vec<u8>)>>,
    ingress_ns: u64,
    /// Who waits for the record to be acknowledged (the HTTP source's caller).
    reply: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

/// The position recorded for `key` in the offsets topic (the last one written).
pub async fn committed_position(kafka: &KafkaSettings, key: &str) -> Result<Position> {
    let records = kafka.read_to_end(topics::CONNECT_OFFSETS, &HashMap::new(), Duration::from_secs(10)).await?;
    let last = records.iter().rev().find(|r| r.key.as_deref() == Some(key.as_bytes()));
    match last.and_then(|r| r.value.as_deref()) {
        None => Ok(Position::Start),
        Some(v) => serde_json::from_slice(v).map_err(|e| Error::Stage {
            stage: NAME,
            reason: format!("the recorded position for {key} is unreadable: {e}"),
        }),
    }
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
    let key = config.source.offsets_key();
    let resume = committed_position(&kafka, &key).await?;
    let confirmed = Arc::new(AtomicU64::new(0));
    let (src_tx, mut src_rx) = mpsc::channel::<Captured>(4096);
    let source = spawn_source(config.source, resume, src_tx, Arc::clone(&confirmed), cancel.clone())?;

    let chain = Arc::new(Chain::new(&config.transforms));
    let workers: Vec<mpsc::Sender<Job>> = (0..config.tasks.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::channel(1024);
            let task = Task {
                producer: producer.clone(),
                dlq: dlq.clone(),
                chain: Arc::clone(&chain),
                converter: kafka.converter,
                spans: kafka.spans.clone(),
                counters: Arc::clone(&counters),
            };
            tokio::spawn(task.run(rx));
            tx
        })
        .collect();
    let (order_tx, order_rx) = mpsc::channel::<Tracked>(MAX_IN_FLIGHT);
    let tracker = tokio::spawn(track(order_rx, producer.clone(), key, resume, confirmed, cancel.clone()));

    while let Some(c) = src_rx.recv().await {
        let ack = match c.row {
            None => Ack::Nothing,
            Some(row) => {
                let session = row.as_ref().map_or(0, |r| r.session);
                let (done, rx) = oneshot::channel();
                let worker = &workers[(session % workers.len() as u64) as usize];
                if worker.send(Job { row, ingress_ns: c.ingress_ns, done }).await.is_err() {
                    break;
                }
                Ack::Later(rx)
            }
        };
        if order_tx.send(Tracked { position: c.position, ack, reply: c.reply }).await.is_err() {
            break; // the tracker failed; it says why
        }
    }
    drop((workers, order_tx));
    let captured = source.await.unwrap_or_else(|e| Err(Error::Stage { stage: NAME, reason: e.to_string() }));
    let tracked = tracker.await.unwrap_or_else(|e| Err(Error::Stage { stage: NAME, reason: e.to_string() }));
    captured.and(tracked)
}

/// A row for a worker, and where its deliveries go.
struct Job {
    row: std::result::Result<CapturedRow, (String, Vec<u8>)>,
    ingress_ns: u64,
    done: oneshot::Sender<std::result::Result<Vec<DeliveryFuture>, String>>,
}

/// One of the connector's parallel workers.
struct Task {
    producer: FutureProducer,
    dlq: DeadLetters,
    chain: Arc<Chain>,
    converter: Converter,
    spans: probes::spans::Spans,
    counters: Arc<StageCounters>,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let mut stamps = Vec::with_capacity(128);
        while let Some(job) = rx.recv().await {
            let out = self.produce(job.row, job.ingress_ns, &mut stamps).map_err(|e| e.to_string());
            let _ = job.done.send(out);
        }
    }

    /// Transforms and produces one row; dead-letters it when it cannot.
    fn produce(
        &self,
        row: std::result::Result<CapturedRow, (String, Vec<u8>)>,
        ingress_ns: u64,
        stamps: &mut Vec<u8>,
    ) -> Result<Vec<DeliveryFuture>> {
        let row = match row {
            Ok(r) => r,
            Err((reason, raw)) => return Ok(vec![self.dlq.send(None, Some(&raw), None, &reason)?]),
        };
        let raw = || serde_json::to_vec(&row).unwrap_or_default();
        let key = session_key(row.session);
        let trace = match TraceContext::parse(row.traceparent.as_bytes()) {
            Ok(t) => t,
            Err(e) => return Ok(vec![self.dlq.send(Some(&key), Some(&raw()), None, &format!("traceparent: {e}"))?]),
        };
        let mut event = StoryEvent {
            run: row.run,
            id: row.event_id,
            session: row.session,
            action: row.action.to_string(),
            beat: None,
            window: None,
            enrichment: None,
        };
        let mut record =
            Record { topic: topics::ACTIONS.to_owned(), key: key.to_vec(), value: Default::default(), headers: vec![] };
        if !self.chain.is_empty() {
            if let serde_json::Value::Object(m) = serde_json::to_value(&event).unwrap_or_default() {
                record.value = m;
            }
            record = match self.chain.apply(record) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.counters.filtered.fetch_add(1, Ordering::Relaxed);
                    return Ok(vec![]);
                }
                Err(reason) => return Ok(vec![self.dlq.send(Some(&key), Some(&raw()), None, &reason)?]),
            };
            event = match serde_json::from_value(serde_json::Value::Object(std::mem::take(&mut record.value))) {
                Ok(e) => e,
                Err(e) => {
                    let reason = format!("after the transforms the value is not a story event: {e}");
                    return Ok(vec![self.dlq.send(Some(&key), Some(&raw()), None, &reason)?]);
                }
            };
        }
        let value = self.converter.encode(&event);
        let incoming = Incoming { trace, intended_ns: row.intended_ns, stamps: b"" };
        let stamp = Stamp { stage: NAME, ingress_ns, egress_ns: probes::now_ns() };
        // Headers the transforms added travel as foreign headers (they cannot replace the
        // protocol's own).
        let added = (!record.headers.is_empty()).then(|| {
            record.headers.iter().fold(OwnedHeaders::new_with_capacity(record.headers.len()), |h, (k, v)| {
                h.insert(Header { key: k, value: Some(v) })
            })
        });
        let span = StageSpan::new(NAME, trace, None, Some(&record.topic));
        let headers = outgoing_headers(added.as_ref(), &incoming, &span.span, stamp, stamps);
        let out =
            FutureRecord::<[u8], [u8]>::to(&record.topic).key(&record.key[..]).payload(&value[..]).headers(headers);
        let ack = send_with_retry(&self.producer, out, NAME)?;
        span.record(&self.spans, event.id, &stamp);
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        Ok(vec![ack])
    }
}

/// A captured row's position and the deliveries it waits for, in source order.
struct Tracked {
    position: Position,
    ack: Ack,
    reply: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

/// How often the position is written while rows flow.
const OFFSET_INTERVAL: Duration = Duration::from_millis(100);

/// Advances the position over acknowledged rows, in source order, and writes it to the
/// offsets topic every [`OFFSET_INTERVAL`] and at the end. For PostgreSQL, `confirmed`
/// follows the written position's LSN (the slot is told it).
async fn track(
    mut rx: mpsc::Receiver<Tracked>,
    producer: FutureProducer,
    key: String,
    mut position: Position,
    confirmed: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<()> {
    let write = |position: Position| {
        let producer = producer.clone();
        let key = key.clone();
        let confirmed = Arc::clone(&confirmed);
        async move {
            let value = serde_json::to_vec(&position).unwrap_or_default();
            let record = FutureRecord::<[u8], [u8]>::to(topics::CONNECT_OFFSETS).key(key.as_bytes()).payload(&value);
            let ack = send_with_retry(&producer, record, NAME)?;
            Ack::Delivery(ack).wait().await.map_err(|reason| Error::Stage {
                stage: NAME,
                reason: format!("the position was not recorded: {reason}"),
            })?;
            if let Position::Postgres { lsn, .. } = position {
                confirmed.store(lsn, Ordering::Release);
            }
            Ok::<_, Error>(())
        }
    };
    let mut written = position;
    let mut tick = tokio::time::interval(OFFSET_INTERVAL);
    loop {
        tokio::select! {
            t = rx.recv() => {
                let Some(t) = t else { break };
                let acked = t.ack.wait().await;
                if let Some(r) = t.reply {
                    let _ = r.send(acked.clone().map_err(|e| e.to_string()));
                }
                if let Err(reason) = acked {
                    cancel.cancel();
                    return Err(Error::Stage { stage: NAME, reason: format!("record not acknowledged: {reason}") });
                }
                if t.position != Position::Start {
                    position = t.position;
                }
            }
            _ = tick.tick() => {
                if position != written {
                    write(position).await?;
                    written = position;
                }
            }
        }
    }
    if position != written {
        write(position).await?;
    }
    Ok(())
}

fn spawn_source(
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

fn capture_sqlite(
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
    while !cancel.is_cancelled() {
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
fn pg_row(columns: Vec<(String, Option<String>)>) -> std::result::Result<CapturedRow, (String, Vec<u8>)> {
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

async fn capture_postgres(
    url: String,
    slot: String,
    resume: Position,
    tx: mpsc::Sender<Captured>,
    confirmed: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<()> {
    use crate::io::postgres::{Change, Decoder, Replication, Streamed, TABLE};
    let (from, skip_txn, skip_rows) = match resume {
        Position::Postgres { lsn, txn, rows } => (lsn, txn, rows),
        _ => (0, 0, 0),
    };
    confirmed.store(from, Ordering::Release);
    let mut repl = Replication::connect(&url).await?;
    repl.start(&slot, from).await?;
    let mut decoder = Decoder::default();
    let (mut done_lsn, mut txn, mut rows) = (from, 0u64, 0u64);
    let mut status = tokio::time::interval(Duration::from_secs(1));
    loop {
        let streamed = tokio::select! {
            () = cancel.cancelled() => break,
            _ = status.tick() => {
                repl.status(confirmed.load(Ordering::Acquire)).await?;
                continue;
            }
            s = repl.next() => s?,
        };
        let (bytes, received_ns) = match streamed {
            Streamed::ReplyRequested => {
                repl.status(confirmed.load(Ordering::Acquire)).await?;
                continue;
            }
            Streamed::Data { bytes, received_ns } => (bytes, received_ns),
        };
        let change =
            decoder.decode(&bytes).map_err(|e| Error::Postgres(format!("undecodable pgoutput message: {e}")))?;
        let captured = match change {
            Change::Begin { final_lsn, .. } => {
                (txn, rows) = (final_lsn, 0);
                continue;
            }
            Change::Insert { table, columns } if table == TABLE => {
                rows += 1;
                if txn == skip_txn && rows <= skip_rows {
                    continue; // delivered before the restart
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
        if tx.send(captured).await.is_err() {
            break;
        }
    }
    let _ = repl.status(confirmed.load(Ordering::Acquire)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_writes_rows_the_capture_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("source.sqlite");
        let mut w = SourceWriter::open(&db).unwrap();
        let tp = TraceContext::new_root().to_string();
        for i in 0..3 {
            let row = ActionRow {
                run: 1,
                event_id: i,
                session: 2,
                intended_ns: 5,
                traceparent: tp.as_str().into(),
                action: "go".into(),
            };
            w.insert(&row).unwrap();
        }
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || capture_sqlite(&db, Duration::from_millis(1), 2, 1, &tx, &c2));
        let mut seen = vec![];
        while seen.len() < 2 {
            let c = rx.blocking_recv().unwrap();
            seen.push((c.position, c.row.unwrap().unwrap().event_id));
        }
        cancel.cancel();
        t.join().unwrap().unwrap();
        assert_eq!(seen, vec![(Position::Sqlite { seq: 2 }, 1), (Position::Sqlite { seq: 3 }, 2)]);
    }

    #[test]
    fn positions_and_keys_are_written_as_connect_does() {
        let p = Position::Postgres { lsn: 0x10, txn: 0x20, rows: 3 };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"source":"postgres","lsn":16,"txn":32,"rows":3}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        let key = Source::Postgres { url: String::new(), slot: "s".into() }.offsets_key();
        assert_eq!(key, r#"["tailgate-connector",{"slot":"s","source":"postgres"}]"#);
    }

    #[test]
    fn unreadable_postgres_rows_carry_a_reason_and_their_columns() {
        let cols = |id: &str| {
            vec![
                ("run".to_owned(), Some("1".to_owned())),
                ("event_id".to_owned(), Some(id.to_owned())),
                ("session".to_owned(), Some("4".to_owned())),
                ("intended_ns".to_owned(), Some("9".to_owned())),
                ("traceparent".to_owned(), Some("tp".to_owned())),
                ("action".to_owned(), Some("go".to_owned())),
            ]
        };
        assert_eq!(pg_row(cols("7")).unwrap().event_id, 7);
        let (reason, raw) = pg_row(cols("x")).unwrap_err();
        assert!(reason.contains("`event_id`"), "{reason}");
        assert!(String::from_utf8(raw).unwrap().contains("\"event_id\":\"x\""));
    }
}
