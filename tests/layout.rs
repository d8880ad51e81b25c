//! Every crate's modules depend on each other in one direction only (the pipeline's own
//! test, `pipeline/tests/layout.rs`, also looks inside `io/`).

use std::path::Path;

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for krate in ["src", "broker/src", "probes/src", "loadgen/src", "reports/src", "dashboard/src", "telemetry/src"] {
        let edges = testkit::layout::imports(&root.join(krate), &[]);
        assert!(edges.len() > 1, "{krate}: no modules found");
        assert_eq!(testkit::layout::cycle(&edges), None, "{krate}");
    }
}
