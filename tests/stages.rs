//! The multi-process topology users deploy: `tailgate broker` in one process, each stage a
//! `tailgate stage` process of its own (two agents sharing their group), and `tailgate run`
//! with `[stages] external = true` driving the load and accounting for every event, twice
//! in a row against the same stage processes; on SQLite files, and on PostgreSQL and Redis
//! where they run.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
}

fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// A child process whose stderr lines are collected, and which is stopped with SIGTERM.
struct Process {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn spawn(name: &str, cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { name: name.into(), child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("{} never said `{text}`; it said:\n{}", self.name, self.seen.join("\n")),
            }
        }
    }

    /// SIGTERM, then the exit code and everything it said.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Process {
    /// A test that fails half-way leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The body of `GET path` from `addr` (HTTP/1.0, so the server closes when done).
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

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
