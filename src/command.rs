//! What every command shares as it starts: its Tokio runtime, whether it has the terminal
//! a live dashboard needs, and how its flags become client settings and durations.

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

/// Client settings for `bootstrap` from `--kafka KEY=VALUE` flags, each for every client,
/// `${ENV}` taken from the environment, the SASL password from
/// `TAILGATE_KAFKA_SASL_PASSWORD` when not given.
pub(crate) fn kafka_from_flags(bootstrap: &str, flags: &[String]) -> Result<pipeline::KafkaSettings, String> {
    let mut clients = pipeline::io::clients::ClientSettings::default();
    for kv in flags {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("--kafka `{kv}` is not KEY=VALUE"))?;
        let v = pipeline::config::from_env(v).map_err(|e| format!("--kafka {k}: {e}"))?;
        pipeline::io::kafka::check_setting(pipeline::io::kafka::Client::Consumer, k, &v)
            .map_err(|e| format!("--kafka {k}: {e}"))?;
        clients.client.insert(k.to_owned(), v);
    }
    Ok(clients.kafka(bootstrap, 1))
}

/// A duration flag ("30s", "2m").
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\""))
}
