//! The players over HTTP: each story action is a `POST /sessions/{id}/actions` to a
//! gateway (the connector's `http` source). Open loop: a send waits only for a free slot
//! (at most `max_in_flight` requests at once), never for the answer. A `503` is retried
//! after its `Retry-After` (at most [`RETRIES`] times); an action still refused is counted
//! with its first reason, and the run reports it as lost.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Retries of a request answered `503`.
pub const RETRIES: u32 = 5;

/// Sends actions to one gateway; clones share the connection pool and the counts.
#[derive(Debug, Clone)]
pub struct HttpIngress {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    slots: Arc<Semaphore>,
    /// Actions the gateway did not accept after every retry.
    pub refused: Arc<AtomicU64>,
    /// The first refusal's status and reason.
    pub first_refusal: Arc<Mutex<Option<String>>>,
    /// Sent as `Authorization: Bearer TOKEN` when the gateway requires one.
    pub token: Option<Arc<str>>,
}

impl HttpIngress {
    /// Sends to `base` (`http://host:port`) with at most `max_in_flight` requests at once.
    pub fn new(base: impl Into<String>, max_in_flight: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.into(),
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            refused: Arc::default(),
            first_refusal: Arc::default(),
            token: None,
        }
    }

    /// Starts sending one action on `rt` and returns once it has a slot.
    pub fn send(&self, rt: &tokio::runtime::Handle, session: u64, body: String, traceparent: &str) {
        let Ok(slot) = rt.block_on(Arc::clone(&self.slots).acquire_owned()) else { return };
        let (this, traceparent) = (self.clone(), traceparent.to_owned());
        rt.spawn(async move {
            let _slot = slot;
            let url = format!("{}/sessions/{session}/actions", this.base);
            let mut last = String::new();
            for attempt in 0..=RETRIES {
                match this.post(&url, &body, &traceparent).await {
                    Ok(()) => return,
                    Err((retry_after, why)) => {
                        last = why;
                        match retry_after {
                            Some(wait) if attempt < RETRIES => tokio::time::sleep(wait).await,
                            _ => break,
                        }
                    }
                }
            }
            this.refused.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = this.first_refusal.lock() {
                f.get_or_insert(last);
            }
        });
    }

    /// One attempt: `Ok` on 2xx; otherwise how long to wait before retrying (for a 503)
    /// and why.
    async fn post(&self, url: &str, body: &str, traceparent: &str) -> Result<(), (Option<Duration>, String)> {
        let mut req = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("traceparent", traceparent);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).map_err(|e| (None, e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| (None, format!("POST {url}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = (status == hyper::StatusCode::SERVICE_UNAVAILABLE).then(|| {
            let secs = resp.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
            Duration::from_secs(secs.unwrap_or(1))
        });
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Err((retry_after, format!("{status}: {}", String::from_utf8_lossy(&text))))
    }
}
