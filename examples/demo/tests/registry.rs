//! Cluster tests of the registry with the real demo binary: a counter that
//! survives `kill -9` of its workers under load, counters that never go
//! backwards when the group shrinks, and the `stats` command.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{ClusterProc, Lifecycle, demo_exe, get, web_config};

/// `stats --json` of the running cluster: (name, labels) -> value.
fn stats(cluster: &ClusterProc) -> HashMap<(String, String), serde_json::Value> {
    support::stats_json(cluster)["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"].to_string();
            (
                (s["name"].as_str().unwrap().to_string(), labels),
                s["value"].clone(),
            )
        })
        .collect()
}

/// The counters (`*_total`) and histogram counts of a `stats` map.
fn counts(stats: &HashMap<(String, String), serde_json::Value>) -> HashMap<(String, String), u64> {
    stats
        .iter()
        .filter_map(|(k, v)| {
            let n = if k.0.ends_with("_total") {
                v.as_u64()?
            } else {
                v.get("count")?.as_u64()?
            };
            Some((k.clone(), n))
        })
        .collect()
}

fn hits(cluster: &ClusterProc) -> u64 {
    support::hits(cluster)
}

#[test]
fn the_counter_equals_the_answers_through_two_kill_9s() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    cluster.wait_workers(2);
    let addr = cluster.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(addr, "/counter") {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for _ in 0..2 {
        let before = ok.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::Relaxed) < before + 200 {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let victim = cluster.worker_pids()[0];
        // SAFETY: kill a worker of this test's cluster.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        cluster.wait_replaced(victim, 2);
    }
    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 200 {
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // The clients are sequential and have stopped: nothing is in flight.
    // A request that failed (its worker was killed) may or may not have
    // been counted before the kill: each is one count at most.
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let total = hits(&cluster);
    assert!(
        ok <= total && total <= ok + failed,
        "demo_hits_total {total}, 200 responses {ok}, failed requests {failed}"
    );
    assert!(ok > 600, "{ok}");
    let s = stats(&cluster);
    let restarts: u64 = s
        .iter()
        .filter(|(k, _)| k.0 == "ringmaster_worker_restarts_total")
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(restarts, 2, "{s:?}");
}

#[test]
fn scaling_down_from_four_to_two_never_lowers_a_counter() {
    let cluster = support::start(&web_config("count = 4"), &[]);
    cluster.wait_workers(4);
    // Fresh connections spread over the four workers: each row holds counts.
    for _ in 0..200 {
        assert_eq!(get(cluster.addr(), "/counter").unwrap().status, 200);
    }
    let before = counts(&stats(&cluster));
    assert!(before[&("demo_hits_total".to_string(), "{}".to_string())] >= 4);
    // One signal at a time: two sent at once may arrive as one.
    let mut events = cluster.events();
    cluster.signal(libc::SIGTTOU);
    events.wait(Duration::from_secs(10), "the scale to 3", |e| {
        matches!(e, Lifecycle::Scaled { from: 4, to: 3, .. })
    });
    cluster.signal(libc::SIGTTOU);
    events.wait(Duration::from_secs(10), "the scale to 2", |e| {
        matches!(e, Lifecycle::Scaled { from: 3, to: 2, .. })
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.worker_pids().len() != 2 {
        assert!(Instant::now() < deadline, "{:?}", cluster.worker_pids());
        // Keep reading while the slots go: no read may see a drop.
        for (k, v) in counts(&stats(&cluster)) {
            if let Some(b) = before.get(&k) {
                assert!(v >= *b, "{k:?} went from {b} to {v}");
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = counts(&stats(&cluster));
    for (k, b) in &before {
        let a = after.get(k).copied().unwrap_or(0);
        assert!(a >= *b, "{k:?} went from {b} to {a}");
    }
    let r = get(cluster.addr(), "/counter").unwrap();
    let total: u64 = r.body.parse().unwrap();
    assert!(
        total > before[&("demo_hits_total".to_string(), "{}".to_string())],
        "{total}"
    );
}

#[test]
fn stats_prints_a_table_and_prometheus_and_says_when_no_master_runs() {
    let cluster = support::start(&web_config("count = 1"), &[]);
    cluster.wait_workers(1);
    get(cluster.addr(), "/counter").unwrap();
    let run = |args: &[&str]| support::cli(&cluster, args);
    let table = run(&["stats"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("demo_hits_total") && l.ends_with(" 1")),
        "{text}"
    );
    let prom = run(&["stats", "--prometheus"]);
    let text = String::from_utf8_lossy(&prom.stdout);
    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(
            "http_requests_total{group=\"web\",method=\"GET\",route=\"/counter\",status=\"200\"} 1"
        ),
        "{text}"
    );
    let dir = support::scratch_dir();
    let out = std::process::Command::new(demo_exe())
        .args(["stats"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ringmaster.pid") && err.contains("--pid"),
        "{err}"
    );
}
