//! A short smoke run of every fuzz target, in the test suite: each target on its seeds
//! and on deterministic mutations of them. The coverage-guided runs are
//! `cargo +nightly fuzz run TARGET` (docs/fuzzing.md) and start from the same seeds:
//! `fuzz/seeds/TARGET/` (the frames are what librdkafka sent the embedded broker in a
//! quick-start run) and, for scenarios, `scenarios/`. An input that once crashed a target
//! joins its seeds as `found-*`, so it stays fixed.

#![allow(clippy::unwrap_used)]

/// Runs `target` on each seed and `n` mutations of it.
fn smoke(target: fn(&[u8]), seeds: &[Vec<u8>], n: usize) {
    assert!(!seeds.is_empty());
    for seed in seeds {
        target(seed);
        for m in fuzzing::mutations(seed, n) {
            target(&m);
        }
    }
}

/// The files of `dir` (under the fuzz crate) whose names end with `ext`, in name order.
fn files(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    named(dir, ext).into_iter().map(|(_, b)| b).collect()
}

fn named(dir: &str, ext: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    paths.sort();
    paths.iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap())).collect()
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    files(&format!("seeds/{target}"), "")
}

/// The seeds that are real traffic, not inputs a run once found (`found-*`).
fn real(target: &str) -> Vec<Vec<u8>> {
    named(&format!("seeds/{target}"), "")
        .into_iter()
        .filter(|(n, _)| !n.starts_with("found-"))
        .map(|(_, b)| b)
        .collect()
}

#[test]
fn headers() {
    smoke(fuzzing::headers, &seeds("headers"), 2000);
}

#[test]
fn scenarios() {
    let mut seeds = files("../scenarios", ".toml");
    seeds.extend(files("../scenarios/invalid", ".toml"));
    smoke(fuzzing::scenario, &seeds, 100);
}

#[test]
fn hlog() {
    let seeds = seeds("hlog");
    for s in &seeds {
        assert!(reports::hlog::Series::parse(s).is_ok(), "a seed is a log a run wrote");
    }
    smoke(fuzzing::hlog, &seeds, 300);
}

#[test]
fn omb() {
    smoke(fuzzing::omb, &seeds("omb"), 500);
}

#[test]
fn gateway() {
    smoke(fuzzing::gateway, &seeds("gateway"), 40);
}

#[test]
fn frames() {
    let seeds = seeds("frames");
    for s in &seeds {
        let decoded = broker::server::request::decode(bytes::Bytes::copy_from_slice(s));
        assert!(decoded.is_ok(), "the broker decodes every frame librdkafka sent it: {decoded:?}");
    }
    smoke(fuzzing::frames, &seeds, 1000);
}

#[test]
fn batches() {
    let seeds = seeds("batches");
    for s in &real("batches") {
        let split = broker::batch::Batch::split(bytes::Bytes::copy_from_slice(s));
        let records = split.as_ref().map(|b| b[0].records());
        assert!(matches!(records, Ok(Some(Ok(_)))), "a seed is a valid uncompressed batch: {split:?}");
    }
    smoke(fuzzing::batches, &seeds, 2000);
}
