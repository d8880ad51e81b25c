//! The drive phase: the audience that follows the gateway and tallies every delivery, the
//! players that write the source on the open-loop schedule (from a thread of their own,
//! free of coordinated omission), and where they write (SQLite, PostgreSQL, or the
//! gateway's HTTP ingress).

use super::{RunError, failed};
use crate::scenario::{Scenario, SourceKind};
use dashboard::{Feed, FeedSender, Sample};
use loadgen::{Audience, DriveReport, Driver, Schedule, SystemClock, Tally};
use pipeline::assemble::PipelineConfig;
use pipeline::connector::{ActionRow, Source, SourceWriter};
use probes::TraceContext;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use tokio::sync::oneshot;

/// Where the load generator writes story actions.
pub(super) enum Writer {
    Sqlite(SourceWriter),
    Postgres(pipeline::io::postgres::PgWriter, tokio::runtime::Handle),
    Http(loadgen::ingress::HttpIngress, tokio::runtime::Handle),
}

impl Writer {
    /// Inserts (and commits) one row, or starts posting it; called from the load
    /// generator's thread.
    fn insert(&mut self, row: ActionRow<'_>) -> Result<(), String> {
        match self {
            Self::Sqlite(w) => w.insert(&row).map_err(|e| e.to_string()),
            Self::Postgres(w, rt) => rt.block_on(w.insert(&row)),
            Self::Http(w, rt) => {
                let body = serde_json::json!({
                    "run": row.run,
                    "id": row.event_id,
                    "action": row.action,
                    "intended_ns": row.intended_ns,
                });
                w.send(rt, row.session, body.to_string(), &row.traceparent);
                Ok(())
            }
        }
    }

    /// The HTTP players, whose refusals count as lost.
    pub(super) fn http(&self) -> Option<loadgen::ingress::HttpIngress> {
        match self {
            Self::Http(w, _) => Some(w.clone()),
            _ => None,
        }
    }
}

/// The load generator's writer for the scenario's source, and how the run names the source.
/// Over HTTP the players post to `gateway` with the bearer token `players`, which lets them
/// name their actions' identity and time. `external`: the connector is a process of its
/// own, whose slot the run must not drop.
pub(super) async fn open_writer(
    scenario: &Scenario,
    config: &PipelineConfig,
    dir: &Path,
    (gateway, players): (std::net::SocketAddr, &str),
    external: bool,
) -> Result<(Writer, String), RunError> {
    let c = &scenario.connector;
    match (c.source, &c.postgres) {
        (SourceKind::Postgres, Some(url)) => {
            // A run's own connector starts on an empty table and a new slot.
            pipeline::io::postgres::prepare(url, &c.slot, !external).await.map_err(failed)?;
            let writer = pipeline::io::postgres::PgWriter::open(url).await.map_err(failed)?;
            let name = Source::Postgres { url: url.clone(), slot: c.slot.clone() }.describe();
            Ok((Writer::Postgres(writer, tokio::runtime::Handle::current()), name))
        }
        (SourceKind::Http, _) => {
            let mut writer = loadgen::ingress::HttpIngress::new(format!("http://{gateway}"), c.http_in_flight);
            writer.token = Some(players.into());
            let name = format!("http POST http://{gateway}/sessions/{{id}}/actions");
            Ok((Writer::Http(writer, tokio::runtime::Handle::current()), name))
        }
        _ => {
            let db = config.source_file(dir);
            let writer = SourceWriter::open(&db).map_err(failed)?;
            Ok((Writer::Sqlite(writer), c.sqlite_source(&db).describe()))
        }
    }
}

/// The players, running.
pub(super) struct Players {
    pub done: oneshot::Receiver<Result<DriveReport, String>>,
    /// How far behind its schedule the load generator is, since last asked (ns).
    pub lag_live: Arc<AtomicU64>,
}

