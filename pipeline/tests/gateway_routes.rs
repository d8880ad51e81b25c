//! The gateway's plain routes, served by `gateway::app()` without a socket or a broker:
//! liveness, readiness that follows the consumer's partitions, `/metrics` only where a
//! process has them, actions only where the HTTP source is on, and unknown or malformed
//! requests refused with a status, never a crash.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pipeline::gateway::{GatewayState, app};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

async fn call(state: &GatewayState, req: Request<Body>) -> (StatusCode, String) {
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn health_is_always_ok_and_readiness_follows_the_partitions() {
    let (ready, rx) = watch::channel(false);
    let state = GatewayState::new(rx, CancellationToken::new());
    assert_eq!(call(&state, get("/healthz")).await, (StatusCode::OK, "ok".into()));
    assert_eq!(call(&state, get("/readyz")).await, (StatusCode::SERVICE_UNAVAILABLE, "waiting for partitions".into()));
    ready.send_replace(true);
    assert_eq!(call(&state, get("/readyz")).await, (StatusCode::OK, "ready".into()));
}

#[tokio::test]
async fn what_this_process_does_not_serve_is_not_found() {
    let (_ready, rx) = watch::channel(true);
    let state = GatewayState::new(rx, CancellationToken::new());
    assert_eq!(call(&state, get("/metrics")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&state, get("/no/such/route")).await.0, StatusCode::NOT_FOUND);
    let action = Request::post("/sessions/7/actions")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"run":1,"id":1,"action":"look"}"#))
        .unwrap();
    let (status, body) = call(&state, action).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no http source"), "{body}");
}

#[tokio::test]
async fn a_malformed_request_is_refused_with_a_client_error() {
    let (_ready, rx) = watch::channel(true);
    let state = GatewayState::new(rx, CancellationToken::new());
    for (path, body) in [
        ("/sessions/7/actions", "{not json"),
        ("/sessions/7/actions", r#"{"run":1,"id":1,"action":"look","extra":1}"#),
        ("/sessions/not-a-number/actions", r#"{"run":1,"id":1,"action":"look"}"#),
    ] {
        let req = Request::post(path).header("content-type", "application/json").body(Body::from(body)).unwrap();
        let status = call(&state, req).await.0;
        assert!(status.is_client_error(), "{path} {body}: {status}");
    }
    let poll = call(&state, get("/sessions/x/poll")).await.0;
    assert!(poll.is_client_error(), "{poll}");
}

/// Posts `body` as an action of session 4, with `token` as the bearer; the row the
/// connector would be handed, answered as Kafka would.
async fn posted(
    state: &GatewayState,
    rx: &mut tokio::sync::mpsc::Receiver<pipeline::connector::Ingress>,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Option<pipeline::connector::CapturedRow>) {
    let mut req = Request::post("/sessions/4/actions").header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body.to_owned())).unwrap();
    let (answer, row) = tokio::join!(call(state, req), async {
        let i = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await.ok().flatten()?;
        let _ = i.reply.send(Ok(()));
        Some(i.row)
    });
    (answer.0, row)
}

#[tokio::test]
async fn only_the_runs_own_players_name_an_actions_identity_and_time() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let state =
        GatewayState::new(watch::channel(true).1, CancellationToken::new()).with_ingress(tx).with_trusted("players");
    let far_future = u64::MAX / 2;
    let body = format!(r#"{{"run": 7, "id": 1099511627776, "action": "open", "intended_ns": {far_future}}}"#);

    let (status, row) = posted(&state, &mut rx, Some("players"), &body).await;
    let row = row.unwrap();
    assert_eq!((status, row.run, row.event_id, row.intended_ns), (StatusCode::ACCEPTED, 7, 1 << 40, far_future));

    let before = probes::now_ns();
    for token in [None, Some("someone-else")] {
        let (status, row) = posted(&state, &mut rx, token, &body).await;
        let row = row.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_ne!(row.run, 7, "the gateway's own run, not the body's");
        assert!(row.event_id < 2, "the gateway's own ids: {}", row.event_id);
        assert!(row.intended_ns >= before && row.intended_ns <= probes::now_ns(), "the gateway's clock");
    }
    let (status, row) = posted(&state, &mut rx, Some("players"), r#"{"action": "no identity"}"#).await;
    assert_eq!((status, row.is_none()), (StatusCode::UNPROCESSABLE_ENTITY, true), "a player names its run and id");
}

#[tokio::test]
async fn a_poll_asking_to_wait_for_ever_is_bounded_not_a_crash() {
    let shutdown = CancellationToken::new();
    shutdown.cancel(); // a stopping gateway answers waiting polls at once
    let state = GatewayState::new(watch::channel(true).1, shutdown);
    for wait in ["1e300", "1e20", "-5", "nan", "inf"] {
        let (status, body) = call(&state, get(&format!("/poll?wait={wait}"))).await;
        assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "wait={wait}: {status} {body}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_the_gateway_stays_up() {
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let state = GatewayState::new(watch::channel(true).1, CancellationToken::new()).with_ingress(tx);
    let huge = format!(r#"{{"action": "{}"}}"#, "x".repeat(1_500_000));
    let req = Request::post("/sessions/4/actions").header("content-type", "application/json").body(Body::from(huge));
    let (status, _) = call(&state, req.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(call(&state, get("/healthz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_websocket_from_another_sites_page_is_refused() {
    let state = GatewayState::new(watch::channel(true).1, CancellationToken::new());
    let ws = |origin: Option<&str>| {
        let mut r = Request::get("/ws")
            .header("host", "gateway.local:8080")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(call(&state, ws(Some("https://evil.example"))).await.0, StatusCode::FORBIDDEN);
    // Without a real connection the upgrade itself cannot happen; what matters is that the
    // same site and non-browser clients get past the Origin check.
    for origin in [None, Some("http://gateway.local:8080")] {
        assert_ne!(call(&state, ws(origin)).await.0, StatusCode::FORBIDDEN, "{origin:?}");
    }
}

/// Over a real socket: a client that trickles its headers is cut off after the header-read
/// timeout, and clients past the connection limit wait (are not served, nothing is
/// allocated for them) until a slot frees; the gateway answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_connections_past_the_limit_wait() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_ready, rx) = watch::channel(true);
    let cancel = CancellationToken::new();
    let state = GatewayState::new(rx, cancel.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = Duration::from_secs(2);
    let server = tokio::spawn(pipeline::gateway::serve_with(listener, state, cancel.clone(), 2, timeout));
    let health = || async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut answer)).await.map(|_| answer)
    };

    // Two slowloris clients take both slots: a third client is not served meanwhile...
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn(health());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "past the limit, a connection waits");
    // ...until the header-read timeout closes theirs; then it is answered.
    for c in &mut slow {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closed after the header-read timeout");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "never answered");
    }
    let answer = waiting.await.unwrap().expect("answered once a slot freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(health().await.unwrap().starts_with("HTTP/1.1 200"));
    cancel.cancel();
    server.await.unwrap().unwrap();
}
