//! The agent's session state: kept in memory by the worker that owns the session, written
//! through to a local LSM store (fjall) and to the compacted changelog topic
//! `story.agent-changelog`, keyed by run and session.
//!
//! A session's state is rebuilt before any of its events is processed, whenever its
//! partition is assigned to this instance: on start, and when a partition moves here from
//! another instance. After a clean stop the local store is complete up to a `clean` mark
//! (per changelog partition), so only changelog records after it are read; after a crash
//! (no mark) the store is cleared and rebuilt from the changelog. A state read back is
//! adopted only if it is ahead of the one in memory (`actions` only grows), so reading a
//! record twice, or one's own records, is harmless. The time it took is reported.

use crate::io::kafka::KafkaSettings;
use crate::{Error, Result, topics};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

/// Event ids a session remembers, to recognise a redelivered event.
pub const REMEMBERED: usize = 16;

/// One session's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Actions applied.
    pub actions: u64,
    /// Recent choices, oldest first.
    pub recent: VecDeque<String>,
    /// Ids of the last applied events, oldest first; the last is beat `actions`.
    pub applied: VecDeque<u64>,
    /// The input offset of the last applied event (a session's events all come from one
    /// partition, in offset order): an event at or before it was applied already, however
    /// long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<i64>,
}

impl SessionState {
    /// The beat number `id` got, if it is among the remembered events.
    pub fn beat_of(&self, id: u64) -> Option<u64> {
        let pos = self.applied.iter().position(|&a| a == id)?;
        Some(self.actions - (self.applied.len() - 1 - pos) as u64)
    }

    /// Whether the event at input `offset` (with `id`) was applied already, and the beat
    /// number it got: exact among the remembered events; for an older one, the number
    /// before the oldest remembered (its beat was delivered long since, and downstream
    /// knows it by id).
    pub fn replay(&self, id: u64, offset: i64) -> Option<u64> {
        self.beat_of(id).or_else(|| {
            let older = self.last_offset.is_some_and(|last| offset <= last);
            older.then(|| (self.actions + 1).saturating_sub(self.applied.len() as u64).saturating_sub(1).max(1))
        })
    }

    /// Records that `id`, at input `offset`, was applied.
    pub fn remember(&mut self, id: u64, offset: i64) {
        if self.applied.len() == REMEMBERED {
            self.applied.pop_front();
        }
        self.applied.push_back(id);
        self.last_offset = Some(offset);
    }
}

/// A session of a run: what state is kept per.
pub type RunSession = (u64, u64);

