//! `tailgate watch`: attaches to a running pipeline (its output topic, read from the end
//! with a group of its own that commits nothing) and shows the live dashboard, with the lag
//! of the pipeline's consumer groups. A topic that does not exist yet is waited for, the
//! header saying so, and read from its start once it is made.

use crate::command::{needs_terminal, tokio_runtime};
use crate::exit::{EXIT_BAD_INPUT, EXIT_PASS, EXIT_RUNTIME};
use crate::run;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub(crate) fn watch(bootstrap: &str, topics: Vec<String>, sla_p99: f64, groups: Vec<String>) -> u8 {
    let groups = if groups.is_empty() { pipeline::topology::stage_groups() } else { groups };
    if !crate::scenario::valid_bootstrap(bootstrap) {
        eprintln!("error: --bootstrap `{bootstrap}` is not host:port[,host:port...]");
        return EXIT_BAD_INPUT;
    }
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let kafka = pipeline::KafkaSettings::new(bootstrap);
    if let Err(e) = rt.block_on(kafka.check_reachable(run::CONNECT_TIMEOUT)) {
        eprintln!("error: {e}");
        return EXIT_RUNTIME;
    }
    if let Some(code) = needs_terminal("watch") {
        return code;
    }
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
    rt.shutdown_timeout(Duration::from_secs(2));
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
