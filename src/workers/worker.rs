//! `tailgate worker`: a load host. It says hello on the control topic, answers the
//! coordinator's clock pings, and runs each plan it is given: its share of the actions,
//! posted to the gateway on the open-loop schedule, and an audience following one worker's
//! events, every latency moved onto the coordinator's clock by the two measured offsets.
//! It reports every second on the results topic, and once more after the stop.

use super::clock::{answer, broker_bound, from_end, producer, send};
use super::{APPEND_TOPIC, CONTROL_TOPIC, Control, END_TO_END, Last, LoadDone, Plan, REPORT_EVERY, RESULTS_TOPIC};
use super::{Report, UNCORRECTED};
use crate::result::{SINK, SOURCE};
use loadgen::{Audience, Driver, Schedule, Tally};
use pipeline::KafkaSettings;
use probes::{HopSet, LatencyRecorder, TraceContext};
use rdkafka::Message as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// `tailgate worker`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// The Kafka cluster under test (host:port[,host:port...]): the coordinator's too.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// This worker's name in the run's results [default: HOSTNAME-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// A librdkafka setting for the worker's clients, KEY=VALUE (repeat; `${ENV}` reads
    /// the environment).
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// The coordinator's `--topic-prefix` (or `[broker] topic_prefix`).
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Run one plan, then exit [default: serve run after run].
    #[arg(long)]
    pub once: bool,
    /// How long to wait for the cluster to answer before giving up.
    #[arg(long, value_parser = crate::command::parse_duration, default_value = "5m")]
    pub wait: Duration,
    /// Testing only: offset this worker's clock by this many milliseconds.
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub clock_offset_ms: i64,
}

/// This worker's clock: the process's (`--clock-offset-ms` anchors it off the wall clock).
fn now() -> i64 {
    probes::now_ns() as i64
}

/// Runs the worker until Ctrl-C (or after one plan, `--once`); the exit code.
pub fn worker(opts: WorkerOptions) -> u8 {
    if opts.clock_offset_ms != 0 && !probes::clock::anchor_skewed(opts.clock_offset_ms.saturating_mul(1_000_000)) {
        eprintln!("error: --clock-offset-ms: the clock was read before it could be offset");
        return crate::exit::EXIT_RUNTIME;
    }
    let rt = match crate::command::tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(opts)) {
        Ok(()) => crate::exit::EXIT_PASS,
        Err(e) => {
            eprintln!("error: {e}");
            crate::exit::EXIT_RUNTIME
        }
    }
}

async fn serve(opts: WorkerOptions) -> Result<(), String> {
    let mut kafka = crate::command::kafka_from_flags(&opts.bootstrap, &opts.kafka)?;
    kafka.names = pipeline::io::kafka::Names::with_prefix(opts.topic_prefix.as_deref().unwrap_or(""));
    let name = opts.name.clone().unwrap_or_else(default_name);
    if super::coordinator::safe_name(&name) != name {
        return Err(format!("--name `{name}`: a worker's name is [A-Za-z0-9_.-], at most 64 characters"));
    }
    wait_for_cluster(&kafka, opts.wait).await?;
    eprintln!("worker {name}: on {}; waiting for a plan", kafka.bootstrap);
    let cancel = CancellationToken::new();
    let answering = tokio::spawn({
        let (kafka, name, cancel) = (kafka.clone(), name.clone(), cancel.clone());
        async move { answer(&kafka, &name, now, cancel).await }
    });
    let outcome = plans(&kafka, &name, opts.once).await;
    cancel.cancel();
    let _ = answering.await;
    outcome
}

