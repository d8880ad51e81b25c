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

pub mod config;
mod source;
pub mod transforms;

pub use source::SourceWriter;
use source::spawn_source;

use crate::convert::Converter;
use crate::event::{StoryEvent, session_key};
use crate::io::kafka::KafkaSettings;
use crate::runtime::{
    Ack, DeadLetters, MAX_IN_FLIGHT, StageCounters, StageSpan, open_producer, outgoing_headers, send_with_retry,
};
pub use crate::table::{ACTION_COLUMNS, ActionRow, CapturedRow, SCHEMA};
use crate::{Error, Result, topics};
use probes::{Incoming, Stamp, TraceContext};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use transforms::{Chain, Record, TransformSpec};

/// The stage's name.
pub const NAME: &str = crate::topology::CONNECTOR;

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

    /// How summaries and results name it (passwords hidden).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { db, .. } => format!("sqlite {}", db.display()),
            Self::Postgres { url, slot } => format!("postgres {} slot {slot}", crate::io::postgres::redact(url)),
            Self::Http(_) => "http".into(),
        }
    }

    /// The key of this source's position in the offsets topic, as Connect writes it. A
    /// SQLite source is keyed by its path and by the id the file was created with, so a
    /// file made again at the same path starts from its beginning rather than from where
    /// the old one was left.
    pub fn offsets_key(&self) -> Result<String> {
        let partition = match self {
            Self::Sqlite { db, .. } => {
                let file = source::file_id(db)?;
                serde_json::json!({ "source": "sqlite", "db": db.display().to_string(), "file": file })
            }
            Self::Postgres { slot, .. } => serde_json::json!({ "source": "postgres", "slot": slot }),
            Self::Http(_) => serde_json::json!({ "source": "http" }),
        };
        Ok(serde_json::json!([format!("tailgate-{NAME}"), partition]).to_string())
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
    let dlq = DeadLetters::new(producer.clone(), NAME, Arc::clone(&counters), kafka.names.clone());
    let key = config.source.offsets_key()?;
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
                names: kafka.names.clone(),
            };
            tokio::spawn(task.run(rx));
            tx
        })
        .collect();
    let (order_tx, order_rx) = mpsc::channel::<Tracked>(MAX_IN_FLIGHT);
    let tracker = tokio::spawn(track(
        order_rx,
        producer.clone(),
        Offsets { key, topic: kafka.names.of(topics::CONNECT_OFFSETS).into_owned() },
        resume,
        confirmed,
        Arc::clone(&counters),
        cancel.clone(),
    ));

    loop {
        let c = tokio::select! {
            c = src_rx.recv() => match c {
                Some(c) => c,
                None => break,
            },
            () = order_tx.closed() => break, // the tracker failed; it says why
        };
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
    // The capture ends once nothing reads what it captures (the tracker may have failed:
    // a position that could not be recorded), rather than wait for ever on a full channel.
    drop((workers, order_tx, src_rx));
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
    names: crate::io::kafka::Names,
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
            Err((reason, raw)) => return Ok(self.dlq.send(None, Some(&raw), None, &reason)?.into_iter().collect()),
        };
        let raw = || serde_json::to_vec(&row).unwrap_or_default();
        let key = session_key(row.session);
        let trace = match TraceContext::parse(row.traceparent.as_bytes()) {
            Ok(t) => t,
            Err(e) => {
                return Ok(self
                    .dlq
                    .send(Some(&key), Some(&raw()), None, &format!("traceparent: {e}"))?
                    .into_iter()
                    .collect());
            }
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
                Err(reason) => {
                    return Ok(self.dlq.send(Some(&key), Some(&raw()), None, &reason)?.into_iter().collect());
                }
            };
            event = match serde_json::from_value(serde_json::Value::Object(std::mem::take(&mut record.value))) {
                Ok(e) => e,
                Err(e) => {
                    let reason = format!("after the transforms the value is not a story event: {e}");
                    return Ok(self.dlq.send(Some(&key), Some(&raw()), None, &reason)?.into_iter().collect());
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
        // A transform may have routed the record to a topic of its own: the prefix goes
        // before whichever it is.
        let topic = self.names.of(&record.topic);
        let span = StageSpan::new(NAME, trace, None, Some(&topic));
        let headers = outgoing_headers(added.as_ref(), &incoming, &span.span, stamp, stamps);
        let out = FutureRecord::<[u8], [u8]>::to(&topic).key(&record.key[..]).payload(&value[..]).headers(headers);
        match send_with_retry(&self.producer, out, NAME) {
            Ok(ack) => {
                span.record(&self.spans, event.id, &stamp);
                self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                Ok(vec![ack])
            }
            Err(Error::Unproducible { reason, .. }) => {
                let reason = format!("cannot be produced to {}: {reason}", record.topic);
                let original = added.unwrap_or_else(|| OwnedHeaders::new_with_capacity(2));
                Ok(self.dlq.send_event(&event, self.converter, original, &reason)?.into_iter().collect())
            }
            Err(e) => Err(e),
        }
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
/// Where the connector records its source position: its key on the offsets topic.
struct Offsets {
    key: String,
    topic: String,
}

async fn track(
    mut rx: mpsc::Receiver<Tracked>,
    producer: FutureProducer,
    Offsets { key, topic }: Offsets,
    mut position: Position,
    confirmed: Arc<AtomicU64>,
    counters: Arc<StageCounters>,
    cancel: CancellationToken,
) -> Result<()> {
    let write = |position: Position| {
        let producer = producer.clone();
        let (key, topic) = (key.clone(), topic.clone());
        let confirmed = Arc::clone(&confirmed);
        async move {
            let value = serde_json::to_vec(&position).unwrap_or_default();
            let record = FutureRecord::<[u8], [u8]>::to(&topic).key(key.as_bytes()).payload(&value);
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
                if let Err(failed) = acked.map_or_else(|e| e.settle(NAME, &counters), Ok) {
                    cancel.cancel();
                    return Err(failed);
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

#[cfg(test)]
mod tests {
    use super::source::{capture_sqlite, pg_row};
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
    fn a_sqlite_file_made_again_at_the_same_path_is_another_source() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("source.sqlite");
        let first = Source::sqlite(&db).offsets_key().unwrap();
        drop(SourceWriter::open(&db).unwrap());
        assert_eq!(Source::sqlite(&db).offsets_key().unwrap(), first, "the same file keeps its key");
        std::fs::remove_file(&db).unwrap();
        let again = Source::sqlite(&db).offsets_key().unwrap();
        assert_ne!(again, first, "a new file at the same path starts over");
        assert!(again.contains(&db.display().to_string()), "{again}");
    }

    #[test]
    fn positions_and_keys_are_written_as_connect_does() {
        let p = Position::Postgres { lsn: 0x10, txn: 0x20, rows: 3 };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"source":"postgres","lsn":16,"txn":32,"rows":3}"#);
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
        let key = Source::Postgres { url: String::new(), slot: "s".into() }.offsets_key().unwrap();
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
