//! One partition's log: batches in offset order with their byte positions (the offset
//! index: a binary search finds the batch holding any offset), the log start and end
//! offsets, idempotent-producer state, retention, compaction, and the notification every
//! parked fetch waits on. The end offset is the high watermark: a single node has no
//! followers to wait for.

use crate::batch::Batch;
use crate::store::Segment;
use std::collections::{HashMap, VecDeque};
use tokio::sync::watch;

/// How many recent batches per producer are remembered for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
const PRODUCER_BATCHES: usize = 5;

/// How many batches at the log's tail [`Log::find`] scans before it searches.
const TAIL_SCAN: usize = 8;

/// A batch in the log and where it sits.
#[derive(Debug, Clone)]
struct Stored {
    batch: Batch,
    /// The batch's last offset, kept beside it so the index search never reads batch bytes.
    last_offset: i64,
    /// Bytes of the log before this batch (since the log was created): the position index.
    pos: u64,
    /// Wall-clock ms when the broker appended it.
    append_ms: i64,
}

/// A producer's last batches on this partition.
#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    /// `(first sequence, last sequence, base offset)`, newest last.
    recent: VecDeque<(i32, i32, i64)>,
}

/// What a produce of one batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this base offset.
    New(i64),
    /// The same batch was stored before, at this base offset: nothing was appended.
    Duplicate(i64),
}

/// Why the log refused a batch; each maps to one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    OutOfOrderSequence,
    InvalidProducerEpoch,
}

/// Retention and compaction settings of the partition's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Bytes kept per partition; `None` keeps any amount.
    pub bytes: Option<u64>,
    /// How long a batch is kept after its newest timestamp; `None` keeps it forever.
    pub ms: Option<i64>,
    /// `cleanup.policy = compact`.
    pub compact: bool,
    /// How long a tombstone outlives its append on a compacted topic.
    pub delete_retention_ms: i64,
}

/// A partition's log. Lock it briefly: every operation here is in memory (an attached
/// segment file is appended to, never read, while serving).
#[derive(Debug)]
pub struct Log {
    batches: VecDeque<Stored>,
    start: i64,
    end: i64,
    /// Position after the last batch.
    end_pos: u64,
    /// Batch bytes appended since the last compaction pass.
    dirty: u64,
    producers: HashMap<i64, ProducerEntry>,
    segment: Option<Segment>,
}

/// One partition: its log and the watch that tells parked fetches its end moved.
#[derive(Debug)]
pub struct Partition {
    pub(crate) log: std::sync::Mutex<Log>,
    end_tx: watch::Sender<i64>,
}

impl Partition {
    pub(crate) fn new(log: Log) -> Self {
        let end = log.end;
        Self { log: std::sync::Mutex::new(log), end_tx: watch::channel(end).0 }
    }

    /// Locks the log (a poisoned lock is taken over: the log's invariants hold between
    /// statements that could panic).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver that changes whenever the log end moves.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.end_tx.subscribe()
    }

    /// Wakes every parked fetch on this partition.
    pub(crate) fn notify(&self, end: i64) {
        self.end_tx.send_replace(end);
    }
}

/// What a read of the log returned.
#[derive(Debug, Clone)]
pub struct Read {
    /// Whole batches, the first holding the fetch offset.
    pub batches: Vec<bytes::Bytes>,
    pub high_watermark: i64,
    pub log_start: i64,
}

impl Log {
    /// An empty log.
    pub fn new(segment: Option<Segment>) -> Self {
        Self { batches: VecDeque::new(), start: 0, end: 0, end_pos: 0, dirty: 0, producers: HashMap::new(), segment }
    }

    /// Rebuilds a log from batches read back from disk (already offset-assigned).
    pub fn restore(segment: Option<Segment>, start: i64, batches: Vec<(Batch, i64)>) -> Self {
        let mut log = Self::new(segment);
        log.start = start;
        for (batch, append_ms) in batches {
            if batch.last_offset() < start {
                continue;
            }
            log.end = batch.last_offset() + 1;
            log.remember_producer(&batch);
            log.push(batch, append_ms);
        }
        log.end = log.end.max(start);
        log
    }

