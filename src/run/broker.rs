//! The broker phase: the embedded broker (or the cluster named by a bootstrap address),
//! what `result.json` says of it, and the scenario's `[[faults]]` applied to it on schedule.

use super::{RunError, failed};
use crate::result::BrokerInfo;
use crate::scenario::{Resolved, Scenario};
use pipeline::KafkaSettings;
use pipeline::io::secrets::redact_settings;
use std::sync::Arc;

/// Applies the scenario's `[[faults]]` to the embedded broker on schedule (`start_ns` is
/// when the load starts); what took effect, and when, is gathered in the returned list.
pub(super) fn apply_faults(
    scenario: &Scenario,
    broker: &Broker,
    start_ns: u64,
    pipeline: &mut pipeline::assemble::Pipeline,
    say: bool,
) -> Arc<std::sync::Mutex<Vec<reports::result::FaultRecord>>> {
    let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
    #[cfg(feature = "embedded")]
    if let Some(b) = broker.embedded.as_ref().filter(|_| !scenario.faults.is_empty()) {
        let plan =
            pipeline::embedded::Plan { faults: scenario.faults.iter().map(|f| (f.at, f.broker_fault())).collect() };
        let sections = scenario.faults.clone();
        let (hooks, cancel, list) = (Arc::clone(b.broker().faults()), pipeline.cancel(), Arc::clone(&applied));
        let start =
            tokio::time::Instant::now() + std::time::Duration::from_nanos(start_ns.saturating_sub(probes::now_ns()));
        pipeline.spawn_task("faults", async move {
            let run = plan.run(&hooks, start, |i, began| {
                let (f, fault) = (&sections[i], &plan.faults[i].1);
                if say {
                    eprintln!("fault: {} at {:.1}s: {fault}", f.kind.name(), began.as_secs_f64());
                }
                if let Ok(mut list) = list.lock() {
                    list.push(reports::result::FaultRecord {
                        kind: f.kind.name().into(),
                        at_s: f.at.as_secs_f64(),
                        began_at_s: began.as_secs_f64(),
                        duration_s: f.duration.map(|d| d.as_secs_f64()),
                        topic: f.topic.clone(),
                        latency_ms: f.latency.map(|d| d.as_secs_f64() * 1e3),
                        what: fault.to_string(),
                    });
                }
            });
            tokio::select! {
                () = cancel.cancelled() => {}
                () = run => cancel.cancelled().await,
            }
            Ok(())
        });
    }
    #[cfg(not(feature = "embedded"))]
    let _ = (scenario, broker, start_ns, pipeline, say);
    applied
}

pub(super) struct Broker {
    #[cfg(feature = "embedded")]
    embedded: Option<pipeline::embedded::EmbeddedBroker>,
    pub(super) info: BrokerInfo,
}

impl Broker {
    /// What `result.json` says of the broker, with what its fault hooks did when the run
    /// scheduled faults.
    pub(super) fn figures(&self, faults_scheduled: bool) -> BrokerInfo {
        let info = self.info.clone();
        #[cfg(feature = "embedded")]
        if let Some(b) = self.embedded.as_ref().filter(|_| faults_scheduled) {
            let c = b.broker().faults().counts();
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

pub(super) async fn start(
    scenario: &Scenario,
    profile: &Resolved,
    kafka: &mut KafkaSettings,
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
    };
    if let Some(b) = &scenario.broker.bootstrap {
        kafka.bootstrap.clone_from(b);
        return Ok(Broker {
            #[cfg(feature = "embedded")]
            embedded: None,
            info: info("external", "unknown", b, "the cluster's own"),
        });
    }
    #[cfg(feature = "embedded")]
    {
        use pipeline::embedded::{EmbeddedBroker, KIND, VERSION};
        let broker = EmbeddedBroker::start().await.map_err(failed)?;
        kafka.bootstrap = broker.bootstrap().to_owned();
        let info = info(KIND, VERSION, broker.bootstrap(), &format!("{} (in-process)", broker.storage()));
        Ok(Broker { embedded: Some(broker), info })
    }
    #[cfg(not(feature = "embedded"))]
    Err(RunError::BadInput(
        "this build has no embedded broker (feature `embedded`); give --bootstrap HOST:PORT or broker.bootstrap".into(),
    ))
}
