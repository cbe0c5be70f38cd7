//! The demo's side of the cluster-test harness (`ringmaster-testkit`): the
//! demo binary, with its test-only routes switched on.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use ringmaster_testkit::*;

/// The demo binary cargo built for these tests.
pub fn demo_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringmaster-demo"))
}

/// Environment of every test cluster: the demo's test routes are on.
const TEST_ENV: (&str, &str) = ("RINGMASTER_DEMO_TEST_ROUTES", "1");

fn with_test_env<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![TEST_ENV];
    all.extend_from_slice(env);
    all
}

/// Starts the demo with `config` and waits until it listens.
pub fn start(config: &str, env: &[(&str, &str)]) -> ClusterProc {
    ClusterProc::start(demo_exe(), scratch_dir(), config, &with_test_env(env))
}

/// Starts the demo with `config` without waiting.
pub fn spawn(config: &str, env: &[(&str, &str)]) -> ClusterProc {
    ClusterProc::spawn(demo_exe(), scratch_dir(), config, &with_test_env(env))
}

/// Starts `exe` (a copy of the demo) from `dir` and waits until it listens.
pub fn start_exe(dir: std::path::PathBuf, exe: &Path, config: &str) -> ClusterProc {
    ClusterProc::start(exe, dir, config, &with_test_env(&[]))
}

/// Runs the demo binary's command `args` against the running `cluster`
/// (its configuration, from its directory, where its pid file and control
/// socket are).
pub fn cli(cluster: &ClusterProc, args: &[&str]) -> std::process::Output {
    std::process::Command::new(demo_exe())
        .args(args)
        .arg("--config")
        .arg(cluster.config_path())
        .current_dir(cluster.dir())
        .output()
        .unwrap()
}

/// `stats --json` of the running `cluster`.
pub fn stats_json(cluster: &ClusterProc) -> serde_json::Value {
    let out = cli(cluster, &["stats", "--json"]);
    assert!(out.status.success(), "stats: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `demo_hits_total`, the demo's cluster-wide counter, from `stats --json`.
pub fn hits(cluster: &ClusterProc) -> u64 {
    stats_json(cluster)["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "demo_hits_total" && s["labels"] == serde_json::json!({}))
        .and_then(|s| s["value"].as_u64())
        .unwrap_or(0)
}

/// The sum of every series named `name` (all labels) in `stats --json`.
pub fn series_sum(cluster: &ClusterProc, name: &str) -> u64 {
    stats_json(cluster)["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .filter_map(|s| s["value"].as_u64())
        .sum()
}

/// Creates a link to `url` through the `web` group at `web`; its code.
pub fn create_link(web: std::net::SocketAddr, url: &str) -> String {
    let body = format!(r#"{{"url":"{url}"}}"#);
    let r = request(web, "POST", "/links", Some(&body)).unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let link: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    link["code"].as_str().unwrap().to_string()
}

/// `status --json` of the running `cluster`.
pub fn status_json(cluster: &ClusterProc) -> serde_json::Value {
    let out = cli(cluster, &["status", "--json"]);
    assert!(out.status.success(), "status: {out:?}\n{}", cluster.log());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The group named `name` in a `status --json` value.
pub fn group<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no group {name} in {status:#}"))
}

/// The pids of a group's workers in a `status --json` value, by slot.
pub fn group_pids(status: &serde_json::Value, name: &str) -> Vec<u64> {
    group(status, name)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect()
}

/// Polls `status --json` until `pred` holds (or panics after 20 s saying
/// `what`); the status that passed.
pub fn wait_status(
    cluster: &ClusterProc,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let s = status_json(cluster);
        if pred(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last status {s:#}\n{}",
            cluster.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether every worker of group `name` is ready, and there are `n`.
pub fn settled(status: &serde_json::Value, name: &str, n: usize) -> bool {
    let g = group(status, name);
    let workers = g["workers"].as_array().unwrap();
    g["count"] == n
        && g["ready"] == n
        && workers.len() == n
        && workers.iter().all(|w| w["state"] == "ready")
}

/// The test's end of `NOTIFY_SOCKET`: every datagram the master sends,
/// with when it arrived.
pub struct NotifySocket {
    /// Its path, for `NOTIFY_SOCKET`.
    pub path: String,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    /// Binds it in `dir` and starts collecting.
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        // Ends with the test process; a read timeout keeps it from holding
        // anything else.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket {
            path: path.to_str().unwrap().to_string(),
            got,
        }
    }

    /// Every datagram so far.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a datagram with the line `line` after the first `skip`
    /// datagrams; returns its index.
    pub fn wait_line(&self, skip: usize, line: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if let Some(i) = got
                .iter()
                .skip(skip)
                .position(|(_, m)| m.lines().any(|l| l == line))
            {
                return skip + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} within {timeout:?}; the master sent:\n{got:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The pid in the demo's `x-ringmaster-worker` header (`web/1 4242`).
pub fn served_by(r: &Response) -> u32 {
    let v = r
        .header(ringmaster_demo::WORKER_HEADER)
        .unwrap_or_else(|| panic!("no worker header in {r:?}"));
    v.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Follows `/l/{code}` over fresh connections until every pid in `pids`
/// has answered; returns, per pid, each (sent at, status) it answered.
pub fn follow_until_each_answered(
    web: SocketAddr,
    code: &str,
    pids: &[u32],
    status: u16,
) -> HashMap<u32, Vec<(Instant, u16)>> {
    let mut seen: HashMap<u32, Vec<(Instant, u16)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|p| {
        seen.get(p)
            .is_some_and(|v| v.iter().any(|(_, s)| *s == status))
    }) {
        assert!(
            Instant::now() < deadline,
            "not every worker of {pids:?} answered {status} for /l/{code}: {seen:?}"
        );
        let sent = Instant::now();
        let r = request(web, "GET", &format!("/l/{code}"), None).unwrap();
        seen.entry(served_by(&r))
            .or_default()
            .push((sent, r.status));
    }
    seen
}
