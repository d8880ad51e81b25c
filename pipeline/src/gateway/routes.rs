//! The gateway's HTTP routes: Server-Sent Events, WebSocket and long-poll streams (the
//! firehose and per session), the action ingress, health, readiness and `/metrics`, and
//! the server that drains its clients on shutdown.

use super::auth::{authorize, refusal};
use super::{DRAIN_TIMEOUT, GatewayState, INGRESS_TIMEOUT};
use crate::Result;
use crate::connector::Ingress;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::StreamExt as _;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The gateway's HTTP routes.
pub fn app(state: GatewayState) -> Router {
    Router::new()
        .route("/events", get(firehose))
        .route("/sessions/{id}/events", get(session_events))
        .route("/ws", get(firehose_ws))
        .route("/sessions/{id}/ws", get(session_ws))
        .route("/poll", get(firehose_poll))
        .route("/sessions/{id}/poll", get(session_poll))
        .route("/sessions/{id}/actions", axum::routing::post(post_action))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The largest request body taken: an action of the largest payload a scenario allows
/// (1 MB), and room for its JSON.
pub const MAX_BODY: usize = 1_000_000 + 16 * 1024;

async fn metrics(State(s): State<GatewayState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    match s.metrics {
        Some(m) => crate::metrics::handler(State(m), headers).await.into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics in this process").into_response(),
    }
}

async fn readyz(State(s): State<GatewayState>) -> (StatusCode, &'static str) {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for partitions")
    }
}

/// The body of `POST /sessions/{id}/actions`: the action, and from a trusted caller (the
/// run's own players, see [`GatewayState::with_trusted`]) its `run`, `id` and `intended_ns`
/// (when the player meant to act: the event time; default now). Anyone else's action gets
/// its identity and time from the gateway, whatever the body says. The `traceparent` header
/// continues the caller's trace.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    #[serde(default)]
    pub run: Option<u64>,
    #[serde(default)]
    pub id: Option<u64>,
    pub action: String,
    pub intended_ns: Option<u64>,
}

async fn post_action(
    State(s): State<GatewayState>,
    Path(session): Path<u64>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<ActionBody>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let received_ns = probes::now_ns();
    if let Err(denied) = authorize(&s, &headers, Some(session)) {
        return refusal(denied);
    }
    let Some(ingress) = &s.ingress else {
        return (StatusCode::NOT_FOUND, "this gateway takes no actions (no http source)").into_response();
    };
    let busy = |why: &'static str| {
        (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, "1")], why).into_response()
    };
    let traceparent = headers
        .get(probes::headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| probes::TraceContext::new_root().to_string(), str::to_owned);
    let (run, event_id, intended_ns) = if s.trusts(&headers) {
        let (Some(run), Some(id)) = (body.run, body.id) else {
            return (StatusCode::UNPROCESSABLE_ENTITY, "a player's action names its `run` and `id`").into_response();
        };
        (run, id, body.intended_ns.unwrap_or(received_ns))
    } else {
        let (run, id) = s.assign_identity();
        (run, id, received_ns)
    };
    let row = crate::connector::ActionRow {
        run,
        event_id,
        session,
        intended_ns,
        traceparent: traceparent.into(),
        action: body.action.into(),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    match ingress.try_send(Ingress { row, received_ns, reply }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => return busy("the connector is busy"),
        Err(mpsc::error::TrySendError::Closed(_)) => return busy("the connector is stopping"),
    }
    match tokio::time::timeout(INGRESS_TIMEOUT, answer).await {
        Ok(Ok(Ok(()))) => {
            let assigned = serde_json::json!({ "run": run, "id": event_id }).to_string();
            (StatusCode::ACCEPTED, [(axum::http::header::CONTENT_TYPE, "application/json")], assigned).into_response()
        }
        Ok(Ok(Err(reason))) => (StatusCode::BAD_GATEWAY, reason).into_response(),
        Ok(Err(_)) => busy("the connector stopped before Kafka answered"),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "Kafka did not acknowledge in time").into_response(),
    }
}

type EventStream =
    Sse<axum::response::sse::KeepAliveStream<futures::stream::BoxStream<'static, Result<Event, Infallible>>>>;

fn stream(s: &GatewayState, session: Option<u64>) -> EventStream {
    use crate::gateway::fanout::Item;
    let updates = s
        .fanout
        .subscribe(session)
        .into_stream()
        .map(|item| {
            Ok(match item {
                Item::Update(data) => Event::default().data(&*data),
                Item::Lagged(n) => Event::default().comment(format!("lagged {n}")),
                Item::Disconnected(why) => Event::default().comment(why),
            })
        })
        .boxed();
    Sse::new(updates).keep_alive(KeepAlive::default())
}

async fn firehose(State(s): State<GatewayState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    match authorize(&s, &headers, None) {
        Ok(()) => stream(&s, None).into_response(),
        Err(denied) => refusal(denied),
    }
}

async fn session_events(
    State(s): State<GatewayState>,
    Path(id): Path<u64>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match authorize(&s, &headers, Some(id)) {
        Ok(()) => stream(&s, Some(id)).into_response(),
        Err(denied) => refusal(denied),
    }
}

/// The query of a long-poll: `cursor` (absent: from now), `wait` in seconds, `max` updates.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    pub cursor: Option<u64>,
    pub wait: Option<f64>,
    pub max: Option<usize>,
}