/// The changelog and store key of a session in a run.
pub fn state_key(run: u64, session: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&session.to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(u64, u64)> {
    let k: [u8; 16] = k.try_into().ok()?;
    let (r, s) = k.split_at(8);
    Some((u64::from_be_bytes(r.try_into().ok()?), u64::from_be_bytes(s.try_into().ok()?)))
}

/// The local store; clones share it.
#[derive(Clone)]
pub struct Store {
    keyspace: fjall::Keyspace,
    sessions: fjall::PartitionHandle,
    meta: fjall::PartitionHandle,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn state_err(e: impl Into<crate::Cause>) -> Error {
    Error::State(e.into())
}

const CLEAN: &str = "clean";

impl Store {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let keyspace =
            fjall::Config::new(dir).open().map_err(|e| Error::State(format!("{}: {e}", dir.display()).into()))?;
        let opts = fjall::PartitionCreateOptions::default;
        let sessions = keyspace.open_partition("sessions", opts()).map_err(state_err)?;
        let meta = keyspace.open_partition("meta", opts()).map_err(state_err)?;
        Ok(Self { keyspace, sessions, meta })
    }

    /// Writes one session's state; returns its encoding, which is also the changelog
    /// record's value.
    pub fn put(&self, key: &[u8; 16], state: &SessionState) -> Result<Vec<u8>> {
        let v = serde_json::to_vec(state).map_err(state_err)?;
        self.sessions.insert(key, &v).map_err(state_err)?;
        Ok(v)
    }

    /// Marks the store complete up to the changelog's `ends` (after a clean stop).
    pub fn mark_clean(&self, ends: &HashMap<i32, i64>) -> Result<()> {
        let v = serde_json::to_vec(ends).map_err(state_err)?;
        self.meta.insert(CLEAN, v).map_err(state_err)?;
        self.keyspace.persist(fjall::PersistMode::SyncAll).map_err(state_err)
    }

    fn take_clean(&self) -> Result<Option<HashMap<i32, i64>>> {
        let v = self.meta.get(CLEAN).map_err(state_err)?;
        self.meta.remove(CLEAN).map_err(state_err)?;
        self.keyspace.persist(fjall::PersistMode::SyncAll).map_err(state_err)?;
        Ok(v.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn clear(&self) -> Result<()> {
        let keys: Vec<_> = self.sessions.keys().collect::<std::result::Result<_, _>>().map_err(state_err)?;
        for k in keys {
            self.sessions.remove(k).map_err(state_err)?;
        }
        Ok(())
    }

    /// The sessions of `run` (of every run when `None`).
    fn load(&self, run: Option<u64>) -> Result<HashMap<RunSession, SessionState>> {
        let mut out = HashMap::new();
        let prefix = run.map(u64::to_be_bytes);
        for kv in self.sessions.prefix(prefix.as_ref().map_or(&[][..], |p| &p[..])) {
            let (k, v) = kv.map_err(state_err)?;
            if let (Some(key), Ok(s)) = (parse_key(&k), serde_json::from_slice(&v)) {
                out.insert(key, s);
            }
        }
        Ok(out)
    }
}

/// How some of the state was rebuilt: on start, and whenever partitions are assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    /// Epoch ns when the partitions were assigned.
    pub at_ns: u64,
    /// `local store` (the last stop was clean) or `changelog` (it was not: the store was
    /// cleared and everything comes from the changelog).
    pub from: String,
    /// The input partitions assigned, whose changelog partitions were read.
    pub partitions: Vec<i32>,
    /// Sessions of this run whose state was restored: loaded from the store (on start) or
    /// updated from the changelog.
    pub sessions: u64,
    /// Changelog records read.
    pub records: u64,
    /// Time spent restoring: opening the store (on start) plus reading the changelog.
    pub warm_start_ms: f64,
}

/// The local store of a run and how far it is known to be complete, per changelog
/// partition. The changelog is co-partitioned with `story.actions` (a session's state goes
/// to the partition its events come from), so the instance that is assigned an input
/// partition reads only that changelog partition to rebuild its sessions.
#[derive(Debug)]
pub struct Recovery {
    pub store: Store,
    /// Only this run's sessions (all runs' when `None`).
    run: Option<u64>,
    /// Where to read each changelog partition from next; absent means its beginning.
    from: HashMap<i32, i64>,
    source: &'static str,
    /// Time taken to open (and perhaps clear) the store, counted in the first restore.
    opening: Option<Duration>,
}

impl Recovery {
    /// Opens (creating) the store in `dir` and loads the sessions of `run` it holds. After a
    /// clean stop the store is complete up to its `clean` mark; otherwise it is cleared and
    /// the changelog will be read from its beginning.
    pub fn open(dir: &Path, run: Option<u64>) -> Result<(Self, HashMap<RunSession, SessionState>)> {
        let began = Instant::now();
        std::fs::create_dir_all(dir).map_err(|e| Error::State(format!("{}: {e}", dir.display()).into()))?;
        let store = Store::open(dir)?;
        let (from, source) = match store.take_clean()? {
            Some(marks) => (marks, "local store"),
            None => {
                store.clear()?;
                (HashMap::new(), "changelog")
            }
        };
        let sessions = store.load(run)?;
        Ok((Self { store, run, from, source, opening: Some(began.elapsed()) }, sessions))
    }

    /// Reads the changelog partitions of the input `partitions` from where the store is
    /// complete to their current end. Returns the newest state found for each of this
    /// run's sessions there (for the workers to adopt where it is ahead of theirs) and
    /// what was done. `loaded` is counted as restored sessions on the first call.
    pub async fn catch_up(
        &mut self,
        kafka: &KafkaSettings,
        partitions: Vec<i32>,
        loaded: usize,
    ) -> Result<(Vec<(RunSession, SessionState)>, Restored)> {
        let (at_ns, began) = (probes::now_ns(), Instant::now());
        let from: HashMap<i32, i64> = partitions.iter().map(|p| (*p, self.from.get(p).copied().unwrap_or(0))).collect();
        let records = kafka.read_partitions_to_end(topics::AGENT_CHANGELOG, &from, Duration::from_secs(30)).await?;
        let mut newest: HashMap<RunSession, SessionState> = HashMap::new();
        for r in &records {
            self.from.insert(r.partition, r.offset + 1);
            let Some(key) = r.key.as_deref().and_then(parse_key) else { continue };
            let Some(state) = r.value.as_deref().and_then(|v| serde_json::from_slice::<SessionState>(v).ok()) else {
                continue;
            };
            let wanted = self.run.is_none_or(|run| run == key.0);
            if wanted && newest.get(&key).is_none_or(|s| state.actions > s.actions) {
                newest.insert(key, state);
            }
        }
        let opening = self.opening.take();
        let restored = Restored {
            at_ns,
            from: self.source.to_owned(),
            partitions,
            sessions: (newest.len() + if opening.is_some() { loaded } else { 0 }) as u64,
            records: records.len() as u64,
            warm_start_ms: (began.elapsed() + opening.unwrap_or_default()).as_secs_f64() * 1e3,
        };
        Ok((newest.into_iter().collect(), restored))
    }

    /// After a clean stop: marks the store complete up to the changelog's end for the
    /// partitions this instance `owned` to the end (every change in them is its own and in
    /// the store), and up to where it last read for the others.
    pub async fn mark_clean(&self, kafka: &KafkaSettings, owned: &[i32]) -> Result<()> {
        // A listed end can fall short of the true one (see `read_to_end`); reading a few of
        // one's own records again on the next start is harmless.
        let ends = kafka.high_watermarks(topics::AGENT_CHANGELOG).await?;
        let mut marks = self.from.clone();
        for p in owned {
            if let Some(end) = ends.get(p) {
                marks.insert(*p, *end);
            }
        }
        self.store.mark_clean(&marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_ids_give_their_beat_numbers() {
        let mut s = SessionState::default();
        for id in 10..40 {
            s.actions += 1;
            s.remember(id, id as i64);
        }
        assert_eq!(s.applied.len(), REMEMBERED);
        assert_eq!(s.beat_of(39), Some(30));
        assert_eq!(s.beat_of(30), Some(21));
        assert_eq!(s.beat_of(10), None); // forgotten
        // ...but still known as applied, by its offset.
        assert_eq!(s.replay(39, 39), Some(30));
        assert_eq!(s.replay(10, 10), Some(14), "the number before the oldest remembered (15)");
        assert_eq!(s.replay(40, 40), None, "a new event");
    }

    #[test]
    fn the_store_keeps_state_per_run_and_a_clean_mark_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = SessionState { actions: 2, recent: ["a".into()].into(), applied: [5, 6].into(), last_offset: Some(9) };
        store.put(&state_key(1, 7), &s).unwrap();
        store.put(&state_key(2, 7), &SessionState::default()).unwrap();
        assert_eq!(store.load(Some(1)).unwrap(), HashMap::from([((1, 7), s.clone())]));
        assert_eq!(store.load(None).unwrap().len(), 2, "a standalone agent keeps every run's sessions");
        store.mark_clean(&HashMap::from([(0, 12)])).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.take_clean().unwrap(), Some(HashMap::from([(0, 12)])));
        assert_eq!(store.take_clean().unwrap(), None);
        assert_eq!(store.load(Some(1)).unwrap()[&(1, 7)], s);
        store.clear().unwrap();
        assert!(store.load(None).unwrap().is_empty());
    }
}
