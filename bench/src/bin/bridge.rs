//! Bridged IPC between two masters through NATS: throughput and latency,
//! against the same NATS used without ringmaster (this binary is itself a
//! small ringmaster app, run as both masters).
//!
//! Two masters on this machine, A and B, each with one `bench` worker and
//! a `[bridge]` carrying topic `bench` through the NATS at `NATS_URL`
//! (default `nats://127.0.0.1:4222`, the machine's service; each round uses
//! subjects of its own). A's worker publishes to every worker
//! (`Target::All`); each message goes A's worker -> A's master -> A's
//! bridge worker -> NATS -> B's bridge worker -> B's master -> B's worker.
//!
//! - **throughput**: A's worker publishes `MSGS_TOTAL` messages as fast as
//!   it can; the figure is the messages B's worker received per second,
//!   from its first delivery to its last, and how many were lost (the
//!   bridge is at most once: a full queue drops).
//! - **latency**: A's worker publishes at a paced 10,000 messages per
//!   second for 3 s, each message carrying its send time
//!   (`CLOCK_MONOTONIC`, one clock for every process of the machine); B's
//!   worker records publish -> delivery latency; p50 and p99.
//!
//! The baseline, measured in the same run: the same payloads and header,
//! published by one async-nats client and received by another in this
//! process, through the same NATS: what NATS itself costs here.
//!
//! Usage: `bridge [ROUNDS]` (default 3): medians of the rounds. Workers
//! print `READY` and `RESULT` lines on stdout; the master captures them
//! into its log (its stderr, tagged with the worker), which this driver
//! reads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ringmaster::prelude::*;
use ringmaster::{BridgeState, Init, Ipc, Target};
use ringmaster_bench::{SelfMaster, field, monotonic_ns, postcard_u64};

/// The worker's role: `send:MODE` in A, `recv:MODE` in B.
const ENV_ROLE: &str = "RINGMASTER_BENCH_BRIDGE";
const TOPIC: &str = "bench";
/// The same, typed, for the workers.
const BENCH: ringmaster::Topic<u64> = ringmaster::Topic::new(TOPIC);
const MSGS_TOTAL: u64 = 200_000;
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECS: u64 = 3;
/// The offered rates of the bridged runs (messages a second, seconds):
/// the latency goal's rate, then up past the throughput goal.
const RATES: [(u64, u64); 5] = [
    (LATENCY_RATE, LATENCY_SECS),
    (50_000, 2),
    (100_000, 2),
    (150_000, 2),
    (200_000, 2),
];
/// The header the bridge adds, sent by the baseline too.
const ORIGIN_HEADER: &str = "Ringmaster-Origin";

fn main() -> ExitCode {
    if ringmaster_bench::is_app_process() {
        return Cluster::new()
            .worker(ringmaster_bench::bench_app(init_bridge))
            .run();
    }
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(connect(&url)) {
        eprintln!(
            "NATS is not reachable at {url}: {e}\nstart it (`nats-server -a 127.0.0.1 -p 4222`) or set NATS_URL"
        );
        return ExitCode::FAILURE;
    }
    let mut base_rates = Vec::new();
    let (mut base_p50, mut base_p99) = (Vec::new(), Vec::new());
    // Per offered rate: delivered rates, lost fractions, p50s, p99s.
    let mut steps: Vec<[Vec<f64>; 4]> = RATES.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        let prefix = format!("rmbench{}r{round}", std::process::id());
        base_rates.push(rt.block_on(raw_throughput(&url, &format!("{prefix}.raw"))));
        let mut raw = rt.block_on(raw_latency(&url, &format!("{prefix}.rawlat")));
        let (p50, p99) = percentiles(&mut raw);
        base_p50.push(p50);
        base_p99.push(p99);
        for (i, &(rate, secs)) in RATES.iter().enumerate() {
            let run = bridged(&url, &format!("{prefix}s{i}"), rate, secs);
            let total = (rate * secs) as f64;
            let mut lat = run.latencies;
            let (p50, p99) = percentiles(&mut lat);
            let step = &mut steps[i];
            step[0].push(run.delivered_per_sec);
            step[1].push((total - lat.len() as f64) / total);
            step[2].push(p50);
            step[3].push(p99);
        }
    }
    let median = |v: &mut Vec<f64>| ringmaster_bench::summary(v).0;
    let base = median(&mut base_rates);
    println!(
        "baseline, one async-nats client to another through {url}: median {base:.0} msg/s unpaced ({rounds} rounds of {MSGS_TOTAL} messages); at {LATENCY_RATE} msg/s p50 {:.0} us, p99 {:.0} us",
        median(&mut base_p50),
        median(&mut base_p99)
    );
    for (&(rate, secs), step) in RATES.iter().zip(steps.iter_mut()) {
        let [delivered, lost, p50, p99] = step;
        let worst_lost = lost.iter().copied().fold(0.0, f64::max);
        println!(
            "bridged, master A -> NATS -> master B, {rate} msg/s offered for {secs} s: delivered median {:.0} msg/s ({:.2}x the baseline's unpaced rate); lost median {:.3}% (worst round {:.3}%); publish -> delivery p50 {:.0} us, p99 {:.0} us (medians of {rounds} rounds)",
            median(delivered),
            median(delivered) / base,
            median(lost) * 100.0,
            worst_lost * 100.0,
            median(p50),
            median(p99)
        );
    }
    ExitCode::SUCCESS
}

