//! The gateway (micro-gateway): consumes `story.updates` and pushes each update to HTTP
//! clients over Server-Sent Events, per session (`GET /sessions/{id}/events`) or all of
//! them (`GET /events`), or over WebSocket (`GET /sessions/{id}/ws`, `GET /ws`), as text
//! messages of the same JSON, or by HTTP long-poll with a cursor (`GET /sessions/{id}/poll`,
//! `GET /poll`, see [`crate::gateway::longpoll`]). `GET /healthz` answers while the process runs; `GET /readyz` only
//! once the consumer has partitions.
//!
//! With an ingress attached ([`GatewayState::with_ingress`]), `POST /sessions/{id}/actions`
//! takes story actions in for the connector's `http` source: `202` once Kafka has the
//! record, `503` with `Retry-After` when the connector's queue is full or it is stopping,
//! `504` when Kafka has not answered within [`INGRESS_TIMEOUT`], `502` when it refused,
//! `404` when no ingress is attached; a body that is not an action is a `4xx` from the
//! JSON reader.
//!
//! Redelivered updates (at-least-once upstream) are recognised by event id ([`Seen`]) and
//! counted as duplicates; no client gets one twice.
//!
//! Each client has a bounded queue ([`crate::gateway::fanout`]): a client that falls a whole
//! buffer behind loses its oldest updates and is sent an SSE comment `lagged N` in their
//! place (or, with the `disconnect` policy, is cut off with the reason); when every
//! client's queue is full the consumer pauses its partitions instead, and resumes once a
//! client reads. On shutdown every stream is sent what was queued for it, then ends.
//!
//! With tokens configured ([`GatewayState::with_auth`]), every stream and action needs
//! `Authorization: Bearer TOKEN`: a token is scoped to sessions or to all of them, and only
//! an all-sessions token may follow the firehose. No token or an unknown one is `401` (with
//! `WWW-Authenticate: Bearer`), a token for other sessions `403`. `/healthz`, `/readyz` and
//! `/metrics` stay open for the platform's probes and scrapers.

mod auth;
pub mod config;
mod dedupe;
pub mod fanout;
pub mod grpc;
pub mod longpoll;
mod routes;

pub use auth::{Auth, Denied, Scope};
pub use dedupe::{IdWindow, Seen};
pub use routes::{
    ActionBody, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, PollQuery, app, serve, serve_connection, serve_with,
};

use crate::connector::Ingress;
use crate::event::StoryEvent;
use crate::runtime::{Ack, From, Out, Stage};
use crate::{Result, topics};
use probes::Delivery;
use rdkafka::message::{BorrowedMessage, Message};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The stage's name.
pub const NAME: &str = crate::topology::GATEWAY;

/// One update ready to push: its session (for per-session streams) and its SSE data.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub session: u64,
    pub data: Arc<str>,
}

