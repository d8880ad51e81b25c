//! The wire: size-prefixed frames on each connection, answered in order one at a time (as
//! Kafka does: a parked fetch holds its connection, and clients keep produce, fetch and
//! group traffic on separate connections), and one handler per API.

use crate::batch::{Batch, BatchError};
use crate::groups::{Committed, JoinRequest};
use crate::log::{Partition, Refused};
use crate::topics::{Topic, TopicConfig, valid_name};
use crate::{Shared, Stats};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes, decode_request_header_from_buffer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

/// Kafka's `socket.request.max.bytes`: a larger frame closes the connection.
pub const MAX_FRAME: usize = 104_857_600;

/// The APIs and versions this broker implements. ApiVersions advertises exactly these
/// (intersected with what the protocol crate can decode). Versions that address topics
/// by id only (Produce 13, OffsetCommit/OffsetFetch 10, DeleteTopics 6) are left out;
/// Fetch resolves topic ids from 13 on.
pub const SUPPORTED: [(ApiKey, i16, i16); 20] = [
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
];

/// The version range served for `key`, if any.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    let (_, min, max) = SUPPORTED.iter().find(|(k, _, _)| *k == key)?;
    let crate_range = key.valid_versions();
    let (lo, hi) = ((*min).max(crate_range.min), (*max).min(crate_range.max));
    (lo <= hi).then_some((lo, hi))
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("dropped by a fault hook")]
    Dropped,
}

/// Serves one client connection until it closes.
pub(crate) async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut drops = shared.faults.drop_signal();
    drops.borrow_and_update();
    let (r, w) = stream.into_split();
    let mut conn = Conn { shared: shared.clone(), peer: peer.clone(), r: BufReader::new(r), w: BufWriter::new(w) };
    let result = tokio::select! {
        r = conn.serve() => r,
        _ = drops.changed() => Err(Close::Dropped),
    };
    match result {
        Ok(()) => {}
        Err(Close::Io(e)) if is_disconnect(&e) => {}
        Err(Close::Dropped) => shared.faults.count_dropped(),
        Err(e @ Close::Malformed(_)) => {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            shared.log(&format!("closing connection from {peer}: {e}"));
        }
        Err(e) => shared.log(&format!("connection from {peer}: {e}")),
    }
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted)
}

struct Conn {
    shared: Arc<Shared>,
    peer: String,
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
}

