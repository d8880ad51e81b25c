//! The broker with a real client (librdkafka through rdkafka): keys and headers through an
//! idempotent producer, consumer groups of two and three members that split partitions and
//! resume from committed offsets, compacted topics read back to their latest values,
//! ListOffsets after multi-record batches, and a restart with a data directory.

use broker::{Broker, Config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    c
}

async fn create(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().expect("admin");
    let t = configs.iter().fold(NewTopic::new(topic, partitions, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
    let r = admin.create_topics(&[t], &AdminOptions::new()).await.expect("create");
    r[0].as_ref().expect("created");
}

fn producer(bootstrap: &str) -> FutureProducer {
    client(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: Option<&str>) -> (i32, i64) {
    let headers = OwnedHeaders::new().insert(Header { key: "tg-stamps", value: Some("connector:1:2") });
    let mut r = FutureRecord::<str, str>::to(topic).key(key).headers(headers);
    if let Some(v) = value {
        r = r.payload(v);
    }
    let d = p.send(r, Duration::from_secs(10)).await.expect("acknowledged");
    (d.partition, d.offset)
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

/// Polls every consumer (in turn, on this thread) until `done` holds or 60 s pass.
fn poll_until(
    consumers: &[&BaseConsumer],
    mut on: impl FnMut(usize, &rdkafka::message::BorrowedMessage<'_>),
    done: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        for (i, c) in consumers.iter().enumerate() {
            if let Some(m) = c.poll(Duration::from_millis(20)) {
                on(i, &m.expect("no consumer error"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_headers_and_idempotent_sends_come_back_in_order_per_partition() {
    let b = Broker::start(Config::default()).await.expect("broker");
    let bs = b.bootstrap().to_owned();
    create(&bs, "t", 3, &[]).await;
    let p = producer(&bs);
    let mut sent: HashMap<String, Vec<i64>> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for i in 0..60 {
        let key = format!("session-{}", i % 6);
        let (part, offset) = send(&p, "t", &key, Some(&format!("{i}"))).await;
        assert_eq!(*partition_of.entry(key.clone()).or_insert(part), part, "a key stays on its partition");
        sent.entry(key).or_default().push(offset);
    }
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let c = consumer(&bs2, "reader");
        c.subscribe(&["t"]).expect("subscribe");
        let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut n = 0;
        let count = std::cell::Cell::new(0);
        poll_until(
            &[&c],
            |_, m| {
                let key = String::from_utf8_lossy(m.key().expect("key")).into_owned();
                let h = m.headers().expect("headers").get(0);
                assert_eq!((h.key, h.value), ("tg-stamps", Some(&b"connector:1:2"[..])));
                got.entry(key).or_default().push(String::from_utf8_lossy(m.payload().expect("value")).into_owned());
                n += 1;
                count.set(n);
            },
            || count.get() == 60,
        );
        for (key, values) in got {
            let s: usize = key.trim_start_matches("session-").parse().expect("n");
            let want: Vec<String> = (0..60).filter(|i| i % 6 == s).map(|i| i.to_string()).collect();
            assert_eq!(values, want, "{key} in send order");
        }
    })
    .await
    .expect("read");
    // ListOffsets (latest) agrees with what was written, batch sizes regardless.
    let c = consumer(&bs, "marks");
    let total: i64 = (0..3).map(|p| c.fetch_watermarks("t", p, Duration::from_secs(5)).expect("marks").1).sum();
    assert_eq!(total, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_members_split_the_partitions_and_resume_from_committed_offsets() {
    let b = Broker::start(Config::default()).await.expect("broker");
    let bs = b.bootstrap().to_owned();
    create(&bs, "t", 6, &[]).await;
    let p = producer(&bs);
    for i in 0..120 {
        send(&p, "t", &format!("k{i}"), Some("v")).await;
    }
    tokio::task::spawn_blocking(move || {
        // Two members: each partition read by exactly one of them; every record once.
        let a = consumer(&bs, "g");
        let c = consumer(&bs, "g");
        a.subscribe(&["t"]).expect("subscribe");
        c.subscribe(&["t"]).expect("subscribe");
        let owners = |cs: &[&BaseConsumer]| -> Vec<BTreeSet<i32>> {
            cs.iter()
                .map(|c| c.assignment().expect("assignment").elements().iter().map(|e| e.partition()).collect())
                .collect()
        };
        let ends: Vec<i64> =
            (0..6).map(|p| a.fetch_watermarks("t", p, Duration::from_secs(5)).expect("watermarks").1).collect();
        // Each member has read its own partitions to their end (not only the union of both:
        // a member may have read a partition before the rebalance moved it to the other).
        let caught_up = |c: &BaseConsumer| {
            c.position()
                .expect("position")
                .elements()
                .iter()
                .all(|e| matches!(e.offset(), rdkafka::Offset::Offset(o) if o == ends[e.partition() as usize]))
        };
        let seen = std::cell::RefCell::new(BTreeSet::new());
        poll_until(
            &[&a, &c],
            |_, m| {
                seen.borrow_mut().insert((m.partition(), m.offset()));
            },
            || {
                let o = owners(&[&a, &c]);
                seen.borrow().len() == 120
                    && o.iter().all(|s| !s.is_empty())
                    && o[0].len() + o[1].len() == 6
                    && caught_up(&a)
                    && caught_up(&c)
            },
        );
        let o = owners(&[&a, &c]);
        assert!(o[0].is_disjoint(&o[1]), "{o:?}");
        a.commit_consumer_state(CommitMode::Sync).expect("commit a");
        c.commit_consumer_state(CommitMode::Sync).expect("commit c");

        // A third member joins: three owners, still disjoint, covering all six.
        let d = consumer(&bs, "g");
        d.subscribe(&["t"]).expect("subscribe");
        poll_until(
            &[&a, &c, &d],
            |_, _| {},
            || {
                let o = owners(&[&a, &c, &d]);
                o.iter().all(|s| s.len() == 2) && o.iter().flatten().collect::<BTreeSet<_>>().len() == 6
            },
        );
        drop((a, c, d));

        // A new member of the same group resumes from the committed offsets: it reads only
        // what was written after them.
        let fresh = consumer(&bs, "g");
        fresh.subscribe(&["t"]).expect("subscribe");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let p = producer(&bs);
        for i in 0..12 {
            rt.block_on(send(&p, "t", &format!("late{i}"), Some("v")));
        }
        let got = std::cell::RefCell::new(Vec::new());
        poll_until(
            &[&fresh],
            |_, m| got.borrow_mut().push(String::from_utf8_lossy(m.key().expect("key")).into_owned()),
            || got.borrow().len() >= 12,
        );
        std::thread::sleep(Duration::from_millis(300));
        while let Some(m) = fresh.poll(Duration::from_millis(100)) {
            got.borrow_mut().push(String::from_utf8_lossy(m.expect("msg").key().expect("key")).into_owned());
        }
        let got = got.into_inner();
        assert_eq!(got.len(), 12, "only the records after the commit: {got:?}");
        assert!(got.iter().all(|k| k.starts_with("late")));
    })
    .await
    .expect("groups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_reads_back_to_its_latest_values() {
    let b = Broker::start(Config::default()).await.expect("broker");
    let bs = b.bootstrap().to_owned();
    create(&bs, "state", 1, &[("cleanup.policy", "compact"), ("delete.retention.ms", "0")]).await;
    let p = producer(&bs);
    for round in 0..50 {
        for k in ["a", "b", "c"] {
            send(&p, "state", k, Some(&format!("{k}{round}"))).await;
        }
    }
    send(&p, "state", "c", None).await; // a tombstone
    send(&p, "state", "d", Some("d0")).await;
    tokio::task::spawn_blocking(move || {
        // The cleaner runs in the broker's background once enough is dirty; read until it
        // has (compaction is asynchronous, as in Kafka).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let c = consumer(&bs, &format!("read-{}", std::time::Instant::now().elapsed().as_nanos()));
            c.subscribe(&["state"]).expect("subscribe");
            let (_, high) = c.fetch_watermarks("state", 0, Duration::from_secs(5)).expect("marks");
            let latest = std::cell::RefCell::new(BTreeMap::<String, Option<String>>::new());
            let mut records = 0;
            let end = std::cell::Cell::new(false);
            poll_until(
                &[&c],
                |_, m| {
                    records += 1;
                    let k = String::from_utf8_lossy(m.key().expect("key")).into_owned();
                    latest.borrow_mut().insert(k, m.payload().map(|v| String::from_utf8_lossy(v).into_owned()));
                    end.set(m.offset() + 1 == high);
                },
                || end.get(),
            );
            let latest = latest.into_inner();
            // Whatever the cleaner has done, the latest values are these.
            assert_eq!(latest.get("a"), Some(&Some("a49".to_owned())));
            assert_eq!(latest.get("b"), Some(&Some("b49".to_owned())));
            assert_eq!(latest.get("d"), Some(&Some("d0".to_owned())));
            assert!(matches!(latest.get("c"), None | Some(None)));
            if records <= 4 {
                break; // compacted: one record per live key (the tombstone is gone)
            }
            assert!(std::time::Instant::now() < deadline, "not compacted after 60 s ({records} records)");
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .expect("compaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_data_directory_serves_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = Config { data: Some(dir.path().to_owned()), ..Config::default() };
    let b = Broker::start(config.clone()).await.expect("broker");
    let bs = b.bootstrap().to_owned();
    create(&bs, "t", 2, &[("message.timestamp.type", "LogAppendTime")]).await;
    let p = producer(&bs);
    let mut acked = BTreeSet::new();
    for i in 0..40 {
        let (part, offset) = send(&p, "t", &format!("k{i}"), Some(&format!("{i}"))).await;
        acked.insert((part, offset));
    }
    drop(p);
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let c = consumer(&bs2, "g");
        c.subscribe(&["t"]).expect("subscribe");
        let n = std::cell::Cell::new(0);
        poll_until(&[&c], |_, _| n.set(n.get() + 1), || n.get() == 10);
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
    })
    .await
    .expect("first read");
    b.shutdown().await;

    // Same address, same directory: the topic, its records and the group's offsets are back.
    let b = Broker::start(Config { listen: bs.clone(), ..config }).await.expect("restarted");
    let bs = b.bootstrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let all = consumer(&bs, "everything");
        all.subscribe(&["t"]).expect("subscribe");
        let got = std::cell::RefCell::new(BTreeSet::new());
        poll_until(
            &[&all],
            |_, m| {
                assert!(
                    matches!(m.timestamp(), rdkafka::Timestamp::LogAppendTime(_)),
                    "the topic's timestamp type survives"
                );
                got.borrow_mut().insert((m.partition(), m.offset()));
            },
            || got.borrow().len() == acked.len(),
        );
        assert_eq!(got.into_inner(), acked);
        // The group resumes from its commit: the 30 records after the 10 it had read.
        let resumed = consumer(&bs, "g");
        resumed.subscribe(&["t"]).expect("subscribe");
        let n = std::cell::Cell::new(0);
        poll_until(&[&resumed], |_, _| n.set(n.get() + 1), || n.get() >= 30);
        while let Some(m) = resumed.poll(Duration::from_millis(500)) {
            m.expect("msg");
            n.set(n.get() + 1);
        }
        assert_eq!(n.get(), 30);
    })
    .await
    .expect("after restart");
}
