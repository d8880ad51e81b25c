//! Change data capture from PostgreSQL by logical decoding: a replication connection
//! (`replication=database`) streams the `pgoutput` plugin's messages for the publication
//! `tailgate_actions` from a logical replication slot, and this module decodes them into
//! transactions of inserted rows. Nothing polls the table.
//!
//! The walsender protocol is spoken directly over the frontend/backend message framing of
//! `postgres-protocol` (startup, password/MD5/SCRAM authentication, `START_REPLICATION`,
//! `CopyData` with XLogData, keepalives and standby status updates); ordinary SQL (creating
//! the table, publication and slot; the load generator's inserts) goes through
//! `tokio-postgres`.
//!
//! Positions are LSNs. A transaction's rows are streamed after it commits, in commit order;
//! [`Change::Commit`] carries the LSN just past the commit record, which is where a restart
//! resumes (the server skips transactions that committed before it).

use crate::table::{ACTION_COLUMNS, ActionRow};
use crate::{Error, Result};
use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The table the load generator writes and the connector captures.
pub const TABLE: &str = "story_actions";
/// The publication the slot streams.
pub const PUBLICATION: &str = "tailgate_actions";

fn pg_err(url: &str, what: &str, e: impl Into<crate::Cause>) -> Error {
    Error::Postgres { at: format!("{} ({what})", redact(url)), source: e.into() }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    super::secrets::redact_url(url)
}

/// Opens an ordinary SQL connection; the connection task runs on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, tokio_postgres::NoTls))
            .await
            .map_err(|_| pg_err(url, "connect", "no answer within 10s. Check that PostgreSQL listens there"))?
            .map_err(|e| {
                pg_err(url, "connect", format!("{e}. Check the address, user and password, and that PostgreSQL is up"))
            })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Makes the database ready for capture: checks `wal_level`, creates the table, the
/// publication and the slot (`pgoutput`) when they are missing. With `fresh`, drops the
/// slot and empties the table first (a run's own source).
pub async fn prepare(url: &str, slot: &str, fresh: bool) -> Result<()> {
    let db = connect(url).await?;
    let level: String = db.query_one("SHOW wal_level", &[]).await.map_err(|e| pg_err(url, "SHOW wal_level", e))?.get(0);
    if level != "logical" {
        let why = format!(
            "wal_level is `{level}`, and change data capture needs `logical`. Set `wal_level = logical` in \
             postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL"
        );
        return Err(Error::Postgres { at: redact(url), source: why.into() });
    }
    let sql = |what: &'static str| move |e: tokio_postgres::Error| pg_err(url, what, e);
    db.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (seq bigserial PRIMARY KEY, run bigint NOT NULL, event_id bigint NOT NULL, \
         session bigint NOT NULL, intended_ns bigint NOT NULL, traceparent text NOT NULL, action text NOT NULL)"
    ))
    .await
    .map_err(sql("create table"))?;
    let has_pub = db
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&PUBLICATION])
        .await
        .map_err(sql("find publication"))?
        .is_some();
    if !has_pub {
        db.batch_execute(&format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}"))
            .await
            .map_err(sql("create publication"))?;
    }
    let has_slot = db
        .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .map_err(sql("find slot"))?
        .is_some();
    if fresh {
        if has_slot {
            db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.map_err(sql("drop slot"))?;
        }
        db.batch_execute(&format!("TRUNCATE {TABLE} RESTART IDENTITY")).await.map_err(sql("empty table"))?;
    }
    if fresh || !has_slot {
        db.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
            .await
            .map_err(sql("create slot"))?;
    }
    Ok(())
}

/// The load generator's side: inserts one row per story action, each its own transaction,
/// with the server's default durability. (With `synchronous_commit = off` commits return
/// before the WAL is flushed, and logical decoding only streams flushed WAL: the capture
/// then waits for the WAL writer, about `wal_writer_delay` = 200 ms; see docs/measured.md.)
#[derive(Debug)]
pub struct PgWriter {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
}