    fn push(&mut self, batch: Batch, append_ms: i64) {
        let len = batch.len() as u64;
        self.batches.push_back(Stored { last_offset: batch.last_offset(), batch, pos: self.end_pos, append_ms });
        self.end_pos += len;
        self.dirty += len;
    }

    pub fn start(&self) -> i64 {
        self.start
    }
    /// The next offset to be written, which is also the high watermark.
    pub fn end(&self) -> i64 {
        self.end
    }
    /// Bytes held.
    pub fn size(&self) -> u64 {
        self.batches.front().map_or(0, |f| self.end_pos - f.pos)
    }
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// Index of the first batch whose last offset is at or past `offset` (O(log n)). A
    /// caught-up consumer asks for the log end or a batch near it, so the tail is looked at
    /// first.
    fn find(&self, offset: i64) -> usize {
        let n = self.batches.len();
        if offset >= self.end {
            return n;
        }
        let tail = n.saturating_sub(TAIL_SCAN);
        if self.batches.get(tail).is_some_and(|s| s.last_offset < offset) {
            return tail + self.batches.range(tail..).take_while(|s| s.last_offset < offset).count();
        }
        self.batches.partition_point(|s| s.last_offset < offset)
    }

    /// Whether `offset` can be fetched: between the log start and end, both included.
    pub fn in_range(&self, offset: i64) -> bool {
        offset >= self.start && offset <= self.end
    }

    /// Bytes a fetch from `offset` would find now (whole batches from the one holding it).
    pub fn available(&self, offset: i64) -> u64 {
        match self.batches.get(self.find(offset)) {
            Some(s) => self.end_pos - s.pos,
            None => 0,
        }
    }

    /// Whole batches from the one holding `offset`, at least one when there is one, then
    /// as many as fit in `max_bytes` (KIP-74: the first batch is served even when larger).
    pub fn read(&self, offset: i64, max_bytes: u64) -> Read {
        let mut batches = Vec::new();
        let mut taken = 0u64;
        for s in self.batches.range(self.find(offset)..) {
            let len = s.batch.len() as u64;
            if !batches.is_empty() && taken + len > max_bytes {
                break;
            }
            taken += len;
            batches.push(s.batch.bytes().clone());
        }
        Read { batches, high_watermark: self.end, log_start: self.start }
    }

    /// Checks a producer's batch against its sequence and epoch; `Ok(None)` appends it,
    /// `Ok(Some(offset))` is a duplicate of a batch already stored there.
    pub fn check_sequence(&self, batch: &Batch) -> Result<Option<i64>, Refused> {
        let pid = batch.producer_id();
        if pid < 0 {
            return Ok(None);
        }
        let Some(entry) = self.producers.get(&pid) else {
            // No state (a new producer, or its batches aged out): any sequence is accepted,
            // as Kafka does.
            return Ok(None);
        };
        let (epoch, first) = (batch.producer_epoch(), batch.base_sequence());
        if epoch < entry.epoch {
            return Err(Refused::InvalidProducerEpoch);
        }
        if epoch > entry.epoch {
            return if first == 0 { Ok(None) } else { Err(Refused::OutOfOrderSequence) };
        }
        let last = batch.last_sequence();
        if let Some(&(_, _, offset)) = entry.recent.iter().find(|(f, l, _)| *f == first && *l == last) {
            return Ok(Some(offset));
        }
        let expected = entry.recent.back().map_or(first, |(_, l, _)| if *l == i32::MAX { 0 } else { l + 1 });
        if first != expected {
            return Err(Refused::OutOfOrderSequence);
        }
        Ok(None)
    }

    fn remember_producer(&mut self, batch: &Batch) {
        let pid = batch.producer_id();
        if pid < 0 {
            return;
        }
        let entry = self.producers.entry(pid).or_default();
        if batch.producer_epoch() != entry.epoch {
            entry.recent.clear();
            entry.epoch = batch.producer_epoch();
        }
        entry.recent.push_back((batch.base_sequence(), batch.last_sequence(), batch.base_offset()));
        while entry.recent.len() > PRODUCER_BATCHES {
            entry.recent.pop_front();
        }
    }