impl Conn {
    async fn serve(&mut self) -> Result<(), Close> {
        loop {
            let size = match self.r.read_i32().await {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let size = usize::try_from(size)
                .ok()
                .filter(|s| (8..=MAX_FRAME).contains(s))
                .ok_or_else(|| Close::Malformed(format!("frame size {size} outside 8..={MAX_FRAME}")))?;
            let mut buf = vec![0u8; size];
            self.r.read_exact(&mut buf).await?;
            let frame = Bytes::from(buf);
            if let Some(response) = handle(&self.shared, frame, &self.peer).await? {
                self.shared.faults.before_response().await;
                self.w.write_all(&response).await?;
                self.w.flush().await?;
            }
        }
    }
}

/// Handles one request frame; `None` when no response is due (a produce with acks 0).
pub(crate) async fn handle(shared: &Arc<Shared>, mut frame: Bytes, peer: &str) -> Result<Option<Bytes>, Close> {
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|()| Close::Malformed(format!("unknown API key {key}")))?;
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let range = supported(api);
    if !range.is_some_and(|(lo, hi)| (lo..=hi).contains(&version)) {
        if api == ApiKey::ApiVersions {
            // Answered in version 0 so any client can read which versions to use.
            let mut r = api_versions_body();
            r.error_code = E::UnsupportedVersion.code();
            return encode(correlation, 0, &r).map(Some);
        }
        return Err(Close::Malformed(match range {
            Some((lo, hi)) => format!("{api:?} version {version} is not supported (versions {lo}..={hi} are)"),
            None => format!("{api:?} is not implemented by this broker"),
        }));
    }
    let header =
        decode_request_header_from_buffer(&mut frame).map_err(|e| Close::Malformed(format!("{api:?} header: {e}")))?;
    crate::shape::check(api, version, &frame).map_err(|e| Close::Malformed(format!("{api:?} v{version} body: {e}")))?;
    let client = header.client_id.as_ref().map_or("", |c| c.as_str()).to_owned();
    let h = Handler { shared, version, client, peer };
    macro_rules! body {
        ($t:ty) => {
            <$t>::decode(&mut frame, version).map_err(|e| Close::Malformed(format!("{api:?} v{version} body: {e}")))?
        };
    }
    let c = correlation;
    let v = version;
    Ok(Some(match api {
        ApiKey::ApiVersions => encode(c, v, &api_versions_body())?,
        ApiKey::Metadata => encode(c, v, &h.metadata(body!(MetadataRequest)))?,
        ApiKey::Produce => match h.produce(body!(ProduceRequest)) {
            Some(r) => encode(c, v, &r)?,
            None => return Ok(None),
        },
        ApiKey::Fetch => encode(c, v, &h.fetch(body!(FetchRequest)).await)?,
        ApiKey::ListOffsets => encode(c, v, &h.list_offsets(body!(ListOffsetsRequest)))?,
        ApiKey::CreateTopics => encode(c, v, &h.create_topics(body!(CreateTopicsRequest)))?,
        ApiKey::DeleteTopics => encode(c, v, &h.delete_topics(body!(DeleteTopicsRequest)))?,
        ApiKey::DeleteRecords => encode(c, v, &h.delete_records(body!(DeleteRecordsRequest)))?,
        ApiKey::DescribeConfigs => encode(c, v, &h.describe_configs(body!(DescribeConfigsRequest)))?,
        ApiKey::InitProducerId => encode(c, v, &h.init_producer_id(body!(InitProducerIdRequest)))?,
        ApiKey::OffsetForLeaderEpoch => encode(c, v, &h.offset_for_leader_epoch(body!(OffsetForLeaderEpochRequest)))?,
        ApiKey::FindCoordinator => encode(c, v, &h.find_coordinator(body!(FindCoordinatorRequest)))?,
        ApiKey::JoinGroup => encode(c, v, &h.join_group(body!(JoinGroupRequest)).await)?,
        ApiKey::SyncGroup => encode(c, v, &h.sync_group(body!(SyncGroupRequest)).await)?,
        ApiKey::Heartbeat => encode(c, v, &h.heartbeat(body!(HeartbeatRequest)))?,
        ApiKey::LeaveGroup => encode(c, v, &h.leave_group(body!(LeaveGroupRequest)))?,
        ApiKey::OffsetCommit => encode(c, v, &h.offset_commit(body!(OffsetCommitRequest)))?,
        ApiKey::OffsetFetch => encode(c, v, &h.offset_fetch(body!(OffsetFetchRequest)))?,
        ApiKey::DescribeGroups => encode(c, v, &h.describe_groups(body!(DescribeGroupsRequest)))?,
        ApiKey::ListGroups => encode(c, v, &h.list_groups(body!(ListGroupsRequest)))?,
        other => return Err(Close::Malformed(format!("{other:?} is not implemented by this broker"))),
    }))
}

/// A response frame: size, header (in the version the API's response uses), body.
fn encode<R: Encodable + HeaderVersion>(correlation: i32, version: i16, body: &R) -> Result<Bytes, Close> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation;
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| Close::Malformed(format!("cannot encode the response header: {e}")))?;
    body.encode(&mut buf, version).map_err(|e| Close::Malformed(format!("cannot encode the response: {e}")))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| Close::Malformed("response over 2 GiB".into()))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

fn api_versions_body() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .filter_map(|(k, _, _)| {
            let (min, max) = supported(*k)?;
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = min;
            v.max_version = max;
            Some(v)
        })
        .collect();
    r
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

struct Handler<'a> {
    shared: &'a Arc<Shared>,
    version: i16,
    client: String,
    peer: &'a str,
}

/// One partition a fetch asked for, resolved.
struct Wanted {
    topic: TopicName,
    topic_id: uuid::Uuid,
    index: i32,
    offset: i64,
    max_bytes: u64,
    partition: Result<Arc<Partition>, i16>,
}

