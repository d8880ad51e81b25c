//! `tailgate watch`: attaches to a running pipeline (its topics, read from the end with a
//! group of its own that commits nothing). With a terminal, the live dashboard with the
//! lag of the pipeline's consumer groups; without one (or with `--for`, `--out`, `--sla`,
//! `--json`), [`headless`]: a monitor that writes a run directory and gates. A topic that
//! does not exist yet is waited for, saying so, and read from its start once it is made.

mod correlate;
mod headless;

use crate::command::tokio_runtime;
use crate::exit::{EXIT_BAD_INPUT, EXIT_PASS, EXIT_RUNTIME};
use crate::result::Objective;
use crate::run;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What `tailgate watch` was asked: its command-line flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WatchOptions {
    /// The Kafka cluster (host:port[,host:port...]).
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// Topics to tap; events need tailgate's headers (any pipeline that forwards them).
    #[arg(long, value_delimiter = ',', default_value = "story.updates")]
    pub topics: Vec<String>,
    /// End-to-end p99 budget to draw and check, ms (when no --sla file is given).
    #[arg(long, value_name = "MS", default_value_t = 50.0)]
    pub sla_p99: f64,
    /// Consumer groups whose lag to show (read only) [default: the reference pipeline's stages].
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Watch this long, then write the results and judge them (e.g. 10m) [default: until Ctrl-C or SIGTERM].
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Judge by these objectives (a TOML file of [[sla]] tables).
    #[arg(long, value_name = "FILE")]
    pub sla: Option<PathBuf>,
    /// The run directory to write [default: runs/watch-TIME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print one line of JSON a second: the second's percentiles and the counts.
    #[arg(long)]
    pub json: bool,
    /// Show the live dashboard even with headless options.
    #[arg(long, conflicts_with_all = ["duration", "out", "json"])]
    pub tui: bool,
    /// Serve Prometheus metrics on GET /metrics at this address while watching.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Export OTLP metrics to this collector (e.g. http://127.0.0.1:4317).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
    /// A librdkafka setting for the tap's clients, KEY=VALUE (repeat; `${ENV}` reads
    /// the environment; the SASL password may come from TAILGATE_KAFKA_SASL_PASSWORD).
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// Do not write the report into the run directory.
    #[arg(long)]
    pub no_report: bool,
    /// Time a pipeline that carries only W3C trace context: match each record on a
    /// topic to its record on the topic before by trace id, and time each hop from
    /// the records' timestamps (--topics in path order).
    #[arg(long, value_name = "HEADER", conflicts_with = "tui")]
    pub correlate: Option<String>,
}

impl WatchOptions {
    fn headless(&self) -> bool {
        use std::io::IsTerminal;
        !self.tui
            && (self.duration.is_some()
                || self.correlate.is_some()
                || self.out.is_some()
                || self.sla.is_some()
                || self.json
                || !std::io::stdout().is_terminal())
    }

    /// The tap's client settings: `--kafka KEY=VALUE` for every client, `${ENV}` taken
    /// from the environment, the SASL password from `TAILGATE_KAFKA_SASL_PASSWORD` when
    /// not given.
    fn kafka(&self) -> Result<pipeline::KafkaSettings, String> {
        crate::command::kafka_from_flags(&self.bootstrap, &self.kafka)
    }

    /// The objectives: the SLA file's, or end-to-end p99 under `--sla-p99`.
    fn objectives(&self) -> Result<Vec<Objective>, String> {
        match &self.sla {
            Some(f) => crate::scenario::load_sla(f).map_err(|e| e.to_string()),
            None => Ok(vec![Objective { metric: "end_to_end.p99_ms".into(), max: Some(self.sla_p99), min: None }]),
        }
    }
}

