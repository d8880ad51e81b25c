//! `[broker] topic_prefix` on a shared cluster: two runs at once on one broker, each with a
//! prefix of its own, make their own topics and consumer groups and account for every
//! event, without seeing each other's.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use tailgate::run::{RunOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_with_their_own_prefixes_share_a_broker_without_colliding() {
    let broker = pipeline::embedded::EmbeddedBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, "name = \"shared\"\n[load]\nrate = 100\nwarmup = \"1s\"\nduration = \"3s\"\n").unwrap();
    let opts = |prefix: &str| RunOptions {
        scenario: scenario.clone(),
        out: Some(dir.path().join(prefix)),
        bootstrap: Some(broker.bootstrap().to_owned()),
        topic_prefix: Some(prefix.to_owned()),
        ..RunOptions::default()
    };
    let (a, b) = tokio::join!(run(opts("team-a.")), run(opts("team-b.")));
    for (outcome, prefix) in [(a.unwrap(), "team-a."), (b.unwrap(), "team-b.")] {
        let r = &outcome.runs[0].result;
        let c = r.counts;
        assert_eq!((c.sent, c.delivered, c.lost, c.dead_lettered, c.duplicates), (400, 400, 0, 0, 0), "{prefix}");
        assert_eq!(r.broker.topic_prefix, prefix);
    }

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("broker.address.family", "v4")
        .create()
        .unwrap();
    let (topics, groups) = tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
        let groups = consumer.fetch_group_list(None, Duration::from_secs(10)).unwrap();
        let topics: Vec<String> = md.topics().iter().map(|t| t.name().to_owned()).collect();
        (topics, groups.groups().iter().map(|g| g.name().to_owned()).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let every = pipeline::topology::every_topic().count();
    for prefix in ["team-a.", "team-b."] {
        let mine: Vec<&String> = topics.iter().filter(|t| t.starts_with(prefix)).collect();
        assert_eq!(mine.len(), every, "{prefix}: {topics:?}");
        assert!(mine.iter().any(|t| t.ends_with("story.actions")));
        assert!(groups.iter().any(|g| *g == format!("{prefix}tailgate-agent")), "{groups:?}");
    }
    assert_eq!(topics.len(), 2 * every, "no topic without a prefix: {topics:?}");
    assert!(groups.iter().all(|g| g.starts_with("team-a.") || g.starts_with("team-b.")), "{groups:?}");
}
