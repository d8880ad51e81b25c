//! Produce, fetch and offsets: the log side of the protocol (appends with their checks,
//! delayed fetches, list offsets, producer ids, leader epochs).

use super::*;

impl Handler<'_> {
    pub(super) fn produce(&self, req: ProduceRequest) -> Option<ProduceResponse> {
        let acks = req.acks;
        let mut r = ProduceResponse::default();
        if req.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
            // No transactions here: InitProducerId refuses transactional producers first.
            for t in req.topic_data {
                let mut tr = TopicProduceResponse::default();
                tr.name = t.name;
                tr.partition_responses = t
                    .partition_data
                    .iter()
                    .map(|p| partition_error(p.index, E::TransactionalIdAuthorizationFailed.code(), None))
                    .collect();
                r.responses.push(tr);
            }
            return (acks != 0).then_some(r);
        }
        for t in req.topic_data {
            let topic = self.topic(t.name.0.as_str());
            let mut tr = TopicProduceResponse::default();
            tr.name = t.name.clone();
            for pd in t.partition_data {
                let pr = match (&topic, ![-1, 0, 1].contains(&acks)) {
                    (_, true) => partition_error(pd.index, E::InvalidRequiredAcks.code(), None),
                    (None, _) => partition_error(pd.index, E::UnknownTopicOrPartition.code(), None),
                    (Some(topic), _) => match topic.partition(pd.index) {
                        None => partition_error(pd.index, E::UnknownTopicOrPartition.code(), None),
                        Some(p) => self.append(topic, p, pd.index, pd.records),
                    },
                };
                tr.partition_responses.push(pr);
            }
            r.responses.push(tr);
        }
        (acks != 0).then_some(r)
    }

    pub(super) fn append(
        &self,
        topic: &Topic,
        p: &Partition,
        index: i32,
        records: Option<Bytes>,
    ) -> PartitionProduceResponse {
        let Some(records) = records else {
            return partition_error(index, E::CorruptMessage.code(), Some("no records"));
        };
        let batches = match Batch::split(records) {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => return partition_error(index, E::CorruptMessage.code(), Some("no record batch")),
            Err(e @ BatchError::Magic(_)) => {
                return partition_error(index, E::UnsupportedForMessageFormat.code(), Some(&e.to_string()));
            }
            Err(e) => return partition_error(index, E::CorruptMessage.code(), Some(&e.to_string())),
        };
        let cfg = &topic.config;
        for b in &batches {
            if b.len() > usize::try_from(cfg.max_message_bytes).unwrap_or(usize::MAX) {
                let why =
                    format!("record batch of {} bytes is over max.message.bytes {}", b.len(), cfg.max_message_bytes);
                return partition_error(index, E::MessageTooLarge.code(), Some(&why));
            }
            // As Kafka's log validator: a client's batch holds exactly the offsets it spans.
            if i64::from(b.records_count()) != i64::from(b.last_offset_delta()) + 1 {
                let why = format!(
                    "inconsistent batch offset range and record count: {} records, last offset delta {}",
                    b.records_count(),
                    b.last_offset_delta()
                );
                return partition_error(index, E::CorruptMessage.code(), Some(&why));
            }
            if b.is_transactional() {
                return partition_error(
                    index,
                    E::InvalidRecord.code(),
                    Some("transactional batches are not supported"),
                );
            }
            if cfg.retention.compact
                && let Some(Ok(recs)) = b.records()
                && recs.iter().any(|r| r.key.is_none())
            {
                let why = format!("compacted topic {} cannot accept a record without a key", topic.name);
                return partition_error(index, E::InvalidRecord.code(), Some(&why));
            }
        }
        let now = crate::now_ms();
        let mut log = p.lock();
        let mut first = None;
        for b in &batches {
            let offset = match log.check_sequence(b) {
                Err(Refused::OutOfOrderSequence) => {
                    return partition_error(index, E::OutOfOrderSequenceNumber.code(), None);
                }
                Err(Refused::InvalidProducerEpoch) => {
                    return partition_error(index, E::InvalidProducerEpoch.code(), None);
                }
                Ok(Some(dup)) => dup,
                Ok(None) => match log.append(b, now, cfg.log_append_time) {
                    Ok(o) => o,
                    Err(e) => {
                        self.shared.log(&format!("cannot write {}-{index}: {e}", topic.name));
                        return partition_error(index, E::KafkaStorageError.code(), Some(&e.to_string()));
                    }
                },
            };
            first.get_or_insert(offset);
        }
        if cfg.retention.bytes.is_some_and(|b| log.size() > b) {
            log.enforce_retention(&cfg.retention, now);
        }
        let (end, start) = (log.end(), log.start());
        drop(log);
        p.notify(end);
        self.shared.stats.batches_in.fetch_add(batches.len() as u64, Ordering::Relaxed);
        let mut pr = PartitionProduceResponse::default();
        pr.index = index;
        pr.base_offset = first.unwrap_or(-1);
        pr.log_append_time_ms = if cfg.log_append_time { now } else { -1 };
        pr.log_start_offset = start;
        pr
    }

    pub(super) fn resolve_fetch(&self, req: &FetchRequest) -> Vec<Wanted> {
        let mut out = Vec::new();
        for t in &req.topics {
            let topic =
                if self.version >= 13 { self.shared.topic_by_id(t.topic_id) } else { self.topic(t.topic.0.as_str()) };
            let missing = if self.version >= 13 { E::UnknownTopicId.code() } else { E::UnknownTopicOrPartition.code() };
            for p in &t.partitions {
                let partition = match &topic {
                    None => Err(missing),
                    Some(topic) => topic.partition(p.partition).cloned().ok_or(E::UnknownTopicOrPartition.code()),
                };
                out.push(Wanted {
                    topic: topic.as_ref().map_or_else(|| t.topic.clone(), |x| TopicName(s(&x.name))),
                    topic_id: topic.as_ref().map_or(t.topic_id, |x| x.id),
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: u64::try_from(p.partition_max_bytes).unwrap_or(0),
                    partition,
                });
            }
        }
        out
    }

    /// Fetch with Kafka's delayed-fetch semantics: answered as soon as `min_bytes` are
    /// available across the partitions (or one has an error), else when `max_wait_ms`
    /// runs out. Each produce to a partition wakes the fetches parked on it.
    pub(super) async fn fetch(&self, req: FetchRequest) -> FetchResponse {
        if req.session_id != 0 {
            // No session was ever handed out (every response says session 0), so a
            // client naming one gets the error that makes it start over with full fetches.
            let mut r = FetchResponse::default();
            r.error_code = E::FetchSessionIdNotFound.code();
            return r;
        }
        let wanted = self.resolve_fetch(&req);
        let deadline = Instant::now() + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
        let min_bytes = u64::try_from(req.min_bytes).unwrap_or(0);
        let max_bytes = u64::try_from(req.max_bytes).unwrap_or(u64::MAX).max(1);
        let mut parked = false;
        let response = loop {
            let mut rx: Vec<_> =
                wanted.iter().filter_map(|w| w.partition.as_ref().ok().map(|p| p.subscribe())).collect();
            let (available, error) = self.available(&wanted);
            if available >= min_bytes || error || wanted.is_empty() || Instant::now() >= deadline {
                break self.read(&wanted, max_bytes, req.isolation_level);
            }
            if !parked {
                parked = true;
                self.shared.stats.fetches_parked.fetch_add(1, Ordering::Relaxed);
            }
            let any = futures::future::select_all(rx.iter_mut().map(|r| Box::pin(r.changed())));
            tokio::select! {
                _ = any => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        };
        if let Some(d) = self.shared.faults.fetch_delay(wanted.iter().map(|w| w.topic.0.as_str())) {
            tokio::time::sleep(d).await;
        }
        response
    }

    pub(super) fn available(&self, wanted: &[Wanted]) -> (u64, bool) {
        let mut total = 0;
        for w in wanted {
            match &w.partition {
                Err(_) => return (total, true),
                Ok(p) => {
                    let log = p.lock();
                    if !log.in_range(w.offset) {
                        return (total, true);
                    }
                    total += log.available(w.offset).min(w.max_bytes);
                }
            }
        }
        (total, false)
    }

    pub(super) fn read(&self, wanted: &[Wanted], max_bytes: u64, isolation: i8) -> FetchResponse {
        let mut r = FetchResponse::default();
        let mut left = max_bytes;
        let mut served_any = false;
        for w in wanted {
            let mut pd = fetch_response::PartitionData::default();
            pd.partition_index = w.index;
            pd.preferred_read_replica = BrokerId(-1);
            pd.aborted_transactions = (isolation == 1).then(Vec::new);
            match &w.partition {
                Err(code) => {
                    pd.error_code = *code;
                    pd.high_watermark = -1;
                    pd.last_stable_offset = -1;
                    pd.log_start_offset = -1;
                }
                Ok(p) => {
                    let log = p.lock();
                    if log.in_range(w.offset) {
                        // KIP-74: the first non-empty partition serves at least one batch.
                        let limit = if served_any { w.max_bytes.min(left) } else { w.max_bytes.min(left).max(1) };
                        let read = if limit == 0 { None } else { Some(log.read(w.offset, limit)) };
                        pd.high_watermark = log.end();
                        pd.last_stable_offset = log.end();
                        pd.log_start_offset = log.start();
                        drop(log);
                        if let Some(mut read) = read.filter(|r| !r.batches.is_empty()) {
                            let n: usize = read.batches.iter().map(Bytes::len).sum();
                            // One batch (the common case when a fetch is woken by a produce)
                            // is served as stored; several are joined into one buffer.
                            let records = if read.batches.len() == 1 {
                                read.batches.swap_remove(0)
                            } else {
                                let mut buf = BytesMut::with_capacity(n);
                                for b in &read.batches {
                                    buf.put_slice(b);
                                }
                                buf.freeze()
                            };
                            left = left.saturating_sub(n as u64);
                            served_any = true;
                            pd.records = Some(records);
                        }
                    } else {
                        pd.error_code = E::OffsetOutOfRange.code();
                        pd.high_watermark = -1;
                        pd.last_stable_offset = -1;
                        pd.log_start_offset = -1;
                    }
                }
            }
            if pd.records.is_none() {
                pd.records = Some(Bytes::new());
            }
            match r.responses.last_mut().filter(|t| t.topic == w.topic && t.topic_id == w.topic_id) {
                Some(t) => t.partitions.push(pd),
                None => {
                    let mut t = FetchableTopicResponse::default();
                    t.topic = w.topic.clone();
                    t.topic_id = w.topic_id;
                    t.partitions.push(pd);
                    r.responses.push(t);
                }
            }
        }
        r
    }

    pub(super) fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let mut r = ListOffsetsResponse::default();
        for t in req.topics {
            let topic = self.topic(t.name.0.as_str());
            let mut tr = ListOffsetsTopicResponse::default();
            tr.name = t.name;
            for p in t.partitions {
                let mut pr = ListOffsetsPartitionResponse::default();
                pr.partition_index = p.partition_index;
                pr.timestamp = -1;
                pr.offset = -1;
                if self.version >= 4 {
                    pr.leader_epoch = 0;
                }
                match topic.as_ref().and_then(|x| x.partition(p.partition_index)) {
                    None => pr.error_code = E::UnknownTopicOrPartition.code(),
                    Some(part) => {
                        let log = part.lock();
                        let found = match p.timestamp {
                            -1 => Some((log.end(), -1)),
                            -2 => Some((log.start(), -1)),
                            -3 => log.max_timestamp(),
                            ts if ts >= 0 => log.offset_for_timestamp(ts),
                            _ => {
                                pr.error_code = E::UnsupportedVersion.code();
                                None
                            }
                        };
                        if let Some((offset, ts)) = found {
                            pr.offset = offset;
                            pr.timestamp = ts;
                        }
                    }
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }

    pub(super) fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut r = InitProducerIdResponse::default();
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        if req.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
            // Transactions are not implemented: a transactional producer fails at once
            // instead of hanging on a coordinator that never answers.
            r.error_code = E::TransactionalIdAuthorizationFailed.code();
            return r;
        }
        let (id, epoch) = self.shared.producer_id(req.producer_id.0, req.producer_epoch);
        r.producer_id = ProducerId(id);
        r.producer_epoch = epoch;
        r
    }

    pub(super) fn offset_for_leader_epoch(&self, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
        let mut r = OffsetForLeaderEpochResponse::default();
        for t in req.topics {
            let topic = self.topic(t.topic.0.as_str());
            let mut tr = offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
            tr.topic = t.topic;
            for p in t.partitions {
                let mut e = offset_for_leader_epoch_response::EpochEndOffset::default();
                e.partition = p.partition;
                e.leader_epoch = -1;
                e.end_offset = -1;
                match topic.as_ref().and_then(|x| x.partition(p.partition)) {
                    None => e.error_code = E::UnknownTopicOrPartition.code(),
                    // Every batch is written in epoch 0: its end is the log end.
                    Some(part) if p.leader_epoch <= 0 => {
                        e.leader_epoch = 0;
                        e.end_offset = part.lock().end();
                    }
                    Some(_) => {}
                }
                tr.partitions.push(e);
            }
            r.topics.push(tr);
        }
        r
    }
}