/// When the load starts and when measuring starts (after the warm-up), epoch ns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub start_ns: u64,
    pub measure_from_ns: u64,
}

/// How each event's root span is made: sampled at `ratio`, recorded to `spans`.
pub(super) struct Roots {
    pub spans: probes::spans::Spans,
    pub ratio: f64,
}

/// Starts the players' thread: each event of the schedule becomes one row, its root span
/// recorded; every `poison_every`-th is written unreadable.
pub(super) fn start_players(
    scenario: &Scenario,
    times: Times,
    run: u64,
    mut writer: Writer,
    roots: Roots,
    stop: &Arc<AtomicBool>,
    sent_live: &Arc<AtomicU64>,
) -> Result<Players, RunError> {
    let load = &scenario.load;
    let schedule = Schedule::new(load.arrival, load.shape(), load.ends(), load.seed);
    let mut driver = Driver::new(schedule, load.keys(), load.sessions, load.payload_bytes, load.seed);
    driver.start_ns = times.start_ns;
    driver.measure_from_ns = times.measure_from_ns;
    let lag_live = Arc::clone(&driver.lag_live);
    let (done_tx, done) = oneshot::channel();
    let poison_every = load.poison_every;
    let (stop, sent_live, Roots { spans, ratio }) = (Arc::clone(stop), Arc::clone(sent_live), roots);
    std::thread::Builder::new()
        .name("tailgate-loadgen".into())
        .spawn(move || {
            let report = driver.run(&SystemClock, &stop, &sent_live, |e| {
                let root = TraceContext::root_sampled(ratio);
                let tp = root.encode();
                let poisoned = poison_every > 0 && e.id % poison_every == poison_every - 1;
                let traceparent =
                    if poisoned { loadgen::POISON_TRACEPARENT } else { std::str::from_utf8(&tp).unwrap_or_default() };
                let sending_ns = probes::now_ns();
                let sent = writer.insert(ActionRow {
                    run,
                    event_id: e.id,
                    session: e.session,
                    intended_ns: e.intended_ns,
                    traceparent: traceparent.into(),
                    action: e.payload.into(),
                });
                if !poisoned {
                    probes::spans::record(&spans, &root, || {
                        telemetry::send_span(&root, e.id, sending_ns, probes::now_ns())
                    });
                }
                sent
            });
            let _ = done_tx.send(report);
        })
        .map_err(failed)?;
    Ok(Players { done, lag_live })
}

/// The audience, following the gateway's firehose.
pub(super) struct Following {
    pub task: tokio::task::JoinHandle<loadgen::Result<Tally>>,
    /// Distinct deliveries so far.
    pub delivered: Arc<AtomicU64>,
    pub cancel: tokio_util::sync::CancellationToken,
}

/// Starts the audience on `url`: every delivery goes into `tally`, `/metrics`, the OTLP
/// metrics (when exported) and the live view.
pub(super) async fn start_audience(
    mut tally: Tally,
    url: String,
    token: Option<String>,
    metrics: Arc<pipeline::metrics::Metrics>,
    otlp: Option<Arc<telemetry::metrics::MetricsExport>>,
    feed: Option<FeedSender>,
) -> Result<Following, RunError> {
    tally.observe_with(Box::new(move |intended_ns, stamps, received_ns, traceparent| {
        let trace = TraceContext::parse(traceparent.as_bytes()).ok();
        metrics.observe_traced(intended_ns, stamps, received_ns, trace.as_ref());
        if let Some(m) = &otlp {
            m.observe(intended_ns, stamps, received_ns);
        }
        if let Some(feed) = &feed {
            feed.offer(Feed::Sample(Sample { intended_ns, received_ns, stamps: stamps.to_owned() }));
        }
    }));
    let delivered = tally.delivered_counter();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = Audience { url, tally, token }.start(cancel.clone()).await.map_err(failed)?;
    Ok(Following { task, delivered, cancel })
}
