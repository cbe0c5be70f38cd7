//! Replacing the master's binary under load: an in-place upgrade (USR2)
//! against the alternative without one, a stop and a start of the master
//! (`systemctl restart`). Both in the same run, same load, same binary.
//!
//! Two clients request `/plaintext` in a loop on fresh connections. For
//! each upgrade round the binary on disk is swapped (the demo and its
//! `-next` build in turn) and the master gets USR2; the figures are the
//! time until the new master serves (`status` names it), the time until
//! the old one has exited, and the requests that failed. For each restart
//! round the master gets TERM, and as soon as it has exited a new one is
//! started; the figures are the time no request succeeded and the
//! requests that failed.
//!
//! Usage: `upgrade [DEMO_EXE] [ROUNDS]` (default 5 rounds each; build with
//! `cargo build --release -p ringmaster-demo -p ringmaster-bench`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmaster_bench::{ClusterProc, demo_exe, get, scratch_dir, summary};
use ringmaster_testkit::alive;

const ENV: [(&str, &str); 1] = [("RINGMASTER_LOG", "warn")];

const CONFIG: &str =
    "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\nlisten_mode = \"reuseport\"\n";

/// Requests in a loop on other threads: successes, failures, and when
/// each success happened (to find gaps) with its latency.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    answers: Arc<Mutex<Vec<(Instant, f64)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, failed, answers) = (stop.clone(), failed.clone(), answers.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        match get(addr, "/plaintext") {
                            Ok(r) if r.status == 200 => answers
                                .lock()
                                .unwrap()
                                .push((Instant::now(), t0.elapsed().as_secs_f64() * 1e3)),
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            failed,
            answers,
            threads,
        }
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The longest time without a success in `[from, to]`, and the
    /// slowest request that ended in it, in ms.
    fn gap_and_slowest(&self, from: Instant, to: Instant) -> (f64, f64) {
        let answers = self.answers.lock().unwrap();
        let mut last = from;
        let (mut gap, mut slowest) = (0f64, 0f64);
        for (at, ms) in answers.iter().filter(|(at, _)| *at >= from && *at <= to) {
            gap = gap.max((*at - last).as_secs_f64() * 1e3);
            slowest = slowest.max(*ms);
            last = *at;
        }
        (gap.max((to - last).as_secs_f64() * 1e3), slowest)
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn deploy(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the upgrade rounds measured.
struct Upgrades {
    ready_ms: Vec<f64>,
    exit_ms: Vec<f64>,
    gaps: Vec<f64>,
    slowest: Vec<f64>,
    failed: u64,
    quiet_gap: f64,
    quiet_slowest: f64,
    /// The address served (the restart rounds use the same port).
    addr: std::net::SocketAddr,
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let demo = std::fs::canonicalize(demo_exe()).expect("the demo binary (build it first)");
    let next: PathBuf = demo.with_file_name("ringmaster-demo-next");
    assert!(
        next.exists(),
        "{} is missing: cargo build --release -p ringmaster-demo",
        next.display()
    );
    let mut up = upgrades(&demo, &next, rounds);
    let (mut downtime, restart_failed) = restarts(&demo, up.addr, rounds);
    let (ready, _, _, _) = summary(&mut up.ready_ms);
    let (exit, _, _, _) = summary(&mut up.exit_ms);
    let (gap, _, _, gap_max) = summary(&mut up.gaps);
    let (slow, _, _, _) = summary(&mut up.slowest);
    let (down, _, _, down_max) = summary(&mut downtime);
    println!(
        "upgrade (USR2, {rounds} rounds): new master serving after {ready:.1} ms (median), old one exited after {exit:.1} ms; \
         failed requests {}; longest time without an answer {gap:.1} ms (median; max {gap_max:.1}); slowest request {slow:.1} ms",
        up.failed
    );
    println!(
        "steady load (1 s, nothing happening): longest time without an answer {:.1} ms; slowest request {:.1} ms",
        up.quiet_gap, up.quiet_slowest
    );
    println!(
        "restart (TERM, then a new master, {rounds} rounds): no answer for {down:.1} ms (median; max {down_max:.1}); failed requests {restart_failed}"
    );
}

/// One cluster, USR2 after USR2, the demo and its `-next` build in turn.
fn upgrades(demo: &Path, next: &Path, rounds: usize) -> Upgrades {
    let dir = scratch_dir();
    let exe = dir.join("app");
    std::fs::copy(demo, &exe).unwrap();
    let cluster = ClusterProc::start(&exe, dir.clone(), CONFIG, &ENV);
    cluster.wait_workers(2);
    let addr = cluster.addr();
    let load = Load::start(addr);
    std::thread::sleep(Duration::from_millis(500));
    // The same figures with nothing happening, for comparison.
    let quiet = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let (quiet_gap, quiet_slowest) = load.gap_and_slowest(quiet, Instant::now());
    let mut pid = cluster.pid();
    let mut masters = vec![pid];
    let (mut ready_ms, mut exit_ms, mut gaps, mut slowest) = (vec![], vec![], vec![], vec![]);
    let failed_before = load.failed();
    for round in 0..rounds {
        deploy(if round % 2 == 0 { next } else { demo }, &exe);
        let t0 = Instant::now();
        // SAFETY: a signal to the master this benchmark started.
        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
        let mut new = 0;
        wait_until(Duration::from_secs(30), || {
            new = cluster.try_status().map_or(0, |s| s.master_pid);
            new != 0 && new != pid
        });
        ready_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        masters.push(new);
        wait_until(Duration::from_secs(30), || !alive(pid));
        exit_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(300));
        let (gap, slow) = load.gap_and_slowest(t0, Instant::now());
        gaps.push(gap);
        slowest.push(slow);
        pid = new;
    }
    let failed = load.failed() - failed_before;
    load.finish();
    for m in &masters {
        // SAFETY: masters this benchmark started.
        unsafe { libc::kill(*m as i32, libc::SIGKILL) };
    }
    Upgrades {
        ready_ms,
        exit_ms,
        gaps,
        slowest,
        failed,
        quiet_gap,
        quiet_slowest,
        addr,
    }
}

/// Stop the master, start a new one on the same port: the time without
/// an answer of each round, and the requests that failed in all.
fn restarts(demo: &Path, addr: std::net::SocketAddr, rounds: usize) -> (Vec<f64>, u64) {
    let (mut downtime, mut failed) = (vec![], 0);
    let config = CONFIG.replace("127.0.0.1:0", &addr.to_string());
    let mut cluster = ClusterProc::start(demo, scratch_dir(), &config, &ENV);
    cluster.wait_workers(2);
    let load = Load::start(addr);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..rounds {
        let before = load.failed();
        let t0 = Instant::now();
        cluster.signal(libc::SIGTERM);
        assert!(cluster.wait_exit(Duration::from_secs(30)).success());
        drop(cluster);
        cluster = ClusterProc::start(demo, scratch_dir(), &config, &ENV);
        cluster.wait_workers(2);
        std::thread::sleep(Duration::from_millis(300));
        downtime.push(load.gap_and_slowest(t0, Instant::now()).0);
        failed += load.failed() - before;
    }
    load.finish();
    (downtime, failed)
}
