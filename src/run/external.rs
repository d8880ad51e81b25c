//! Stages that run as processes of their own (`tailgate stage`): the run waits for their
//! gateway, reads their figures from their `/metrics`, and starts none itself.

use pipeline::assemble::StageFigures;
use probes::names;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Stages that run as processes of their own (`tailgate stage`), as the run finds them.
#[derive(Debug, Clone)]
pub(super) struct ExternalStages {
    /// The gateway's base URL.
    pub(super) gateway: String,
    /// The stages' `/metrics` URLs.
    metrics: Vec<String>,
}

impl ExternalStages {
    pub(super) fn new(section: &crate::scenario::StagesSection) -> Self {
        let gateway = section.gateway.clone().unwrap_or_default().trim_end_matches('/').to_owned();
        Self { gateway, metrics: section.metrics.clone() }
    }

    pub(super) fn describe(&self) -> String {
        format!("separate processes; gateway {}, metrics from {} endpoints", self.gateway, self.metrics.len())
    }

    /// Waits until the gateway's `/readyz` answers 200 (its consumer has partitions).
    pub(super) async fn wait_ready(&self) {
        let client = http_client();
        let url = format!("{}/readyz", self.gateway);
        let mut said = false;
        loop {
            let status = client.get(&url).send().await.map_or(0, |r| r.status().as_u16());
            if status == 200 {
                return;
            }
            if !said {
                eprintln!("waiting for the gateway at {} to be ready (it answers {status})", self.gateway);
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Mirrors the stages' outcomes, as changed since this run began, into `pipeline`'s
    /// figures every 200 ms, from their `/metrics`, until `cancel`. A stage that does not
    /// answer keeps its last figures.
    pub(super) async fn follow(
        self,
        mirror: impl Fn(&[(&str, StageFigures)]) + Send + 'static,
        cancel: CancellationToken,
    ) -> pipeline::Result<()> {
        if self.metrics.is_empty() {
            cancel.cancelled().await;
            return Ok(());
        }
        let client = http_client();
        let mut at_start = None;
        loop {
            let mut now = pipeline::metrics::Outcomes::default();
            let mut answered = 0;
            for url in &self.metrics {
                let Ok(resp) = client.get(url).send().await else { continue };
                let Ok(body) = resp.text().await else { continue };
                now.add(&pipeline::metrics::Outcomes::parse(&body));
                answered += 1;
            }
            if answered == self.metrics.len() {
                let base = at_start.get_or_insert_with(|| now.clone());
                let d = |stage: &str, outcome| now.get(stage, outcome).saturating_sub(base.get(stage, outcome));
                let figures: Vec<(&str, StageFigures)> = pipeline::STAGES
                    .iter()
                    .map(|stage| {
                        let f = StageFigures {
                            forwarded: d(stage, names::FORWARDED),
                            dead_lettered: d(stage, names::DEAD_LETTERED),
                            filtered: d(stage, names::FILTERED),
                            duplicates: d(stage, names::DUPLICATE),
                            ..StageFigures::default()
                        };
                        (*stage, f)
                    })
                    .collect();
                mirror(&figures);
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// A client for the stages' small HTTP answers (each request at most 2 s).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default()
}
