//! The broker phase: the embedded broker (or the cluster named by a bootstrap address),
//! what `result.json` says of it, and the handle the scheduled faults act on it through.

use super::RunError;
use crate::result::BrokerInfo;
use crate::scenario::{Resolved, Scenario};
use pipeline::KafkaSettings;
use pipeline::io::secrets::redact_settings;
#[cfg(feature = "embedded")]
use std::sync::Arc;

pub(super) struct Broker {
    target: Target,
    pub(super) info: BrokerInfo,
    /// The on-disk log kept for a scheduled restart, removed with the broker.
    _log: Option<LogDir>,
}

/// What the faults act on: the embedded broker, when the run has one.
#[derive(Debug, Clone, Default)]
pub(super) struct Target {
    #[cfg(feature = "embedded")]
    embedded: Option<Arc<tokio::sync::Mutex<pipeline::embedded::EmbeddedBroker>>>,
    #[cfg(feature = "embedded")]
    hooks: Option<Arc<pipeline::embedded::Faults>>,
}

impl Target {
    /// The embedded broker's fault switches.
    #[cfg(feature = "embedded")]
    pub(super) fn hooks(&self) -> Option<Arc<pipeline::embedded::Faults>> {
        self.hooks.clone()
    }

    /// Restarts the embedded broker from its on-disk log after `down`.
    pub(super) async fn restart(&self, down: std::time::Duration) -> pipeline::Result<()> {
        #[cfg(feature = "embedded")]
        if let Some(b) = &self.embedded {
            return b.lock().await.restart(down).await;
        }
        let _ = down;
        Err(pipeline::Error::Config("no embedded broker to restart".into()))
    }
}

/// A directory removed when dropped.
#[derive(Debug)]
struct LogDir(std::path::PathBuf);

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Broker {
    /// What the scheduled faults act on.
    pub(super) fn target(&self) -> Target {
        self.target.clone()
    }

    /// What `result.json` says of the broker, with what its fault hooks did when the run
    /// scheduled faults.
    pub(super) fn figures(&self, faults_scheduled: bool) -> BrokerInfo {
        let info = self.info.clone();
        #[cfg(feature = "embedded")]
        if let Some(hooks) = self.target.hooks.as_ref().filter(|_| faults_scheduled) {
            let c = hooks.counts();
            let faults = reports::result::FaultEffects {
                stalled_responses: c.stalled_responses,
                delayed_fetches: c.delayed_fetches,
                dropped_connections: c.dropped_connections,
            };
            return BrokerInfo { faults: Some(faults), ..info };
        }
        #[cfg(not(feature = "embedded"))]
        let _ = faults_scheduled;
        info
    }
}

/// Starts the embedded broker (its log on disk under `dir` when a restart is scheduled, in
/// memory otherwise), or names the scenario's cluster.
pub(super) async fn start(
    scenario: &Scenario,
    profile: &Resolved,
    kafka: &mut KafkaSettings,
    dir: &std::path::Path,
) -> Result<Broker, RunError> {
    // What the results say of the clients, their credentials hidden.
    let (producer, consumer) =
        (redact_settings(&kafka.effective_producer()), redact_settings(&kafka.effective_consumer()));
    let info = |kind: &str, version: &str, bootstrap: &str, storage: &str| BrokerInfo {
        kind: kind.into(),
        version: version.into(),
        bootstrap: bootstrap.into(),
        storage: storage.into(),
        producer: producer.clone(),
        consumer: consumer.clone(),
        partitions: profile.partitions,
        topic: redact_settings(&profile.clients.topic),
        stages: profile
            .clients
            .stages
            .iter()
            .map(|(k, v)| {
                let (producer, consumer) = (redact_settings(&v.producer), redact_settings(&v.consumer));
                (k.clone(), reports::result::StageClients { producer, consumer })
            })
            .collect(),
        faults: None,
        listener: String::new(),
        topic_prefix: kafka.names.prefix().to_owned(),
    };
    if let Some(b) = &scenario.broker.bootstrap {
        kafka.bootstrap.clone_from(b);
        let listener = kafka.client.get("security.protocol").cloned().unwrap_or_else(|| "PLAINTEXT".into());
        let info = BrokerInfo { listener, ..info("external", "unknown", b, "the cluster's own") };
        return Ok(Broker { target: Target::default(), info, _log: None });
    }
    #[cfg(feature = "embedded")]
    {
        use pipeline::embedded::{Config, EmbeddedBroker, KIND, VERSION};
        let restarts = scenario.faults.iter().any(|f| f.kind == crate::scenario::FaultKind::BrokerRestart);
        let log = restarts.then(|| LogDir(dir.join("broker-log")));
        let b = &scenario.broker;
        let security = pipeline::embedded::security::Security {
            protocol: b.protocol().map_err(RunError::BadInput)?,
            tls_cert: b.tls_cert.clone(),
            tls_key: b.tls_key.clone(),
            users: b.users.clone(),
        };
        let listener = security.listener();
        let mut config = Config { data: log.as_ref().map(|l| l.0.clone()), security, ..Config::default() };
        if let Some(w) = &scenario.workers {
            // Where the workers on other hosts reach it.
            config.listen.clone_from(&w.listen);
        }
        let broker = EmbeddedBroker::start_with(config).await.map_err(super::failed)?;
        kafka.bootstrap = broker.bootstrap().to_owned();
        let info = BrokerInfo {
            listener,
            ..info(KIND, VERSION, broker.bootstrap(), &format!("{} (in-process)", broker.storage()))
        };
        let hooks = Some(Arc::clone(broker.broker().faults()));
        let target = Target { embedded: Some(Arc::new(tokio::sync::Mutex::new(broker))), hooks };
        Ok(Broker { target, info, _log: log })
    }
    #[cfg(not(feature = "embedded"))]
    let _ = dir;
    #[cfg(not(feature = "embedded"))]
    Err(RunError::BadInput(
        "this build has no embedded broker (feature `embedded`); give --bootstrap HOST:PORT or broker.bootstrap".into(),
    ))
}
