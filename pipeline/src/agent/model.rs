//! The model call: `simulated` (a latency drawn from a distribution, and a deterministic
//! reply) or `http` (an OpenAI-compatible `POST {url}/chat/completions`, with a timeout and
//! a bound on calls in flight).

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand_distr::Distribution as _;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// A latency distribution as written in a scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Median `median`, shape `sigma` (the standard deviation of the logarithm).
    Lognormal {
        median: Duration,
        sigma: f64,
    },
}

impl Latency {
    /// One draw.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> Duration {
        match *self {
            Self::Fixed(d) => d,
            Self::Uniform { min, max } if max > min => {
                Duration::from_nanos(rng.random_range(min.as_nanos() as u64..=max.as_nanos() as u64))
            }
            Self::Uniform { min, .. } => min,
            Self::Lognormal { median, sigma } => {
                let mu = (median.as_nanos().max(1) as f64).ln();
                match rand_distr::LogNormal::new(mu, sigma.max(0.0)) {
                    Ok(d) => Duration::from_nanos(d.sample(rng).min(3.6e12) as u64),
                    Err(_) => median,
                }
            }
        }
    }

    /// How reports name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Fixed(d) => format!("fixed {d:?}"),
            Self::Uniform { min, max } => format!("uniform {min:?}..{max:?}"),
            Self::Lognormal { median, sigma } => format!("lognormal median {median:?} sigma {sigma}"),
        }
    }
}

/// Which model the agent calls.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Simulated(Latency),
    /// An OpenAI-compatible endpoint: `url` is the API base (`http://host:port/v1`).
    Http {
        url: String,
        model: String,
        timeout: Duration,
        max_in_flight: usize,
    },
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::Simulated(Latency::Fixed(Duration::ZERO))
    }
}

impl ModelConfig {
    pub fn describe(&self) -> String {
        match self {
            Self::Simulated(l) => format!("simulated, {}", l.describe()),
            Self::Http { url, model, timeout, max_in_flight } => {
                format!("http {url} model {model}, timeout {timeout:?}, at most {max_in_flight} in flight")
            }
        }
    }
}

/// A model ready to call; clones share it.
#[derive(Debug, Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per agent, behind an Arc
enum Inner {
    Simulated {
        latency: Latency,
        rng: Mutex<rand::rngs::SmallRng>,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        endpoint: hyper::Uri,
        model: String,
        timeout: Duration,
        slots: Semaphore,
    },
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChatMessage,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: String,
}

impl Model {
    /// Builds the model; an `http` URL that cannot be parsed is refused.
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Self, String> {
        use rand::SeedableRng as _;
        let inner = match config {
            ModelConfig::Simulated(latency) => {
                Inner::Simulated { latency: *latency, rng: Mutex::new(rand::rngs::SmallRng::seed_from_u64(seed)) }
            }
            ModelConfig::Http { url, model, timeout, max_in_flight } => {
                let endpoint = format!("{}/chat/completions", url.trim_end_matches('/'))
                    .parse()
                    .map_err(|e| format!("model url `{url}`: {e}"))?;
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Inner::Http {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    endpoint,
                    model: model.clone(),
                    timeout: *timeout,
                    slots: Semaphore::new((*max_in_flight).max(1)),
                }
            }
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Calls the model with `prompt`; `fallback` is the simulated reply. Errors say why the
    /// call failed (timeout, status, unreadable answer).
    pub async fn call(&self, prompt: &str, fallback: String) -> Result<String, String> {
        match &*self.inner {
            Inner::Simulated { latency, rng } => {
                let d = match rng.lock() {
                    Ok(mut r) => latency.sample(&mut *r),
                    Err(_) => Duration::ZERO,
                };
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                Ok(fallback)
            }
            Inner::Http { client, endpoint, model, timeout, slots } => {
                let call = async {
                    let _slot = slots.acquire().await.map_err(|e| e.to_string())?;
                    let body = serde_json::json!({
                        "model": model,
                        "messages": [{ "role": "user", "content": prompt }],
                        "max_tokens": 64,
                    });
                    let req = hyper::Request::post(endpoint.clone())
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .map_err(|e| e.to_string())?;
                    let resp = client.request(req).await.map_err(|e| format!("model call to {endpoint}: {e}"))?;
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    if !status.is_success() {
                        return Err(format!("model answered {status}: {}", String::from_utf8_lossy(&bytes)));
                    }
                    let c: Completion =
                        serde_json::from_slice(&bytes).map_err(|e| format!("model answer unreadable: {e}"))?;
                    c.choices
                        .into_iter()
                        .next()
                        .map(|c| c.message.content)
                        .ok_or_else(|| "model answered no choices".into())
                };
                tokio::time::timeout(*timeout, call)
                    .await
                    .map_err(|_| format!("model call timed out after {timeout:?}"))?
            }
        }
    }
}

/// Draws from `latency` with a fixed seed (tests and benchmarks).
pub fn draws(latency: Latency, n: usize, seed: u64) -> Vec<Duration> {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    (0..n).map(|_| latency.sample(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_their_shape() {
        let ms = Duration::from_millis;
        assert!(draws(Latency::Fixed(ms(3)), 10, 1).iter().all(|d| *d == ms(3)));
        let u = draws(Latency::Uniform { min: ms(2), max: ms(4) }, 1000, 1);
        assert!(u.iter().all(|d| *d >= ms(2) && *d <= ms(4)));
        let mut l = draws(Latency::Lognormal { median: ms(10), sigma: 0.5 }, 10_001, 1);
        l.sort();
        let median = l[5000].as_secs_f64() * 1e3;
        assert!((9.0..11.0).contains(&median), "median {median}");
        assert!(l[9900] > ms(25), "p99 {:?} shows the tail", l[9900]);
    }

    #[tokio::test]
    async fn http_model_refuses_a_bad_url_and_reports_an_unreachable_endpoint() {
        let cfg = |url: &str| ModelConfig::Http {
            url: url.into(),
            model: "m".into(),
            timeout: Duration::from_secs(2),
            max_in_flight: 1,
        };
        assert!(Model::new(&cfg("not a url"), 1).is_err());
        let m = Model::new(&cfg("http://127.0.0.1:9/v1"), 1).unwrap();
        let e = m.call("hi", String::new()).await.unwrap_err();
        assert!(e.contains("model call to http://127.0.0.1:9/v1/chat/completions"), "{e}");
    }
}