    /// Appends a checked batch at the log end; returns the stored batch's base offset.
    /// With a segment attached, the batch is written to it before this returns.
    pub fn append(&mut self, batch: &Batch, now_ms: i64, log_append_time: bool) -> std::io::Result<i64> {
        let base = self.end;
        let stored = batch.assign(base, log_append_time.then_some(now_ms));
        if let Some(seg) = self.segment.as_mut() {
            seg.append(&stored, now_ms)?;
        }
        self.end = stored.last_offset() + 1;
        self.remember_producer(&stored);
        self.push(stored, now_ms);
        Ok(base)
    }

    /// Moves the log start to `offset` (DeleteRecords); `-1` means the high watermark.
    /// Returns the new log start, or `None` when `offset` is past the end.
    pub fn delete_records(&mut self, offset: i64) -> Option<i64> {
        let offset = if offset == -1 { self.end } else { offset };
        if offset > self.end || offset < 0 {
            return None;
        }
        if offset > self.start {
            self.start = offset;
            while self.batches.front().is_some_and(|s| s.last_offset < offset) {
                self.batches.pop_front();
            }
            self.persist_start();
        }
        Some(self.start)
    }

    /// Records the log start on disk, and rewrites the file once it holds as much dead
    /// data as live.
    fn persist_start(&mut self) {
        let live = self.size();
        let Self { segment, batches, start, .. } = self;
        if let Some(seg) = segment.as_mut() {
            if seg.bytes() > 2 * live + (1 << 20) {
                let all: Vec<(&Batch, i64)> = batches.iter().map(|s| (&s.batch, s.append_ms)).collect();
                seg.rewrite(*start, &all);
            } else {
                seg.set_start(*start);
            }
        }
    }

    /// Applies retention: the oldest batches go while the log is over its byte bound or
    /// their newest timestamp is older than the time bound. The newest batch always stays
    /// (as Kafka keeps its active segment). Returns the bytes freed.
    pub fn enforce_retention(&mut self, r: &Retention, now_ms: i64) -> u64 {
        let before = self.size();
        while self.batches.len() > 1 {
            let Some(front) = self.batches.front() else { break };
            let over_bytes = r.bytes.is_some_and(|b| self.size() > b);
            let expired = r.ms.is_some_and(|ms| front.batch.max_timestamp().max(0) + ms < now_ms);
            if !(over_bytes || expired) {
                break;
            }
            self.batches.pop_front();
            self.start = self.start.max(self.batches.front().map_or(self.end, |s| s.batch.base_offset()));
        }
        let freed = before - self.size();
        if freed > 0 {
            self.persist_start();
        }
        freed
    }

    /// Whether enough was written since the last pass for compaction to be worth it: half
    /// the log is new (Kafka's `min.cleanable.dirty.ratio` 0.5), and at least 4 KiB.
    pub fn wants_compaction(&self) -> bool {
        self.batches.len() > 1 && self.dirty >= 4096 && self.dirty * 2 >= self.size()
    }

    /// One compaction pass: every record whose key has a later record goes, and so does a
    /// latest record that is a tombstone older than `delete_retention_ms`. The newest batch
    /// is left as it is; compressed batches are kept whole (their records are not read),
    /// and emptied batches are dropped. The log start and every kept offset are unchanged.
    /// Returns the records removed.
    pub fn compact(&mut self, now_ms: i64, delete_retention_ms: i64) -> usize {
        self.dirty = 0;
        let mut latest: HashMap<&[u8], i64> = HashMap::new();
        let mut parsed = Vec::with_capacity(self.batches.len());
        for s in &self.batches {
            let recs = s.batch.records().and_then(Result::ok);
            if let Some(recs) = &recs {
                for r in recs {
                    if let Some(k) = &r.key {
                        latest.insert(&s.batch.bytes()[k.clone()], s.batch.base_offset() + r.offset_delta);
                    }
                }
            }
            parsed.push(recs);
        }
        let last = self.batches.len().saturating_sub(1);
        let mut removed = 0;
        let mut kept = VecDeque::with_capacity(self.batches.len());
        for (i, (s, recs)) in self.batches.iter().zip(parsed).enumerate() {
            let Some(recs) = recs.filter(|_| i < last) else {
                kept.push_back(s.clone());
                continue;
            };
            let base = s.batch.base_offset();
            let keep = |r: &crate::batch::RecordRef| match &r.key {
                None => true,
                Some(k) => {
                    let newest = latest.get(&s.batch.bytes()[k.clone()]) == Some(&(base + r.offset_delta));
                    newest && !(r.null_value && s.append_ms + delete_retention_ms < now_ms)
                }
            };
            let n = recs.iter().filter(|r| keep(r)).count();
            removed += recs.len() - n;
            if n == recs.len() {
                kept.push_back(s.clone());
            } else if n > 0 {
                let batch = s.batch.retain(&recs, keep);
                kept.push_back(Stored { last_offset: batch.last_offset(), batch, pos: 0, append_ms: s.append_ms });
            }
        }
        drop(latest);
        if removed > 0 {
            // Positions are rebuilt; they only need to be monotone and to measure bytes.
            let mut pos = 0;
            for s in &mut kept {
                s.pos = pos;
                pos += s.batch.len() as u64;
            }
            self.end_pos = pos;
            self.batches = kept;
            if let Some(seg) = self.segment.as_mut() {
                let all: Vec<(&Batch, i64)> = self.batches.iter().map(|s| (&s.batch, s.append_ms)).collect();
                seg.rewrite(self.start, &all);
            }
        }
        removed
    }

