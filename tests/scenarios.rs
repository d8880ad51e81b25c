//! Every shipped scenario parses and validates; every invalid fixture in
//! `scenarios/invalid/` fails with exactly the error in its `.expected` file.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use tailgate::scenario::Scenario;

fn files(dir: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_shipped_scenario_is_valid() {
    let found = files("scenarios", "toml");
    assert!(found.iter().any(|p| p.ends_with("quickstart.toml")));
    for f in found {
        if let Err(e) = Scenario::load(&f) {
            panic!("{e}");
        }
    }
}

#[test]
fn quickstart_is_what_the_readme_promises() {
    let s = Scenario::load(Path::new("scenarios/quickstart.toml")).unwrap();
    assert_eq!(s.load.rate, Some(1000.0));
    assert_eq!(s.load.sessions, 64);
    assert_eq!(s.load.payload_bytes, 256);
    assert_eq!(s.load.warmup.as_secs(), 5);
    assert_eq!(s.load.duration.as_secs(), 30);
    assert!(s.broker.bootstrap.is_none(), "the quick start runs on the embedded broker");
    assert_eq!(s.sla.len(), 1);
    assert_eq!((s.sla[0].metric.as_str(), s.sla[0].max), ("end_to_end.p99_ms", Some(50.0)));
}

#[test]
fn invalid_fixtures_fail_with_their_exact_errors() {
    let found = files("scenarios/invalid", "toml");
    assert!(found.len() >= 3);
    for f in found {
        let expected = std::fs::read_to_string(f.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", f.display()));
        let err = Scenario::load(&f).expect_err(&f.display().to_string());
        assert_eq!(err.to_string(), expected.trim_end(), "{}", f.display());
    }
}