/// Says hello until a plan comes, runs it, and again (once, with `once`).
async fn plans(kafka: &KafkaSettings, name: &str, once: bool) -> Result<(), String> {
    let append_bound = broker_bound(kafka, APPEND_TOPIC, 10, now).await.ok();
    let producer = producer(kafka)?;
    let control = from_end(kafka, CONTROL_TOPIC, &format!("worker-{name}")).await?;
    let control_topic = kafka.names.of(CONTROL_TOPIC);
    // Hello once a second (a coordinator may start after the worker), never once per
    // message read: the topic also carries every worker's clock exchange.
    let mut hello_every = tokio::time::interval(REPORT_EVERY);
    loop {
        let plan = tokio::select! {
            m = control.recv() => m.map_err(|e| format!("reading {CONTROL_TOPIC}: {e}"))?.payload().and_then(|b| {
                match serde_json::from_slice::<Control>(b) {
                    Ok(Control::Plan(p)) if p.to == name => Some(p),
                    _ => None,
                }
            }),
            _ = hello_every.tick() => {
                send(&producer, &control_topic, &Control::Hello { from: name.into(), append_bound }).await?;
                None
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(plan) = plan else { continue };
        eprintln!(
            "worker {name}: run {:x}, worker {} of {}, {}, following {}",
            plan.run,
            plan.index + 1,
            plan.workers,
            plan.shape.describe(),
            plan.follows.name
        );
        run(kafka, &producer, &control, *plan).await?;
        if once {
            return Ok(());
        }
    }
}

/// What the audience's observer records: end to end and each hop on the coordinator's
/// clock, and end to end as this worker's clock read it.
struct Recorders {
    hops: HopSet,
    uncorrected: LatencyRecorder,
}

impl Recorders {
    /// The lines closed since last asked, per metric (all, with `flush`).
    fn take(&mut self, flush: bool) -> Vec<(String, String)> {
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        let mut logs = vec![(END_TO_END.to_owned(), text(self.hops.end_to_end.take_closed(flush)))];
        logs.extend(self.hops.hops_mut().iter_mut().map(|h| (h.name.clone(), text(h.recorder.take_closed(flush)))));
        logs.push((UNCORRECTED.to_owned(), text(self.uncorrected.take_closed(flush))));
        logs.retain(|(_, l)| !l.is_empty());
        logs
    }
}

/// Runs one plan: the players, the audience and the reports, until the coordinator stops
/// the run (or, should it never, well after the load).
async fn run(
    kafka: &KafkaSettings,
    producer: &rdkafka::producer::FutureProducer,
    control: &rdkafka::consumer::StreamConsumer,
    plan: Plan,
) -> Result<(), String> {
    let rt = tokio::runtime::Handle::current();
    let recorders = Arc::new(Mutex::new(Recorders {
        hops: HopSet::new(SOURCE, &pipeline::STAGES, SINK, plan.measure_from_ns, Duration::from_secs(1)),
        uncorrected: LatencyRecorder::new(UNCORRECTED, plan.measure_from_ns, Duration::from_secs(1)),
    }));
    let (cancel, audience) = follow(&plan, Arc::clone(&recorders)).await?;
    let (sent, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let mut load = players(&plan, &rt, &sent, &stop)?;
    let results = kafka.names.of(RESULTS_TOPIC);
    let base = Report { from: plan.to.clone(), run: plan.run, ..Report::default() };
    let delivered = audience.1.clone();
    let report = |load: Option<LoadDone>, last: Option<Last>, flush: bool| {
        let logs = recorders.lock().map(|mut r| r.take(flush)).unwrap_or_default();
        let (sent, delivered) = (sent.load(Ordering::Relaxed), delivered.load(Ordering::Relaxed));
        Report { sent, delivered, logs, load, last, ..base.clone() }
    };
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    let mut done: Option<LoadDone> = None;
    let give_up = Instant::now() + Duration::from_nanos(plan.length_ns) + Duration::from_secs(600);
    loop {
        tokio::select! {
            _ = ticks.tick() => send(producer, &results, &report(None, None, false)).await?,
            d = &mut load, if done.is_none() => {
                let d = d.map_err(|_| "the load generator stopped".to_owned())?;
                done = Some(d.clone());
                send(producer, &results, &report(Some(d), None, false)).await?;
            }
            m = control.recv() => {
                let m = m.map_err(|e| format!("reading {CONTROL_TOPIC}: {e}"))?;
                if matches!(m.payload().map(serde_json::from_slice::<Control>), Some(Ok(Control::Stop { run })) if run == plan.run) {
                    break;
                }
            }
        }
        if Instant::now() > give_up {
            eprintln!("worker {}: no stop from the coordinator; ending the run", plan.to);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    cancel.cancel();
    let tally = audience.0.await.map_err(|e| e.to_string())?;
    let last = match tally {
        Ok(t) => Last {
            warmup_delivered: t.warmup_delivered,
            duplicates: t.duplicates,
            reordered: t.reordered,
            unexpected: t.unexpected,
            unreadable: t.unreadable,
            error: t.first_unreadable.clone(),
        },
        Err(e) => Last { error: Some(e.to_string()), ..Last::default() },
    };
    send(producer, &results, &report(done, Some(last), true)).await?;
    eprintln!("worker {}: run {:x} over", plan.to, plan.run);
    Ok(())
}

/// The audience on the gateway's firehose, taking the followed worker's ids only. Each
/// delivery's intended time (the sender's clock) and receipt (this one's) are moved onto
/// the coordinator's clock, where the pipeline's stamps already are.
async fn follow(
    plan: &Plan,
    recorders: Arc<Mutex<Recorders>>,
) -> Result<(CancellationToken, (tokio::task::JoinHandle<loadgen::Result<Tally>>, Arc<AtomicU64>)), String> {
    let f = &plan.follows;
    let (sender, receiver) = (f.offset_ns, plan.offset_ns);
    let on_sender_clock = |ns: u64| (ns as i64 + sender).max(0) as u64;
    // The tally's warm-up line is the sender's, as its load generator drew it.
    let hops = HopSet::new(SOURCE, &[], SINK, on_sender_clock(plan.measure_from_ns), Duration::from_secs(1));
    let mut tally = Tally::new(plan.run, on_sender_clock(plan.measure_from_ns), hops);
    tally.share(plan.workers, f.index);
    tally.bound_by(Arc::new(AtomicU64::new(f.expected)));
    let measure_from = plan.measure_from_ns;
    tally.observe_with(Box::new(move |intended, stamps, received, _| {
        let (i, r) = ((intended as i64 - sender).max(0) as u64, (received as i64 - receiver).max(0) as u64);
        if i < measure_from {
            return;
        }
        if let Ok(mut rec) = recorders.lock() {
            let _ = rec.hops.record(i, stamps.as_bytes(), r);
            rec.uncorrected.record(received.saturating_sub(intended), r);
        }
    }));
    let delivered = tally.delivered_counter();
    let cancel = CancellationToken::new();
    let url = format!("{}/events", plan.gateway);
    let audience = Audience { url, tally, token: plan.audience_token.clone() };
    let task = audience.start(cancel.clone()).await.map_err(|e| e.to_string())?;
    Ok((cancel, (task, delivered)))
}

/// The players' thread: this worker's share of the schedule, its ids `index + k *
/// workers`, posted to the gateway; resolves with how the load went.
fn players(
    plan: &Plan,
    rt: &tokio::runtime::Handle,
    sent: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Result<tokio::sync::oneshot::Receiver<LoadDone>, String> {
    let schedule = Schedule::new(plan.arrival, plan.shape.clone(), Duration::from_nanos(plan.length_ns), plan.seed);
    let mut driver = Driver::new(schedule, plan.keys, plan.sessions, plan.payload_bytes, plan.seed);
    let mine = |ns: u64| (ns as i64 + plan.offset_ns).max(0) as u64;
    (driver.start_ns, driver.measure_from_ns) = (mine(plan.start_ns), mine(plan.measure_from_ns));
    let mut ingress = loadgen::ingress::HttpIngress::new(plan.gateway.clone(), plan.in_flight);
    ingress.token = Some(plan.players.as_str().into());
    let (run, workers, index, poison_every) = (plan.run, plan.workers, plan.index, plan.poison_every);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (rt, sent, stop) = (rt.clone(), Arc::clone(sent), Arc::clone(stop));
    std::thread::Builder::new()
        .name("tailgate-loadgen".into())
        .spawn(move || {
            let report = driver.run(&loadgen::SystemClock, &stop, &sent, |e| {
                let poisoned = poison_every > 0 && e.id % poison_every == poison_every - 1;
                let tp = TraceContext::root_sampled(1.0).encode();
                let traceparent =
                    if poisoned { loadgen::POISON_TRACEPARENT } else { std::str::from_utf8(&tp).unwrap_or_default() };
                let body = serde_json::json!({
                    "run": run,
                    "id": index + e.id * workers,
                    "action": e.payload,
                    "intended_ns": e.intended_ns,
                });
                ingress.send(&rt, e.session, body.to_string(), traceparent);
                Ok::<(), String>(())
            });
            let refused = ingress.refused.load(Ordering::Relaxed);
            let first_refusal = ingress.first_refusal.lock().ok().and_then(|f| f.clone());
            let done = match report {
                Ok(mut r) => LoadDone {
                    sent: r.sent,
                    warmup_sent: r.warmup_sent,
                    stopped_early: r.stopped_early,
                    schedule_lag: String::from_utf8_lossy(&r.schedule_lag.take_closed(true)).into_owned(),
                    refused,
                    first_refusal,
                    error: None,
                },
                Err(e) => LoadDone { error: Some(e), refused, first_refusal, ..LoadDone::default() },
            };
            let _ = tx.send(done);
        })
        .map_err(|e| e.to_string())?;
    Ok(rx)
}

/// Waits until the cluster answers (the coordinator may start its broker after the
/// workers), saying so once.
async fn wait_for_cluster(kafka: &KafkaSettings, wait: Duration) -> Result<(), String> {
    let until = Instant::now() + wait;
    let mut said = false;
    loop {
        match kafka.check_reachable(Duration::from_secs(2)).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > until => {
                return Err(format!(
                    "{e} (waited {}; is the coordinator's `tailgate run --workers` up?)",
                    humantime::format_duration(wait)
                ));
            }
            Err(_) if !said => {
                said = true;
                eprintln!("worker: waiting for the cluster at {}", kafka.bootstrap);
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "worker".to_owned() } else { host };
    super::coordinator::safe_name(&format!("{host}-{}", std::process::id()))
}