/// p50 and p99 of latencies in microseconds (sorts them).
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

async fn connect(url: &str) -> Result<async_nats::Client, String> {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    tokio::time::timeout(Duration::from_secs(3), options.connect(url))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// The headers the bridge puts on each message.
fn headers() -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(ORIGIN_HEADER, "0123456789abcdef");
    h
}

/// Two clients of the NATS at `url`: a publisher, and a subscriber with
/// its subscription to `subject`, which the server has taken.
async fn client_pair(
    url: &str,
    subject: &str,
) -> (
    async_nats::Client,
    async_nats::Client,
    async_nats::Subscriber,
) {
    let (publisher, subscriber) = (
        connect(url).await.expect("connect"),
        connect(url).await.expect("connect"),
    );
    let sub = subscriber
        .subscribe(subject.to_string())
        .await
        .expect("subscribe");
    subscriber.flush().await.expect("flush");
    (publisher, subscriber, sub)
}

/// Messages per second from one client to another through NATS.
async fn raw_throughput(url: &str, subject: &str) -> f64 {
    let (publisher, _subscriber, mut sub) = client_pair(url, subject).await;
    let receiver = tokio::spawn(async move {
        let (mut received, mut first, mut last) = (0u64, 0u64, 0u64);
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            last = monotonic_ns();
            if received == 0 {
                first = last;
            }
            received += 1;
            if received == MSGS_TOTAL {
                break;
            }
        }
        received as f64 / (last.saturating_sub(first).max(1) as f64 / 1e9)
    });
    let headers = headers();
    for i in 0..MSGS_TOTAL {
        publisher
            .publish_with_headers(subject.to_string(), headers.clone(), postcard_u64(i).into())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    receiver.await.expect("receiver")
}

/// Latencies (us) of paced messages from one client to another.
async fn raw_latency(url: &str, subject: &str) -> Vec<f64> {
    let (publisher, _subscriber, mut sub) = client_pair(url, subject).await;
    let total = LATENCY_RATE * LATENCY_SECS;
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            let sent = decode_u64(&m.payload);
            lat.push(monotonic_ns().saturating_sub(sent) as f64 / 1000.0);
            if lat.len() as u64 == total {
                break;
            }
        }
        lat
    });
    let handle = tokio::runtime::Handle::current();
    let subject = subject.to_string();
    let pacer = std::thread::spawn(move || {
        pace(LATENCY_RATE, total, |n| {
            handle.block_on(async {
                for _ in 0..n {
                    let payload = postcard_u64(monotonic_ns()).into();
                    let sent = publisher.publish_with_headers(subject.clone(), headers(), payload);
                    if sent.await.is_err() {
                        return false;
                    }
                }
                true
            })
        });
        handle.block_on(publisher.flush()).ok();
    });
    let lat = receiver.await.expect("receiver");
    pacer.join().expect("pacer");
    lat
}

