//! A request frame decoded: its API, version, correlation id and client, and its body as
//! the request type of its API. Every byte a client sends passes through [`decode`] before
//! anything acts on it; no input makes it panic (the `frames` fuzz target feeds it
//! arbitrary bytes).

use super::{Close, supported};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, decode_request_header_from_buffer};

/// A request's body, decoded as its API's type.
#[derive(Debug)]
pub enum Request {
    ApiVersions,
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    DeleteRecords(DeleteRecordsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
}

/// A frame, decoded.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per frame and taken apart at once; boxing would allocate per request"
)]
pub enum Decoded {
    /// An ApiVersions request in a version this broker does not speak: answered in version
    /// 0, so that any client learns which versions to use.
    OldApiVersions {
        correlation: i32,
    },
    Request {
        version: i16,
        correlation: i32,
        client: String,
        body: Request,
    },
}

/// Decodes one request frame (without its size prefix). At least 8 bytes: the caller's
/// framing refuses shorter ones, and so does this.
pub fn decode(mut frame: Bytes) -> Result<Decoded, Close> {
    let [k0, k1, v0, v1, c0, c1, c2, c3, ..] = frame[..] else {
        return Err(Close::Malformed(format!("a frame of {} bytes has no request header", frame.len())));
    };
    let (key, version) = (i16::from_be_bytes([k0, k1]), i16::from_be_bytes([v0, v1]));
    let correlation = i32::from_be_bytes([c0, c1, c2, c3]);
    let api = ApiKey::try_from(key).map_err(|()| Close::Malformed(format!("unknown API key {key}")))?;
    let range = supported(api);
    if !range.is_some_and(|(lo, hi)| (lo..=hi).contains(&version)) {
        if api == ApiKey::ApiVersions {
            return Ok(Decoded::OldApiVersions { correlation });
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
    macro_rules! body {
        ($variant:ident) => {
            Request::$variant(
                Decodable::decode(&mut frame, version)
                    .map_err(|e| Close::Malformed(format!("{api:?} v{version} body: {e}")))?,
            )
        };
    }
    let body = match api {
        ApiKey::ApiVersions => Request::ApiVersions,
        ApiKey::Metadata => body!(Metadata),
        ApiKey::Produce => body!(Produce),
        ApiKey::Fetch => body!(Fetch),
        ApiKey::ListOffsets => body!(ListOffsets),
        ApiKey::CreateTopics => body!(CreateTopics),
        ApiKey::DeleteTopics => body!(DeleteTopics),
        ApiKey::DeleteRecords => body!(DeleteRecords),
        ApiKey::DescribeConfigs => body!(DescribeConfigs),
        ApiKey::InitProducerId => body!(InitProducerId),
        ApiKey::OffsetForLeaderEpoch => body!(OffsetForLeaderEpoch),
        ApiKey::FindCoordinator => body!(FindCoordinator),
        ApiKey::JoinGroup => body!(JoinGroup),
        ApiKey::SyncGroup => body!(SyncGroup),
        ApiKey::Heartbeat => body!(Heartbeat),
        ApiKey::LeaveGroup => body!(LeaveGroup),
        ApiKey::OffsetCommit => body!(OffsetCommit),
        ApiKey::OffsetFetch => body!(OffsetFetch),
        ApiKey::DescribeGroups => body!(DescribeGroups),
        ApiKey::ListGroups => body!(ListGroups),
        ApiKey::SaslHandshake => body!(SaslHandshake),
        ApiKey::SaslAuthenticate => body!(SaslAuthenticate),
        other => return Err(Close::Malformed(format!("{other:?} is not implemented by this broker"))),
    };
    Ok(Decoded::Request { version, correlation, client, body })
}
