//! A constant request loop on other threads, for tests that change the
//! cluster under load and count what failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::get;

/// Runs GET `path` in a loop on another thread until stopped; counts
/// failures and records which worker pids answered `/healthz`.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    pids: Arc<Mutex<Vec<(Instant, u32)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// One client requesting `path` in a loop.
    pub fn start(addr: std::net::SocketAddr, path: &'static str) -> Load {
        Self::start_n(addr, path, 1)
    }

    /// `clients` clients requesting `path` in a loop, each on a fresh
    /// connection per request.
    pub fn start_n(addr: std::net::SocketAddr, path: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for _ in 0..clients {
            let (s, o, f, p) = (stop.clone(), ok.clone(), failed.clone(), pids.clone());
            threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match get(addr, path) {
                        Ok(r) if r.status == 200 => {
                            o.fetch_add(1, Ordering::Relaxed);
                            if path == "/healthz" {
                                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                                p.lock()
                                    .unwrap()
                                    .push((Instant::now(), v["pid"].as_u64().unwrap() as u32));
                            }
                        }
                        Ok(r) => f
                            .lock()
                            .unwrap()
                            .push(format!("status {}: {}", r.status, r.body)),
                        Err(e) => f.lock().unwrap().push(e.to_string()),
                    }
                }
            }));
        }
        Load {
            stop,
            ok,
            failed,
            pids,
            threads,
        }
    }

    /// Requests that succeeded so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded (the load is flowing).
    pub fn wait_ok(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The pids that answered `/healthz` after `since`.
    pub fn pids_since(&self, since: Instant) -> Vec<u32> {
        let pids = self.pids.lock().unwrap();
        pids.iter()
            .filter(|(t, _)| *t > since)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Waits until `pid` has answered `/healthz` after `since`.
    pub fn wait_answer_from(&self, pid: u32, since: Instant) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .pids
            .lock()
            .unwrap()
            .iter()
            .any(|(t, p)| *p == pid && *t > since)
        {
            assert!(Instant::now() < deadline, "worker {pid} never answered");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the load; the requests that succeeded, the failures, and
    /// the `/healthz` pids seen.
    pub fn finish(mut self) -> (u64, Vec<String>, Vec<(Instant, u32)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        let pids = std::mem::take(&mut *self.pids.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failed, pids)
    }

    /// Stops the load and fails the test if any request failed, naming
    /// them; the requests that succeeded.
    pub fn finish_without_failures(self) -> u64 {
        let (ok, failed, _) = self.finish();
        assert!(
            failed.is_empty(),
            "{} failed of {ok}: {failed:?}",
            failed.len()
        );
        ok
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
