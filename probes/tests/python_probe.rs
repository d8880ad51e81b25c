//! The Python probe library's own tests (`clients/python/tests`, pytest), run from the test
//! suite so that `cargo test` checks both implementations of the header protocol against
//! the same vectors. They need the virtual environment `.ci/run` makes (`.venv`, or the
//! interpreter in `TAILGATE_PYTHON`) with pytest and the library installed; without it they
//! are skipped, unless `TAILGATE_REQUIRE` names `python` (as in CI).

use std::path::PathBuf;

#[test]
fn the_python_probe_library_passes_its_own_tests() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = std::env::var_os("TAILGATE_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
    let ready = py.exists()
        && std::process::Command::new(&py)
            .args(["-c", "import pytest, tailgate_probe"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let why = "no Python environment with pytest and tailgate_probe (.ci/run makes one: .venv)";
        testkit::missing::<()>("the_python_probe_library_passes_its_own_tests", "python", why);
        return;
    }
    let out = std::process::Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(root.join("clients/python"))
        .output()
        .expect("pytest runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "pytest said:\n{text}");
}
