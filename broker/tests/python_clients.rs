//! The Python clients users' own stages are built on, each against a broker of its own:
//! conformance scripts for confluent-kafka, aiokafka and kafka-python (topics, idempotent
//! produce with keys and headers, a group of two that commits and is resumed, a compacted
//! topic read back), and a real Faust app forwarding records with their headers.
//!
//! They need the virtual environment `.ci/run` makes (`.venv` at the repository root, or
//! the interpreter in `TAILGATE_PYTHON`). Without it they print SKIPPED and pass, unless
//! `TAILGATE_REQUIRE` names `python` (as in CI), where they fail.

use broker::{Broker, Config};
use std::path::PathBuf;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TAILGATE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    venv.exists().then_some(venv)
}

async fn run(script: &str) {
    let Some(py) = python() else {
        let why = "no Python environment (.venv/bin/python or TAILGATE_PYTHON); .ci/run makes one";
        testkit::missing::<()>(script, "python", why);
        return;
    };
    let b = Broker::start(Config::default()).await.expect("broker");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let bootstrap = b.bootstrap().to_owned();
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(py).arg(path).arg(bootstrap).output())
        .await
        .expect("joined")
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains(": ok"), "{script} said:\n{text}");
}

/// One after another, each on a broker of its own: four Python clients and a Faust worker
/// at once would starve each other on two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_aiokafka_kafka_python_and_a_faust_app_conform() {
    for script in ["confluent_kafka_client.py", "aiokafka_client.py", "kafka_python_client.py", "faust_client.py"] {
        run(script).await;
    }
}
