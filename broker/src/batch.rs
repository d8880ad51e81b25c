//! Record batches (magic 2) as they travel on the wire and sit in the log: the fixed
//! 61-byte header read in place, checked (length, magic, CRC-32C), and rewritten only where
//! the broker owns a field (base offset, leader epoch, log-append time). Records stay as
//! the producer encoded them, compressed or not; only uncompressed batches are walked
//! record by record (for keys, timestamps and compaction).

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes before the records: offset, length, epoch, magic, CRC, attributes, deltas,
/// timestamps, producer, sequence and count.
pub const HEADER_LEN: usize = 61;
/// Bytes before the `batchLength` field's end: what `batchLength` does not count.
pub const LOG_OVERHEAD: usize = 12;

const LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    #[error("record batch magic {0} is not supported (only magic 2)")]
    Magic(i8),
    #[error("record batch CRC mismatch")]
    Crc,
    #[error("invalid record batch: {0}")]
    Invalid(&'static str),
}

/// One record batch, header fields read from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl Batch {
    /// Splits a produce request's `records` into batches, checking each one's framing,
    /// magic and CRC.
    pub fn split(mut records: Bytes) -> Result<Vec<Batch>, BatchError> {
        let mut out = Vec::new();
        while !records.is_empty() {
            if records.len() < HEADER_LEN {
                return Err(BatchError::Truncated("shorter than a batch header"));
            }
            let length = i32_at(&records, LENGTH);
            let total = usize::try_from(length)
                .ok()
                .and_then(|l| l.checked_add(LOG_OVERHEAD))
                .filter(|t| *t >= HEADER_LEN)
                .ok_or(BatchError::Invalid("batch length out of range"))?;
            if total > records.len() {
                return Err(BatchError::Truncated("batch length past the end of the records"));
            }
            let batch = Batch { bytes: records.split_to(total) };
            batch.check()?;
            out.push(batch);
        }
        Ok(out)
    }

    /// A batch already in the log (no checks).
    #[cfg(test)]
    pub(crate) fn from_stored(bytes: Bytes) -> Self {
        Self { bytes }
    }

    fn check(&self) -> Result<(), BatchError> {
        let b = &self.bytes[..];
        let magic = b[MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        let stored = u32::from_be_bytes([b[CRC], b[CRC + 1], b[CRC + 2], b[CRC + 3]]);
        if crc32c::crc32c(&b[ATTRIBUTES..]) != stored {
            return Err(BatchError::Crc);
        }
        if self.last_offset_delta() < 0 || self.records_count() < 0 {
            return Err(BatchError::Invalid("negative record count"));
        }
        if self.is_control() {
            return Err(BatchError::Invalid("control batches are written by the broker only"));
        }
        Ok(())
    }

    /// The batch's bytes, as stored and served.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// Size on the wire, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Never true for a checked batch (a header is always there).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(&self.bytes, 0)
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(&self.bytes, LAST_OFFSET_DELTA)
    }
    /// The offset of the batch's last record (`i64::MAX` at most, whatever a client wrote
    /// as its base offset before the broker assigned one).
    pub fn last_offset(&self) -> i64 {
        self.base_offset().saturating_add(i64::from(self.last_offset_delta()))
    }
    pub fn records_count(&self) -> i32 {
        i32_at(&self.bytes, RECORDS_COUNT)
    }
    fn attributes(&self) -> i16 {
        i16_at(&self.bytes, ATTRIBUTES)
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes() & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(&self.bytes, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(&self.bytes, MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(&self.bytes, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16_at(&self.bytes, PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(&self.bytes, BASE_SEQUENCE)
    }
    /// The sequence of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let base = i64::from(self.base_sequence());
        let last = base + i64::from(self.last_offset_delta());
        i32::try_from(last % (i64::from(i32::MAX) + 1)).unwrap_or(0)
    }

    /// The batch as the log stores it: given its base offset and leader epoch 0, and, for a
    /// topic with `message.timestamp.type = LogAppendTime`, the append time as its
    /// timestamp. The CRC is recomputed when a covered field changed.
    pub fn assign(&self, base_offset: i64, log_append_time: Option<i64>) -> Batch {
        let mut b = BytesMut::from(&self.bytes[..]);
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&0i32.to_be_bytes());
        if let Some(now) = log_append_time {
            let attrs = self.attributes() | TIMESTAMP_TYPE_BIT;
            b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
            b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
            let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
            b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        }
        Batch { bytes: b.freeze() }
    }

    /// The records of an uncompressed batch, in order; `None` for a compressed one (its
    /// records are not read by the broker).
    pub fn records(&self) -> Option<Result<Vec<RecordRef>, BatchError>> {
        if self.compression() != 0 {
            return None;
        }
        Some(walk(&self.bytes, self.records_count(), self.last_offset_delta()))
    }

    /// A copy of this uncompressed batch holding only the records `keep` selects. Base
    /// offset, last offset delta, producer and sequence fields are kept, as Kafka's
    /// cleaner keeps them, so offsets and producer state stay exact.
    pub fn retain(&self, records: &[RecordRef], keep: impl Fn(&RecordRef) -> bool) -> Batch {
        let kept: Vec<&RecordRef> = records.iter().filter(|r| keep(r)).collect();
        let body: usize = kept.iter().map(|r| r.range.len()).sum();
        let mut b = BytesMut::with_capacity(HEADER_LEN + body);
        b.put_slice(&self.bytes[..HEADER_LEN]);
        for r in &kept {
            b.put_slice(&self.bytes[r.range.clone()]);
        }
        let length = i32::try_from(b.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
        b[LENGTH..LENGTH + 4].copy_from_slice(&length.to_be_bytes());
        let count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
        b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        Batch { bytes: b.freeze() }
    }
}

/// Where one record sits in its batch, and what the broker reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// Byte range of the whole record (length prefix included) in the batch.
    pub range: std::ops::Range<usize>,
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// `None` for a null key.
    pub key: Option<std::ops::Range<usize>>,
    /// A null value: a tombstone on a compacted topic.
    pub null_value: bool,
}

fn varint(b: &[u8], at: &mut usize) -> Result<i64, BatchError> {
    let mut shift = 0u32;
    let mut raw: u64 = 0;
    loop {
        let byte = *b.get(*at).ok_or(BatchError::Truncated("varint past the end"))?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(BatchError::Invalid("varint too long"));
        }
    }
    // Zig-zag decoding.
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn len_field(b: &[u8], at: &mut usize, what: &'static str) -> Result<Option<std::ops::Range<usize>>, BatchError> {
    let n = varint(b, at)?;
    if n < 0 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| BatchError::Invalid(what))?;
    let end = at.checked_add(n).filter(|e| *e <= b.len()).ok_or(BatchError::Truncated(what))?;
    let r = *at..end;
    *at = end;
    Ok(Some(r))
}