/// What the HTTP handlers share with the consumer.
#[derive(Debug, Clone)]
pub struct GatewayState {
    fanout: Arc<crate::gateway::fanout::Fanout>,
    backlog: Arc<crate::gateway::longpoll::Backlog>,
    shutdown: CancellationToken,
    ready: watch::Receiver<bool>,
    ingress: Option<mpsc::Sender<Ingress>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    auth: Option<Arc<Auth>>,
    /// The bearer token of the callers whose actions keep their own identity and time.
    trusted: Option<Arc<str>>,
    /// Identity for everyone else's actions: a run of the gateway's own, and the next id.
    assigned: Arc<(u64, std::sync::atomic::AtomicU64)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// Longest wait for Kafka's acknowledgement of an ingress request.
pub const INGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl GatewayState {
    /// State whose readiness follows `ready`; open streams end at `shutdown`.
    pub fn new(ready: watch::Receiver<bool>, shutdown: CancellationToken) -> Self {
        Self::with_fanout(ready, shutdown, crate::gateway::fanout::FanoutConfig::default())
    }

    /// [`GatewayState::new`] with its clients' buffering chosen.
    pub fn with_fanout(
        ready: watch::Receiver<bool>,
        shutdown: CancellationToken,
        config: crate::gateway::fanout::FanoutConfig,
    ) -> Self {
        let fanout = Arc::new(crate::gateway::fanout::Fanout::new(config, shutdown.clone()));
        let backlog = Arc::new(crate::gateway::longpoll::Backlog::new(config.retain));
        // A run id no load generator's run has (theirs are random too, from another draw).
        let ingress_run = rand::random::<u64>() >> 12;
        let assigned = Arc::new((ingress_run, std::sync::atomic::AtomicU64::new(0)));
        Self { fanout, backlog, shutdown, ready, ingress: None, metrics: None, auth: None, trusted: None, assigned }
    }

    /// Lets callers with bearer `token` (the run's own players) name their actions' run,
    /// id and event time; every other action gets them from the gateway.
    #[must_use]
    pub fn with_trusted(mut self, token: impl Into<Arc<str>>) -> Self {
        self.trusted = Some(token.into());
        self
    }

    /// Whether the request carries the trusted bearer token.
    pub fn trusts(&self, headers: &axum::http::HeaderMap) -> bool {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "));
        matches!((&self.trusted, bearer), (Some(t), Some(b)) if t.as_bytes() == b.as_bytes())
    }

    /// A run and id of the gateway's own for an action whose caller is not trusted.
    pub fn assign_identity(&self) -> (u64, u64) {
        (self.assigned.0, self.assigned.1.fetch_add(1, Ordering::Relaxed))
    }

    /// What the fan-out has done (drops, disconnects, pauses).
    pub fn fanout_stats(&self) -> &crate::gateway::fanout::FanoutStats {
        &self.fanout.stats
    }

    /// Requires bearer tokens on streams and actions.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Hands `POST /sessions/{id}/actions` requests to the connector's `http` source.
    #[must_use]
    pub fn with_ingress(mut self, ingress: mpsc::Sender<Ingress>) -> Self {
        self.ingress = Some(ingress);
        self
    }

    /// Serves `GET /metrics` from `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let fanout = Arc::clone(&self.fanout);
        metrics.watch_clients(crate::metrics::ClientSource(Box::new(move || {
            let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            crate::metrics::ClientFigures {
                connected: fanout.subscribers() as u64,
                dropped: n(&fanout.stats.dropped),
                disconnected: n(&fanout.stats.disconnected),
                pauses: n(&fanout.stats.pauses),
            }
        })));
        self.metrics = Some(metrics);
        self
    }

    /// Pushes one update to every subscribed client; returns how many got it.
    pub fn push(&self, update: Pushed) -> usize {
        self.backlog.push(update.session, &update.data);
        self.fanout.push(update.session, &update.data)
    }

    /// A client of one session's updates (all of them when `None`), as a stream handler
    /// has.
    pub fn subscribe(&self, session: Option<u64>) -> crate::gateway::fanout::Subscription {
        self.fanout.subscribe(session)
    }

    /// Clients currently subscribed.
    pub fn subscribers(&self) -> usize {
        self.fanout.subscribers()
    }
}

/// How long a stopping gateway lets its clients take what was queued for them.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The gateway's consuming side: `story.updates` into the push channel, each update
/// once (redeliveries are counted as duplicates and not pushed again).
pub struct Gateway {
    state: GatewayState,
    seen: Seen,
    stamps: Vec<u8>,
}

impl Gateway {
    /// Pushes to the clients of `state`.
    pub fn new(state: GatewayState) -> Self {
        Self { state, seen: Seen::default(), stamps: Vec::with_capacity(512) }
    }
}

impl Stage for Gateway {
    const NAME: &'static str = NAME;

    fn topics(&self) -> Vec<String> {
        vec![topics::UPDATES.into()]
    }

