//! A whole run with the Faust agent (`[agent] kind = "faust"`) on the embedded broker, its
//! worker killed mid-run: every event is accounted for exactly, none reaches the client
//! twice, the agent's hop shows in the breakdown, the worker's table comes back from its
//! changelog, and what it ran on and the CPU it used are in `result.json`.
//!
//! It needs the Python environment `scripts/python-env` makes (`.venv` at the repository
//! root, or `TAILGATE_PYTHON`); without it the test is skipped, unless `TAILGATE_REQUIRE`
//! names `python` (as in CI), where it fails.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faust_agent_killed_mid_run_loses_nothing_and_shows_its_hop() {
    let test = "a_faust_agent_killed_mid_run_loses_nothing_and_shows_its_hop";
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let py = std::env::var_os("TAILGATE_PYTHON").map_or(py, PathBuf::from);
    if !py.exists() {
        let why = "no Python environment (.venv/bin/python or TAILGATE_PYTHON); run scripts/python-env";
        return testkit::missing(test, "python", why).unwrap_or(());
    }
    let r = support::run_text(&format!(
        r#"
name = "faust-kill"
[load]
rate = 1000
sessions = 64
payload_bytes = 256
warmup = "1s"
duration = "7s"
drain = "60s"
[broker]
partitions = 3
[agent]
kind = "faust"
python = "{}"
[kafka.producer]
"acks" = "all"
# A killed worker holds its partitions until its session times out.
[kafka.consumer]
"session.timeout.ms" = "6000"
[[faults]]
at = "3s"
kind = "stage_kill"
stage = "agent"
duration = "300ms"
"#,
        py.display()
    ))
    .await;
    let c = r.counts;
    assert_eq!((c.sent, c.delivered, c.lost, c.dead_lettered, c.client_duplicates), (8000, 8000, 0, 0, 0), "{c:?}");
    let agent = r.hops.iter().find(|h| h.name == "agent").unwrap_or_else(|| panic!("no agent hop: {:?}", r.hops));
    assert_eq!(agent.stats.count, 7000, "every measured event has the agent's stamp: {agent:?}");
    let p = r.pipeline.as_ref().unwrap();
    assert!(p.agent.starts_with("faust: faust-streaming "), "{}", p.agent);
    // The first worker found an empty table; the one started after the kill recovered it.
    assert_eq!(p.agent_restores.len(), 2, "{:?}", p.agent_restores);
    let again = &p.agent_restores[1];
    assert!(again.sessions > 0 && again.records > 0, "{again:?}");
    assert_eq!(r.faults[0].stage.as_deref(), Some("agent"));
    let cpu = r.cpu.as_ref().unwrap();
    assert!(cpu.tailgate_s > 0.0 && cpu.agent_process_s.is_some_and(|a| a > 0.0), "{cpu:?}");
}
