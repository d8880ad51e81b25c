//! The multi-process topology users deploy: `tailgate broker` in one process, each stage a
//! `tailgate stage` process of its own (two agents sharing their group), and `tailgate run`
//! with `[stages] external = true` driving the load and accounting for every event, twice
//! in a row against the same stage processes; on SQLite files, and on PostgreSQL and Redis
//! where they run.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;
use support::process::{Process, free_addr, get, tailgate};

#[test]
fn stages_as_separate_processes_account_for_every_event_run_after_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let stores =
        format!("[connector]\nsqlite = \"{d}/source.sqlite\"\n[edge_cache]\nurl = \"{d}/edge-cache.sqlite\"\n");
    topology(&dir, &stores);
}

/// The same topology as users deploy it with PostgreSQL (change capture through a slot the
/// connector process makes) and Redis (the edge cache the agents share), where those run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_as_separate_processes_on_postgres_and_redis() {
    let (Some(pg), Some(redis)) = (
        testkit::postgres("stages_as_separate_processes_on_postgres_and_redis").await,
        testkit::redis("stages_as_separate_processes_on_postgres_and_redis").await,
    ) else {
        return;
    };
    let slot = format!("tg_stages_{}", probes::now_ns() % 1_000_000_007);
    let dir = tempfile::tempdir().unwrap();
    let stores = format!(
        "[connector]\nsource = \"postgres\"\npostgres = \"{pg}\"\nslot = \"{slot}\"\n[edge_cache]\nurl = \"{redis}\"\n"
    );
    tokio::task::block_in_place(|| topology(&dir, &stores));
    let db = pipeline::io::postgres::connect(&pg).await.unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

/// A broker, five stage processes (two agents in one group) and two runs in a row, with
/// the source and edge cache `stores` gives.
fn topology(dir: &tempfile::TempDir, stores: &str) {
    let broker_addr = free_addr();
    let mut broker = Process::spawn("broker", tailgate().args(["broker", "--listen", &broker_addr]));
    broker.wait_for("Ctrl-C stops it");

    let (gateway, connector_metrics, agent_metrics) = (free_addr(), free_addr(), [free_addr(), free_addr()]);
    let grpc = free_addr();
    let config = dir.path().join("stages.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            r#"
name = "stages"
[load]
rate = 200
sessions = 16
warmup = "0s"
duration = "2s"
drain = "60s"
poison_every = 50
[broker]
bootstrap = "{broker_addr}"
partitions = 4
{stores}
[[connector.transforms]]
type = "filter"
field = "session"
equals = 3
[streamjob.enrich]
url = "{d}/profiles.sqlite"
timeout = "5s"
[stages]
external = true
gateway = "http://{gateway}"
metrics = ["http://{connector_metrics}/metrics", "http://{a0}/metrics", "http://{a1}/metrics", "http://{gateway}/metrics"]
"#,
            a0 = agent_metrics[0],
            a1 = agent_metrics[1],
        ),
    )
    .unwrap();
    let stage = |name: &str, extra: &[&str]| {
        let mut cmd = tailgate();
        cmd.args(["stage", name, "--config"]).arg(&config).args(extra);
        Process::spawn(name, &mut cmd)
    };
    let mut stages = vec![
        stage("connector", &["--metrics", &connector_metrics]),
        stage("agent", &["--metrics", &agent_metrics[0], "--state-dir", &format!("{d}/agent-0")]),
        stage("agent", &["--metrics", &agent_metrics[1], "--state-dir", &format!("{d}/agent-1")]),
        stage("streamjob", &[]),
        stage("gateway", &["--listen", &gateway, "--grpc", &grpc]),
    ];
    for s in &mut stages {
        s.wait_for("ready in");
    }

    for round in 1..=2 {
        let run_dir = dir.path().join(format!("run-{round}"));
        let out =
            tailgate().args(["run", "--quiet", "--no-report", "--out"]).arg(&run_dir).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "run {round}: {}", String::from_utf8_lossy(&out.stderr));
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap()).unwrap();
        let c = &result["counts"];
        let n = |k: &str| c[k].as_u64().unwrap();
        assert_eq!(n("sent"), 400, "run {round}: {c}");
        assert_eq!(n("dead_lettered"), 8, "run {round}: every 50th event is poison: {c}");
        assert!(n("filtered") > 0, "run {round}: session 3 is filtered: {c}");
        assert_eq!(n("delivered") + n("dead_lettered") + n("filtered"), n("sent"), "run {round}: {c}");
        assert_eq!(n("lost"), 0, "run {round}: {c}");
        let external = result["pipeline"]["external"].as_str().unwrap();
        assert!(external.contains(&format!("gateway http://{gateway}")), "{external}");
        // Each hop of the distributed pipeline was measured.
        let hops = result["hops"].as_array().unwrap();
        for stage in ["connector", "agent", "streamjob", "gateway"] {
            let hop = hops.iter().find(|h| h["name"] == stage).unwrap();
            assert_eq!(hop["count"].as_u64(), Some(n("delivered")), "run {round}: hop {stage}");
        }
    }

    // A long-poll from the start of the gateway's retention sees the second run's updates,
    // each enriched by the stream job process from the profiles the run seeded.
    let last_run = {
        let result = std::fs::read_to_string(dir.path().join("run-2/result.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&result).unwrap()
    };
    let poll: serde_json::Value = serde_json::from_str(&get(&gateway, "/poll?cursor=0&wait=0&max=1000")).unwrap();
    let updates: Vec<&serde_json::Value> =
        poll["updates"].as_array().unwrap().iter().filter(|u| u["run"] == last_run["run_id"]).collect();
    assert_eq!(Some(updates.len() as u64), last_run["counts"]["delivered"].as_u64(), "{poll}");
    for u in updates {
        let e = &u["update"]["enrichment"];
        assert!(e["from"] == "db" || e["from"] == "cache", "{u}");
        assert!(e["profile"].as_str().is_some_and(|p| p.contains('/')), "{u}");
    }

    // A stage's /metrics shows its outcomes, and its group's lag as the broker's offsets show it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = get(&agent_metrics[0], "/metrics");
        let lag = page.lines().any(|l| l.starts_with("tailgate_consumer_group_lag{group=\"tailgate-agent\"} "));
        if lag && page.contains("tailgate_stage_events_total{stage=\"agent\",outcome=\"forwarded\"}") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(500));
    }

    assert!(std::net::TcpStream::connect(&grpc).is_ok(), "the gateway serves gRPC on {grpc}");
    let mut said = Vec::new();
    for s in stages {
        let name = s.name.clone();
        let (code, text) = s.stop();
        assert_eq!(code, Some(0), "{name} stops cleanly on SIGTERM:\n{text}");
        assert!(text.contains(&format!("stage {name}: stopped")), "{text}");
        said.push(text);
    }
    // The two agents split the partitions of their group.
    for agent in &said[1..3] {
        let assigned =
            agent.lines().any(|l| l.split("partitions [").nth(1).is_some_and(|p| p.starts_with(char::is_numeric)));
        assert!(assigned, "{agent}");
    }
    let (code, _) = broker.stop();
    assert_eq!(code, Some(0));
}

