//! The two listener modes side by side: how evenly new connections spread
//! over the workers, and how many requests fail when a worker is killed
//! under load.
//!
//! Each client thread opens a new connection per request to `/healthz` and
//! records which worker pid answered. A third measurement opens 64
//! keep-alive connections at once (as wrk or a connection pool does) and
//! counts which worker serves each one: that is how the load of long-lived
//! connections is spread.
//!
//! Usage: `spread [DEMO_EXE] [WORKERS] [CLIENTS] [SECONDS]`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use ringmaster_bench::{get, start};

/// Opens `n` connections before using any, then asks each which worker
/// serves it; returns connections per worker.
fn keepalive_spread(addr: SocketAddr, n: usize) -> BTreeMap<u32, u64> {
    let mut conns: Vec<TcpStream> = (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut per = BTreeMap::new();
    for c in &mut conns {
        write!(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let len = c.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..len]);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let pid = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["pid"].as_u64())
            .unwrap_or(0) as u32;
        *per.entry(pid).or_default() += 1;
    }
    per
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let workers = arg(2, 4);
    let clients = arg(3, 16);
    let seconds = arg(4, 5) as u64;
    for mode in ["shared", "reuseport"] {
        for kill in [false, true] {
            let cluster = start(&format!(
                "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = {workers}\nlisten_mode = \"{mode}\"\nmin_uptime = \"50ms\"\n"
            ));
            let pids = cluster.wait_workers(workers);
            if !kill {
                let per = keepalive_spread(cluster.addr(), 64);
                let counts: Vec<u64> = per.values().copied().collect();
                println!(
                    "{mode:>9}, {workers} workers, 64 keep-alive connections opened at once: per worker {counts:?} ({} of {workers} workers used)",
                    counts.len()
                );
            }
            let stop = Arc::new(AtomicBool::new(false));
            let counts = Arc::new(Mutex::new(BTreeMap::<u32, u64>::new()));
            let failed = Arc::new(Mutex::new(0u64));
            let addr = cluster.addr();
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    let (stop, counts, failed) = (stop.clone(), counts.clone(), failed.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match get(addr, "/healthz") {
                                Ok(r) if r.status == 200 => {
                                    let pid = serde_json::from_str::<serde_json::Value>(&r.body)
                                        .ok()
                                        .and_then(|v| v["pid"].as_u64())
                                        .unwrap_or(0)
                                        as u32;
                                    *counts.lock().unwrap().entry(pid).or_default() += 1;
                                }
                                _ => *failed.lock().unwrap() += 1,
                            }
                        }
                    })
                })
                .collect();
            if kill {
                for (i, pid) in pids.iter().enumerate() {
                    std::thread::sleep(Duration::from_millis(
                        seconds * 1000 / (workers as u64 + 1),
                    ));
                    if i % 2 == 0 {
                        // SAFETY: kill our own cluster's worker.
                        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    }
                }
                std::thread::sleep(Duration::from_millis(seconds * 1000 / (workers as u64 + 1)));
            } else {
                std::thread::sleep(Duration::from_secs(seconds));
            }
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
            let counts = counts.lock().unwrap();
            let total: u64 = counts.values().sum();
            let failed = *failed.lock().unwrap();
            if kill {
                let kills = workers.div_ceil(2);
                println!(
                    "{mode:>9}, {workers} workers, {clients} clients, {kills} worker(s) killed: {total} ok, {failed} failed"
                );
            } else {
                let per: Vec<u64> = counts.values().copied().collect();
                let max = per.iter().copied().max().unwrap_or(0) as f64;
                let min = per.iter().copied().min().unwrap_or(0) as f64;
                println!(
                    "{mode:>9}, {workers} workers, {clients} clients: {total} requests, per worker {per:?}, max/min {:.2}",
                    max / min.max(1.0)
                );
            }
        }
    }
}
