//! `tailgate broker`: serves the embedded broker on an address of its own until Ctrl-C or
//! SIGTERM, with its fault flags (`--stall`, `--drop-connections`, `--fetch-latency`)
//! scheduled from its start.

use crate::command::tokio_runtime;
use crate::exit::{EXIT_BAD_INPUT, EXIT_PASS, EXIT_RUNTIME};

/// `tailgate broker`'s fault flags, as given.
pub(crate) struct BrokerFaults {
    pub(crate) stall: Vec<String>,
    pub(crate) drop_connections: Vec<String>,
    pub(crate) fetch_latency: Vec<String>,
}

impl BrokerFaults {
    /// The faults the flags ask for (a fetch latency from the start on); names the flag
    /// that is off.
    fn parse(&self) -> Result<pipeline::embedded::Plan, String> {
        use pipeline::embedded::Fault;
        let dur = |flag: &str, v: &str| {
            humantime::parse_duration(v.trim()).map_err(|e| format!("--{flag} {v:?}: {e} (e.g. 10s, 250ms)"))
        };
        let mut plan = pipeline::embedded::Plan::default();
        for v in &self.stall {
            let (at, for_) = v.split_once('+').ok_or_else(|| format!("--stall {v:?}: expected AT+FOR, e.g. 10s+2s"))?;
            plan.faults.push((dur("stall", at)?, Fault::Stall(dur("stall", for_)?)));
        }
        for v in &self.drop_connections {
            plan.faults.push((dur("drop-connections", v)?, Fault::DropConnections));
        }
        for v in &self.fetch_latency {
            let (topic, d) = v
                .split_once('=')
                .ok_or_else(|| format!("--fetch-latency {v:?}: expected TOPIC=LATENCY, e.g. story.beats=20ms"))?;
            let latency = dur("fetch-latency", d)?;
            plan.faults.push((
                std::time::Duration::ZERO,
                Fault::FetchLatency { topic: topic.trim().to_owned(), latency, lasts: None },
            ));
        }
        Ok(plan)
    }
}

/// The listener's security, as the flags give it.
#[derive(Debug, Default)]
pub(crate) struct Secured {
    pub protocol: String,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// `NAME=PASSWORD`, the password's `${VAR}` read from the environment.
    pub users: Vec<String>,
}

impl Secured {
    fn security(&self) -> Result<pipeline::embedded::security::Security, String> {
        let mut users = std::collections::BTreeMap::new();
        for u in &self.users {
            // Not echoed: a mistyped one may hold a password.
            let (name, password) = u.split_once('=').ok_or("a --user is not NAME=PASSWORD")?;
            let password = pipeline::config::from_env(password).map_err(|e| format!("--user {name}: {e}"))?;
            users.insert(name.to_owned(), password);
        }
        let security = pipeline::embedded::security::Security {
            protocol: self.protocol.parse().map_err(|e| format!("--security-protocol: {e}"))?,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            users,
        };
        Ok(security)
    }
}

/// `tailgate broker`: serves the embedded broker until Ctrl-C.
pub(crate) fn broker(listen: &str, data: Option<std::path::PathBuf>, faults: &BrokerFaults, secured: &Secured) -> u8 {
    use pipeline::embedded::{Config, EmbeddedBroker, KIND, VERSION};
    if !crate::scenario::valid_bootstrap(listen) || listen.contains(',') {
        eprintln!("error: --listen `{listen}` is not host:port");
        return EXIT_BAD_INPUT;
    }
    let security = match secured.security() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let listener = security.listener();
    let plan = match faults.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let config = Config { listen: listen.to_owned(), data, log_to_stderr: true, security, ..Config::default() };
        let broker = match EmbeddedBroker::start_with(config).await {
            Ok(b) => b,
            Err(e) => {
                let hint = if e.to_string().contains("cannot listen") { "; try another --listen address" } else { "" };
                eprintln!("error: {e}{hint}");
                return EXIT_RUNTIME;
            }
        };
        let storage = broker.storage();
        let lasts = if storage == "memory" { "nothing outlives this process" } else { "kept across restarts" };
        eprintln!(
            "broker {KIND} {VERSION} ({storage}: {lasts}) at {}, {listener}; Ctrl-C stops it",
            broker.bootstrap()
        );
        println!("{}", broker.bootstrap());
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot wait for SIGTERM: {e}");
                return EXIT_RUNTIME;
            }
        };
        let faults = async {
            let start = tokio::time::Instant::now();
            plan.run(broker.broker().faults(), start, |i, _| eprintln!("fault: {}", plan.faults[i].1)).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = faults => {}
        }
        let c = broker.broker().faults().counts();
        if c != pipeline::embedded::FaultCounts::default() {
            eprintln!(
                "faults seen: {} responses stalled, {} connections dropped, {} fetches delayed",
                c.stalled_responses, c.dropped_connections, c.delayed_fetches
            );
        }
        eprintln!("broker stopped");
        EXIT_PASS
    })
}