fn walk(b: &[u8], count: i32, last_delta: i32) -> Result<Vec<RecordRef>, BatchError> {
    let mut at = HEADER_LEN;
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(b.len()));
    for _ in 0..count {
        let start = at;
        let len = varint(b, &mut at)?;
        let len = usize::try_from(len).map_err(|_| BatchError::Invalid("negative record length"))?;
        let end = at.checked_add(len).filter(|e| *e <= b.len()).ok_or(BatchError::Truncated("record"))?;
        let rec = &b[..end];
        at += 1; // attributes (unused)
        let timestamp_delta = varint(rec, &mut at)?;
        let offset_delta = varint(rec, &mut at)?;
        // A record's offset is within its batch's range, so base + delta cannot overflow
        // and compaction and time lookups never point outside the batch.
        if !(0..=i64::from(last_delta)).contains(&offset_delta) {
            return Err(BatchError::Invalid("record offset delta outside the batch's range"));
        }
        let key = len_field(rec, &mut at, "record key")?;
        let null_value = len_field(rec, &mut at, "record value")?.is_none();
        out.push(RecordRef { range: start..end, offset_delta, timestamp_delta, key, null_value });
        at = end;
    }
    if at != b.len() {
        return Err(BatchError::Invalid("bytes after the last record"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// A batch as a client would send it: `keys` with values (`None` for a tombstone),
    /// offsets from 0, timestamps from `ts`.
    pub(crate) fn encode(keys: &[(&str, Option<&str>)], ts: i64, producer: (i64, i16, i32)) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id: producer.0,
                producer_epoch: producer.1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps records in one batch while offset - sequence is constant.
                sequence: if producer.0 < 0 { i as i32 - 1 } else { producer.2 + i as i32 },
                timestamp: ts + i as i64,
                key: Some(Bytes::copy_from_slice(k.as_bytes())),
                value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).expect("encode");
        buf.freeze()
    }

    #[test]
    fn a_client_batch_reads_back_its_header_and_records() {
        let bytes = encode(&[("a", Some("1")), ("b", None)], 1000, (7, 2, 40));
        let batches = Batch::split(bytes).expect("valid");
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!((b.base_offset(), b.last_offset_delta(), b.records_count()), (0, 1, 2));
        assert_eq!((b.producer_id(), b.producer_epoch(), b.base_sequence(), b.last_sequence()), (7, 2, 40, 41));
        assert_eq!((b.base_timestamp(), b.max_timestamp()), (1000, 1001));
        let recs = b.records().expect("uncompressed").expect("walks");
        assert_eq!(recs.len(), 2);
        assert_eq!(&b.bytes()[recs[0].key.clone().expect("key")], b"a");
        assert!(!recs[0].null_value && recs[1].null_value);
        assert_eq!(recs[1].offset_delta, 1);
    }

    #[test]
    fn a_flipped_byte_fails_the_crc_and_a_short_batch_is_truncated() {
        let bytes = encode(&[("a", Some("1"))], 1, (-1, -1, -1));
        let mut bad = BytesMut::from(&bytes[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(Batch::split(bad.freeze()), Err(BatchError::Crc));
        assert!(matches!(Batch::split(bytes.slice(..bytes.len() - 1)), Err(BatchError::Truncated(_))));
        let mut magic = BytesMut::from(&bytes[..]);
        magic[MAGIC] = 1;
        assert_eq!(Batch::split(magic.freeze()), Err(BatchError::Magic(1)));
    }

    #[test]
    fn assigning_an_offset_and_append_time_keeps_the_batch_valid() {
        let b = Batch::split(encode(&[("a", Some("1")), ("b", Some("2"))], 5, (-1, -1, -1))).expect("valid");
        let stored = b[0].assign(42, Some(99));
        assert_eq!((stored.base_offset(), stored.last_offset()), (42, 43));
        assert!(stored.is_log_append_time());
        assert_eq!(stored.max_timestamp(), 99);
        // A stored batch is still a valid client batch (consumers check the CRC).
        Batch::split(stored.bytes().clone()).expect("CRC recomputed");
    }

    /// `bytes` with its CRC made right again after a field was changed.
    fn resealed(mut b: BytesMut) -> Bytes {
        let crc = crc32c::crc32c(&b[ATTRIBUTES..]);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }

    #[test]
    fn a_clients_base_offset_near_the_end_of_the_range_does_not_overflow() {
        // Found by the `batches` fuzz target: base offset i64::MAX - 196, last offset delta 255.
        let mut b = BytesMut::from(&encode(&[("a", Some("1"))], 1, (-1, -1, -1))[..]);
        b[0..8].copy_from_slice(&(i64::MAX - 196).to_be_bytes());
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&255i32.to_be_bytes());
        let batch = &Batch::split(resealed(b)).expect("framing and CRC hold")[0];
        assert_eq!(batch.last_offset(), i64::MAX);
    }

    #[test]
    fn a_record_whose_offset_delta_is_outside_its_batch_is_refused() {
        // Two records, the second claiming offset delta 1000 in a batch whose last is 1.
        let mut b = BytesMut::from(&encode(&[("a", Some("1")), ("b", Some("2"))], 1, (-1, -1, -1))[..]);
        let recs = Batch::split(b.clone().freeze()).expect("valid")[0].records().expect("plain").expect("walks");
        // The second record is its length, attributes, timestamp delta 0, then offset delta
        // 1 (zig-zag 2), one byte each; 0x7f in its place is zig-zag -64.
        let at = recs[1].range.start + 3;
        assert_eq!(b[at], 2, "the offset delta of record 1 is 1");
        b[at] = 0x7f;
        let batch = &Batch::split(resealed(b)).expect("framing and CRC hold")[0];
        assert_eq!(batch.records(), Some(Err(BatchError::Invalid("record offset delta outside the batch's range"))));
    }

    #[test]
    fn retaining_records_keeps_offsets_and_a_valid_crc() {
        let b = &Batch::split(encode(&[("a", Some("1")), ("b", Some("2")), ("a", Some("3"))], 5, (-1, -1, -1)))
            .expect("valid")[0];
        let recs = b.records().expect("uncompressed").expect("walks");
        let kept = b.retain(&recs, |r| r.offset_delta != 0);
        let again = &Batch::split(kept.bytes().clone()).expect("still valid")[0];
        assert_eq!((again.records_count(), again.last_offset_delta()), (2, 2));
        let recs = again.records().expect("uncompressed").expect("walks");
        assert_eq!(recs.iter().map(|r| r.offset_delta).collect::<Vec<_>>(), vec![1, 2]);
    }
}