/// The agent and then the stream job, each a process of its own, killed with SIGKILL mid-run
/// at the quick start's rate and started again: every event arrives, none twice at the
/// client, and each session's beats are numbered 1, 2, 3... without a gap or a repeat: the
/// agent's state came back from its changelog, and every event read again after the kill
/// (all since the last commit, however many) was known as applied already. The group
/// notices a killed member when its session times out, so the scenario sets Kafka's
/// smallest, 6 s.
#[test]
fn stage_processes_killed_mid_run_lose_nothing_and_keep_beats_continuous() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let broker_addr = free_addr();
    let mut broker = Process::spawn("broker", tailgate().args(["broker", "--listen", &broker_addr]));
    broker.wait_for("Ctrl-C stops it");
    let (gateway, gateway_metrics) = (free_addr(), free_addr());
    let config = dir.path().join("kill.toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "kill"
[load]
rate = 1000
sessions = 64
payload_bytes = 256
warmup = "1s"
duration = "7s"
drain = "90s"
[broker]
bootstrap = "{broker_addr}"
partitions = 3
[connector]
sqlite = "{d}/source.sqlite"
[edge_cache]
url = "{d}/edge-cache.sqlite"
[gateway]
retain = 20000
# A killed member holds its partitions until its session times out (librdkafka: 45 s).
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[stages]
external = true
gateway = "http://{gateway}"
metrics = ["http://{gateway_metrics}/metrics"]
"#
        ),
    )
    .unwrap();
    let stage = |name: &str, extra: &[&str]| {
        let mut cmd = tailgate();
        cmd.args(["stage", name, "--config"]).arg(&config).args(extra);
        let mut p = Process::spawn(name, &mut cmd);
        p.wait_for("ready in");
        p
    };
    let state = format!("{d}/agent-state");
    let _connector = stage("connector", &[]);
    let agent = stage("agent", &["--state-dir", &state]);
    let streamjob = stage("streamjob", &[]);
    let _gateway = stage("gateway", &["--listen", &gateway, "--metrics", &gateway_metrics]);

    let run_dir = dir.path().join("run");
    let mut run = Process::spawn("run", tailgate().args(["run", "--no-report", "--out"]).arg(&run_dir).arg(&config));
    run.wait_for("sent");
    std::thread::sleep(Duration::from_secs(2));
    agent.kill();
    let _agent = stage("agent", &["--state-dir", &state]);
    std::thread::sleep(Duration::from_secs(2));
    streamjob.kill();
    let _streamjob = stage("streamjob", &[]);
    let (code, said) = run.wait();
    assert_eq!(code, Some(0), "{said}");

    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap()).unwrap();
    let c = &result["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!((n("sent"), n("delivered"), n("lost"), n("client_duplicates")), (8000, 8000, 0, 0), "{c}");

    // Every update of the run, from the gateway's long-poll backlog, by session.
    let mut beats: std::collections::BTreeMap<u64, Vec<(u64, u64)>> = std::collections::BTreeMap::new();
    let mut cursor = 0;
    loop {
        let page: serde_json::Value =
            serde_json::from_str(&get(&gateway, &format!("/poll?cursor={cursor}&wait=0&max=5000"))).unwrap();
        let updates = page["updates"].as_array().unwrap();
        if updates.is_empty() {
            break;
        }
        assert_eq!(page["missed"], 0, "the backlog keeps the whole run");
        for u in updates.iter().filter(|u| u["run"] == result["run_id"]) {
            let e = &u["update"];
            let (id, session) = (e["id"].as_u64().unwrap(), e["session"].as_u64().unwrap());
            beats.entry(session).or_default().push((id, e["beat"]["number"].as_u64().unwrap()));
        }
        cursor = page["cursor"].as_u64().unwrap();
    }
    assert_eq!(beats.len(), 64);
    for (session, mut b) in beats {
        b.sort_unstable();
        let numbers: Vec<u64> = b.iter().map(|(_, n)| *n).collect();
        let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "session {session}: beats in id order");
    }
}
