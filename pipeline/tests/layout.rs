//! The crate's modules depend on each other in one direction only: no top-level module
//! (a stage folder, `io::*`, the runtime, ...) reaches, through any chain of `crate::`
//! paths outside tests and comments, back to itself.

use std::path::Path;

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = testkit::layout::imports(&src, &["io"]);
    assert!(edges.get("io::postgres").is_some_and(|e| !e.contains("connector")), "io imports no stage");
    assert!(edges.get("runtime").is_some_and(|e| !e.contains("streamjob")), "the runtime imports no stage");
    assert_eq!(testkit::layout::cycle(&edges), None);
}