impl PgWriter {
    pub async fn open(url: &str) -> Result<Self> {
        let client = connect(url).await?;
        let insert = client
            .prepare(&format!("INSERT INTO {TABLE} ({ACTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
            .await
            .map_err(|e| pg_err(url, "prepare insert", e))?;
        Ok(Self { client, insert })
    }

    /// Inserts (and commits) one row.
    pub async fn insert(&self, row: &ActionRow<'_>) -> std::result::Result<(), String> {
        self.client
            .execute(
                &self.insert,
                &[
                    &(row.run as i64),
                    &(row.event_id as i64),
                    &(row.session as i64),
                    &(row.intended_ns as i64),
                    &&*row.traceparent,
                    &&*row.action,
                ],
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Formats an LSN as PostgreSQL writes it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// One decoded change of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A transaction starts; `final_lsn` is its commit record's LSN (its identity).
    Begin { final_lsn: u64, xid: u32 },
    /// A row inserted into `table`: column names and text values.
    Insert { table: String, columns: Vec<(String, Option<String>)> },
    /// The transaction committed; a restart from `end_lsn` will not see it again.
    Commit { end_lsn: u64 },
    /// Anything this connector does not capture (updates, deletes, truncates, types...).
    Other(u8),
}

#[derive(Debug, Clone)]
struct Relation {
    table: String,
    columns: Vec<String>,
}

/// Decodes `pgoutput` (protocol version 1) messages, remembering the relations it was told.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

fn cstr(b: &mut &[u8]) -> std::result::Result<String, String> {
    let end = b.iter().position(|&c| c == 0).ok_or("unterminated string")?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    Ok(s)
}

fn need(b: &[u8], n: usize) -> std::result::Result<(), String> {
    if b.len() < n { Err(format!("message cut short ({} bytes left, {n} needed)", b.len())) } else { Ok(()) }
}

impl Decoder {
    /// Decodes one `pgoutput` message.
    pub fn decode(&mut self, mut b: &[u8]) -> std::result::Result<Change, String> {
        need(b, 1)?;
        let tag = b.get_u8();
        match tag {
            b'B' => {
                need(b, 20)?;
                let final_lsn = b.get_u64();
                let _commit_ts = b.get_i64();
                Ok(Change::Begin { final_lsn, xid: b.get_u32() })
            }
            b'C' => {
                need(b, 25)?;
                let _flags = b.get_u8();
                let _commit_lsn = b.get_u64();
                Ok(Change::Commit { end_lsn: b.get_u64() })
            }
            b'R' => {
                need(b, 4)?;
                let oid = b.get_u32();
                let _namespace = cstr(&mut b)?;
                let table = cstr(&mut b)?;
                need(b, 3)?;
                let _identity = b.get_u8();
                let n = b.get_u16();
                let mut columns = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    need(b, 1)?;
                    let _flags = b.get_u8();
                    columns.push(cstr(&mut b)?);
                    need(b, 8)?;
                    b.advance(8); // type oid, type modifier
                }
                self.relations.insert(oid, Relation { table, columns });
                Ok(Change::Other(b'R'))
            }
            b'I' => {
                need(b, 5)?;
                let oid = b.get_u32();
                let rel = self.relations.get(&oid).ok_or_else(|| format!("insert into unknown relation {oid}"))?;
                if b.get_u8() != b'N' {
                    return Err("insert without a new tuple".into());
                }
                need(b, 2)?;
                let n = b.get_u16() as usize;
                let mut columns = Vec::with_capacity(n);
                for i in 0..n {
                    need(b, 1)?;
                    let value = match b.get_u8() {
                        b'n' | b'u' => None,
                        b't' | b'b' => {
                            need(b, 4)?;
                            let len = b.get_u32() as usize;
                            need(b, len)?;
                            let v = String::from_utf8_lossy(&b[..len]).into_owned();
                            b.advance(len);
                            Some(v)
                        }
                        other => return Err(format!("unknown tuple column kind {other}")),
                    };
                    let name = rel.columns.get(i).cloned().unwrap_or_else(|| format!("column{i}"));
                    columns.push((name, value));
                }
                Ok(Change::Insert { table: rel.table.clone(), columns })
            }
            other => Ok(Change::Other(other)),
        }
    }
}

/// Microseconds since 2000-01-01, PostgreSQL's clock in replication messages.
fn pg_clock() -> i64 {
    const PG_EPOCH_S: u64 = 946_684_800;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (now.as_micros() as i64) - (PG_EPOCH_S as i64) * 1_000_000
}

/// What the stream yields.
#[derive(Debug)]
pub enum Streamed {
    /// A `pgoutput` message's bytes, received at `received_ns`.
    Data { bytes: bytes::Bytes, received_ns: u64 },
    /// The server asks for a status update now.
    ReplyRequested,
}

/// A replication connection streaming one slot.
#[derive(Debug)]
pub struct Replication {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    url: String,
}

impl Replication {
    /// Connects in `replication=database` mode and authenticates.
    pub async fn connect(url: &str) -> Result<Self> {
        let cfg: tokio_postgres::Config = url.parse().map_err(|e| pg_err(url, "parse URL", e))?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg.get_user().unwrap_or("postgres").to_owned();
        let dbname = cfg.get_dbname().unwrap_or(&user).to_owned();
        let password = cfg.get_password().map(<[u8]>::to_vec);
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| pg_err(url, "replication connect", format!("no answer from {host}:{port} within 10s")))?
            .map_err(|e| pg_err(url, "replication connect", format!("{host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut r = Self { stream, buf: BytesMut::with_capacity(64 * 1024), out: BytesMut::new(), url: url.to_owned() };
        let params = [
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", "tailgate-connector"),
        ];
        frontend::startup_message(params, &mut r.out).map_err(|e| r.err("startup", e))?;
        r.flush().await?;
        r.authenticate(&user, password.as_deref()).await?;
        Ok(r)
    }

    fn err(&self, what: &str, e: impl Into<crate::Cause>) -> Error {
        pg_err(&self.url, what, e)
    }

    async fn flush(&mut self) -> Result<()> {
        let out = self.out.split();
        self.stream.write_all(&out).await.map_err(|e| pg_err(&self.url, "write", e))
    }

    /// The next backend message: its tag and body.
    async fn message(&mut self) -> Result<(u8, bytes::Bytes)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() > len {
                    let mut frame = self.buf.split_to(len + 1).freeze();
                    let tag = frame.get_u8();
                    frame.advance(4);
                    if tag == b'E' {
                        return Err(self.err("server error", error_fields(&frame)));
                    }
                    return Ok((tag, frame));
                }
            }
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.err("read", e))?;
            if n == 0 {
                return Err(self.err("read", "the server closed the connection"));
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<()> {
        let url = self.url.clone();
        let missing = || pg_err(&url, "authenticate", "the server asks for a password and the URL has none");
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = self.message().await?;
            match tag {
                b'R' => match body.get_i32() {
                    0 => {}
                    3 => {
                        frontend::password_message(password.ok_or_else(missing)?, &mut self.out)
                            .map_err(|e| self.err("password", e))?;
                        self.flush().await?;
                    }
                    5 => {
                        let salt = [body.get_u8(), body.get_u8(), body.get_u8(), body.get_u8()];
                        let hash = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            password.ok_or_else(missing)?,
                            salt,
                        );
                        frontend::password_message(hash.as_bytes(), &mut self.out).map_err(|e| self.err("md5", e))?;
                        self.flush().await?;
                    }
                    10 => {
                        let s = ScramSha256::new(password.ok_or_else(missing)?, ChannelBinding::unsupported());
                        frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut self.out)
                            .map_err(|e| self.err("sasl", e))?;
                        scram = Some(s);
                        self.flush().await?;
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| self.err("sasl", "continue before start"))?;
                        s.update(&body).map_err(|e| pg_err(&self.url, "sasl", e))?;
                        frontend::sasl_response(s.message(), &mut self.out).map_err(|e| self.err("sasl", e))?;
                        self.flush().await?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| self.err("sasl", "final before start"))?;
                        s.finish(&body).map_err(|e| pg_err(&self.url, "sasl", e))?;
                    }
                    other => return Err(self.err("authenticate", format!("unsupported method {other}"))),
                },
                b'Z' => return Ok(()),
                _ => {} // parameter status, backend key data, notices
            }
        }
    }

    /// Starts streaming `slot` from `from_lsn` (0 = the slot's confirmed position).
    pub async fn start(&mut self, slot: &str, from_lsn: u64) -> Result<()> {
        let q = format!(
            "START_REPLICATION SLOT \"{slot}\" LOGICAL {} (proto_version '1', publication_names '{PUBLICATION}')",
            lsn_text(from_lsn)
        );
        frontend::query(&q, &mut self.out).map_err(|e| self.err("start", e))?;
        self.flush().await?;
        loop {
            match self.message().await? {
                (b'W', _) => return Ok(()),
                (b'Z', _) => return Err(self.err("start", "the server did not start streaming")),
                _ => {}
            }
        }
    }

    /// The next streamed message.
    pub async fn next(&mut self) -> Result<Streamed> {
        loop {
            let (tag, mut body) = self.message().await?;
            match tag {
                b'd' if body.first() == Some(&b'w') => {
                    let received_ns = probes::now_ns();
                    if body.len() < 25 {
                        return Err(self.err("stream", "short XLogData"));
                    }
                    body.advance(25); // tag, start, end, clock
                    return Ok(Streamed::Data { bytes: body, received_ns });
                }
                // A keepalive asking for an answer now.
                b'd' if body.first() == Some(&b'k') && body.len() >= 18 && body[17] == 1 => {
                    return Ok(Streamed::ReplyRequested);
                }
                b'c' => return Err(self.err("stream", "the server ended the stream")),
                _ => {}
            }
        }
    }

    /// Tells the server everything up to `flushed` is safely stored (it may recycle WAL).
    pub async fn status(&mut self, flushed: u64) -> Result<()> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(flushed);
        body.put_u64(flushed);
        body.put_u64(flushed);
        body.put_i64(pg_clock());
        body.put_u8(0);
        self.out.put_u8(b'd');
        self.out.put_u32(4 + body.len() as u32);
        self.out.extend_from_slice(&body);
        self.flush().await
    }
}

