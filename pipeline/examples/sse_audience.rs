//! An audience for a running gateway: N Server-Sent Events clients (default 1000) on its
//! firehose, plus one that connects with a tiny receive buffer and never reads, for a
//! number of seconds. Every reading client times each update from its event time (the
//! load generator's intended send time, in the update), so the figures are end to end
//! through the whole pipeline. Prints the clients' latency and delivery counts, and the
//! gateway process's peak memory when its pid is given.
//!
//!     ulimit -n 8192
//!     cargo run --release -p tailgate-pipeline --example sse_audience -- http://127.0.0.1:8080 1000 40 [GATEWAY_PID]
//!
//! Start it just before `tailgate run`, with the scenario's `[stages] gateway` URL; see
//! `docs/measured.md` for a measured run.

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn vm_hwm_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches(" kB").trim().parse::<f64>();
    kib.ok().map(|k| k / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(40);
    let pid = args.get(4).cloned();
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let subscribe = |recv_buffer: Option<u32>| {
        let addr = addr.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            if let Some(b) = recv_buffer {
                socket.set_recv_buffer_size(b)?;
            }
            let mut s = socket.connect(addr.parse().map_err(std::io::Error::other)?).await?;
            let request = format!("GET /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
            s.write_all(request.as_bytes()).await?;
            Ok::<_, std::io::Error>(s)
        }
    };
    let _stalled = subscribe(Some(4096)).await?;
    let mut readers = Vec::new();
    for _ in 0..clients {
        let s = subscribe(None).await?;
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            let mut latencies = Vec::new();
            loop {
                let line = match tokio::time::timeout_at(deadline.into(), lines.next_line()).await {
                    Ok(Ok(Some(line))) => line,
                    _ => break,
                };
                let Some(data) = line.strip_prefix("data: ") else { continue };
                let intended =
                    serde_json::from_str::<serde_json::Value>(data).ok().and_then(|v| v["intended_ns"].as_u64());
                if let Some(t) = intended {
                    latencies.push(probes::now_ns().saturating_sub(t));
                }
            }
            latencies
        }));
    }
    eprintln!("{clients} clients and 1 stalled client on {url}/events for {seconds} s");
    let mut all = Vec::new();
    let (mut fewest, mut most) = (usize::MAX, 0);
    for r in readers {
        let l = r.await?;
        fewest = fewest.min(l.len());
        most = most.max(l.len());
        all.extend(l);
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1e6
    };
    println!(
        "{clients} reading clients: {} deliveries ({fewest} to {most} per client); end-to-end latency p50 {:.3} ms, \
         p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        all.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    if let Some(mib) = pid.as_deref().and_then(vm_hwm_mib) {
        println!("gateway peak memory (VmHWM): {mib:.1} MiB");
    }
    Ok(())
}
