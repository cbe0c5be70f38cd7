//! The control socket's round trip: `status` of a cluster of 64 workers
//! (the whole `ClusterStatus` built by the supervisor and encoded as
//! JSON), against a request the connection answers without the
//! supervisor (a malformed one), on the same connection in the same run.
//!
//! Usage: `control [DEMO_EXE] [ROUNDS] [WORKERS]` (default 1000 rounds,
//! 64 workers).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringmaster_bench::{start, summary};

fn main() {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, workers) = (arg(2, 1000), arg(3, 64));
    let cluster = start(&format!(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = {workers}\nthreads = 1\n\
         [server]\nregistry_slots = {}\n",
        workers * 2
    ));
    cluster.wait_workers(workers);
    let sock = cluster.dir().join("ringmaster.sock");
    let stream = UnixStream::connect(&sock).expect("the control socket");
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Wait until every worker is ready in the master's eyes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut r = String::new();
        writer.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
        reader.read_line(&mut r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        if v["result"]["groups"][0]["ready"] == workers {
            break;
        }
        assert!(Instant::now() < deadline, "{workers} workers never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ask = |line: &str| -> (f64, usize) {
        let t0 = Instant::now();
        writer.write_all(line.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        (t0.elapsed().as_secs_f64() * 1e3, reply.len())
    };
    let (mut status, mut refused) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..rounds {
        let (ms, n) = ask("{\"v\":1,\"cmd\":\"status\"}\n");
        status.push(ms);
        bytes = n;
        refused.push(ask("{\"v\":1,\"cmd\":\"nothing\"}\n").0);
    }
    let (s50, s90, smin, smax) = summary(&mut status);
    let (r50, r90, _, _) = summary(&mut refused);
    println!(
        "status round trip, {workers} workers ({bytes} bytes of JSON), {rounds} rounds: \
         median {s50:.3} ms, p90 {s90:.3} ms, min {smin:.3} ms, max {smax:.3} ms"
    );
    // What an operator types: the whole `status --json` command, process
    // start and configuration load included.
    let mut cli = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let exe = std::fs::canonicalize(ringmaster_bench::demo_exe()).unwrap();
        let out = std::process::Command::new(exe)
            .args(["status", "--json", "--config"])
            .arg(cluster.config_path())
            .current_dir(cluster.dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        cli.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (c50, c90, _, _) = summary(&mut cli);
    println!("`status --json` as a command, 20 runs: median {c50:.2} ms, p90 {c90:.2} ms");
    println!(
        "a malformed request's round trip (no supervisor): median {r50:.3} ms, p90 {r90:.3} ms; \
         status / malformed = {:.2}x",
        s50 / r50
    );
}