fn error_fields(mut b: &[u8]) -> String {
    let (mut code, mut message) = (String::new(), String::new());
    while let Some((&kind, rest)) = b.split_first() {
        if kind == 0 {
            break;
        }
        b = rest;
        let Ok(v) = cstr(&mut b) else { break };
        match kind {
            b'C' => code = v,
            b'M' => message = v,
            _ => {}
        }
    }
    format!("{message} (SQLSTATE {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.extend_from_slice(b"public\0story_actions\0d");
        b.extend_from_slice(&2u16.to_be_bytes());
        for name in ["seq", "action"] {
            b.push(1);
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&[0; 8]);
        }
        b
    }

    #[test]
    fn decodes_a_transaction_of_inserts() {
        let mut d = Decoder::default();
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        begin.extend_from_slice(&0i64.to_be_bytes());
        begin.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(d.decode(&begin).unwrap(), Change::Begin { final_lsn: 0x1_0000_0010, xid: 7 });
        assert_eq!(d.decode(&relation()).unwrap(), Change::Other(b'R'));
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend_from_slice(&2u16.to_be_bytes());
        insert.push(b't');
        insert.extend_from_slice(&2u32.to_be_bytes());
        insert.extend_from_slice(b"42");
        insert.push(b'n');
        assert_eq!(
            d.decode(&insert).unwrap(),
            Change::Insert {
                table: "story_actions".into(),
                columns: vec![("seq".into(), Some("42".into())), ("action".into(), None)]
            }
        );
        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        commit.extend_from_slice(&0x1_0000_0040u64.to_be_bytes());
        commit.extend_from_slice(&0i64.to_be_bytes());
        assert_eq!(d.decode(&commit).unwrap(), Change::Commit { end_lsn: 0x1_0000_0040 });
        assert_eq!(d.decode(b"U").unwrap(), Change::Other(b'U'));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut d = Decoder::default();
        assert!(d.decode(b"").is_err());
        assert!(d.decode(b"B\0\0").is_err());
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&99u32.to_be_bytes());
        insert.push(b'N');
        assert!(d.decode(&insert).unwrap_err().contains("unknown relation 99"));
        d.decode(&relation()).unwrap();
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16384u32.to_be_bytes());
        insert.extend_from_slice(b"N\0\x01t\0\0\0\x09ab");
        assert!(d.decode(&insert).unwrap_err().contains("cut short"));
    }

    #[test]
    fn lsns_and_urls_print_as_users_expect() {
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert!(error_fields(b"SERROR\0C42P01\0Mno such table\0\0").contains("no such table (SQLSTATE 42P01)"));
    }
}
