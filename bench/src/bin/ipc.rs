//! IPC pool throughput and latency, through a real master and real worker
//! processes (this binary is itself a small ringmaster app).
//!
//! - **throughput**: every worker publishes `MSGS` messages as fast as it
//!   can to the next slot (`Target::Slot`), so each message crosses the
//!   master once in and once out; the figure is messages delivered per
//!   second, from the first delivery anywhere to the last.
//! - **latency**: slot 0 publishes to every worker (`Target::All`) at a
//!   paced 10,000 messages per second for 3 s, each message carrying its
//!   send time (`CLOCK_MONOTONIC`, the same clock in every process); every
//!   receiver records publish -> delivery latency; p50 and p99 over all
//!   deliveries.
//!
//! The baseline, measured in the same run: the same messages through one
//! Unix socket pair between two threads of one process, encoded and
//! decoded by the same codec, batched the same way: the ceiling of what
//! any routing could reach on this machine.
//!
//! Usage: `ipc [ROUNDS] [WORKERS...]` (default 3 rounds, 2 and 8 workers):
//! both modes, medians of the rounds. Workers print one `RESULT` line each
//! on stdout; the master captures it into its log (its stderr, tagged with
//! the worker), which this driver reads.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringmaster::prelude::*;
use ringmaster::{Init, Target};
use ringmaster_bench::{SelfMaster, field, monotonic_ns, postcard_u64};

const ENV_MODE: &str = "RINGMASTER_BENCH_IPC";
const TOPIC: &str = "bench";
/// The same, typed, for the workers.
const BENCH: ringmaster::Topic<u64> = ringmaster::Topic::new(TOPIC);
const MSGS_TOTAL: u64 = 400_000;
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECS: u64 = 3;

fn main() -> ExitCode {
    // `serve` (the driver starting a master) or a role the master gave
    // (`RINGMASTER_ROLE`: worker or migrate): the app itself.
    if ringmaster_bench::is_app_process() {
        return Cluster::new()
            .worker(ringmaster_bench::bench_app(init_ipc))
            .run();
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let sizes: Vec<u64> = std::env::args()
        .skip(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![2, 8] } else { sizes };
    let mut direct = Vec::new();
    for _ in 0..rounds {
        direct.push(direct_rate());
    }
    let (direct, _, _, _) = ringmaster_bench::summary(&mut direct);
    println!(
        "baseline, one socket pair between two threads: median {direct:.0} msg/s ({rounds} rounds of {MSGS_TOTAL} messages)"
    );
    for workers in sizes {
        let mut rates = Vec::new();
        let mut drops = Vec::new();
        for _ in 0..rounds {
            let lines = run_cluster("throughput", workers);
            let (mut received, mut first, mut last) = (0u64, u64::MAX, 0u64);
            for l in &lines {
                received += field(l, "received");
                first = first.min(field(l, "first_ns"));
                last = last.max(field(l, "last_ns"));
            }
            let secs = (last.saturating_sub(first)) as f64 / 1e9;
            rates.push(received as f64 / secs);
            drops.push(MSGS_TOTAL - received);
        }
        let (p50, _, min, max) = ringmaster_bench::summary(&mut rates);
        println!(
            "throughput, {workers} workers: median {:.0} msg/s through the master = {:.2}x the baseline (min {:.0}, max {:.0}; {rounds} rounds of {MSGS_TOTAL} messages; not delivered per round: {drops:?})",
            p50,
            p50 / direct,
            min,
            max
        );
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..rounds {
            let (lines, dir) = run_cluster_in("latency", workers);
            let mut all: Vec<f64> = Vec::new();
            for l in &lines {
                let file = l.split(" file=").nth(1).unwrap_or_default();
                let list = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                all.extend(list.split(',').filter_map(|v| v.parse::<f64>().ok()));
            }
            let _ = std::fs::remove_dir_all(&dir);
            all.sort_by(f64::total_cmp);
            if all.is_empty() {
                eprintln!("no latency samples: {lines:?}");
                continue;
            }
            p50s.push(all[all.len() / 2]);
            p99s.push(all[all.len() * 99 / 100]);
        }
        let (p50, _, _, _) = ringmaster_bench::summary(&mut p50s);
        let (p99, _, p99min, p99max) = ringmaster_bench::summary(&mut p99s);
        println!(
            "latency, {workers} workers, {LATENCY_RATE} msg/s to all: publish -> delivery p50 {p50:.0} us, p99 {p99:.0} us (p99 of the rounds {p99min:.0}..{p99max:.0} us; median of {rounds} rounds)"
        );
    }
    ExitCode::SUCCESS
}

/// Messages per second through one socket pair: a writer thread frames
/// `Publish` messages in batches, a reader thread decodes them.
fn direct_rate() -> f64 {
    use ringmaster_proto::{Channel, MasterMsg, WorkerMsg};
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            a.set_nonblocking(true).unwrap();
            let ch =
                Channel::<WorkerMsg, MasterMsg>::new(tokio::net::UnixStream::from_std(a).unwrap());
            let (mut tx, _rx) = ch.split();
            for i in 0..MSGS_TOTAL {
                let msg = WorkerMsg::Publish {
                    to: Target::Slot {
                        group: "bench".into(),
                        slot: 1,
                    },
                    topic: TOPIC.into(),
                    payload: postcard_u64(i),
                };
                tx.queue(&msg).unwrap();
                if tx.queued() >= 64 * 1024 {
                    tx.flush().await.unwrap();
                }
            }
            tx.flush().await.unwrap();
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        b.set_nonblocking(true).unwrap();
        let ch = Channel::<MasterMsg, WorkerMsg>::new(tokio::net::UnixStream::from_std(b).unwrap());
        let (_tx, mut rx) = ch.split();
        for _ in 0..MSGS_TOTAL {
            rx.recv().await.unwrap().unwrap();
        }
    });
    writer.join().unwrap();
    MSGS_TOTAL as f64 / start.elapsed().as_secs_f64()
}

