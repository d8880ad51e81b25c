//! The stream job's state in `story.streamjob-changelog`: one record per session (its open
//! windows, pattern progress and the input offset they include; a tombstone when it has
//! none), written as the state changes and read back when a partition is assigned.

use super::{Key, StreamJob};
use crate::runtime::SideRecord;
use crate::topics;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;

impl StreamJob {
    /// The changelog record of `key`: its open windows, pattern progress and the input
    /// offset they include, or `None` (a tombstone) when it has none.
    fn snapshot(&self, key: Key) -> Option<Vec<u8>> {
        let windows: Vec<(u64, u64)> =
            self.windows.get(&key).map(|w| w.iter().map(|(s, c)| (*s, *c)).collect()).unwrap_or_default();
        let progress: BTreeMap<String, Vec<(u64, u64)>> = self
            .patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let seen = self.progress.get(&(key, i)).filter(|q| !q.is_empty())?;
                Some((p.name.clone(), seen.iter().copied().collect()))
            })
            .collect();
        if windows.is_empty() && progress.is_empty() {
            return None;
        }
        let state = KeyState {
            max_event_ms: self.max_event_ms,
            windows,
            progress,
            offset: self.last_offset.get(&key).copied(),
        };
        serde_json::to_vec(&state).ok()
    }

    /// The changelog records of the sessions touched since the last call, each to the
    /// partition its events come from (co-partitioned with the input); a session with
    /// nothing left open gets a tombstone and is forgotten.
    pub fn changelog_records(&mut self) -> Vec<SideRecord> {
        let touched = std::mem::take(&mut self.touched);
        touched
            .into_iter()
            .map(|key| {
                let value = self.snapshot(key);
                let partition = self.partition_of.get(&key).copied();
                if value.is_none() {
                    self.forget(key);
                }
                SideRecord {
                    topic: topics::STREAMJOB_CHANGELOG,
                    key: changelog_key(key).to_vec(),
                    value: value.unwrap_or_default(),
                    partition,
                }
            })
            .collect()
    }

    /// Takes over `partitions` of the input: drops the sessions of partitions no longer
    /// owned, and rebuilds those of newly owned ones from their changelog `records`
    /// (partition, key, value; the last per key wins, an empty value is a tombstone). The
    /// watermark moves up to the newest restored; each restored window gets its timer again.
    /// Returns how many sessions were restored.
    pub fn restore<'r>(
        &mut self,
        partitions: &[i32],
        records: impl IntoIterator<Item = (i32, &'r [u8], &'r [u8])>,
    ) -> usize {
        let assigned: BTreeSet<i32> = partitions.iter().copied().collect();
        let revoked: Vec<i32> = self.owned.difference(&assigned).copied().collect();
        if !revoked.is_empty() {
            let gone: Vec<Key> =
                self.partition_of.iter().filter(|(_, p)| revoked.contains(p)).map(|(k, _)| *k).collect();
            for key in gone {
                self.forget(key);
            }
        }
        let mut latest: HashMap<Key, (i32, &[u8])> = HashMap::new();
        for (partition, key, value) in records {
            if assigned.contains(&partition)
                && !self.owned.contains(&partition)
                && let Some(key) = parse_changelog_key(key)
            {
                latest.insert(key, (partition, value));
            }
        }
        self.owned = assigned;
        let mut restored = 0;
        for (key, (partition, value)) in latest {
            let Ok(state) = serde_json::from_slice::<KeyState>(value) else { continue }; // a tombstone
            self.forget(key);
            self.partition_of.insert(key, partition);
            self.max_event_ms = self.max_event_ms.max(state.max_event_ms);
            let open = self.windows.entry(key).or_default();
            for (start, count) in state.windows {
                open.insert(start, count);
                self.timers.insert((start + self.window_ms, key, start));
            }
            for (i, p) in self.patterns.iter().enumerate() {
                if let Some(seen) = state.progress.get(&p.name) {
                    self.progress.insert((key, i), seen.iter().copied().collect());
                }
            }
            if let Some(o) = state.offset {
                self.restored_upto.insert(key, o);
                self.last_offset.insert(key, o);
            }
            restored += 1;
        }
        self.stats.restored.fetch_add(restored as u64, Ordering::Relaxed);
        restored
    }

    /// Drops everything kept for `key`.
    fn forget(&mut self, key: Key) {
        if let Some(open) = self.windows.remove(&key) {
            for (start, _) in open {
                self.timers.remove(&(start + self.window_ms, key, start));
            }
        }
        self.progress.retain(|(k, _), _| *k != key);
        self.partition_of.remove(&key);
        self.restored_upto.remove(&key);
        self.last_offset.remove(&key);
    }
}

/// A session's state as its changelog record holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct KeyState {
    /// The job's highest event time when written (the watermark is rebuilt from it).
    pub(super) max_event_ms: u64,
    /// Open windows: (start, count).
    pub(super) windows: Vec<(u64, u64)>,
    /// Per pattern name, the (event ms, id) of actions not yet in a match.
    pub(super) progress: BTreeMap<String, Vec<(u64, u64)>>,
    /// The input offset of the last event of this session the state includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) offset: Option<i64>,
}

/// The changelog key of a session: run then session, big-endian.
pub(super) fn changelog_key((run, session): Key) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&session.to_be_bytes());
    k
}

fn parse_changelog_key(k: &[u8]) -> Option<Key> {
    let (run, session) = k.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*run), u64::from_be_bytes(session.try_into().ok()?)))
}
