//! Runs over a secured listener: the embedded broker with TLS and SASL SCRAM-SHA-512, every
//! client of the run connecting as `[kafka.client]` says, the password from the
//! environment; and the refusals a user meets: a wrong password, an unset variable.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use tailgate::result::RunResult;

const BROKER_PASSWORD: &str = "broker-side-s3cret";

fn scenario(dir: &Path) -> std::path::PathBuf {
    let tls = testkit::tls::write(dir);
    let text = format!(
        "name = \"sasl-ssl\"\n\
         [load]\nrate = 200\nwarmup = \"1s\"\nduration = \"3s\"\n\
         [broker]\nsecurity_protocol = \"SASL_SSL\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [broker.users]\n\"story-svc\" = \"${{TG_TEST_BROKER_PASSWORD}}\"\n\
         [kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"story-svc\"\n\"ssl.ca.location\" = \"{}\"\n",
        tls.cert.display(),
        tls.key.display(),
        tls.ca.display()
    );
    let path = dir.join("sasl-ssl.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(scenario: &Path, out: &Path, client_password: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .env("TG_TEST_BROKER_PASSWORD", BROKER_PASSWORD)
        .env("TAILGATE_KAFKA_SASL_PASSWORD", client_password)
        .output()
        .unwrap()
}

/// Every file under `dir`, as text.
fn every_file(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(every_file(&p));
        } else {
            out.push((p.clone(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
        }
    }
    out
}

#[test]
fn a_run_over_sasl_ssl_with_scram_sha_512_delivers_every_event_and_writes_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(&scenario(dir.path()), &out, BROKER_PASSWORD);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let r: RunResult = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    let c = r.counts;
    assert_eq!((c.sent, c.lost, c.dead_lettered), (800, 0, 0), "{c:?}");
    assert_eq!(c.delivered, c.sent, "{c:?}");
    assert_eq!(r.end_to_end.count, 600);
    assert!(r.sla.passed, "{:?}", r.sla);
    let b = &r.broker;
    assert_eq!(b.listener, "SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)");
    assert_eq!(b.producer["sasl.mechanisms"], "SCRAM-SHA-512");
    assert_eq!(b.consumer["security.protocol"], "SASL_SSL");
    assert_eq!(b.producer["sasl.password"], "***");
    assert!(!stdout.contains(BROKER_PASSWORD) && !stderr.contains(BROKER_PASSWORD));
    for (path, text) in every_file(&out) {
        assert!(!text.contains(BROKER_PASSWORD), "{} holds the password", path.display());
    }
}

#[test]
fn a_wrong_password_exits_3_naming_the_address_and_the_mechanism() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&scenario(dir.path()), &dir.path().join("run"), "not-the-password");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the Kafka broker at 127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("SASL mechanism SCRAM-SHA-512"), "{stderr}");
    assert!(stderr.contains("TAILGATE_KAFKA_SASL_PASSWORD"), "says what to try: {stderr}");
    assert!(!stderr.contains("not-the-password") && !stderr.contains(BROKER_PASSWORD), "{stderr}");
}

#[test]
fn an_unset_variable_exits_2_naming_file_line_and_setting() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("unset.toml");
    std::fs::write(&f, "name = \"t\"\n[kafka.client]\n\"sasl.password\" = \"${TG_TEST_NEVER_SET}\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tailgate")).arg("validate").arg(&f).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:2", f.display())), "{stderr}");
    assert!(stderr.contains("`sasl.password`: the environment variable TG_TEST_NEVER_SET is not set"), "{stderr}");
}

/// `tailgate broker` serves SASL from flags, the password read from the environment; a
/// `watch` connects with `--kafka` settings. The watch's topic is never made: it says it
/// waits, ends at `--for`, and fails, since a watch that timed nothing proves nothing. With
/// a wrong password it exits 3 naming the mechanism.
#[test]
fn a_secured_tailgate_broker_and_a_watch_that_connects_with_kafka_flags() {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut broker = Command::new(env!("CARGO_BIN_EXE_tailgate"))
        .args(["broker", "--listen", &addr, "--security-protocol", "SASL_PLAINTEXT"])
        .arg("--user=story-svc=${TG_TEST_BROKER_PASSWORD}")
        .env("TG_TEST_BROKER_PASSWORD", BROKER_PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(broker.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), addr, "the broker prints its address once it listens");

    let dir = tempfile::tempdir().unwrap();
    let watch = |password: &str| {
        Command::new(env!("CARGO_BIN_EXE_tailgate"))
            .args(["watch", "--bootstrap", &addr, "--topics", "never.made", "--for", "2s", "--out"])
            .arg(dir.path().join("watch"))
            .args(["--kafka", "security.protocol=SASL_PLAINTEXT", "--kafka", "sasl.mechanisms=SCRAM-SHA-256"])
            .args(["--kafka", "sasl.username=story-svc", "--no-report"])
            .env("TAILGATE_KAFKA_SASL_PASSWORD", password)
            .output()
            .unwrap()
    };
    let o = watch(BROKER_PASSWORD);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("waiting for never.made to be created"), "{stderr}");
    assert!(stderr.contains("nothing was watched"), "{stderr}");
    let r: RunResult = serde_json::from_slice(&std::fs::read(dir.path().join("watch/result.json")).unwrap()).unwrap();
    let failed: Vec<&str> = r.sla.objectives.iter().filter(|o| !o.passed).map(|o| o.metric.as_str()).collect();
    assert_eq!(failed, ["counts.delivered"]);
    assert_eq!(r.broker.listener, "SASL_PLAINTEXT");

    let o = watch("wrong");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr
            .contains(&format!("the Kafka broker at {addr} refused the credentials for SASL mechanism SCRAM-SHA-256")),
        "{stderr}"
    );
    broker.kill().unwrap();
    let _ = broker.wait();
}
