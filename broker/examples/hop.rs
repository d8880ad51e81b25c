//! One produce -> consume hop through librdkafka, measured against this broker and against
//! librdkafka's mock cluster in one run, side by side: open-loop sends at 1,000 and 10,000
//! messages/s (latency from each message's intended send time), `linger.ms = 0`,
//! librdkafka's default `fetch.wait.max.ms` (500 ms), 3 partitions; then the CPU a broker
//! uses with four idle consumers attached.
//!
//!   cargo run --release -p tailgate-broker --example hop
//!   cargo run --release -p tailgate-broker --example hop -- --rate 30000 --seconds 600
//!
//! The second form runs this broker alone for a long time and prints each minute's
//! percentiles and the process's memory: whether the broker stays flat over a long run.
//!
//! CPU is read from /proc: the broker's own threads (this broker's tokio workers, the mock
//! cluster's thread, by name) apart from the rest of the process (the clients: librdkafka's
//! threads and this program's sender and receiver).

use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTITIONS: i32 = 3;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURED: Duration = Duration::from_secs(5);

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// CPU seconds (user + system) in a `/proc` stat file.
fn cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of this process so far: `broker` (the broker's threads, which live
/// throughout) and `clients` (the rest, the process's total minus the broker's: the
/// total keeps the time of client threads that have exited).
fn cpu_by_group(broker_thread: &dyn Fn(&str) -> bool) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    let total = cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
    let mut broker = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if broker_thread(comm.trim()) {
                broker += cpu_seconds(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
            }
        }
    }
    out.insert("broker", broker);
    out.insert("clients", total - broker);
    out
}

struct Hop {
    /// Per minute of the measured period: (count, p50 ms, p99 ms, RSS MB at its end).
    minutes: Vec<(u64, f64, f64, f64)>,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    count: u64,
    broker_us_per_msg: f64,
    clients_us_per_msg: f64,
}

/// Resident memory of this process in MB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

fn hop(bootstrap: &str, topic: &str, rate: u64, measured: Duration, broker_thread: &dyn Fn(&str) -> bool) -> Hop {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4");
    let producer: BaseProducer = base
        .clone()
        .set("linger.ms", "0")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("socket.nagle.disable", "true")
        .create()
        .expect("producer");
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("hop-{topic}"))
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false")
        .set("socket.nagle.disable", "true")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let ready = Instant::now();
    while consumer.assignment().map_or(0, |a| a.count()) < PARTITIONS as usize {
        consumer.poll(Duration::from_millis(50));
        assert!(ready.elapsed() < Duration::from_secs(30), "no assignment");
    }
    // The consumer starts at the end: once a record sent now comes back, its fetches are
    // positioned (one sent before it resolved "latest" would never come).
    'warm: loop {
        let _ = producer.send(BaseRecord::<str, [u8]>::to(topic).key("warm").payload(&[0u8; 8]));
        producer.flush(Duration::from_secs(5)).expect("flush");
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                break 'warm;
            }
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "the consumer never got a record");
    }
    while consumer.poll(Duration::from_millis(200)).is_some() {}

    let total = rate * (WARMUP + measured).as_secs();
    let warm = rate * WARMUP.as_secs();
    let start_ns = now_ns() + 50_000_000;
    let cpu0 = cpu_by_group(broker_thread);
    let receiver = std::thread::Builder::new()
        .name("hop-receiver".into())
        .spawn(move || {
            let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut h = new();
            let mut minute = new();
            let mut minutes = Vec::new();
            let per_minute = rate * 60;
            let mut seen = 0;
            let deadline = Instant::now() + WARMUP + measured + Duration::from_secs(15);
            while seen < total && Instant::now() < deadline {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
                let p = m.payload().unwrap_or(&[]);
                if p.len() < 16 {
                    continue;
                }
                let seq = u64::from_be_bytes(p[0..8].try_into().expect("8"));
                let intended = u64::from_be_bytes(p[8..16].try_into().expect("8"));
                seen += 1;
                if seq >= warm {
                    let us = now_ns().saturating_sub(intended) / 1_000;
                    h.saturating_record(us);
                    minute.saturating_record(us);
                    if minute.len() == per_minute {
                        let ms = |q: f64| minute.value_at_quantile(q) as f64 / 1000.0;
                        minutes.push((minute.len(), ms(0.5), ms(0.99), rss_mb()));
                        minute = new();
                    }
                }
            }
            (h, minutes)
        })
        .expect("thread");
    let topic_owned = topic.to_owned();
    let sender = std::thread::Builder::new()
        .name("hop-sender".into())
        .spawn(move || {
            let topic = topic_owned.as_str();
            // Sends whatever is due, then sleeps until the next send is (never spinning: a
            // spinning sender would take a core from the broker and clients on two cores).
            // Latency counts from each message's intended time, so batching the sends does
            // not hide any delay.
            let mut payload = [0u8; 100];
            let mut i = 0;
            while i < total {
                let now = now_ns();
                while i < total && start_ns + i * 1_000_000_000 / rate <= now {
                    let intended = start_ns + i * 1_000_000_000 / rate;
                    payload[0..8].copy_from_slice(&i.to_be_bytes());
                    payload[8..16].copy_from_slice(&intended.to_be_bytes());
                    let key = format!("k{}", i % 64);
                    let mut record = BaseRecord::<str, [u8]>::to(topic).key(&key).payload(&payload);
                    while let Err((_, r)) = producer.send(record) {
                        producer.poll(Duration::from_millis(1));
                        record = r;
                    }
                    i += 1;
                }
                producer.poll(Duration::ZERO);
                let next = start_ns + i * 1_000_000_000 / rate;
                let now = now_ns();
                if next > now {
                    std::thread::sleep(Duration::from_nanos(next - now));
                }
            }
            producer.flush(Duration::from_secs(10)).expect("flush");
        })
        .expect("thread");
    sender.join().expect("sender");
    let cpu1 = cpu_by_group(broker_thread);
    let (h, minutes) = receiver.join().expect("receiver");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per = |g: &str| (cpu1.get(g).unwrap_or(&0.0) - cpu0.get(g).unwrap_or(&0.0)) * 1e6 / total as f64;
    Hop {
        minutes,
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
        max: h.max() as f64 / 1000.0,
        count: h.len(),
        broker_us_per_msg: per("broker"),
        clients_us_per_msg: per("clients"),
    }
}

