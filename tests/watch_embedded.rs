//! `watch`'s tap on a live pipeline: an embedded broker serves as the "external" cluster,
//! a run feeds it, and the tap (its own consumer group, reading from the end) sees the
//! events with every stage's stamps, while the run's own accounting stays exact.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use dashboard::{DashState, Feed, Meta, Sample};
use pipeline::topics;
use probes::StampIter;
use std::sync::{Arc, Mutex};
use tailgate::run::run;
use tokio_util::sync::CancellationToken;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_taps_a_running_pipeline_without_touching_it() {
    let (broker, kafka) = testkit::broker(3).await;

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let cancel = CancellationToken::new();
    let tap = {
        let (samples, cancel, kafka) = (Arc::clone(&samples), cancel.clone(), kafka.clone());
        tokio::spawn(async move {
            pipeline::tap::run(
                &kafka,
                &[topics::UPDATES.to_owned()],
                false,
                move |intended_ns, stamps: &str, received_ns| {
                    samples.lock().unwrap().push(Sample { intended_ns, received_ns, stamps: stamps.to_owned() });
                },
                || {},
                cancel,
            )
            .await
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let scenario = "name = \"watched\"\n[load]\nrate = 200\nwarmup = \"2s\"\nduration = \"2s\"\n";
    let outcome = run(support::against(broker.bootstrap(), dir.path(), scenario)).await.unwrap();
    cancel.cancel();
    tap.await.unwrap().unwrap();

    // The stages' groups have committed everything; the tap's group committed nothing.
    let mut groups = pipeline::topology::stage_groups();
    groups.push("tailgate-no-such-group".into());
    let lags = pipeline::tap::group_lags(&kafka, &groups, std::time::Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        lags,
        [
            ("tailgate-agent".to_owned(), Some(0)),
            ("tailgate-streamjob".to_owned(), Some(0)),
            ("tailgate-gateway".to_owned(), Some(0)),
            ("tailgate-no-such-group".to_owned(), None),
        ]
    );

    let c = outcome.runs[0].result.counts;
    assert_eq!((c.sent, c.lost, c.dead_lettered), (800, 0, 0), "the tap does not disturb the run");
    assert_eq!(outcome.runs[0].result.broker.kind, "external");

    let samples = samples.lock().unwrap().clone();
    // The tap reads from the end once its own group has joined: it may miss the first events.
    assert!(samples.len() >= 200, "the tap saw {} of 800 events", samples.len());
    assert!(samples.len() as u64 <= c.delivered + c.duplicates);
    for s in &samples {
        let stages: Vec<&str> = StampIter::new(s.stamps.as_bytes()).unwrap().map(|st| st.unwrap().stage).collect();
        assert_eq!(stages, ["connector", "agent", "streamjob"]);
        assert!(s.received_ns >= s.intended_ns);
    }

    // The dashboard learns the path from the stamps alone.
    let meta = Meta { sink: pipeline::tap::NAME.into(), started_ns: samples[0].received_ns, ..Meta::default() };
    let mut state = DashState::new(meta);
    for s in samples.iter().cloned() {
        state.apply(Feed::Sample(s));
    }
    state.window = dashboard::WindowSize::OneMinute;
    state.tick(samples.last().unwrap().received_ns);
    let view = state.view();
    let names: Vec<&str> = view.hops.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source->connector",
            "connector",
            "connector->agent",
            "agent",
            "agent->streamjob",
            "streamjob",
            "streamjob->tap"
        ]
    );
    assert_eq!(view.end_to_end.count, samples.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_started_before_its_topic_exists_waits_and_then_sees_every_record() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let (_broker, kafka) = testkit::broker(1).await;
    let topic = "peer.out".to_owned();
    let waited: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let cancel = CancellationToken::new();
    let watch = {
        let (kafka, topic, waited, samples, cancel) =
            (kafka.clone(), topic.clone(), Arc::clone(&waited), Arc::clone(&samples), cancel.clone());
        tokio::spawn(async move {
            let topics = [topic];
            let missing =
                pipeline::tap::wait_for_topics(&kafka, &topics, |m| waited.lock().unwrap().push(m.to_vec()), &cancel)
                    .await
                    .unwrap()
                    .expect("not cancelled");
            let on_sample = move |intended_ns, stamps: &str, received_ns| {
                samples.lock().unwrap().push(Sample { intended_ns, received_ns, stamps: stamps.to_owned() });
            };
            pipeline::tap::run(&kafka, &topics, missing == topics, on_sample, || {}, cancel).await
        })
    };
    // The pipeline makes its topic a second later and writes at once.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(*waited.lock().unwrap(), [vec![topic.clone()]], "the watch says what it waits for");
    kafka.ensure_topics(&[topic.as_str()], &[]).await.unwrap();
    let created = std::time::Instant::now();
    let producer: FutureProducer = kafka.producer_config("peer").create().unwrap();
    let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for i in 0..100u64 {
        let intended = probes::now_ns().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "traceparent", value: Some(&trace[..]) })
            .insert(Header { key: "tg-intended", value: Some(intended.as_bytes()) })
            .insert(Header { key: "tg-stamps", value: Some(format!("peer:{intended}:{intended}").as_bytes()) });
        let body = i.to_be_bytes();
        let record = FutureRecord::<(), _>::to(&topic).payload(&body).headers(headers);
        producer.send(record, std::time::Duration::from_secs(5)).await.unwrap();
    }
    // Every record, though written before the tap had joined: it read the new topic from
    // its start.
    while samples.lock().unwrap().len() < 100 && created.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = samples.lock().unwrap().len();
    eprintln!("the watch had all {seen} records {:?} after the topic was made", created.elapsed());
    cancel.cancel();
    watch.await.unwrap().unwrap();
    assert_eq!(seen, 100);
}