pub(crate) fn watch(opts: WatchOptions) -> u8 {
    if !crate::scenario::valid_bootstrap(&opts.bootstrap) {
        eprintln!("error: --bootstrap `{}` is not host:port[,host:port...]", opts.bootstrap);
        return EXIT_BAD_INPUT;
    }
    if let Some(c) = &opts.correlate {
        if c != "traceparent" {
            eprintln!("error: --correlate `{c}`: records can be matched by `traceparent` only");
            return EXIT_BAD_INPUT;
        }
        if opts.topics.len() < 2 {
            eprintln!("error: --correlate traceparent needs two topics or more, in path order (--topics A,B,C)");
            return EXIT_BAD_INPUT;
        }
    }
    let (kafka, objectives) = match (opts.kafka(), opts.objectives()) {
        (Ok(k), Ok(o)) => (k, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    if let Err(e) = rt.block_on(kafka.check_reachable(run::CONNECT_TIMEOUT)) {
        eprintln!("error: {e}");
        return EXIT_RUNTIME;
    }
    if opts.headless() {
        let code = rt.block_on(headless::watch(&opts, kafka, objectives));
        rt.shutdown_timeout(Duration::from_secs(2));
        return code;
    }
    tui(&rt, kafka, opts)
}

/// The live dashboard, until the user quits.
fn tui(rt: &tokio::runtime::Runtime, kafka: pipeline::KafkaSettings, opts: WatchOptions) -> u8 {
    if let Some(code) = crate::command::needs_terminal("watch --tui") {
        return code;
    }
    let WatchOptions { bootstrap, topics, sla_p99, groups, .. } = opts;
    let bootstrap = bootstrap.as_str();
    let groups = if groups.is_empty() { pipeline::topology::stage_groups() } else { groups };
    let (tx, rx) = dashboard::feed_channel();
    let meta = dashboard::Meta {
        title: format!("watching {}", topics.join(",")),
        profile: "-".into(),
        broker: format!("kafka @ {bootstrap}"),
        started_ns: probes::now_ns(),
        planned: None,
        budgets: vec![dashboard::Budget { metric: "end_to_end.p99_ms".into(), max: sla_p99 }],
        sink: pipeline::tap::NAME.into(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let tap = rt.spawn({
        let (cancel, tx, meta) = (cancel.clone(), tx.clone(), meta.clone());
        async move {
            let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let lags = {
                let (kafka, seen, tx, cancel) = (kafka.clone(), Arc::clone(&seen), tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    while tokio::select! { () = cancel.cancelled() => false, _ = tick.tick() => true } {
                        let lags = pipeline::tap::group_lags(&kafka, &groups, Duration::from_secs(5)).await;
                        let lags = lags.unwrap_or_default().into_iter().filter_map(|(g, l)| {
                            Some(dashboard::StageLag {
                                stage: g.trim_start_matches("tailgate-").to_owned(),
                                events: l?,
                            })
                        });
                        tx.offer(dashboard::Feed::Progress(dashboard::Progress {
                            delivered: seen.load(std::sync::atomic::Ordering::Relaxed),
                            lags: lags.collect(),
                            ..Default::default()
                        }));
                    }
                })
            };
            let on_sample = {
                let (seen, tx) = (Arc::clone(&seen), tx.clone());
                move |intended_ns, stamps: &str, received_ns| {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.offer(dashboard::Feed::Sample(dashboard::Sample {
                        intended_ns,
                        received_ns,
                        stamps: stamps.into(),
                    }));
                }
            };
            // Topics the pipeline has not made yet: say so in the header, and start reading
            // within a moment of their creation, from their start (all of it is new).
            let waiting_meta = meta.clone();
            let said = tx.clone();
            let missing = pipeline::tap::wait_for_topics(
                &kafka,
                &topics,
                |missing| {
                    let title = format!("{} · waiting for {} to be created", waiting_meta.title, missing.join(", "));
                    said.offer(dashboard::Feed::Meta(dashboard::Meta { title, ..waiting_meta.clone() }));
                },
                &cancel,
            )
            .await;
            let tapped = match missing {
                Ok(Some(missing)) => {
                    if !missing.is_empty() {
                        tx.offer(dashboard::Feed::Meta(meta));
                    }
                    let from_start = !missing.is_empty() && missing.len() == topics.len();
                    pipeline::tap::run(&kafka, &topics, from_start, on_sample, || {}, cancel).await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            let _ = lags.await;
            tapped
        }
    });
    drop(tx);
    let quit = AtomicBool::new(false);
    let ui = dashboard::run_app(meta, rx, &quit);
    cancel.cancel();
    let tapped = rt.block_on(tap);
    match (ui, tapped) {
        (Err(e), _) => {
            eprintln!("error: the dashboard failed: {e}");
            EXIT_RUNTIME
        }
        (_, Ok(Err(e))) => {
            eprintln!("error: {e}");
            EXIT_RUNTIME
        }
        _ => EXIT_PASS,
    }
}
