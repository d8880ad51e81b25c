//! Writes synthetic run directories (lognormal latencies, clearly marked as synthetic) for
//! benchmarking `tailgate report` and `tailgate check` on large inputs:
//!
//!     cargo run --release -p tailgate-reports --example synthetic_runs -- OUT [RUNS] [SECONDS] [RATE] [PROFILES]
//!
//! defaults: 10 runs of 600 s at 1000 events/s, spread over 2 profiles.

use reports::synthetic::{Spec, write_run};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().ok_or("usage: synthetic_runs OUT [RUNS] [SECONDS] [RATE] [PROFILES]")?);
    let num = |i: usize, default: f64| args.get(i).map_or(Ok(default), |a| a.parse::<f64>());
    let (runs, seconds, rate, profiles) =
        (num(1, 10.0)? as u64, num(2, 600.0)? as u64, num(3, 1000.0)?, num(4, 2.0)? as u64);
    for i in 0..runs {
        let profile = format!("profile-{}", i % profiles.max(1));
        let spec = Spec::new(&profile, seconds, rate, 4.0 + (i % profiles.max(1)) as f64, 1000 + i);
        let dir = out.join(format!("run-{i:02}"));
        let r = write_run(&dir, &spec)?;
        println!("{} {} p99 {:.2} ms, {} events", dir.display(), profile, r.end_to_end.p99_ms, r.counts.sent);
    }
    Ok(())
}
