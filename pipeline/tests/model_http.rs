//! The agent's `http` model against a tiny OpenAI-compatible server started here: the
//! reply is the completion's content, calls in flight never exceed the bound, and a slow
//! answer is cut at the timeout with a reason.

#![allow(clippy::unwrap_used)]

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use pipeline::agent::model::{Model, ModelConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Server {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    delay_ms: AtomicUsize,
}

async fn completions(State(s): State<Arc<Server>>, Json(req): Json<serde_json::Value>) -> Json<serde_json::Value> {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst) as u64)).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let prompt = req["messages"][0]["content"].as_str().unwrap_or_default();
    let content = format!("{} says: {}", req["model"].as_str().unwrap_or_default(), prompt.len());
    Json(serde_json::json!({ "choices": [{ "index": 0, "message": { "role": "assistant", "content": content } }] }))
}

async fn start(delay_ms: usize) -> (String, Arc<Server>) {
    let server = Arc::new(Server::default());
    server.delay_ms.store(delay_ms, Ordering::SeqCst);
    let app = axum::Router::new().route("/v1/chat/completions", post(completions)).with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), server)
}

fn model(url: &str, timeout_ms: u64, max_in_flight: usize) -> Model {
    let cfg = ModelConfig::Http {
        url: url.into(),
        model: "tiny".into(),
        timeout: Duration::from_millis(timeout_ms),
        max_in_flight,
    };
    Model::new(&cfg, 1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_from_the_server_and_calls_in_flight_stay_bounded() {
    let (url, server) = start(30).await;
    let m = model(&url, 10_000, 2);
    assert_eq!(m.call("hello", String::new()).await.unwrap(), "tiny says: 5");
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.call("x", String::new()).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), "tiny says: 1");
    }
    assert_eq!(server.most.load(Ordering::SeqCst), 2, "at most max_in_flight calls at once, and it is reached");
}

#[tokio::test]
async fn a_slow_answer_is_cut_at_the_timeout() {
    let (url, _server) = start(2_000).await;
    let e = model(&url, 100, 4).call("hello", String::new()).await.unwrap_err();
    assert_eq!(e, "model call timed out after 100ms");
}
