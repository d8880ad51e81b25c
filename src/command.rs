//! What every command shares as it starts: its Tokio runtime, and whether it has the
//! terminal a live dashboard needs.

use crate::exit::{EXIT_BAD_INPUT, EXIT_RUNTIME};

/// A multi-threaded Tokio runtime for a command, or the exit code when none can start.
pub(crate) fn tokio_runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        EXIT_RUNTIME
    })
}

/// `None` when stdout is a terminal; else says a dashboard needs one (exit 2).
pub(crate) fn needs_terminal(what: &str) -> Option<u8> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        None
    } else {
        eprintln!("error: {what} draws a live dashboard and needs a terminal on stdout");
        Some(EXIT_BAD_INPUT)
    }
}
