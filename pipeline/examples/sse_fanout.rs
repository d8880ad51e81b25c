//! Measures the gateway's fan-out over real HTTP on loopback: N Server-Sent Events clients
//! (default 1000) and one client that connects with a tiny receive buffer and never reads.
//! Updates are pushed at a fixed rate, each carrying its push time; every reading client
//! times each update it receives. Prints the reading clients' latency, what the slow client
//! cost (updates dropped from its queue), whether the pushes ever had to wait, and the
//! process's peak memory.
//!
//!     ulimit -n 8192   # two sockets per client
//!     cargo run --release -p tailgate-pipeline --example sse_fanout -- 1000 200 20 1024 512
//!
//! (clients, updates per second, seconds, each client's buffer, update size in bytes). No Kafka here: the updates are pushed straight
//! into the gateway, so the figures are the fan-out's and the HTTP server's alone.

use pipeline::gateway::fanout::FanoutConfig;
use pipeline::gateway::{GatewayState, Pushed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (clients, rate, seconds) = (arg(1, 1000), arg(2, 200), arg(3, 20));
    let (buffer, size) = (arg(4, 1024) as usize, arg(5, 512) as usize);
    let cancel = CancellationToken::new();
    let (_ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let config = FanoutConfig { buffer, ..FanoutConfig::default() };
    let state = GatewayState::with_fanout(ready_rx, cancel.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(pipeline::gateway::serve(listener, state.clone(), cancel.clone()));

    let subscribe = |recv_buffer: Option<u32>| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(b) = recv_buffer {
            socket.set_recv_buffer_size(b)?;
        }
        let mut s = socket.connect(addr).await?;
        s.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n").await?;
        Ok::<_, std::io::Error>(s)
    };
    // The slow client: a 4 KiB receive buffer, never read.
    let _slow = subscribe(Some(4096)).await?;
    let mut readers = Vec::new();
    for _ in 0..clients {
        let s = subscribe(None).await?;
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            let mut latencies = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let sent = line.strip_prefix("data: ").and_then(|d| d.split(' ').next()?.parse::<u64>().ok());
                if let Some(sent) = sent {
                    latencies.push(probes::now_ns().saturating_sub(sent));
                }
            }
            latencies
        }));
    }
    while state.subscribers() < clients as usize + 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let total = rate * seconds;
    let began = Instant::now();
    let mut late_pushes = 0u64;
    for n in 0..total {
        let due = began + Duration::from_nanos(n * 1_000_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        } else if Instant::now() - due > Duration::from_millis(10) {
            late_pushes += 1;
        }
        let mut text = probes::now_ns().to_string();
        text.push(' ');
        text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
        let data: Arc<str> = Arc::from(text);
        state.push(Pushed { session: n % 64, data });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel.cancel();
    let mut all = Vec::new();
    let mut short = 0;
    for r in readers {
        let l = r.await?;
        if (l.len() as u64) < total {
            short += 1;
        }
        all.extend(l);
    }
    server.await??;
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1e6
    };
    let f = state.fanout_stats();
    println!(
        "clients {clients} reading + 1 never reading; {total} updates of {size} bytes at {rate}/s over {seconds} s; \
         buffer {buffer} updates per client"
    );
    println!(
        "reading clients: {} deliveries, {short} clients short of {total}; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        all.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    println!(
        "slow client: {} updates dropped from its queue; pushes late by >10 ms: {late_pushes}; consumer pauses: {}",
        f.dropped.load(std::sync::atomic::Ordering::Relaxed),
        f.pauses.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("peak memory (VmHWM): {:.1} MiB", peak_rss_mib());
    Ok(())
}