    /// The offset of the first record with a timestamp at or after `ts`, and that
    /// timestamp; `None` when there is none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        let i = self.batches.iter().position(|s| s.batch.max_timestamp() >= ts)?;
        let s = &self.batches[i];
        let b = &s.batch;
        if b.is_log_append_time() {
            return Some((b.base_offset().max(self.start), b.max_timestamp()));
        }
        match b.records().and_then(Result::ok) {
            Some(recs) => recs.iter().find_map(|r| {
                let (offset, t) =
                    (b.base_offset() + r.offset_delta, b.base_timestamp().saturating_add(r.timestamp_delta));
                (t >= ts && offset >= self.start).then_some((offset, t))
            }),
            None => Some((b.base_offset().max(self.start), b.max_timestamp())),
        }
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let s = self.batches.iter().max_by_key(|s| s.batch.max_timestamp())?;
        Some((s.batch.last_offset(), s.batch.max_timestamp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode;

    fn batch(keys: &[(&str, Option<&str>)]) -> Batch {
        Batch::split(encode(keys, 1_000, (-1, -1, -1))).expect("valid").remove(0)
    }
    fn idem(n: usize, epoch: i16, seq: i32) -> Batch {
        let keys: Vec<(&str, Option<&str>)> = (0..n).map(|_| ("k", Some("v"))).collect();
        Batch::split(encode(&keys, 1_000, (9, epoch, seq))).expect("valid").remove(0)
    }

    #[test]
    fn offsets_are_assigned_in_order_and_any_offset_finds_its_batch() {
        let mut log = Log::new(None);
        for _ in 0..100 {
            log.append(&batch(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]), 0, false).expect("mem");
        }
        assert_eq!((log.start(), log.end()), (0, 300));
        // Every offset: those near the end are found by the tail scan, the rest by search.
        for offset in 0..300 {
            let read = log.read(offset, 1);
            let first = Batch::from_stored(read.batches[0].clone());
            assert!(first.base_offset() <= offset && offset <= first.last_offset(), "offset {offset}");
            assert_eq!(read.batches.len(), 1, "max_bytes 1 still serves one whole batch");
        }
        assert!(log.read(300, 1 << 20).batches.is_empty());
        assert!(log.in_range(300) && !log.in_range(301) && !log.in_range(-1));
        assert_eq!(log.available(297), log.read(297, u64::MAX).batches.iter().map(|b| b.len() as u64).sum::<u64>());
    }

    #[test]
    fn a_duplicate_batch_answers_its_first_offset_and_a_gap_is_out_of_order() {
        let mut log = Log::new(None);
        let first = idem(2, 0, 0);
        assert_eq!(log.check_sequence(&first), Ok(None));
        assert_eq!(log.append(&first, 0, false).expect("mem"), 0);
        let second = idem(3, 0, 2);
        assert_eq!(log.check_sequence(&second), Ok(None));
        assert_eq!(log.append(&second, 0, false).expect("mem"), 2);
        // A retry of either stored batch is a duplicate, answered with its offset.
        assert_eq!(log.check_sequence(&first), Ok(Some(0)));
        assert_eq!(log.check_sequence(&second), Ok(Some(2)));
        // Sequence 6 after 4 skips 5.
        assert_eq!(log.check_sequence(&idem(1, 0, 6)), Err(Refused::OutOfOrderSequence));
        assert_eq!(log.check_sequence(&idem(1, 0, 5)), Ok(None));
        // An older epoch is fenced; a newer one must start at sequence 0.
        assert_eq!(log.check_sequence(&idem(1, 1, 3)), Err(Refused::OutOfOrderSequence));
        assert_eq!(log.check_sequence(&idem(1, 1, 0)), Ok(None));
        log.append(&idem(1, 1, 0), 0, false).expect("mem");
        assert_eq!(log.check_sequence(&idem(1, 0, 5)), Err(Refused::InvalidProducerEpoch));
    }

    #[test]
    fn retention_by_bytes_and_time_moves_the_log_start_and_keeps_the_newest_batch() {
        let mut log = Log::new(None);
        for _ in 0..10 {
            log.append(&batch(&[("a", Some("1"))]), 0, false).expect("mem");
        }
        let one = log.size() / 10;
        let r = Retention { bytes: Some(one * 3), ms: None, compact: false, delete_retention_ms: 0 };
        assert_eq!(log.enforce_retention(&r, 0), one * 7);
        assert_eq!((log.start(), log.end(), log.batch_count()), (7, 10, 3));
        assert!(!log.in_range(6));
        // Batches' timestamps are 1000 ms; a 1 s bound at 3000 ms expires all but the newest.
        let r = Retention { bytes: None, ms: Some(1_000), compact: false, delete_retention_ms: 0 };
        log.enforce_retention(&r, 3_000);
        assert_eq!((log.start(), log.batch_count()), (9, 1));
    }

    #[test]
    fn delete_records_moves_the_start_inside_a_batch() {
        let mut log = Log::new(None);
        log.append(&batch(&[("a", Some("1")), ("b", Some("2"))]), 0, false).expect("mem");
        log.append(&batch(&[("c", Some("3"))]), 0, false).expect("mem");
        assert_eq!(log.delete_records(1), Some(1));
        assert!(!log.in_range(0) && log.in_range(1));
        assert_eq!(log.delete_records(5), None);
        assert_eq!(log.delete_records(-1), Some(3));
        assert_eq!(log.batch_count(), 0);
    }

    #[test]
    fn compaction_keeps_the_newest_value_per_key_and_drops_old_tombstones() {
        let mut log = Log::new(None);
        log.append(&batch(&[("a", Some("1")), ("b", Some("1"))]), 0, false).expect("mem"); // 0, 1
        log.append(&batch(&[("a", Some("2")), ("c", Some("1"))]), 0, false).expect("mem"); // 2, 3
        log.append(&batch(&[("b", None)]), 0, false).expect("mem"); // 4: tombstone for b
        log.append(&batch(&[("d", Some("1"))]), 0, false).expect("mem"); // 5: the newest batch
        // Tombstones younger than delete.retention.ms stay.
        assert_eq!(log.compact(10, 100), 2);
        let keys = |log: &Log| {
            let r = log.read(0, u64::MAX);
            r.batches
                .iter()
                .flat_map(|b| {
                    let b = Batch::from_stored(b.clone());
                    let recs = b.records().expect("plain").expect("walks");
                    recs.iter().map(|r| b.base_offset() + r.offset_delta).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&log), vec![2, 3, 4, 5]);
        assert_eq!((log.start(), log.end()), (0, 6));
        // Once older than delete.retention.ms, the tombstone goes too.
        assert_eq!(log.compact(1_000, 100), 1);
        assert_eq!(keys(&log), vec![2, 3, 5]);
    }

    #[test]
    fn a_timestamp_finds_the_first_record_at_or_after_it() {
        let mut log = Log::new(None);
        log.append(&batch(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]), 0, false).expect("mem");
        // Record timestamps are 1000, 1001, 1002.
        assert_eq!(log.offset_for_timestamp(1001), Some((1, 1001)));
        assert_eq!(log.offset_for_timestamp(5000), None);
        assert_eq!(log.max_timestamp(), Some((2, 1002)));
    }
}
