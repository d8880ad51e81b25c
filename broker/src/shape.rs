//! The shape of every request body the broker decodes, field by field and version by
//! version, and a walk that checks a body against it before the protocol crate decodes it.
//!
//! The walk exists for one rule, Kafka's own (`readArray`): an array may not claim more
//! elements than there are bytes left. The protocol crate reserves memory for an array's
//! claimed length before reading its elements, and a reservation the allocator refuses
//! aborts the process; a 14-byte frame claiming two billion topics would do it. Every
//! other malformation the crate reports as an error, so the walk only needs to find the
//! arrays, which means stepping over every field exactly as the wire lays them out: fixed
//! ints, strings and bytes (16-bit or 32-bit lengths, or unsigned varints in flexible
//! versions), arrays of structs, and the tagged fields that end every struct in flexible
//! versions.

use kafka_protocol::messages::ApiKey;

/// A field's wire type.
#[derive(Debug, Clone, Copy)]
enum T {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A string (nullable or not: the length decides).
    Str,
    /// Bytes, records included.
    Bytes,
    /// An array of structs.
    Arr(&'static [F]),
    /// An array of int32.
    ArrI32,
    /// An array of strings.
    ArrStr,
}

/// A field present in versions `from..=to`.
#[derive(Debug, Clone, Copy)]
struct F(T, i16, i16);

const ALL: i16 = i16::MAX;

const fn f(t: T) -> F {
    F(t, 0, ALL)
}
const fn since(t: T, v: i16) -> F {
    F(t, v, ALL)
}
const fn until(t: T, v: i16) -> F {
    F(t, 0, v)
}

use T::*;

const PRODUCE_PARTITION: &[F] = &[f(I32), f(Bytes)];
const PRODUCE_TOPIC: &[F] = &[until(Str, 12), since(Uuid, 13), f(Arr(PRODUCE_PARTITION))];
const PRODUCE: &[F] = &[f(Str), f(I16), f(I32), f(Arr(PRODUCE_TOPIC))];

const FETCH_PARTITION: &[F] = &[f(I32), since(I32, 9), f(I64), since(I32, 12), since(I64, 5), f(I32)];
const FETCH_TOPIC: &[F] = &[until(Str, 12), since(Uuid, 13), f(Arr(FETCH_PARTITION))];
const FORGOTTEN_TOPIC: &[F] = &[F(Str, 7, 12), since(Uuid, 13), since(ArrI32, 7)];
const FETCH: &[F] = &[
    until(I32, 14),
    f(I32),
    f(I32),
    f(I32),
    f(I8),
    since(I32, 7),
    since(I32, 7),
    f(Arr(FETCH_TOPIC)),
    since(Arr(FORGOTTEN_TOPIC), 7),
    since(Str, 11),
];

const LIST_OFFSETS_PARTITION: &[F] = &[f(I32), since(I32, 4), f(I64)];
const LIST_OFFSETS_TOPIC: &[F] = &[f(Str), f(Arr(LIST_OFFSETS_PARTITION))];
const LIST_OFFSETS: &[F] = &[f(I32), since(I8, 2), f(Arr(LIST_OFFSETS_TOPIC)), since(I32, 10)];

const METADATA_TOPIC: &[F] = &[since(Uuid, 10), f(Str)];
const METADATA: &[F] = &[f(Arr(METADATA_TOPIC)), since(I8, 4), F(I8, 8, 10), since(I8, 8)];

const COMMIT_PARTITION: &[F] = &[f(I32), f(I64), since(I32, 6), f(Str)];
const COMMIT_TOPIC: &[F] = &[f(Str), f(Arr(COMMIT_PARTITION))];
const OFFSET_COMMIT: &[F] = &[f(Str), f(I32), f(Str), since(Str, 7), until(I64, 4), f(Arr(COMMIT_TOPIC))];

const OFFSET_FETCH_TOPIC: &[F] = &[f(Str), f(ArrI32)];
const OFFSET_FETCH_GROUP: &[F] = &[f(Str), since(Str, 9), since(I32, 9), f(Arr(OFFSET_FETCH_TOPIC))];
const OFFSET_FETCH: &[F] =
    &[until(Str, 7), until(Arr(OFFSET_FETCH_TOPIC), 7), since(Arr(OFFSET_FETCH_GROUP), 8), since(I8, 7)];

const FIND_COORDINATOR: &[F] = &[until(Str, 3), since(I8, 1), since(ArrStr, 4)];

const JOIN_PROTOCOL: &[F] = &[f(Str), f(Bytes)];
const JOIN_GROUP: &[F] =
    &[f(Str), f(I32), since(I32, 1), f(Str), since(Str, 5), f(Str), f(Arr(JOIN_PROTOCOL)), since(Str, 8)];

const HEARTBEAT: &[F] = &[f(Str), f(I32), f(Str), since(Str, 3)];

const LEAVE_MEMBER: &[F] = &[f(Str), f(Str), since(Str, 5)];
const LEAVE_GROUP: &[F] = &[f(Str), until(Str, 2), since(Arr(LEAVE_MEMBER), 3)];

const SYNC_ASSIGNMENT: &[F] = &[f(Str), f(Bytes)];
const SYNC_GROUP: &[F] =
    &[f(Str), f(I32), f(Str), since(Str, 3), since(Str, 5), since(Str, 5), f(Arr(SYNC_ASSIGNMENT))];

const DESCRIBE_GROUPS: &[F] = &[f(ArrStr), since(I8, 3)];
const LIST_GROUPS: &[F] = &[since(ArrStr, 4), since(ArrStr, 5)];
const API_VERSIONS: &[F] = &[since(Str, 3), since(Str, 3)];

const CREATE_ASSIGNMENT: &[F] = &[f(I32), f(ArrI32)];
const CREATE_CONFIG: &[F] = &[f(Str), f(Str)];
const CREATE_TOPIC: &[F] = &[f(Str), f(I32), f(I16), f(Arr(CREATE_ASSIGNMENT)), f(Arr(CREATE_CONFIG))];
const CREATE_TOPICS: &[F] = &[f(Arr(CREATE_TOPIC)), f(I32), f(I8)];

const DELETE_TOPIC: &[F] = &[f(Str), f(Uuid)];
const DELETE_TOPICS: &[F] = &[since(Arr(DELETE_TOPIC), 6), until(ArrStr, 5), f(I32)];

const DELETE_RECORDS_PARTITION: &[F] = &[f(I32), f(I64)];
const DELETE_RECORDS_TOPIC: &[F] = &[f(Str), f(Arr(DELETE_RECORDS_PARTITION))];
const DELETE_RECORDS: &[F] = &[f(Arr(DELETE_RECORDS_TOPIC)), f(I32)];

const INIT_PRODUCER_ID: &[F] = &[f(Str), f(I32), since(I64, 3), since(I16, 3)];

const EPOCH_PARTITION: &[F] = &[f(I32), f(I32), f(I32)];
const EPOCH_TOPIC: &[F] = &[f(Str), f(Arr(EPOCH_PARTITION))];
const OFFSET_FOR_LEADER_EPOCH: &[F] = &[since(I32, 3), f(Arr(EPOCH_TOPIC))];

const CONFIG_RESOURCE: &[F] = &[f(I8), f(Str), f(ArrStr)];
const DESCRIBE_CONFIGS: &[F] = &[f(Arr(CONFIG_RESOURCE)), f(I8), since(I8, 3)];

const SASL_HANDSHAKE: &[F] = &[f(Str)];
const SASL_AUTHENTICATE: &[F] = &[f(Bytes)];

/// The body's fields and the first flexible version, for every API the broker decodes.
fn shape(api: ApiKey) -> Option<(&'static [F], i16)> {
    Some(match api {
        ApiKey::Produce => (PRODUCE, 9),
        ApiKey::Fetch => (FETCH, 12),
        ApiKey::ListOffsets => (LIST_OFFSETS, 6),
        ApiKey::Metadata => (METADATA, 9),
        ApiKey::OffsetCommit => (OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (OFFSET_FETCH, 6),
        ApiKey::FindCoordinator => (FIND_COORDINATOR, 3),
        ApiKey::JoinGroup => (JOIN_GROUP, 6),
        ApiKey::Heartbeat => (HEARTBEAT, 4),
        ApiKey::LeaveGroup => (LEAVE_GROUP, 4),
        ApiKey::SyncGroup => (SYNC_GROUP, 4),
        ApiKey::DescribeGroups => (DESCRIBE_GROUPS, 5),
        ApiKey::ListGroups => (LIST_GROUPS, 3),
        ApiKey::ApiVersions => (API_VERSIONS, 3),
        ApiKey::CreateTopics => (CREATE_TOPICS, 5),
        ApiKey::DeleteTopics => (DELETE_TOPICS, 4),
        ApiKey::DeleteRecords => (DELETE_RECORDS, 2),
        ApiKey::InitProducerId => (INIT_PRODUCER_ID, 2),
        ApiKey::OffsetForLeaderEpoch => (OFFSET_FOR_LEADER_EPOCH, 4),
        ApiKey::DescribeConfigs => (DESCRIBE_CONFIGS, 4),
        ApiKey::SaslHandshake => (SASL_HANDSHAKE, ALL),
        ApiKey::SaslAuthenticate => (SASL_AUTHENTICATE, 2),
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        if n > self.left() {
            return Err(format!("a field of {n} bytes with {} left", self.left()));
        }
        self.at += n;
        Ok(())
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        let src = self.b.get(self.at..self.at + N).ok_or("the body ends inside a field")?;
        a.copy_from_slice(src);
        self.at += N;
        Ok(a)
    }
    fn uvarint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let [byte] = self.take::<1>()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than five bytes".into())
    }
    /// A string's or bytes' length, `None` for null.
    fn length(&mut self, flexible: bool, wide: bool) -> Result<Option<usize>, String> {
        let n: i64 = if flexible {
            i64::try_from(self.uvarint()?).unwrap_or(i64::MAX) - 1
        } else if wide {
            i64::from(i32::from_be_bytes(self.take::<4>()?))
        } else {
            i64::from(i16::from_be_bytes(self.take::<2>()?))
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(format!("a negative length ({n})")),
            n => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        }
    }
    /// Steps over a string (`wide` false) or bytes (`wide` true), null included.
    fn skip_sized(&mut self, flexible: bool, wide: bool) -> Result<(), String> {
        let n = self.length(flexible, wide)?;
        self.skip(n.unwrap_or(0))
    }
    /// An array's element count, checked against the bytes left (each element takes at
    /// least one).
    fn count(&mut self, flexible: bool) -> Result<usize, String> {
        let n = self.length(flexible, true)?.unwrap_or(0);
        if n > self.left() {
            return Err(format!("an array of {n} elements with {} bytes left", self.left()));
        }
        Ok(n)
    }
}

fn walk(fields: &[F], version: i16, flexible: bool, r: &mut Reader<'_>) -> Result<(), String> {
    for F(t, from, to) in fields {
        if version < *from || version > *to {
            continue;
        }
        match t {
            I8 => r.skip(1)?,
            I16 => r.skip(2)?,
            I32 => r.skip(4)?,
            I64 => r.skip(8)?,
            Uuid => r.skip(16)?,
            Str => r.skip_sized(flexible, false)?,
            Bytes => r.skip_sized(flexible, true)?,
            Arr(element) => {
                for _ in 0..r.count(flexible)? {
                    walk(element, version, flexible, r)?;
                }
            }
            ArrI32 => {
                let n = r.count(flexible)?;
                r.skip(n.saturating_mul(4))?;
            }
            ArrStr => {
                for _ in 0..r.count(flexible)? {
                    r.skip_sized(flexible, false)?;
                }
            }
        }
    }
    if flexible {
        let tagged = usize::try_from(r.uvarint()?).unwrap_or(usize::MAX);
        if tagged > r.left() {
            return Err(format!("{tagged} tagged fields with {} bytes left", r.left()));
        }
        for _ in 0..tagged {
            r.uvarint()?;
            let size = usize::try_from(r.uvarint()?).unwrap_or(usize::MAX);
            r.skip(size)?;
        }
    }
    Ok(())
}

/// Checks a request body (after its header) of `api` in `version`: every field where the
/// version puts it, and no array claiming more elements than bytes are left. APIs the
/// broker does not decode pass (they are refused before decoding).
pub fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    let Some((fields, flexible_from)) = shape(api) else { return Ok(()) };
    walk(fields, version, version >= flexible_from, &mut Reader { b: body, at: 0 })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::server::SUPPORTED;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    /// The request in version `v`; empty when it sets a field `v` does not have.
    fn encoded<R: Encodable>(r: &R, v: i16) -> Vec<u8> {
        let mut b = BytesMut::new();
        match r.encode(&mut b, v) {
            Ok(()) => b.to_vec(),
            Err(_) => Vec::new(),
        }
    }

    fn name(s: &str) -> StrBytes {
        StrBytes::from_string(s.to_owned())
    }

    /// Requests with something in every array, as clients send them.
    fn populated(api: ApiKey, v: i16) -> Vec<u8> {
        match api {
            ApiKey::Produce => {
                let mut p = produce_request::PartitionProduceData::default();
                p.records = Some(Bytes::from_static(b"0123456789"));
                let mut t = produce_request::TopicProduceData::default();
                t.name = TopicName(name("t"));
                t.partition_data = vec![p.clone(), p];
                let mut r = ProduceRequest::default();
                r.topic_data = vec![t];
                encoded(&r, v)
            }
            ApiKey::Fetch => {
                let mut t = fetch_request::FetchTopic::default();
                t.topic = TopicName(name("t"));
                t.partitions = vec![fetch_request::FetchPartition::default(); 3];
                let mut g = fetch_request::ForgottenTopic::default();
                g.topic = TopicName(name("old"));
                g.partitions = vec![1, 2];
                let mut r = FetchRequest::default();
                r.topics = vec![t];
                if v >= 7 {
                    r.forgotten_topics_data = vec![g];
                }
                if v >= 11 {
                    r.rack_id = name("rack");
                }
                encoded(&r, v)
            }
            ApiKey::Metadata => {
                let mut t = metadata_request::MetadataRequestTopic::default();
                t.name = Some(TopicName(name("t")));
                let mut r = MetadataRequest::default();
                r.topics = Some(vec![t.clone(), t]);
                encoded(&r, v)
            }
            ApiKey::OffsetFetch => {
                let mut r = OffsetFetchRequest::default();
                if v >= 8 {
                    let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                    t.name = TopicName(name("t"));
                    t.partition_indexes = vec![0, 1];
                    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                    g.group_id = GroupId(name("g"));
                    g.topics = Some(vec![t]);
                    r.groups = vec![g.clone(), g];
                } else {
                    let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                    t.name = TopicName(name("t"));
                    t.partition_indexes = vec![0, 1];
                    r.topics = Some(vec![t]);
                }
                encoded(&r, v)
            }
            ApiKey::OffsetCommit => {
                let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
                t.name = TopicName(name("t"));
                t.partitions = vec![offset_commit_request::OffsetCommitRequestPartition::default(); 2];
                let mut r = OffsetCommitRequest::default();
                r.topics = vec![t];
                encoded(&r, v)
            }
            ApiKey::CreateTopics => {
                let mut a = create_topics_request::CreatableReplicaAssignment::default();
                a.broker_ids = vec![BrokerId(1)];
                let mut c = create_topics_request::CreatableTopicConfig::default();
                c.name = name("cleanup.policy");
                c.value = Some(name("compact"));
                let mut t = create_topics_request::CreatableTopic::default();
                t.name = TopicName(name("t"));
                t.assignments = vec![a];
                t.configs = vec![c];
                let mut r = CreateTopicsRequest::default();
                r.topics = vec![t];
                encoded(&r, v)
            }
            ApiKey::JoinGroup => {
                let mut p = join_group_request::JoinGroupRequestProtocol::default();
                p.name = name("range");
                p.metadata = Bytes::from_static(b"meta");
                let mut r = JoinGroupRequest::default();
                r.protocols = vec![p.clone(), p];
                encoded(&r, v)
            }
            ApiKey::SyncGroup => {
                let mut a = sync_group_request::SyncGroupRequestAssignment::default();
                a.assignment = Bytes::from_static(b"abc");
                let mut r = SyncGroupRequest::default();
                r.assignments = vec![a];
                encoded(&r, v)
            }
            ApiKey::LeaveGroup => {
                let mut r = LeaveGroupRequest::default();
                if v >= 3 {
                    r.members = vec![leave_group_request::MemberIdentity::default(); 2];
                }
                encoded(&r, v)
            }
            ApiKey::DescribeConfigs => {
                let mut res = describe_configs_request::DescribeConfigsResource::default();
                res.configuration_keys = Some(vec![name("retention.ms")]);
                let mut r = DescribeConfigsRequest::default();
                r.resources = vec![res];
                encoded(&r, v)
            }
            ApiKey::FindCoordinator => {
                let mut r = FindCoordinatorRequest::default();
                if v >= 4 {
                    r.coordinator_keys = vec![name("g"), name("h")];
                }
                encoded(&r, v)
            }
            _ => Vec::new(),
        }
    }

    macro_rules! each_request {
        ($api:expr, $f:ident($($arg:expr),*)) => {
            match $api {
                ApiKey::Produce => $f::<ProduceRequest>($($arg),*),
                ApiKey::Fetch => $f::<FetchRequest>($($arg),*),
                ApiKey::ListOffsets => $f::<ListOffsetsRequest>($($arg),*),
                ApiKey::Metadata => $f::<MetadataRequest>($($arg),*),
                ApiKey::OffsetCommit => $f::<OffsetCommitRequest>($($arg),*),
                ApiKey::OffsetFetch => $f::<OffsetFetchRequest>($($arg),*),
                ApiKey::FindCoordinator => $f::<FindCoordinatorRequest>($($arg),*),
                ApiKey::JoinGroup => $f::<JoinGroupRequest>($($arg),*),
                ApiKey::Heartbeat => $f::<HeartbeatRequest>($($arg),*),
                ApiKey::LeaveGroup => $f::<LeaveGroupRequest>($($arg),*),
                ApiKey::SyncGroup => $f::<SyncGroupRequest>($($arg),*),
                ApiKey::DescribeGroups => $f::<DescribeGroupsRequest>($($arg),*),
                ApiKey::ListGroups => $f::<ListGroupsRequest>($($arg),*),
                ApiKey::ApiVersions => $f::<ApiVersionsRequest>($($arg),*),
                ApiKey::CreateTopics => $f::<CreateTopicsRequest>($($arg),*),
                ApiKey::DeleteTopics => $f::<DeleteTopicsRequest>($($arg),*),
                ApiKey::DeleteRecords => $f::<DeleteRecordsRequest>($($arg),*),
                ApiKey::InitProducerId => $f::<InitProducerIdRequest>($($arg),*),
                ApiKey::OffsetForLeaderEpoch => $f::<OffsetForLeaderEpochRequest>($($arg),*),
                ApiKey::DescribeConfigs => $f::<DescribeConfigsRequest>($($arg),*),
                ApiKey::SaslHandshake => $f::<SaslHandshakeRequest>($($arg),*),
                ApiKey::SaslAuthenticate => $f::<SaslAuthenticateRequest>($($arg),*),
                other => panic!("{other:?} has no shape"),
            }
        };
    }

    fn default_encoded<R: Encodable + Default>(v: i16) -> Vec<u8> {
        encoded(&R::default(), v)
    }

    fn decodes<R: Decodable>(v: i16, b: &[u8]) -> bool {
        R::decode(&mut Bytes::copy_from_slice(b), v).is_ok()
    }

    /// A request body for `api` in `v`, with something in its arrays where that matters.
    pub(crate) fn request_body(api: ApiKey, v: i16) -> Vec<u8> {
        let full = populated(api, v);
        if full.is_empty() { each_request!(api, default_encoded(v)) } else { full }
    }

    /// Every API the broker serves, in every version it serves.
    pub(crate) fn every_version() -> Vec<(ApiKey, i16)> {
        SUPPORTED
            .iter()
            .filter_map(|(k, _, _)| crate::server::supported(*k).map(|(lo, hi)| (*k, lo, hi)))
            .flat_map(|(k, lo, hi)| (lo..=hi).map(move |v| (k, v)))
            .collect()
    }

    #[test]
    fn every_request_as_a_client_encodes_it_passes_the_walk() {
        for (api, v) in every_version() {
            let empty = each_request!(api, default_encoded(v));
            assert_eq!(check(api, v, &empty), Ok(()), "{api:?} v{v}, empty");
            let full = request_body(api, v);
            assert_eq!(check(api, v, &full), Ok(()), "{api:?} v{v}, populated");
        }
    }

    #[test]
    fn an_array_claiming_more_elements_than_bytes_is_refused() {
        // Metadata v1 with two billion topics, and v9 (flexible) with a varint count.
        let e = check(ApiKey::Metadata, 1, &i32::MAX.to_be_bytes()).expect_err("refused");
        assert!(e.contains("2147483647 elements"), "{e}");
        assert!(check(ApiKey::Metadata, 9, &[0xff, 0xff, 0xff, 0xff, 0x07]).is_err());
        // Nested: a produce whose topic claims a million partitions.
        let mut b = Vec::new();
        b.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&1000i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes()); // one topic
        b.extend_from_slice(&1i16.to_be_bytes());
        b.push(b't');
        b.extend_from_slice(&1_000_000i32.to_be_bytes());
        assert!(check(ApiKey::Produce, 3, &b).expect_err("refused").contains("1000000 elements"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Arbitrary bytes, and valid requests with bytes flipped or cut: the walk never
        /// panics, and whatever passes it the protocol crate decodes without reserving more
        /// than the body could hold (a failure here is the process aborting).
        #[test]
        fn the_walk_guards_the_decoder_against_any_body(
            which in 0usize..1000,
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let all = every_version();
            let (api, v) = all[which % all.len()];
            let mut body = populated(api, v);
            if body.is_empty() {
                body = each_request!(api, default_encoded(v));
            }
            body.extend_from_slice(&noise);
            for (at, x) in flips {
                let n = body.len();
                if n > 0 {
                    body[at % n] ^= x;
                }
            }
            body.truncate(cut % (body.len() + 1));
            if check(api, v, &body).is_ok() {
                let _ = each_request!(api, decodes(v, &body));
            }
            let _ = check(api, v, &noise);
        }
    }
}