/// Starts this binary as a master with `workers` workers in `mode`, and
/// returns each worker's `RESULT` line.
fn run_cluster(mode: &str, workers: u64) -> Vec<String> {
    let (lines, dir) = run_cluster_in(mode, workers);
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

/// [`run_cluster`], also returning the cluster's directory (the caller
/// removes it).
fn run_cluster_in(mode: &str, workers: u64) -> (Vec<String>, std::path::PathBuf) {
    let mut master = SelfMaster::start(
        &format!(
            "[server]\nipc_queue = 65536\n[groups.bench]\nworker = \"bench\"\nlisten = \"127.0.0.1:0\"\ncount = {workers}\nthreads = 1\n"
        ),
        &[(ENV_MODE, mode)],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let lines = (0..workers)
        .map(|_| master.wait_for("RESULT", deadline.saturating_duration_since(Instant::now())))
        .collect();
    (lines, master.dir.clone())
}

/// The benchmark's code in each worker.
fn init_ipc(init: &mut Init) -> Result<(), BootError> {
    let mode = std::env::var(ENV_MODE).unwrap_or_default();
    let ipc = init.ipc().clone();
    let slot = init.worker().slot as u64;
    let count = init.worker().config.count as u64;
    let group = init.worker().group.to_string();
    let mut sub = ipc.subscribe(BENCH);
    let ipc2 = ipc.clone();
    let all_ready = async move { ringmaster_bench::all_ready(&ipc2).await };
    match mode.as_str() {
        "throughput" => {
            let per_worker = MSGS_TOTAL / count;
            tokio::spawn(async move {
                let (mut received, mut first, mut last) = (0u64, 0u64, 0u64);
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await;
                    match next {
                        Ok(Some(_)) => {
                            last = monotonic_ns();
                            if received == 0 {
                                first = last;
                            }
                            received += 1;
                            if received == per_worker {
                                break;
                            }
                        }
                        _ if received > 0 => break,
                        _ => {}
                    }
                }
                println!("RESULT slot={slot} received={received} first_ns={first} last_ns={last}");
            });
            let to = Target::Slot {
                group,
                slot: ((slot + 1) % count) as u32,
            };
            tokio::spawn(async move {
                all_ready.await;
                for i in 0..per_worker {
                    if ipc.publish(to.clone(), BENCH, &i).await.is_err() {
                        return;
                    }
                }
            });
        }
        "latency" => {
            let total = LATENCY_RATE * LATENCY_SECS;
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(total as usize);
                while let Ok(Some(d)) =
                    tokio::time::timeout(Duration::from_secs(30), sub.recv()).await
                {
                    lat.push((monotonic_ns().saturating_sub(d.msg)) / 1000);
                    if lat.len() as u64 == total {
                        break;
                    }
                }
                // Samples go to a file: long lines from several
                // processes on one pipe would interleave.
                let list: Vec<String> = lat.iter().map(u64::to_string).collect();
                let file = format!("lat-{slot}.txt");
                if let Err(e) = std::fs::write(&file, list.join(",")) {
                    eprintln!("cannot write {file}: {e}");
                }
                println!("RESULT slot={slot} n={} file={file}", lat.len());
            });
            if slot == 0 {
                let handle = tokio::runtime::Handle::current();
                tokio::spawn(async move {
                    all_ready.await;
                    // A plain thread paces the messages: the runtime's
                    // timer has a 1 ms resolution.
                    std::thread::spawn(move || {
                        let start = Instant::now();
                        let gap = Duration::from_nanos(1_000_000_000 / LATENCY_RATE);
                        for i in 0..total {
                            let at = start + gap * i as u32;
                            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            let sent =
                                handle.block_on(ipc.publish(Target::All, BENCH, &monotonic_ns()));
                            if sent.is_err() {
                                return;
                            }
                        }
                    });
                });
            }
        }
        _ => {}
    }
    Ok(())
}
