//! The `tailgate` binary's exit codes and error messages.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn tailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_scenario_typo_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "typo.toml", "name = \"t\"\n[load]\nrate = 100\nduraton = \"2s\"\n");
    for sub in ["validate", "run"] {
        let out = tailgate().arg(sub).arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:4: `load.duraton`: unknown field `duraton`", f.display())), "{sub}: {err}");
    }
}

#[test]
fn bad_flags_exit_2() {
    let out = tailgate().args(["run", "scenarios/quickstart.toml", "--rate", "fast"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = tailgate().args(["run", "scenarios/quickstart.toml", "--bootstrap", "nohost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nohost` is not host:port"));
}

#[test]
fn workers_that_never_come_are_named_with_the_command_to_start_them() {
    let dir = tempfile::tempdir().unwrap();
    let text = "name = \"w\"\n[load]\nrate = 100\nduration = \"2s\"\n[workers]\ncount = 2\nlisten = \"127.0.0.1:0\"\n\
                register_timeout = \"1s\"\n";
    let f = write(&dir, "w.toml", text);
    let out = tailgate().arg("run").arg(&f).arg("--out").arg(dir.path().join("run")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 of 2 workers said hello within 1s on tailgate.control"), "{err}");
    assert!(err.contains("start `tailgate worker --bootstrap 127.0.0.1:"), "{err}");
    // What workers cannot be combined with is said before anything starts.
    let out = tailgate().args(["run", "scenarios/cdc-postgres.toml", "--workers", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workers: [connector] source: workers post"));
}

#[test]
fn an_unreachable_broker_exits_3_naming_the_address_in_time() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of the loopback address.
    let started = Instant::now();
    let out = tailgate()
        .args(["run", "scenarios/quickstart.toml", "--bootstrap", "127.0.0.1:1", "--out"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a Kafka broker at 127.0.0.1:1"), "{err}");
    assert!(err.contains("omit --bootstrap"), "says what to try: {err}");
}

#[test]
fn a_failed_objective_exits_1_and_still_writes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "strict.toml",
        "name = \"strict\"\n[load]\nrate = 50\nwarmup = \"1s\"\nduration = \"2s\"\n\
         [[sla]]\nmetric = \"end_to_end.p50_ms\"\nmax = 0.001\n",
    );
    let run_dir = dir.path().join("run");
    let out = tailgate().arg("run").arg(&f).arg("--out").arg(&run_dir).arg("-q").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("FAIL end_to_end.p50_ms"), "{stdout}");
    assert!(stdout.contains("PASS counts.lost = 0.000"), "{stdout}");
    assert!(stdout.contains("verdict   FAIL"), "{stdout}");
    assert!(run_dir.join("result.json").exists());
}

/// Runs the scenario `text` (the report included) and checks that none of `secrets`
/// appears in its output or in any file of its run directory; returns `result.json`.
fn run_keeping_secrets(text: &str, secrets: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "secret.toml", text);
    let run_dir = dir.path().join("run");
    let out = tailgate().arg("run").arg(&f).arg("--out").arg(&run_dir).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let mut files = vec![run_dir.clone()];
    let mut read = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        for secret in secrets {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds {secret}", p.display());
        }
        read += 1;
    }
    for secret in secrets {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
    assert!(read >= 4, "result.json, the logs and the report were looked at");
    std::fs::read_to_string(run_dir.join("result.json")).unwrap()
}

#[test]
fn client_credentials_reach_no_file_of_the_run_and_no_output() {
    const SECRET: &str = "hunter2-never-shown";
    let result = run_keeping_secrets(
        &format!(
            "name = \"secret\"\n[load]\nrate = 50\nwarmup = \"1s\"\nduration = \"1s\"\n\
             [kafka.producer]\n\"sasl.password\" = \"{SECRET}\"\n\
             [kafka.consumer]\n\"sasl.password\" = \"{SECRET}\"\n\
             [kafka.stages.agent.producer]\n\"sasl.password\" = \"{SECRET}\"\n"
        ),
        &[SECRET],
    );
    assert!(result.contains("\"sasl.password\": \"***\""), "the setting is named, its value hidden");
}

/// A `sasl.password`, a PostgreSQL password (the change-data-capture source and the
/// enrichment) and a Redis password (the edge cache), each used for real: none of them is
/// in the run's output or files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_client_passwords_reach_no_file_of_the_run_and_no_output() {
    const TEST: &str = "database_and_client_passwords_reach_no_file_of_the_run_and_no_output";
    let (Some(pg), Some(redis)) = (testkit::postgres_with_secret(TEST).await, testkit::redis_with_secret(TEST).await)
    else {
        return;
    };
    let password = |url: &str| {
        url.split_once("://")
            .and_then(|(_, r)| r.split_once('@'))
            .and_then(|(c, _)| c.rsplit_once(':'))
            .map(|(_, p)| p.to_owned())
            .unwrap()
    };
    let (pg_secret, redis_secret) = (password(&pg), password(&redis));
    const SASL: &str = "sasl-Secret-never-shown";
    let slot = format!("tg_secret_{}", probes::now_ns() % 1_000_000_007);
    let text = format!(
        "name = \"secrets\"\n[load]\nrate = 50\nwarmup = \"1s\"\nduration = \"1s\"\n\
         [connector]\nsource = \"postgres\"\npostgres = \"{pg}\"\nslot = \"{slot}\"\n\
         [streamjob.enrich]\nurl = \"{pg}\"\ntimeout = \"5s\"\n\
         [edge_cache]\nurl = \"{redis}\"\n\
         [kafka.producer]\n\"sasl.password\" = \"{SASL}\"\n"
    );
    let result = tokio::task::block_in_place(|| run_keeping_secrets(&text, &[&pg_secret, &redis_secret, SASL]));
    assert!(result.contains("\"delivered\": 100"), "{result}");
    assert!(result.contains("tailgate_secret:***@"), "the PostgreSQL user is named, its password hidden");
    let db = pipeline::io::postgres::connect(&pg).await.unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.unwrap();
}

#[test]
fn watch_exits_3_naming_an_unreachable_broker() {
    let started = Instant::now();
    let out = tailgate().args(["watch", "--bootstrap", "127.0.0.1:1"]).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a Kafka broker at 127.0.0.1:1"), "{err}");
}

#[test]
fn an_unknown_profile_or_client_setting_exits_2_before_anything_runs() {
    let started = Instant::now();
    let out = tailgate().args(["run", "scenarios/profiles.toml", "--profile", "balanced,fastest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--profile `fastest`: scenario `profiles` has the profiles low-latency, balanced, zstd, throughput"
        ),
        "{err}"
    );
    let out = tailgate().args(["run", "scenarios/invalid/bad-profile.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":12: `profiles.fast.producer.linger.mss`: No such configuration property"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "refused before starting a broker");
}

#[test]
fn a_run_measures_through_the_broker_another_process_serves() {
    use std::io::BufRead;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut broker = tailgate()
        .args(["broker", "--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(broker.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), addr, "the broker prints the address it serves");

    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "two.toml", "name = \"two\"\n[load]\nrate = 100\nwarmup = \"0s\"\nduration = \"2s\"\n");
    let run_dir = dir.path().join("run");
    let out = tailgate()
        .args(["run", "--quiet", "--no-report", "--bootstrap", &addr, "--out"])
        .arg(&run_dir)
        .arg(&f)
        .output()
        .unwrap();
    let _ = Command::new("kill").args(["-INT", &broker.id().to_string()]).status();
    let stopped = broker.wait().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["broker"]["kind"], "external");
    assert_eq!(result["broker"]["bootstrap"], addr.as_str());
    let c = &result["counts"];
    assert_eq!((c["sent"].as_u64(), c["lost"].as_u64()), (Some(200), Some(0)), "{c}");
    assert_eq!(c["delivered"], c["sent"]);
    assert_eq!(stopped.code(), Some(0), "Ctrl-C stops the broker cleanly");
}

#[test]
fn a_broker_on_a_taken_address_exits_3_saying_so() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tailgate().args(["broker", "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("try another --listen"), "{err}");
}

#[test]
fn a_stage_without_what_it_needs_exits_2_before_asking_any_broker() {
    let out = tailgate().args(["stage", "agent", "--config", "scenarios/quickstart.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage agent needs a broker: give --bootstrap HOST:PORT"), "{err}");

    // Nothing listens on port 1: the missing source file is named first, at once.
    let started = Instant::now();
    let out = tailgate()
        .args(["stage", "connector", "--config", "scenarios/quickstart.toml", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage connector needs [connector] sqlite"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    let out = tailgate().args(["stage", "dispatcher", "--config", "scenarios/quickstart.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown stage is a bad flag");
}
