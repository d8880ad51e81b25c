//! The broker at the wire: delayed fetch, the idempotent producer's sequences, size limits,
//! offsets out of range, and what a malformed or unsupported request gets.

mod common;

use common::*;
use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::*;
use std::time::Duration;

#[tokio::test]
async fn api_versions_lists_what_is_implemented_and_answers_an_unknown_version_in_v0() {
    let b = broker().await;
    let mut raw = Raw::connect(b.bootstrap()).await;
    let r = raw.send(3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
    let fetch = r.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).expect("fetch listed");
    assert_eq!((fetch.min_version, fetch.max_version), (4, 16));
    assert!(r.api_keys.iter().all(|k| k.api_key != ApiKey::EndTxn as i16), "no transactions advertised");
    assert_eq!(r.api_keys.len(), broker::server::SUPPORTED.len());

    // A version from the future: Kafka answers in version 0 with the supported range.
    let mut frame = vec![];
    frame.extend_from_slice(&12i32.to_be_bytes());
    frame.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    raw.write(&frame[..16]).await;
    let mut resp = raw.read_frame().await.expect("answered");
    use kafka_protocol::protocol::Decodable;
    let header = ResponseHeader::decode(&mut resp, 0).expect("header");
    assert_eq!(header.correlation_id, 7);
    let body = ApiVersionsResponse::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(body.error_code, E::UnsupportedVersion.code());
    assert!(!body.api_keys.is_empty());
}