async fn long_poll(s: &GatewayState, session: Option<u64>, q: PollQuery) -> axum::response::Response {
    use axum::response::IntoResponse;
    let wait = q
        .wait
        .filter(|w| w.is_finite() && *w >= 0.0)
        // Bounded before it becomes a Duration (which a huge number would overflow).
        .map(|w| w.min(crate::gateway::longpoll::MAX_WAIT.as_secs_f64()))
        .map_or(crate::gateway::longpoll::DEFAULT_WAIT, std::time::Duration::from_secs_f64);
    let max = q.max.unwrap_or(crate::gateway::longpoll::MAX_PAGE).clamp(1, crate::gateway::longpoll::MAX_PAGE);
    let page = s.backlog.poll(q.cursor, session, max, wait, &s.shutdown).await;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], page.to_json()).into_response()
}

async fn firehose_poll(
    State(s): State<GatewayState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<PollQuery>,
) -> axum::response::Response {
    match authorize(&s, &headers, None) {
        Ok(()) => long_poll(&s, None, q).await,
        Err(denied) => refusal(denied),
    }
}

async fn session_poll(
    State(s): State<GatewayState>,
    Path(id): Path<u64>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<PollQuery>,
) -> axum::response::Response {
    match authorize(&s, &headers, Some(id)) {
        Ok(()) => long_poll(&s, Some(id), q).await,
        Err(denied) => refusal(denied),
    }
}

type Upgrade = Result<axum::extract::ws::WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

async fn firehose_ws(
    State(s): State<GatewayState>,
    headers: axum::http::HeaderMap,
    ws: Upgrade,
) -> axum::response::Response {
    upgrade(s, &headers, ws, None)
}

async fn session_ws(
    State(s): State<GatewayState>,
    Path(id): Path<u64>,
    headers: axum::http::HeaderMap,
    ws: Upgrade,
) -> axum::response::Response {
    upgrade(s, &headers, ws, Some(id))
}

/// Upgrades to a WebSocket of `session`'s updates (the firehose when `None`) once the
/// caller may have it: a page of another site may not (a browser sends its `Origin`, which
/// must name this gateway's host), and tokens are checked as for every stream.
fn upgrade(
    s: GatewayState,
    headers: &axum::http::HeaderMap,
    ws: Upgrade,
    session: Option<u64>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !same_origin(headers) {
        return (
            StatusCode::FORBIDDEN,
            "a WebSocket from another site's page is refused (its Origin is not this host)",
        )
            .into_response();
    }
    if let Err(denied) = authorize(&s, headers, session) {
        return refusal(denied);
    }
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| websocket(socket, s, session)),
        Err(rejection) => rejection.into_response(),
    }
}

/// Whether the request has no `Origin` (not from a browser page) or one whose host is the
/// request's `Host`.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else { return true };
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
    let origin_host =
        origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Sends one client's updates as WebSocket text messages (the same JSON as the SSE data),
/// a gap as `{"lagged":N}`, and a cut-off as a close frame with the reason; ends when the
/// client closes.
async fn websocket(mut socket: axum::extract::ws::WebSocket, s: GatewayState, session: Option<u64>) {
    use crate::gateway::fanout::Item;
    use axum::extract::ws::{CloseFrame, Message};
    let mut sub = s.subscribe(session);
    loop {
        let item = tokio::select! {
            item = sub.next() => item,
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue, // clients have nothing to say here
            },
        };
        let message = match item {
            Some(Item::Update(data)) => Message::Text((&*data).into()),
            Some(Item::Lagged(n)) => Message::Text(format!("{{\"lagged\":{n}}}").into()),
            Some(Item::Disconnected(why)) => {
                Message::Close(Some(CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: why.into() }))
            }
            None => Message::Close(None),
        };
        let closing = matches!(message, Message::Close(_));
        if socket.send(message).await.is_err() || closing {
            return;
        }
    }
}

/// Connections served at once. Past it the gateway stops accepting (more wait in the
/// kernel's queue) rather than run out of memory or file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to send a request's headers before its connection is closed,
/// so connections that trickle headers (slowloris) cannot hold the server's slots.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the routes on `listener` until `cancel`, at most [`MAX_CONNECTIONS`] at once,
/// each given [`HEADER_READ_TIMEOUT`] for its headers; then each open stream is sent what
/// was queued for it and ends, and in-flight responses finish, for at most
/// [`DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, state: GatewayState, cancel: CancellationToken) -> Result<()> {
    serve_with(listener, state, cancel, MAX_CONNECTIONS, HEADER_READ_TIMEOUT).await
}

/// Serves HTTP/1.1 (WebSocket upgrades included) on one connection until the client is
/// done, or until `cancel` and then at most [`DRAIN_TIMEOUT`] more. Every request the
/// gateway reads is parsed here.
pub async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    header_read_timeout: std::time::Duration,
    cancel: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_read_timeout);
    let conn = http.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    // Streams are drained on shutdown, but a client that stops reading would hold the
    // server forever: after DRAIN_TIMEOUT the connection is closed.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
}

/// [`serve`] with its limits given.
pub async fn serve_with(
    listener: TcpListener,
    state: GatewayState,
    cancel: CancellationToken,
    max_connections: usize,
    header_read_timeout: std::time::Duration,
) -> Result<()> {
    let app = app(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => tokio::select! {
                    () = cancel.cancelled() => break,
                    a = listener.accept() => a.map(|(tcp, _)| (tcp, slot)),
                },
                Err(_) => break,
            },
        };
        let Ok((tcp, slot)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await; // out of descriptors, say
            continue;
        };
        // Updates are small writes: without TCP_NODELAY, Nagle's algorithm holds each one
        // until the client's delayed ACK (up to 40 ms) arrives.
        let _ = tcp.set_nodelay(true);
        let (app, cancel) = (app.clone(), cancel.clone());
        conns.spawn(async move {
            let _slot = slot;
            serve_connection(hyper_util::rt::TokioIo::new(tcp), app, header_read_timeout, cancel).await;
        });
    }
    // The port closes at once; open connections are drained.
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}