impl Handler<'_> {
    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.shared.topic(name)
    }

    fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
        let mut r = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(crate::NODE_ID);
        b.host = s(&self.shared.advertised_host);
        b.port = i32::from(self.shared.advertised_port);
        r.brokers = vec![b];
        r.cluster_id = Some(s(&self.shared.cluster_id));
        r.controller_id = BrokerId(crate::NODE_ID);
        let all = match &req.topics {
            None => true,
            Some(t) => t.is_empty() && self.version == 0,
        };
        let topics: Vec<(Option<String>, uuid::Uuid)> = if all {
            let mut names = self.shared.topic_names();
            names.sort();
            names.into_iter().map(|n| (Some(n), uuid::Uuid::nil())).collect()
        } else {
            req.topics.unwrap_or_default().into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()
        };
        for (name, id) in topics {
            let mut t = MetadataResponseTopic::default();
            let found = match &name {
                Some(n) => self.topic(n).or_else(|| {
                    (req.allow_auto_topic_creation && self.shared.config.auto_create_topics)
                        .then(|| {
                            self.shared.create_topic(n, self.shared.config.default_partitions, BTreeMap::new()).ok()
                        })
                        .flatten()
                }),
                None => self.shared.topic_by_id(id),
            };
            match found {
                Some(topic) => {
                    t.name = Some(TopicName(s(&topic.name)));
                    t.topic_id = topic.id;
                    t.partitions = (0..topic.partitions.len())
                        .map(|p| {
                            let mut mp = MetadataResponsePartition::default();
                            mp.partition_index = i32::try_from(p).unwrap_or(i32::MAX);
                            mp.leader_id = BrokerId(crate::NODE_ID);
                            mp.leader_epoch = 0;
                            mp.replica_nodes = vec![BrokerId(crate::NODE_ID)];
                            mp.isr_nodes = vec![BrokerId(crate::NODE_ID)];
                            mp
                        })
                        .collect();
                }
                None => {
                    t.error_code =
                        if name.is_some() { E::UnknownTopicOrPartition.code() } else { E::UnknownTopicId.code() };
                    t.name = name.map(|n| TopicName(s(&n)));
                    t.topic_id = id;
                }
            }
            r.topics.push(t);
        }
        r
    }

    fn produce(&self, req: ProduceRequest) -> Option<ProduceResponse> {
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

    fn append(&self, topic: &Topic, p: &Partition, index: i32, records: Option<Bytes>) -> PartitionProduceResponse {
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

    fn resolve_fetch(&self, req: &FetchRequest) -> Vec<Wanted> {
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
    async fn fetch(&self, req: FetchRequest) -> FetchResponse {
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

    fn available(&self, wanted: &[Wanted]) -> (u64, bool) {
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

    fn read(&self, wanted: &[Wanted], max_bytes: u64, isolation: i8) -> FetchResponse {
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

    fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
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

    fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut r = CreateTopicsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut tr = CreatableTopicResult::default();
            tr.name = t.name.clone();
            tr.num_partitions = -1;
            tr.replication_factor = -1;
            let partitions = if !t.assignments.is_empty() {
                i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
            } else if t.num_partitions == -1 {
                self.shared.config.default_partitions
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> =
                t.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
            let problem = if let Err(e) = valid_name(&name) {
                Some((E::InvalidTopicException.code(), e))
            } else if self.topic(&name).is_some() {
                Some((E::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")))
            } else if !(1..=crate::MAX_PARTITIONS).contains(&partitions) {
                Some((
                    E::InvalidPartitions.code(),
                    format!("{partitions} partitions: between 1 and {}", crate::MAX_PARTITIONS),
                ))
            } else if ![-1, 1].contains(&t.replication_factor) {
                let why = format!("Replication factor: {} larger than available brokers: 1.", t.replication_factor);
                Some((E::InvalidReplicationFactor.code(), why))
            } else if t.assignments.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != crate::NODE_ID)) {
                Some((E::InvalidReplicaAssignment.code(), format!("the only broker is {}", crate::NODE_ID)))
            } else if let Err(e) = TopicConfig::parse(configs.clone(), &self.shared.config.defaults) {
                Some((E::InvalidConfig.code(), e))
            } else {
                None
            };
            match problem {
                Some((code, why)) => {
                    tr.error_code = code;
                    tr.error_message = Some(s(&why));
                }
                None if req.validate_only => {
                    tr.num_partitions = partitions;
                    tr.replication_factor = 1;
                }
                None => match self.shared.create_topic(&name, partitions, configs) {
                    Ok(topic) if self.version < 5 => tr.topic_id = topic.id,
                    Ok(topic) => {
                        tr.topic_id = topic.id;
                        tr.num_partitions = partitions;
                        tr.replication_factor = 1;
                        tr.configs = Some(
                            topic
                                .config
                                .describe(&self.shared.config.defaults)
                                .into_iter()
                                .map(|(k, v, default)| {
                                    let mut c = create_topics_response::CreatableTopicConfigs::default();
                                    c.name = s(&k);
                                    c.value = Some(s(&v));
                                    c.config_source = if default { 5 } else { 1 };
                                    c
                                })
                                .collect(),
                        );
                    }
                    Err((code, why)) => {
                        tr.error_code = code;
                        tr.error_message = Some(s(&why));
                    }
                },
            }
            r.topics.push(tr);
        }
        r
    }

    fn delete_topics(&self, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut r = DeleteTopicsResponse::default();
        for name in req.topic_names {
            let mut tr = DeletableTopicResult::default();
            match self.shared.delete_topic(name.0.as_str()) {
                Some(id) => tr.topic_id = id,
                None => tr.error_code = E::UnknownTopicOrPartition.code(),
            }
            tr.name = Some(name);
            r.responses.push(tr);
        }
        r
    }

    fn delete_records(&self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let mut r = DeleteRecordsResponse::default();
        for t in req.topics {
            let topic = self.topic(t.name.0.as_str());
            let mut tr = DeleteRecordsTopicResult::default();
            tr.name = t.name;
            for p in t.partitions {
                let mut pr = DeleteRecordsPartitionResult::default();
                pr.partition_index = p.partition_index;
                pr.low_watermark = -1;
                match topic.as_ref().and_then(|x| x.partition(p.partition_index)) {
                    None => pr.error_code = E::UnknownTopicOrPartition.code(),
                    Some(part) => match part.lock().delete_records(p.offset) {
                        Some(low) => pr.low_watermark = low,
                        None => pr.error_code = E::OffsetOutOfRange.code(),
                    },
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }

    fn describe_configs(&self, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
        let mut r = DescribeConfigsResponse::default();
        let defaults = &self.shared.config.defaults;
        for res in req.resources {
            let mut out = DescribeConfigsResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let entries: Option<Vec<(String, String, bool)>> = match res.resource_type {
                2 => self.topic(res.resource_name.as_str()).map(|t| t.config.describe(defaults)),
                4 => Some(vec![
                    ("log.retention.bytes".into(), defaults.retention_bytes.to_string(), false),
                    ("log.retention.ms".into(), defaults.retention_ms.to_string(), false),
                    ("log.cleaner.delete.retention.ms".into(), defaults.delete_retention_ms.to_string(), false),
                    ("message.max.bytes".into(), defaults.max_message_bytes.to_string(), false),
                    ("num.partitions".into(), self.shared.config.default_partitions.to_string(), false),
                    ("auto.create.topics.enable".into(), self.shared.config.auto_create_topics.to_string(), false),
                ]),
                _ => None,
            };
            match entries {
                None if res.resource_type == 2 => out.error_code = E::UnknownTopicOrPartition.code(),
                None => out.error_code = E::InvalidRequest.code(),
                Some(entries) => {
                    let keys = res.configuration_keys.map(|k| k.iter().map(ToString::to_string).collect::<Vec<_>>());
                    out.configs = entries
                        .into_iter()
                        .filter(|(k, _, _)| keys.as_ref().is_none_or(|keys| keys.contains(k)))
                        .map(|(k, v, default)| {
                            let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                            c.name = s(&k);
                            c.value = Some(s(&v));
                            c.config_source = match (res.resource_type, default) {
                                (2, false) => 1,
                                (4, _) => 4,
                                _ => 5,
                            };
                            c
                        })
                        .collect();
                }
            }
            r.results.push(out);
        }
        r
    }

    fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
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

    fn offset_for_leader_epoch(&self, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
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

    fn find_coordinator(&self, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let mut r = FindCoordinatorResponse::default();
        let code = if req.key_type == 0 { 0 } else { E::CoordinatorNotAvailable.code() };
        let (host, port) = (s(&self.shared.advertised_host), i32::from(self.shared.advertised_port));
        if self.version >= 4 {
            r.coordinators = req
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let mut c = find_coordinator_response::Coordinator::default();
                    c.key = key;
                    c.node_id = BrokerId(if code == 0 { crate::NODE_ID } else { -1 });
                    c.host = host.clone();
                    c.port = port;
                    c.error_code = code;
                    c
                })
                .collect();
        } else {
            r.error_code = code;
            r.node_id = BrokerId(if code == 0 { crate::NODE_ID } else { -1 });
            r.host = host;
            r.port = port;
        }
        r
    }

    async fn join_group(&self, req: JoinGroupRequest) -> JoinGroupResponse {
        let j = self
            .shared
            .groups
            .join(JoinRequest {
                group: req.group_id.0.to_string(),
                member_id: req.member_id.to_string(),
                instance_id: req.group_instance_id.map(|i| i.to_string()),
                client_id: self.client.clone(),
                client_host: format!("/{}", self.peer.rsplit_once(':').map_or(self.peer, |(h, _)| h)),
                // Version 0 has no rebalance timeout: it equals the session timeout.
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: if self.version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
                protocol_type: req.protocol_type.to_string(),
                protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
            })
            .await;
        let mut r = JoinGroupResponse::default();
        r.error_code = j.error;
        r.generation_id = j.generation;
        r.protocol_type = j.protocol_type.map(|p| s(&p));
        r.protocol_name = Some(s(j.protocol.as_deref().unwrap_or("")));
        r.leader = s(&j.leader);
        r.member_id = s(&j.member_id);
        r.members = j
            .members
            .into_iter()
            .map(|(id, instance, meta)| {
                let mut m = JoinGroupResponseMember::default();
                m.member_id = s(&id);
                m.group_instance_id = instance.map(|i| s(&i));
                m.metadata = meta;
                m
            })
            .collect();
        r
    }

    async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let done = self
            .shared
            .groups
            .sync(
                req.group_id.0.as_str(),
                req.generation_id,
                req.member_id.as_str(),
                req.protocol_type.as_ref().map(|p| p.as_str()),
                req.protocol_name.as_ref().map(|p| p.as_str()),
                req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
            )
            .await;
        let mut r = SyncGroupResponse::default();
        r.error_code = done.error;
        r.protocol_type = done.protocol_type.map(|p| s(&p));
        r.protocol_name = done.protocol.map(|p| s(&p));
        r.assignment = done.assignment;
        r
    }

    fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let mut r = HeartbeatResponse::default();
        r.error_code = self.shared.groups.heartbeat(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str());
        r
    }

    fn leave_group(&self, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let mut r = LeaveGroupResponse::default();
        let group = req.group_id.0.as_str();
        if self.version <= 2 {
            r.error_code = self.shared.groups.leave(group, &[req.member_id.to_string()])[0];
            return r;
        }
        let ids: Vec<String> = req.members.iter().map(|m| m.member_id.to_string()).collect();
        let codes = self.shared.groups.leave(group, &ids);
        r.members = req
            .members
            .into_iter()
            .zip(codes)
            .map(|(m, code)| {
                let mut mr = leave_group_response::MemberResponse::default();
                mr.member_id = m.member_id;
                mr.group_instance_id = m.group_instance_id;
                mr.error_code = code;
                mr
            })
            .collect();
        r
    }

    fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut offsets = Vec::new();
        let mut unknown = std::collections::HashSet::new();
        for t in &req.topics {
            let topic = self.topic(t.name.0.as_str());
            for p in &t.partitions {
                if topic.as_ref().and_then(|x| x.partition(p.partition_index)).is_none() {
                    unknown.insert((t.name.0.to_string(), p.partition_index));
                    continue;
                }
                let c = Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(ToString::to_string),
                };
                offsets.push(((t.name.0.to_string(), p.partition_index), c));
            }
        }
        let code = self.shared.commit(
            req.group_id.0.as_str(),
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            offsets,
        );
        let mut r = OffsetCommitResponse::default();
        for t in req.topics {
            let mut tr = OffsetCommitResponseTopic::default();
            for p in t.partitions {
                let mut pr = OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = if unknown.contains(&(t.name.0.to_string(), p.partition_index)) {
                    E::UnknownTopicOrPartition.code()
                } else {
                    code
                };
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            r.topics.push(tr);
        }
        r
    }

    fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let mut r = OffsetFetchResponse::default();
        let found = |c: Option<Committed>| match c {
            Some(c) => (c.offset, c.leader_epoch, c.metadata),
            None => (-1, -1, Some(String::new())),
        };
        if self.version >= 8 {
            for g in req.groups {
                let wanted =
                    g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
                let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
                for (topic, parts) in self.shared.groups.committed(g.group_id.0.as_str(), wanted) {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                    tr.name = TopicName(s(&topic));
                    for (p, c) in parts {
                        let (offset, epoch, meta) = found(c);
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartitions::default();
                        pr.partition_index = p;
                        pr.committed_offset = offset;
                        pr.committed_leader_epoch = epoch;
                        pr.metadata = meta.map(|m| s(&m));
                        tr.partitions.push(pr);
                    }
                    gr.topics.push(tr);
                }
                gr.group_id = g.group_id;
                r.groups.push(gr);
            }
            return r;
        }
        let wanted = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        for (topic, parts) in self.shared.groups.committed(req.group_id.0.as_str(), wanted) {
            let mut tr = OffsetFetchResponseTopic::default();
            tr.name = TopicName(s(&topic));
            for (p, c) in parts {
                let (offset, epoch, meta) = found(c);
                let mut pr = OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = offset;
                pr.committed_leader_epoch = epoch;
                pr.metadata = meta.map(|m| s(&m));
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }

    fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let mut r = DescribeGroupsResponse::default();
        for id in req.groups {
            let mut g = DescribedGroup::default();
            match self.shared.groups.describe(id.0.as_str()) {
                None => g.group_state = s("Dead"),
                Some(d) => {
                    g.group_state = s(d.state);
                    g.protocol_type = s(&d.protocol_type);
                    g.protocol_data = s(&d.protocol);
                    g.members = d
                        .members
                        .into_iter()
                        .map(|(member, instance, client, host, meta, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = s(&member);
                            m.group_instance_id = instance.map(|i| s(&i));
                            m.client_id = s(&client);
                            m.client_host = s(&host);
                            m.member_metadata = meta;
                            m.member_assignment = assignment;
                            m
                        })
                        .collect();
                }
            }
            g.group_id = id;
            r.groups.push(g);
        }
        r
    }

    fn list_groups(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut r = ListGroupsResponse::default();
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        r.groups = self
            .shared
            .groups
            .list()
            .into_iter()
            .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
            .map(|(id, ptype, state)| {
                let mut g = ListedGroup::default();
                g.group_id = GroupId(s(&id));
                g.protocol_type = s(&ptype);
                g.group_state = s(state);
                g.group_type = s("classic");
                g
            })
            .collect();
        r
    }
}

fn partition_error(index: i32, code: i16, message: Option<&str>) -> PartitionProduceResponse {
    let mut pr = PartitionProduceResponse::default();
    pr.index = index;
    pr.error_code = code;
    pr.base_offset = -1;
    pr.log_append_time_ms = -1;
    pr.log_start_offset = -1;
    pr.error_message = message.map(s);
    pr
}

/// A statistic snapshot, for [`crate::Broker::stats`].
pub(crate) fn snapshot(stats: &Stats) -> crate::StatsSnapshot {
    crate::StatsSnapshot {
        connections: stats.connections.load(Ordering::Relaxed),
        requests: stats.requests.load(Ordering::Relaxed),
        batches_in: stats.batches_in.load(Ordering::Relaxed),
        fetches_parked: stats.fetches_parked.load(Ordering::Relaxed),
        malformed: stats.malformed.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::tests::{every_version, request_body};
    use kafka_protocol::protocol::encode_request_header_into_buffer;

    #[tokio::test]
    async fn every_api_in_every_version_gets_a_response_that_encodes_in_that_version() {
        let b = crate::Broker::start(crate::Config::default()).await.expect("starts");
        b.shared.create_topic("t", 2, BTreeMap::new()).expect("topic");
        for (api, v) in every_version() {
            let mut frame = BytesMut::new();
            let mut h = RequestHeader::default();
            h.request_api_key = api as i16;
            h.request_api_version = v;
            h.correlation_id = 7;
            encode_request_header_into_buffer(&mut frame, &h).expect("header");
            frame.extend_from_slice(&request_body(api, v));
            let r = handle(&b.shared, frame.freeze(), "127.0.0.1:1").await;
            assert!(r.is_ok(), "{api:?} v{v}: {:?}", r.err());
        }
    }
}