    async fn handle(&mut self, msg: &BorrowedMessage<'_>, out: &mut Out<'_>) -> Result<Ack> {
        let ingress_ns = probes::now_ns();
        let (incoming, event) = match out.decode(msg) {
            Ok(d) => d,
            Err(reason) => return out.dead_letter(msg, &reason),
        };
        if !self.seen.insert(&event) {
            // Redelivered (at-least-once upstream): clients already have it.
            out.ctx.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Ack::Nothing);
        }
        if self.state.fanout.filled() && self.state.fanout.all_full() {
            // Every client is a whole buffer behind: stop reading rather than drop, for at
            // most half the consumer's max.poll.interval.ms (past it the group would take
            // the partitions away); clients that took nothing for that long then meet
            // their slow-client policy.
            let max_poll = out.ctx.kafka.effective_consumer().get("max.poll.interval.ms").and_then(|v| v.parse().ok());
            let limit = std::time::Duration::from_millis(max_poll.unwrap_or(300_000u64) / 2);
            wait_for_room(out.consumer, &self.state, &out.ctx.cancel, limit).await;
        }
        let from = From { partition: msg.partition(), offset: msg.offset(), ingress_ns };
        let state = &self.state;
        out.emitter()?.leave(event.id, &incoming, from, &mut self.stamps, |span, stamps| {
            state.push(render(&event, &span.to_string(), incoming.intended_ns, stamps));
        });
        Ok(Ack::Nothing)
    }
}