#[tokio::test]
async fn a_parked_fetch_is_answered_by_the_produce_that_brings_its_min_bytes() {
    let b = broker().await;
    let mut admin = Raw::connect(b.bootstrap()).await;
    assert_eq!(admin.send(7, &create_topic("t", 1, &[])).await.topics[0].error_code, 0);
    let one = batch(1, 100, -1, -1, -1);
    assert_eq!(produced(&admin.send(9, &produce("t", 0, 1, one.clone())).await), (0, 0));

    // One batch is there; the fetch wants more than one batch's bytes, so it parks (for
    // up to a minute).
    let addr = b.bootstrap().to_owned();
    let min = i32::try_from(one.len() + 1).expect("small");
    let parked = tokio::spawn(async move {
        let mut c = Raw::connect(&addr).await;
        c.send(12, &fetch("t", 0, 0, 60_000, min)).await
    });
    while b.stats().fetches_parked == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!parked.is_finished());
    // The second batch completes it at once, with both batches.
    assert_eq!(produced(&admin.send(9, &produce("t", 0, 1, batch(1, 100, -1, -1, -1))).await), (0, 1));
    let r = tokio::time::timeout(Duration::from_secs(30), parked).await.expect("woken, not timed out").expect("task");
    let (err, hw, bytes) = fetched(&r);
    assert_eq!((err, hw), (0, 2));
    assert_eq!(bytes, 2 * one.len());
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_never_gets_enough_answers_empty_at_its_max_wait() {
    let b = broker().await;
    let mut c = Raw::connect(b.bootstrap()).await;
    c.send(7, &create_topic("t", 1, &[])).await;
    let start = tokio::time::Instant::now();
    let r = c.send(12, &fetch("t", 0, 0, 5_000, 1)).await;
    // The clock is virtual: exactly the max wait passed, and nothing came.
    assert_eq!(start.elapsed(), Duration::from_millis(5_000));
    assert_eq!(fetched(&r), (0, 0, 0));
    // min_bytes 0 answers at once.
    let start = tokio::time::Instant::now();
    c.send(12, &fetch("t", 0, 0, 5_000, 0)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn an_offset_out_of_range_is_answered_at_once_with_its_error() {
    let b = broker().await;
    let mut c = Raw::connect(b.bootstrap()).await;
    c.send(7, &create_topic("t", 1, &[])).await;
    c.send(9, &produce("t", 0, 1, batch(3, 10, -1, -1, -1))).await;
    let (err, ..) = fetched(&c.send(12, &fetch("t", 0, 4, 60_000, 1)).await);
    assert_eq!(err, E::OffsetOutOfRange.code());
    let (err, hw, bytes) = fetched(&c.send(12, &fetch("t", 0, 1, 60_000, 1)).await);
    assert_eq!((err, hw), (0, 3));
    assert!(bytes > 0, "the batch holding offset 1 is served whole");
    let (err, ..) = fetched(&c.send(12, &fetch("nope", 0, 0, 60_000, 1)).await);
    assert_eq!(err, E::UnknownTopicOrPartition.code());
}

#[tokio::test]
async fn a_retried_batch_gets_its_first_offset_and_a_gap_in_sequence_is_refused() {
    let b = broker().await;
    let mut c = Raw::connect(b.bootstrap()).await;
    c.send(7, &create_topic("t", 1, &[])).await;
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    let init = c.send(4, &req).await;
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0);
    let first = batch(3, 10, pid, epoch, 0);
    assert_eq!(produced(&c.send(9, &produce("t", 0, -1, first.clone())).await), (0, 0));
    assert_eq!(produced(&c.send(9, &produce("t", 0, -1, batch(2, 10, pid, epoch, 3))).await), (0, 3));
    // The first batch again (a retry after a lost ack): its original offset, nothing added.
    assert_eq!(produced(&c.send(9, &produce("t", 0, -1, first)).await), (0, 0));
    assert_eq!(latest(&mut c, "t", 0).await, 5);
    // Sequence 6 skips 5.
    let (err, _) = produced(&c.send(9, &produce("t", 0, -1, batch(1, 10, pid, epoch, 6))).await);
    assert_eq!(err, E::OutOfOrderSequenceNumber.code());
    assert_eq!(latest(&mut c, "t", 0).await, 5);
    // A transactional producer is refused at once.
    let mut tx = InitProducerIdRequest::default();
    tx.transactional_id = Some(TransactionalId(kafka_protocol::protocol::StrBytes::from_static_str("tx")));
    tx.transaction_timeout_ms = 60_000;
    assert_ne!(c.send(4, &tx).await.error_code, 0);
}

#[tokio::test]
async fn a_batch_over_max_message_bytes_is_refused_and_acks_zero_gets_no_answer() {
    let b = broker().await;
    let mut c = Raw::connect(b.bootstrap()).await;
    let r = c.send(7, &create_topic("small", 1, &[("max.message.bytes", "1000")])).await;
    assert_eq!(r.topics[0].error_code, 0);
    let (err, _) = produced(&c.send(9, &produce("small", 0, 1, batch(1, 2000, -1, -1, -1))).await);
    assert_eq!(err, E::MessageTooLarge.code());
    // acks = 0: no response; the next request's answer comes next.
    let mut quiet = Raw::connect(b.bootstrap()).await;
    let req = produce("small", 0, 0, batch(1, 10, -1, -1, -1));
    let frame = {
        use bytes::BufMut;
        use kafka_protocol::protocol::{Encodable, HeaderVersion};
        let mut buf = bytes::BytesMut::new();
        buf.put_i32(0);
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::Produce as i16;
        h.request_api_version = 9;
        h.correlation_id = 99;
        h.encode(&mut buf, ProduceRequest::header_version(9)).expect("header");
        req.encode(&mut buf, 9).expect("body");
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        buf
    };
    quiet.write(&frame).await;
    assert_eq!(latest(&mut quiet, "small", 0).await, 1, "stored, and answered nothing");
    // Unknown and invalid configs are named.
    let r = c.send(7, &create_topic("bad", 1, &[("retention.msec", "1")])).await;
    assert_eq!(r.topics[0].error_code, E::InvalidConfig.code());
    assert!(r.topics[0].error_message.as_ref().expect("says why").contains("retention.msec"));
    let r = c.send(7, &create_topic("bad", 1, &[])).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(c.send(7, &create_topic("bad", 1, &[])).await.topics[0].error_code, E::TopicAlreadyExists.code());
}

#[tokio::test]
async fn a_batch_whose_record_count_disagrees_with_its_offset_range_is_refused() {
    let b = broker().await;
    let mut c = Raw::connect(b.bootstrap()).await;
    c.send(7, &create_topic("t", 1, &[])).await;
    // Three records, but a last offset delta of 200: offsets the batch does not hold.
    let mut bad = bytes::BytesMut::from(&batch(3, 10, -1, -1, -1)[..]);
    bad[23..27].copy_from_slice(&200i32.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let (err, _) = produced(&c.send(9, &produce("t", 0, 1, bad.freeze())).await);
    assert_eq!(err, E::CorruptMessage.code());
    assert_eq!(latest(&mut c, "t", 0).await, 0, "nothing stored");
    let (err, _) = produced(&c.send(9, &produce("t", 0, 1, batch(3, 10, -1, -1, -1))).await);
    assert_eq!(err, 0);
    assert_eq!(latest(&mut c, "t", 0).await, 3);
}

#[tokio::test]
async fn malformed_frames_close_only_their_own_connection() {
    let b = broker().await;
    let mut good = Raw::connect(b.bootstrap()).await;
    good.send(7, &create_topic("t", 1, &[])).await;
    let cases: Vec<Vec<u8>> = vec![
        // A negative size.
        (-5i32).to_be_bytes().to_vec(),
        // A size over socket.request.max.bytes.
        (200i32 << 20).to_be_bytes().to_vec(),
        // An unknown API key.
        [&10i32.to_be_bytes()[..], &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]].concat(),
        // A known API that is not implemented (EndTxn v3).
        [&10i32.to_be_bytes()[..], &[0, 26, 0, 3, 0, 0, 0, 1, 0, 0]].concat(),
        // Metadata v9 whose body stops after the header.
        [&10i32.to_be_bytes()[..], &[0, 3, 0, 9, 0, 0, 0, 1, 0, 0]].concat(),
    ];
    for (i, frame) in cases.iter().enumerate() {
        let mut bad = Raw::connect(b.bootstrap()).await;
        bad.write(frame).await;
        assert!(bad.read_frame().await.is_none(), "case {i}: the broker closes the connection");
    }
    // Garbage records get CORRUPT_MESSAGE, not a closed connection.
    let r = good.send(9, &produce("t", 0, 1, bytes::Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))).await;
    assert_eq!(produced(&r).0, E::CorruptMessage.code());
    // Everyone else is still served.
    assert_eq!(latest(&mut good, "t", 0).await, 0);
    assert_eq!(b.stats().malformed, 5);
}
