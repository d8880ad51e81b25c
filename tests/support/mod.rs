//! What the whole-run integration tests share: running a scenario given as text.

#![allow(dead_code, clippy::unwrap_used)]

pub mod process;

use tailgate::result::RunResult;
use tailgate::run::{RunOptions, run};

/// Options to run the scenario `text` against the cluster at `bootstrap`: the scenario
/// written into `dir`, the run directory `dir/run`.
pub fn against(bootstrap: &str, dir: &std::path::Path, text: &str) -> RunOptions {
    let scenario = dir.join("s.toml");
    std::fs::write(&scenario, text).unwrap();
    RunOptions { scenario, out: Some(dir.join("run")), bootstrap: Some(bootstrap.to_owned()), ..RunOptions::default() }
}

/// Runs the scenario `text` to its end in a temporary directory; its one run must not fail.
pub async fn run_text(text: &str) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, text).unwrap();
    let opts = RunOptions { scenario, out: Some(dir.path().join("run")), ..RunOptions::default() };
    let outcome = run(opts).await.expect("the run completes");
    assert_eq!(outcome.runs[0].failure, None);
    outcome.runs[0].result.clone()
}