/// Pauses the consumer's partitions until a client has room, shutdown, or `limit` has
/// passed, then resumes.
async fn wait_for_room(
    consumer: &crate::runtime::StageConsumer,
    state: &GatewayState,
    cancel: &CancellationToken,
    limit: std::time::Duration,
) {
    use rdkafka::consumer::Consumer;
    let stats = &state.fanout.stats;
    let assignment = consumer.assignment().ok();
    if let Some(tpl) = &assignment {
        let _ = consumer.pause(tpl);
    }
    stats.pauses.fetch_add(1, Ordering::Relaxed);
    let began = std::time::Instant::now();
    while state.fanout.all_full() && !cancel.is_cancelled() && began.elapsed() < limit {
        tokio::select! {
            () = state.fanout.wait_for_room() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
    if let Some(tpl) = &assignment {
        let _ = consumer.resume(tpl);
    }
    stats.paused_ns.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

fn render(event: &StoryEvent, traceparent: &str, intended_ns: u64, stamps: &[u8]) -> Pushed {
    let delivery = Delivery {
        run: event.run,
        id: event.id,
        session: event.session,
        traceparent: Cow::Borrowed(traceparent),
        intended_ns,
        stamps: String::from_utf8_lossy(stamps),
        update: event,
    };
    // A struct of strings and integers always serializes.
    let data = serde_json::to_string(&delivery).unwrap_or_default();
    Pushed { session: event.session, data: data.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn pushed(session: u64, n: u64) -> Pushed {
        let event =
            StoryEvent { run: 1, id: n, session, action: "go".into(), beat: None, window: None, enrichment: None };
        render(&event, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 5, b"agent:1:2")
    }

    async fn start()
    -> (String, GatewayState, watch::Sender<bool>, CancellationToken, tokio::task::JoinHandle<Result<()>>) {
        let (ready_tx, ready_rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let state = GatewayState::new(ready_rx, cancel.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, state.clone(), cancel.clone()));
        (url, state, ready_tx, cancel, server)
    }

    /// Sends a bare HTTP/1.1 GET for `path` and returns the open connection.
    async fn request(base: &str, path: &str, extra: &str) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n").as_bytes()).await.unwrap();
        s
    }

    async fn status(base: &str, path: &str) -> u16 {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        request(base, path, "connection: close\r\n").await.read_to_string(&mut out).await.unwrap();
        out[9..12].parse().unwrap()
    }

    #[tokio::test]
    async fn readiness_follows_partition_assignment() {
        let (url, _state, ready, cancel, server) = start().await;
        assert_eq!(status(&url, "/healthz").await, 200);
        assert_eq!(status(&url, "/readyz").await, 503);
        ready.send_replace(true);
        assert_eq!(status(&url, "/readyz").await, 200);
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn session_streams_see_only_their_session_and_shutdown_ends_them() {
        let (url, state, _ready, cancel, server) = start().await;
        let sse = "accept: text/event-stream\r\n";
        let mut client = request(&url, "/sessions/7/events", sse).await;
        let mut firehose = request(&url, "/events", sse).await;
        while state.subscribers() < 2 {
            tokio::task::yield_now().await;
        }
        state.push(pushed(3, 1));
        state.push(pushed(7, 2));
        let firehose_text = read_events(&mut firehose, 2).await;
        assert!(firehose_text.contains(r#""id":1"#) && firehose_text.contains(r#""id":2"#));
        let session_text = read_events(&mut client, 1).await;
        assert!(session_text.contains(r#""id":2"#) && !session_text.contains(r#""id":1"#), "{session_text}");
        cancel.cancel();
        // Graceful shutdown ends open streams instead of waiting on them forever.
        tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_long_poll_waits_for_its_sessions_update_and_hands_back_a_cursor() {
        use tokio::io::AsyncReadExt;
        let (url, state, _ready, cancel, server) = start().await;
        state.push(pushed(7, 1)); // before the poll's cursor: not for this poll
        let poll = {
            let url = url.clone();
            tokio::spawn(async move {
                let mut out = String::new();
                let mut s = request(&url, "/sessions/7/poll?cursor=1&wait=30", "connection: close\r\n").await;
                s.read_to_string(&mut out).await.unwrap();
                out
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!poll.is_finished(), "nothing after cursor 1 for session 7 yet: the poll waits");
        state.push(pushed(3, 2));
        state.push(pushed(7, 3));
        let out = tokio::time::timeout(std::time::Duration::from_secs(10), poll).await.unwrap().unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let body: serde_json::Value = serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!((body["cursor"].as_u64(), body["missed"].as_u64()), (Some(3), Some(0)), "{body}");
        let ids: Vec<u64> = body["updates"].as_array().unwrap().iter().map(|u| u["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [3]);
        // The firehose from the start, and a query with a typo.
        let mut all = String::new();
        request(&url, "/poll?cursor=0&wait=0", "connection: close\r\n").await.read_to_string(&mut all).await.unwrap();
        assert!(all.contains(r#""id":1"#) && all.contains(r#""id":2"#) && all.contains(r#""id":3"#), "{all}");
        assert_eq!(status(&url, "/poll?cursr=0").await, 400);
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn metrics_show_the_gateways_clients_and_what_slow_ones_lost() {
        let (_ready, ready_rx) = watch::channel(true);
        let config = crate::gateway::fanout::FanoutConfig { buffer: 1, ..Default::default() };
        let metrics = Arc::new(crate::metrics::Metrics::new("source", Vec::new(), "client", Arc::default()));
        let state =
            GatewayState::with_fanout(ready_rx, CancellationToken::new(), config).with_metrics(Arc::clone(&metrics));
        let _client = state.subscribe(None);
        state.push(pushed(1, 1));
        state.push(pushed(1, 2)); // the client read nothing: its oldest is dropped
        let page = metrics.render();
        for line in
            ["tailgate_gateway_clients 1", "tailgate_gateway_dropped_total 1", "tailgate_gateway_pauses_total 0"]
        {
            assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
        }
    }

    async fn read_events(s: &mut tokio::net::TcpStream, n: usize) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches("data:").count() < n {
            let k = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(k > 0, "stream closed early: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..k]));
        }
        text
    }

    #[test]
    fn redeliveries_are_recognised_per_run_even_out_of_order() {
        let e = |run, id| StoryEvent {
            run,
            id,
            session: id % 3,
            action: String::new(),
            beat: None,
            window: None,
            enrichment: None,
        };
        let mut s = Seen::default();
        assert!(s.insert(&e(1, 0)));
        assert!(!s.insert(&e(1, 0)));
        assert!(s.insert(&e(2, 0)), "runs are apart");
        assert!(s.insert(&e(1, 5)));
        assert!(s.insert(&e(1, 3)), "a later id first does not hide an earlier one");
        assert!(!s.insert(&e(1, 3)));
        assert!(!s.insert(&e(1, 5)));
        // The window slides: an id far ahead clears the slots it reuses.
        let far = Seen::WINDOW + 4;
        assert!(s.insert(&e(1, far)));
        assert!(s.insert(&e(1, far - 1)), "same slot as id 3 once did, but a new id");
        assert!(!s.insert(&e(1, 3)), "older than the window");
        assert!(s.insert(&e(1, 10 * Seen::WINDOW)));
        assert!(s.insert(&e(1, 10 * Seen::WINDOW - 7)));
        assert!(!s.insert(&e(1, 10 * Seen::WINDOW - 7)));
    }

    #[test]
    fn rendered_updates_carry_the_delivery_envelope() {
        let p = pushed(3, 9);
        let d: Delivery<'_, serde_json::Value> = serde_json::from_str(&p.data).unwrap();
        assert_eq!((d.run, d.id, d.session, d.intended_ns), (1, 9, 3, 5));
        assert_eq!(d.stamps, "agent:1:2");
        assert_eq!(d.update["action"], "go");
    }

    #[tokio::test]
    async fn tokens_are_scoped_to_sessions_and_only_an_all_sessions_token_reads_the_firehose() {
        let (ready_tx, ready_rx) = watch::channel(true);
        let cancel = CancellationToken::new();
        let auth = Auth::new([("player-7".to_owned(), Scope::Sessions([7].into())), ("ops".to_owned(), Scope::All)]);
        let state = GatewayState::new(ready_rx, cancel.clone()).with_auth(auth);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, state.clone(), cancel.clone()));
        let code = |path: &'static str, token: Option<&'static str>| {
            let url = url.clone();
            async move {
                use tokio::io::AsyncReadExt;
                let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
                let mut s = request(&url, path, &format!("{auth}connection: close\r\n")).await;
                // Streams that are allowed stay open: the status line is enough.
                let mut head = [0u8; 12];
                s.read_exact(&mut head).await.unwrap();
                String::from_utf8_lossy(&head[9..12]).parse::<u16>().unwrap()
            }
        };
        assert_eq!(code("/sessions/7/events", None).await, 401);
        assert_eq!(code("/sessions/7/events", Some("guess")).await, 401);
        assert_eq!(code("/sessions/7/events", Some("player-7")).await, 200);
        assert_eq!(code("/sessions/8/events", Some("player-7")).await, 403);
        assert_eq!(code("/events", Some("player-7")).await, 403);
        assert_eq!(code("/events", Some("ops")).await, 200);
        assert_eq!(code("/sessions/8/events", Some("ops")).await, 200);
        assert_eq!(code("/sessions/8/poll?wait=0", Some("player-7")).await, 403);
        assert_eq!(code("/poll?wait=0", Some("player-7")).await, 403);
        assert_eq!(code("/sessions/7/poll?wait=0", Some("player-7")).await, 200);
        assert_eq!(code("/healthz", None).await, 200, "probes need no token");
        let auth = Auth::new([("t".to_owned(), Scope::All)]);
        assert_eq!(auth.check(Some("Basic dDp0"), None), Err(Denied::Unauthenticated));
        drop(ready_tx);
        cancel.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_websocket_client_gets_its_sessions_updates_as_text_messages() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (url, state, _ready, cancel, server) = start().await;
        let mut s = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
        let handshake = "GET /sessions/7/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";
        s.write_all(handshake.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
        while state.subscribers() < 1 {
            tokio::task::yield_now().await;
        }
        state.push(pushed(3, 1));
        state.push(pushed(7, 2));
        // One unmasked text frame (0x81) from the server, for session 7 only.
        assert_eq!(s.read_u8().await.unwrap(), 0x81);
        let len = match s.read_u8().await.unwrap() {
            126 => usize::from(s.read_u16().await.unwrap()),
            n => usize::from(n),
        };
        let mut text = vec![0; len];
        s.read_exact(&mut text).await.unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(r#""id":2"#) && text.contains(r#""session":7"#), "{text}");
        cancel.cancel();
        server.await.unwrap().unwrap();
    }
}
