//! The wire: size-prefixed frames on each connection (over TLS where the listener says
//! so), answered in order one at a time (as Kafka does: a parked fetch holds its
//! connection, and clients keep produce, fetch and group traffic on separate connections),
//! SASL before anything else where the listener asks for it, and one handler per API.

mod admin;
mod coordinator;
mod data;
pub mod request;

pub use request::{Decoded, Request};

use crate::batch::{Batch, BatchError};
use crate::groups::{Committed, JoinRequest};
use crate::log::{Partition, Refused};
use crate::security::{MECHANISMS, Session, Step};
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
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

/// Kafka's `socket.request.max.bytes`: a larger frame closes the connection.
pub const MAX_FRAME: usize = 104_857_600;

/// The APIs and versions this broker implements. ApiVersions advertises exactly these
/// (intersected with what the protocol crate can decode). Versions that address topics
/// by id only (Produce 13, OffsetCommit/OffsetFetch 10, DeleteTopics 6) are left out;
/// Fetch resolves topic ids from 13 on.
pub const SUPPORTED: [(ApiKey, i16, i16); 22] = [
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
    // Version 0 carries the SASL tokens unframed after it; clients use 1 and
    // SaslAuthenticate when the broker offers them.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
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
    #[error("{0}")]
    Unauthenticated(String),
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves one client connection until it closes.
pub(crate) async fn connection(shared: Arc<Shared>, stream: TcpStream) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut drops = shared.faults.drop_signal();
    drops.borrow_and_update();
    let serve = async {
        let session = Session::new(&shared.guard);
        match &shared.guard.tls {
            None => {
                let (r, w) = stream.into_split();
                Conn::new(&shared, &peer, r, w, session).serve().await
            }
            Some(acceptor) => {
                let tls = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream))
                    .await
                    .map_err(|_| Close::Unauthenticated(format!("no TLS handshake within {TLS_HANDSHAKE:?}")))?
                    .map_err(|e| Close::Unauthenticated(format!("TLS handshake failed: {e}")))?;
                let (r, w) = tokio::io::split(tls);
                Conn::new(&shared, &peer, r, w, session).serve().await
            }
        }
    };
    let result = tokio::select! {
        r = serve => r,
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
        Err(e @ Close::Unauthenticated(_)) => {
            shared.stats.refused_auth.fetch_add(1, Ordering::Relaxed);
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

struct Conn<'a, R, W> {
    shared: &'a Arc<Shared>,
    peer: &'a str,
    r: BufReader<R>,
    w: BufWriter<W>,
    session: Session,
}

impl<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<'a, R, W> {
    fn new(shared: &'a Arc<Shared>, peer: &'a str, r: R, w: W, session: Session) -> Self {
        Self { shared, peer, r: BufReader::new(r), w: BufWriter::new(w), session }
    }

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
            let answer = handle(self.shared, frame, self.peer, &mut self.session).await;
            let (response, close) = match answer {
                Ok(r) => (r, None),
                // A failed authentication is answered, then the connection closes.
                Err(Failed::Answer(r, why)) => (Some(r), Some(Close::Unauthenticated(why))),
                Err(Failed::Close(c)) => return Err(c),
            };
            if let Some(response) = response {
                self.shared.faults.before_response().await;
                self.w.write_all(&response).await?;
                self.w.flush().await?;
            }
            if let Some(c) = close {
                return Err(c);
            }
        }
    }
}

/// A request that ends its connection: answered first, or closed at once.
#[derive(Debug)]
pub(crate) enum Failed {
    Answer(Bytes, String),
    Close(Close),
}

impl From<Close> for Failed {
    fn from(c: Close) -> Self {
        Self::Close(c)
    }
}