/// Share of one core the broker's threads use over 10 s with four idle consumers attached.
fn idle(bootstrap: &str, topic: &str, broker_thread: &dyn Fn(&str) -> bool) -> f64 {
    let consumers: Vec<BaseConsumer> = (0..4)
        .map(|i| {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .set("broker.address.family", "v4")
                .set("group.id", format!("idle-{topic}-{i}"))
                .create()
                .expect("consumer");
            c.subscribe(&[topic]).expect("subscribe");
            c
        })
        .collect();
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        for c in &consumers {
            c.poll(Duration::from_millis(10));
        }
    }
    let cpu0 = cpu_by_group(broker_thread);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        for c in &consumers {
            c.poll(Duration::from_millis(25));
        }
    }
    let cpu1 = cpu_by_group(broker_thread);
    (cpu1.get("broker").unwrap_or(&0.0) - cpu0.get("broker").unwrap_or(&0.0)) / t0.elapsed().as_secs_f64() * 100.0
}

/// `--rate R --seconds S`, when given.
fn long_run() -> Option<(u64, u64)> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse::<u64>().ok());
    Some((arg("--rate")?, arg("--seconds")?))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tailgate-broker")
        .enable_all()
        .build()
        .expect("runtime");
    let ours = rt.block_on(broker::Broker::start(broker::Config::default())).expect("broker");
    let ours_thread = |comm: &str| comm.starts_with("tailgate-broker");
    let create = |bootstrap: &str, topic: &str| {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin");
        let t = rdkafka::admin::NewTopic::new(topic, PARTITIONS, rdkafka::admin::TopicReplication::Fixed(1));
        rt.block_on(admin.create_topics(&[t], &rdkafka::admin::AdminOptions::new())).expect("create")[0]
            .as_ref()
            .expect("created");
    };
    if let Some((rate, seconds)) = long_run() {
        create(ours.bootstrap(), "long");
        let h = hop(ours.bootstrap(), "long", rate, Duration::from_secs(seconds), &ours_thread);
        println!("one hop through this broker alone, {rate}/s for {seconds} s, {PARTITIONS} partitions, linger.ms 0\n");
        println!("| minute | count | p50 ms | p99 ms | process RSS MB |");
        println!("| --- | --- | --- | --- | --- |");
        for (i, (n, p50, p99, rss)) in h.minutes.iter().enumerate() {
            println!("| {} | {n} | {p50:.3} | {p99:.3} | {rss:.0} |", i + 1);
        }
        println!(
            "\nwhole run: p50 {:.3} / p99 {:.3} / p99.9 {:.3} ms; broker holds {} MiB",
            h.p50,
            h.p99,
            h.p999,
            ours.stored_bytes() >> 20
        );
        return;
    }
    let mock = MockCluster::new(1).expect("mock cluster");
    // librdkafka names the mock cluster's thread "mock"; client threads are "rdk:...".
    let mock_thread = |comm: &str| comm.contains("mock");
    println!(
        "one hop, open loop, linger.ms 0, acks all, fetch.wait.max.ms 500 (librdkafka's default), {PARTITIONS} partitions"
    );
    println!(
        "{WARMUP:?} warm-up, {MEASURED:?} measured per rate; 2 cores; CPU per message from /proc per thread group\n"
    );
    println!(
        "| broker | rate/s | received | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU µs/msg | clients CPU µs/msg |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for rate in [1_000u64, 10_000] {
        let topic = format!("hop-{rate}");
        create(ours.bootstrap(), &topic);
        let a = hop(ours.bootstrap(), &topic, rate, MEASURED, &ours_thread);
        mock.create_topic(&topic, PARTITIONS, 1).expect("mock topic");
        let b = hop(&mock.bootstrap_servers(), &topic, rate, MEASURED, &mock_thread);
        for (name, h) in [("tailgate (in memory)", a), ("librdkafka mock cluster", b)] {
            println!(
                "| {name} | {rate} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
                h.count, h.p50, h.p99, h.p999, h.max, h.broker_us_per_msg, h.clients_us_per_msg
            );
        }
    }
    create(ours.bootstrap(), "idle");
    mock.create_topic("idle", PARTITIONS, 1).expect("mock topic");
    println!("\nidle: four consumers attached, 10 s");
    println!("| broker | broker CPU, % of one core |");
    println!("| --- | --- |");
    println!("| tailgate (in memory) | {:.2} |", idle(ours.bootstrap(), "idle", &ours_thread));
    println!("| librdkafka mock cluster | {:.2} |", idle(&mock.bootstrap_servers(), "idle", &mock_thread));
}
