//! `watch`'s tap on a live pipeline: an embedded broker serves as the "external" cluster,
//! a run feeds it, and the tap (its own consumer group, reading from the end) sees the
//! events with every stage's stamps, while the run's own accounting stays exact.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use dashboard::{DashState, Feed, Meta, Sample};
use pipeline::topics;
use probes::StampIter;
use std::sync::{Arc, Mutex};
use tailgate::run::{RunOptions, run};
use tokio_util::sync::CancellationToken;

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
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, "name = \"watched\"\n[load]\nrate = 200\nwarmup = \"2s\"\nduration = \"2s\"\n").unwrap();
    let opts = RunOptions {
        scenario,
        out: Some(dir.path().join("run")),
        bootstrap: Some(broker.bootstrap().to_owned()),
        ..RunOptions::default()
    };
    let outcome = run(opts).await.unwrap();
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
