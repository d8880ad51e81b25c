//! The clock exchanges over a real control topic on the embedded broker: a worker whose
//! clock runs 40 ms ahead is measured within the bound the measurement itself reports, by
//! four-timestamp exchanges and by the broker's append times.

#![cfg(feature = "embedded")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use tailgate::workers::clock::{answer, broker_bound, measure};

const SKEW_NS: i64 = 40_000_000;

fn coordinator() -> i64 {
    probes::now_ns() as i64
}

fn skewed() -> i64 {
    probes::now_ns() as i64 + SKEW_NS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_injected_offset_is_measured_within_its_bound() {
    let (_broker, kafka) = testkit::broker(1).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let (kafka, cancel) = (kafka.clone(), cancel.clone());
        async move { answer(&kafka, "w1", skewed, cancel).await }
    });
    // The worker is reading before the first ping: give its consumer a moment to start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exchanges = measure(&kafka, "w1", 30, Duration::from_millis(5), coordinator).await.unwrap();
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert!(exchanges.len() >= 20, "{} of 30 pings answered", exchanges.len());
    let e = loadgen::clocks::estimate(&exchanges, 8).unwrap();
    assert!(e.interval().contains(SKEW_NS), "{e:?}");
    // Two trips through the broker on one machine: a bound of milliseconds, not seconds.
    assert!(e.bound_ns < 50_000_000, "{e:?}");
    // Each exchange alone also holds the truth: the method never claims more than it knows.
    assert!(exchanges.iter().all(|x| x.interval().contains(SKEW_NS)), "{exchanges:?}");
    eprintln!(
        "measured {:.3} ms ± {:.3} ms over {} exchanges",
        e.offset_ns as f64 / 1e6,
        e.bound_ns as f64 / 1e6,
        e.samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brokers_append_times_bound_the_same_offset_from_both_sides() {
    let (_broker, kafka) = testkit::broker(1).await;
    // Each side's offset from the broker, from records on a LogAppendTime topic.
    let worker = broker_bound(&kafka, "tailgate.clock-append", 10, skewed).await.unwrap();
    let coordinator = broker_bound(&kafka, "tailgate.clock-append", 10, coordinator).await.unwrap();
    // The broker runs on this machine's clock: the coordinator is 0 from it, the worker 40 ms.
    assert!(coordinator.contains(0), "{coordinator:?}");
    assert!(worker.contains(SKEW_NS), "{worker:?}");
    let between = worker.minus(coordinator);
    assert!(between.contains(SKEW_NS), "{between:?}");
    // Milliseconds wide: the append time is a millisecond count, and an ack a round trip.
    assert!(between.hi - between.lo < 20_000_000, "{between:?}");
}
