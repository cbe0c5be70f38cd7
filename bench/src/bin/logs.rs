//! Log lines per second through the master into a file: every worker logs
//! `LINES` lines through `tracing` as fast as it can once all are ready;
//! the master tags them and writes them to `server.log_file`. The figure
//! is the lines that reached the file after it passed 64 KiB divided by
//! the time from then to its last write (its size is polled every 2 ms).
//! Lines a worker dropped because the pipe was full (it never waits) are
//! what is missing from the total.
//!
//! Usage: `logs [ROUNDS] [WORKERS]` (default 3 rounds, 2 workers).

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ringmaster::Init;
use ringmaster::prelude::*;

const ENV_LINES: &str = "RINGMASTER_BENCH_LOG_LINES";
const LINES: u64 = 500_000;

fn main() -> ExitCode {
    if ringmaster_bench::is_app_process() {
        return Cluster::new()
            .worker(ringmaster_bench::bench_app(init_logs))
            .run();
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let workers: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let (lines, secs) = run(workers);
        let rate = lines as f64 / secs;
        println!(
            "round: {lines} lines in {secs:.3} s = {rate:.0} lines/s (of {} logged)",
            LINES * workers
        );
        rates.push(rate);
    }
    let (p50, _, min, max) = ringmaster_bench::summary(&mut rates);
    println!(
        "log lines through the master into a file, {workers} workers flat out: median {p50:.0} lines/s (min {min:.0}, max {max:.0}; {rounds} rounds)"
    );
    ExitCode::SUCCESS
}

fn count_lines(path: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read(path).unwrap_or_default();
    let total = text.iter().filter(|b| **b == b'\n').count();
    let bench = text
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(10).any(|w| w == b"bench line"))
        .count();
    (total, bench)
}

/// Runs one cluster; returns the bench lines written after the file
/// passed 64 KiB, and the seconds from then to the last write.
fn run(workers: u64) -> (usize, f64) {
    let dir = ringmaster_bench::scratch_dir();
    let config = dir.join("logs.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlog_file = \"app.log\"\nlog_max_size = 0\n[groups.bench]\nworker = \"bench\"\nlisten = \"127.0.0.1:0\"\ncount = {workers}\naccess_log = false\n"
        ),
    )
    .expect("write the config");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env(ENV_LINES, LINES.to_string())
        .env("RINGMASTER_LOG", "info")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the master");
    let path = dir.join("app.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Polling the size is cheap; lines are counted twice only: when the
    // file first passes 64 KiB (the start-up lines are far fewer) and at
    // the end.
    let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    let mut first: Option<(Instant, usize)> = None;
    let mut last_size = 0;
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(2));
        let now = Instant::now();
        let len = size();
        if first.is_none() && len > 64 * 1024 {
            first = Some((now, count_lines(&path).1));
        }
        if len != last_size {
            last_size = len;
            last_change = now;
        }
        if (first.is_some() && now - last_change > Duration::from_millis(500)) || now > deadline {
            break;
        }
    }
    let end = last_change;
    let (_, total) = count_lines(&path);
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let Some((start, before)) = first else {
        return (total, f64::NAN);
    };
    (total - before, (end - start).as_secs_f64().max(0.002))
}

/// The benchmark's code in each worker.
fn init_logs(init: &mut Init) -> Result<(), BootError> {
    let lines: u64 = std::env::var(ENV_LINES)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ipc = init.ipc().clone();
    tokio::spawn(async move {
        ringmaster_bench::all_ready(&ipc).await;
        tokio::task::spawn_blocking(move || {
            for i in 0..lines {
                tracing::info!(i, "bench line");
            }
        });
    });
    Ok(())
}