/// Handles one request frame; `None` when no response is due (a produce with acks 0).
/// Before a SASL listener's client has authenticated, only ApiVersions and the SASL
/// requests are served; anything else closes the connection, as Kafka does.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    frame: Bytes,
    peer: &str,
    session: &mut Session,
) -> Result<Option<Bytes>, Failed> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (version, c, client, body) = match request::decode(frame)? {
        Decoded::OldApiVersions { correlation } => {
            let mut r = api_versions_body();
            r.error_code = E::UnsupportedVersion.code();
            return Ok(Some(encode(correlation, 0, &r)?));
        }
        Decoded::Request { version, correlation, client, body } => (version, correlation, client, body),
    };
    let v = version;
    match &body {
        Request::ApiVersions => {}
        Request::SaslHandshake(r) => return Ok(Some(encode(c, v, &sasl_handshake(session, r))?)),
        Request::SaslAuthenticate(r) => return sasl_authenticate(shared, session, c, v, r).map(Some),
        _ if !session.authenticated() => {
            return Err(Close::Unauthenticated(format!("request {body:?} before SASL authentication")).into());
        }
        _ => {}
    }
    let h = Handler { shared, version, client, peer };
    Ok(Some(match body {
        Request::ApiVersions => encode(c, v, &api_versions_body())?,
        // Answered above, before the authentication check.
        Request::SaslHandshake(_) | Request::SaslAuthenticate(_) => return Ok(None),
        Request::Metadata(r) => encode(c, v, &h.metadata(r))?,
        Request::Produce(r) => match h.produce(r) {
            Some(r) => encode(c, v, &r)?,
            None => return Ok(None),
        },
        Request::Fetch(r) => encode(c, v, &h.fetch(r).await)?,
        Request::ListOffsets(r) => encode(c, v, &h.list_offsets(r))?,
        Request::CreateTopics(r) => encode(c, v, &h.create_topics(r))?,
        Request::DeleteTopics(r) => encode(c, v, &h.delete_topics(r))?,
        Request::DeleteRecords(r) => encode(c, v, &h.delete_records(r))?,
        Request::DescribeConfigs(r) => encode(c, v, &h.describe_configs(r))?,
        Request::InitProducerId(r) => encode(c, v, &h.init_producer_id(r))?,
        Request::OffsetForLeaderEpoch(r) => encode(c, v, &h.offset_for_leader_epoch(r))?,
        Request::FindCoordinator(r) => encode(c, v, &h.find_coordinator(r))?,
        Request::JoinGroup(r) => encode(c, v, &h.join_group(r).await)?,
        Request::SyncGroup(r) => encode(c, v, &h.sync_group(r).await)?,
        Request::Heartbeat(r) => encode(c, v, &h.heartbeat(r))?,
        Request::LeaveGroup(r) => encode(c, v, &h.leave_group(r))?,
        Request::OffsetCommit(r) => encode(c, v, &h.offset_commit(r))?,
        Request::OffsetFetch(r) => encode(c, v, &h.offset_fetch(r))?,
        Request::DescribeGroups(r) => encode(c, v, &h.describe_groups(r))?,
        Request::ListGroups(r) => encode(c, v, &h.list_groups(r))?,
    }))
}

fn sasl_handshake(session: &mut Session, r: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut out = SaslHandshakeResponse::default();
    out.mechanisms = MECHANISMS.iter().map(|m| s(m)).collect();
    if let Err(e) = session.handshake(r.mechanism.as_str()) {
        out.error_code = e.code();
    }
    out
}

fn sasl_authenticate(
    shared: &Arc<Shared>,
    session: &mut Session,
    c: i32,
    v: i16,
    r: &SaslAuthenticateRequest,
) -> Result<Bytes, Failed> {
    let mut out = SaslAuthenticateResponse::default();
    match session.authenticate(&shared.guard, &r.auth_bytes) {
        Ok(Step::Reply(bytes)) => {
            if let Session::Done(user) = session {
                shared.log(&format!("authenticated as {user}"));
            }
            out.auth_bytes = Bytes::from(bytes);
            Ok(encode(c, v, &out)?)
        }
        Ok(Step::Failed(why)) => {
            out.error_code = E::SaslAuthenticationFailed.code();
            out.error_message = Some(s(&why));
            Err(Failed::Answer(encode(c, v, &out)?, why))
        }
        Err(e) => {
            out.error_code = e.code();
            out.error_message = Some(s("SaslAuthenticate in the wrong state"));
            Ok(encode(c, v, &out)?)
        }
    }
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
        refused_auth: stats.refused_auth.load(Ordering::Relaxed),
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
            let mut session = Session::Open;
            let r = handle(&b.shared, frame.freeze(), "127.0.0.1:1", &mut session).await;
            assert!(r.is_ok(), "{api:?} v{v}: {:?}", r.err());
        }
    }
}
