//! The agent's session state: kept in memory by the worker that owns the session, written
//! through to a local LSM store (fjall) and to the compacted changelog topic
//! `story.agent-changelog`, keyed by run and session.
//!
//! On start the state is rebuilt before any event is processed. After a clean stop the
//! local store is complete (a `clean` mark records the changelog's end), so only changelog
//! records after that mark are applied; after a crash (no mark) the store is cleared and
//! rebuilt from the whole changelog. Either way the time it took is reported.

use crate::kafka::KafkaSettings;
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
}

impl SessionState {
    /// The beat number `id` got, if it is among the remembered events.
    pub fn beat_of(&self, id: u64) -> Option<u64> {
        let pos = self.applied.iter().position(|&a| a == id)?;
        Some(self.actions - (self.applied.len() - 1 - pos) as u64)
    }

    /// Records that `id` was applied.
    pub fn remember(&mut self, id: u64) {
        if self.applied.len() == REMEMBERED {
            self.applied.pop_front();
        }
        self.applied.push_back(id);
    }
}

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

fn state_err(e: impl std::fmt::Display) -> Error {
    Error::State(e.to_string())
}

const CLEAN: &str = "clean";

impl Store {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let keyspace = fjall::Config::new(dir).open().map_err(|e| Error::State(format!("{}: {e}", dir.display())))?;
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

    fn load(&self, run: u64) -> Result<HashMap<u64, SessionState>> {
        let mut out = HashMap::new();
        for kv in self.sessions.prefix(run.to_be_bytes()) {
            let (k, v) = kv.map_err(state_err)?;
            if let (Some((_, session)), Ok(s)) = (parse_key(&k), serde_json::from_slice(&v)) {
                out.insert(session, s);
            }
        }
        Ok(out)
    }
}

/// How the state was rebuilt on start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    /// `local store` or `changelog`.
    pub from: String,
    /// Sessions of this run found.
    pub sessions: u64,
    /// Changelog records applied.
    pub records: u64,
    /// From opening the store to ready to process.
    pub warm_start_ms: f64,
}

/// Opens the store in `dir` and rebuilds the state of `run` from it and the changelog.
pub async fn restore(
    kafka: &KafkaSettings,
    dir: &Path,
    run: u64,
) -> Result<(Store, HashMap<u64, SessionState>, Restored)> {
    let began = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| Error::State(format!("{}: {e}", dir.display())))?;
    let store = Store::open(dir)?;
    let clean = store.take_clean()?;
    let from = match &clean {
        Some(ends) => ends.clone(),
        None => {
            store.clear()?;
            HashMap::new()
        }
    };
    let records = kafka.read_to_end(topics::AGENT_CHANGELOG, &from, Duration::from_secs(30)).await?;
    let mut applied = 0;
    for r in &records {
        let Some((r_run, _)) = r.key.as_deref().and_then(parse_key) else { continue };
        if r_run != run {
            continue;
        }
        if let (Some(k), Some(v)) = (&r.key, &r.value) {
            store.sessions.insert(k, v).map_err(state_err)?;
            applied += 1;
        }
    }
    let sessions = store.load(run)?;
    let restored = Restored {
        from: if clean.is_some() { "local store".into() } else { "changelog".into() },
        sessions: sessions.len() as u64,
        records: applied,
        warm_start_ms: began.elapsed().as_secs_f64() * 1e3,
    };
    Ok((store, sessions, restored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_ids_give_their_beat_numbers() {
        let mut s = SessionState::default();
        for id in 10..40 {
            s.actions += 1;
            s.remember(id);
        }
        assert_eq!(s.applied.len(), REMEMBERED);
        assert_eq!(s.beat_of(39), Some(30));
        assert_eq!(s.beat_of(30), Some(21));
        assert_eq!(s.beat_of(10), None); // forgotten
    }

    #[test]
    fn the_store_keeps_state_per_run_and_a_clean_mark_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = SessionState { actions: 2, recent: ["a".into()].into(), applied: [5, 6].into() };
        store.put(&state_key(1, 7), &s).unwrap();
        store.put(&state_key(2, 7), &SessionState::default()).unwrap();
        assert_eq!(store.load(1).unwrap(), HashMap::from([(7, s.clone())]));
        store.mark_clean(&HashMap::from([(0, 12)])).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.take_clean().unwrap(), Some(HashMap::from([(0, 12)])));
        assert_eq!(store.take_clean().unwrap(), None);
        assert_eq!(store.load(1).unwrap()[&7], s);
        store.clear().unwrap();
        assert!(store.load(1).unwrap().is_empty());
    }
}
