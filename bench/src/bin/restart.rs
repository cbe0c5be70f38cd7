//! Restart latency: `kill -9` of a worker until its replacement answers
//! HTTP, median of 20.
//!
//! One worker, so only the replacement can answer; `min_uptime` is short
//! and each kill waits past it, so every restart is immediate (no backoff).
//! The request is sent right after the kill: it waits in the listening
//! socket's queue, which the master keeps open, until the new worker
//! accepts it.
//!
//! Usage: `restart [DEMO_EXE] [ROUNDS]`

use std::time::{Duration, Instant};

use ringmaster_bench::{health_pid, start, summary};

fn main() {
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut results = Vec::new();
    for mode in ["reuseport", "shared"] {
        let cluster = start(&format!(
            "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\nlisten_mode = \"{mode}\"\nmin_uptime = \"50ms\"\n"
        ));
        let mut pid = cluster.wait_workers(1)[0];
        let mut samples = Vec::new();
        for _ in 0..rounds {
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            // SAFETY: kill our own cluster's worker.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let new = loop {
                match health_pid(cluster.addr()) {
                    Ok(p) if p != pid => break p,
                    _ => std::thread::yield_now(),
                }
            };
            samples.push(t0.elapsed().as_secs_f64() * 1e3);
            pid = new;
        }
        let (p50, p90, min, max) = summary(&mut samples);
        println!(
            "restart latency ({mode}, {rounds} kills): median {p50:.2} ms, p90 {p90:.2} ms, min {min:.2} ms, max {max:.2} ms"
        );
        results.push(p50);
    }
}