/// Calls `send(n)` with the number of messages due, so that `total` go
/// out at `rate` a second: one at a time at low rates, in batches (at most
/// a millisecond's worth) at high ones; from this thread (the runtime's
/// timer has a 1 ms resolution). Stops when `send` fails.
fn pace(rate: u64, total: u64, mut send: impl FnMut(u64) -> bool) {
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due =
            ((start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000) as u64 + 1).min(total);
        if due > sent {
            let n = (due - sent).min(rate / 1000 + 1);
            if !send(n) {
                return;
            }
            sent += n;
        } else {
            let next = start + Duration::from_nanos(sent * 1_000_000_000 / rate);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// One bridged run: what B's worker measured.
struct Bridged {
    /// Messages received per second, first to last delivery.
    delivered_per_sec: f64,
    /// Publish -> delivery latency of each message received (us).
    latencies: Vec<f64>,
}

/// Through two masters, `rate` messages a second for `secs` seconds.
fn bridged(url: &str, prefix: &str, rate: u64, secs: u64) -> Bridged {
    let (b_line, a_line, dir) = run_pair(url, prefix, &format!("{rate}:{secs}"));
    let file = b_line.split(" file=").nth(1).unwrap_or_default();
    let list = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let (received, first, last) = (
        field(&b_line, "received"),
        field(&b_line, "first_ns"),
        field(&b_line, "last_ns"),
    );
    if received < rate * secs {
        eprintln!(
            "{rate} msg/s: lost {} of {}; B: {b_line}; A: {a_line}",
            rate * secs - received,
            rate * secs
        );
    }
    Bridged {
        delivered_per_sec: received as f64 / (last.saturating_sub(first).max(1) as f64 / 1e9),
        latencies: list.split(',').filter_map(|v| v.parse().ok()).collect(),
    }
}

/// A master of this binary whose worker plays `role`, bridging through
/// `url` with subjects under `prefix`.
fn start_master(url: &str, prefix: &str, role: &str) -> SelfMaster {
    SelfMaster::start(
        &format!(
            "[server]\nipc_queue = 65536\n\
             [groups.bench]\nworker = \"bench\"\nlisten = \"127.0.0.1:0\"\ncount = 1\nthreads = 1\n\
             [bridge]\nurl = \"{url}\"\ntopics = [\"{TOPIC}\"]\nsubject_prefix = \"{prefix}\"\n"
        ),
        &[(ENV_ROLE, role)],
    )
}

/// Runs B (receiving) then A (sending) at `rate_secs` (`RATE:SECS`);
/// B's `RESULT` line, A's, and B's directory (the caller removes it).
fn run_pair(url: &str, prefix: &str, rate_secs: &str) -> (String, String, PathBuf) {
    let mut b = start_master(url, prefix, &format!("recv:{rate_secs}"));
    b.wait_for("READY", Duration::from_secs(60));
    let mut a = start_master(url, prefix, &format!("send:{rate_secs}"));
    a.wait_for("READY", Duration::from_secs(60));
    let b_line = b.wait_for("RESULT", Duration::from_secs(120));
    let a_line = a.wait_for("RESULT", Duration::from_secs(30));
    let dir = b.dir.clone();
    (b_line, a_line, dir)
}

/// The inverse of [`postcard_u64`].
fn decode_u64(bytes: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// Until every group is ready and the bridge connected, asking the master.
async fn bridge_connected(ipc: &Ipc) {
    loop {
        if let Ok(s) = ipc.status().await
            && s.groups.iter().all(|g| g.ready == g.count)
            && s.bridge
                .as_ref()
                .is_some_and(|b| b.state == BridgeState::CONNECTED)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where messages were lost on this host: `ipc_dropped=N bridge_dropped=N`.
async fn losses(ipc: &Ipc) -> String {
    match ipc.status().await {
        Ok(s) => format!(
            "ipc_dropped={} bridge_dropped={}",
            s.ipc.dropped,
            s.bridge.map_or(0, |b| b.dropped)
        ),
        Err(e) => format!("status_error={e:?}"),
    }
}

/// The benchmark's code in each worker: `send:RATE:SECS` publishes
/// `RATE` messages a second for `SECS` seconds, each carrying its send
/// time; `recv:RATE:SECS` records each one's latency and when the first
/// and the last arrived.
fn init_bridge(init: &mut Init) -> Result<(), BootError> {
    let role = std::env::var(ENV_ROLE).unwrap_or_default();
    let bad = || format!("{ENV_ROLE}={role:?}: not send:RATE:SECS or recv:RATE:SECS");
    let mut parts = role.split(':');
    let (side, rate, secs) = (parts.next(), parts.next(), parts.next());
    let (Some(rate), Some(secs)) = (
        rate.and_then(|r| r.parse::<u64>().ok()),
        secs.and_then(|r| r.parse::<u64>().ok()),
    ) else {
        return Err(bad().into());
    };
    let total = rate * secs;
    let ipc = init.ipc().clone();
    match side {
        Some("recv") => {
            let mut sub = ipc.subscribe(BENCH);
            tokio::spawn(async move {
                bridge_connected(&ipc).await;
                println!("READY");
                let mut lat = Vec::with_capacity(total as usize);
                let (mut first, mut last) = (0u64, 0u64);
                loop {
                    let wait = if lat.is_empty() { 60 } else { 2 };
                    match tokio::time::timeout(Duration::from_secs(wait), sub.recv()).await {
                        Ok(Some(d)) => {
                            last = monotonic_ns();
                            if lat.is_empty() {
                                first = last;
                            }
                            lat.push(last.saturating_sub(d.msg) / 1000);
                            if lat.len() as u64 == total {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                // Samples go to a file: a long line on the log pipe would
                // be split.
                let list: Vec<String> = lat.iter().map(u64::to_string).collect();
                let file = "lat.txt";
                if let Err(e) = std::fs::write(file, list.join(",")) {
                    eprintln!("cannot write {file}: {e}");
                }
                let lost = losses(&ipc).await;
                println!(
                    "RESULT received={} first_ns={first} last_ns={last} {lost} file={file}",
                    lat.len()
                );
            });
        }
        Some("send") => {
            let handle = tokio::runtime::Handle::current();
            tokio::spawn(async move {
                bridge_connected(&ipc).await;
                println!("READY");
                let sender = ipc.clone();
                let paced = std::thread::spawn(move || {
                    pace(rate, total, |n| {
                        handle.block_on(async {
                            for _ in 0..n {
                                let now = monotonic_ns();
                                if sender.publish(Target::All, BENCH, &now).await.is_err() {
                                    return false;
                                }
                            }
                            true
                        })
                    });
                });
                let _ = tokio::task::spawn_blocking(move || paced.join()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                println!("RESULT {}", losses(&ipc).await);
            });
        }
        _ => return Err(bad().into()),
    }
    Ok(())
}
