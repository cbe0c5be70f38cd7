//! The harness of ringmaster's cluster tests and benchmarks: runs a real
//! ringmaster binary as a master ([`ClusterProc`]), reads its log, finds its
//! workers through `/proc`, speaks plain HTTP/1.1 to it, and kills every
//! process it started when it is dropped, even when a test fails (and then
//! prints the cluster's output).
//!
//! # Layout
//! - [`ClusterProc`]: the master process guard;
//! - `control`: its control socket: [`ClusterProc::status`],
//!   [`ClusterProc::ask`], and the lifecycle [`Events`] tests wait on;
//! - `procs`: [`pids`], [`children_of`], [`ppid_of`], [`alive`], [`exe_inode`];
//! - `http`: [`get`], [`get_timeout`], [`health_pid`], [`Response`],
//!   [`request`] (any method, with a body), [`KeepAlive`];
//! - [`Load`]: a request loop under which a test changes the cluster;
//! - [`pg`]: a uniquely named PostgreSQL database per test;
//! - [`NatsServer`]: a private `nats-server` per test, stopped and started
//!   at will;
//! - [`Browser`]: headless Chromium over WebDriver, for the dashboard;
//! - [`Proxy`]: a TCP forwarder a test cuts for a backend outage.
#![warn(missing_docs)]

mod control;
mod http;
mod load;
mod nats;
pub mod pg;
mod procs;
mod proxy;
mod webdriver;

pub use control::Events;
pub use http::{KeepAlive, Response, get, get_timeout, health_pid, request};
pub use load::Load;
pub use nats::NatsServer;
pub use procs::{alive, children_of, exe_inode, pids, ppid_of};
pub use proxy::Proxy;
pub use ringmaster_proto::{Lifecycle, LifecycleRecord};
pub use webdriver::Browser;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A master process and everything it started.
pub struct ClusterProc {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
    /// The address of each group, from the master's log.
    pub addrs: Vec<(String, SocketAddr)>,
    /// Every worker pid seen, so the guard can kill them all.
    seen: Mutex<Vec<u32>>,
    /// The threads copying stdout and stderr into `log`.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The log file the configuration names (`server.log_file`), if any.
    log_file: Option<PathBuf>,
    /// The control socket the configuration names (`server.control_socket`).
    control_socket: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh scratch directory (for one cluster's config and files).
pub fn scratch_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmaster-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cmd` in a process group of its own and collects its output; if
/// it has not exited within `limit`, the whole group is killed and the
/// test fails saying so (a command that should stop must not hang a run).
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("collect the command's output"),
        Err(_) => {
            // SAFETY: kill the process group this function created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!("{cmd:?} did not exit within {limit:?}; its process group was killed");
        }
    }
}

impl ClusterProc {
    /// Starts `exe serve --config DIR/ringmaster.toml` in `dir` with
    /// `config` (TOML) and extra environment, and waits until every group
    /// the config names (at least one) listens.
    pub fn start(exe: &Path, dir: PathBuf, config: &str, env: &[(&str, &str)]) -> ClusterProc {
        let expected = config.matches("[groups.").count().max(1)
            + config.matches("[admin]").count()
            + config.matches("[bridge]").count();
        Self::spawn(exe, dir, config, env).wait_for_addrs(expected)
    }

    /// The directory the master runs in (its pid file and data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file the master was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ringmaster.toml")
    }

    /// Starts the master like [`ClusterProc::start`], without waiting.
    pub fn spawn(exe: &Path, dir: PathBuf, config: &str, env: &[(&str, &str)]) -> ClusterProc {
        Self::spawn_via(&[], exe, dir, config, env)
    }

    /// Starts the master like [`ClusterProc::spawn`], through a launcher
    /// that execs it in place (`systemd-socket-activate -l ADDR ...`): the
    /// command is `launcher... EXE serve --config PATH`, and `env` is the
    /// launcher's environment (one that passes only some variables on
    /// must be told which, as `-E NAME` for `systemd-socket-activate`;
    /// `RINGMASTER_LOG` is among them).
    pub fn spawn_via(
        launcher: &[&str],
        exe: &Path,
        dir: PathBuf,
        config: &str,
        env: &[(&str, &str)],
    ) -> ClusterProc {
        let path = dir.join("ringmaster.toml");
        std::fs::write(&path, config).unwrap();
        // The master runs in `dir`: a relative path must not change meaning.
        let exe = std::fs::canonicalize(exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        let mut cmd = match launcher {
            [] => Command::new(&exe),
            [first, rest @ ..] => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&exe);
                cmd
            }
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(&dir)
            .env("RINGMASTER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_retrying_busy(&mut cmd);
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            }));
        }
        // `log_file = "..."` in the configuration: the log is (also) there.
        let log_file = config_path(config, "log_file").map(|p| dir.join(p));
        let control_socket = dir.join(
            config_path(config, "control_socket").unwrap_or_else(|| "ringmaster.sock".into()),
        );
        ClusterProc {
            log_file,
            control_socket,
            child: Some(child),
            log,
            dir,
            addrs: Vec::new(),
            seen: Mutex::new(Vec::new()),
            readers,
        }
    }

    /// Waits until the control socket answers `status` with `groups`
    /// groups (they are bound before the socket opens), and records their
    /// addresses.
    pub fn wait_for_addrs(mut self, groups: usize) -> ClusterProc {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let addrs = self.try_status().and_then(|status| {
                status
                    .groups
                    .iter()
                    .map(|g| Some((g.name.clone(), g.listen.parse().ok()?)))
                    .collect::<Option<Vec<(String, SocketAddr)>>>()
            });
            if let Some(addrs) = addrs.filter(|a| a.len() >= groups) {
                self.addrs = addrs;
                return self;
            }
            if let Some(status) = self.try_wait() {
                panic!("master exited early ({status})\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "master did not listen\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of the first group.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    /// The address of the group named `group`.
    pub fn addr_of(&self, group: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(g, _)| g == group)
            .unwrap_or_else(|| panic!("no group {group} in {:?}", self.addrs))
            .1
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the master and its workers printed so far.
    pub fn log(&self) -> String {
        let mut text = self.log.lock().unwrap().clone();
        if let Some(file) = &self.log_file {
            text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        text
    }

    /// Waits until the log matches `pred`, or panics after `timeout`.
    pub fn wait_log(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.log()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails the test unless the log says `text` within a few seconds (the
    /// log reaches the test through the master's pipes, a moment after the
    /// lifecycle event that a test waited on).
    pub fn assert_logged(&self, text: &str) {
        self.wait_log(
            Duration::from_secs(5),
            &format!("the log to say {text:?}"),
            |log| log.contains(text),
        );
    }

    /// The pids of the master's current child processes.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pids = children_of(self.pid());
        let mut seen = self.seen.lock().unwrap();
        for p in &pids {
            if !seen.contains(p) {
                seen.push(*p);
            }
        }
        pids
    }

    /// Waits until the master has exactly `n` child processes and
    /// `status` shows each of them as a ready worker; returns their pids.
    pub fn wait_workers(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = self.worker_pids();
            if pids.len() == n && self.all_ready(&pids) {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} workers, have {pids:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether `status` lists each of `pids` as a ready worker.
    fn all_ready(&self, pids: &[u32]) -> bool {
        let Some(status) = self.try_status() else {
            return false;
        };
        pids.iter().all(|pid| {
            status
                .groups
                .iter()
                .flat_map(|g| &g.workers)
                .any(|w| w.pid == Some(*pid) && w.state == "ready")
        })
    }

    /// Waits until `n` workers run and `gone` is not among them (it was
    /// replaced); their pids.
    pub fn wait_replaced(&self, gone: u32, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.worker_pids();
            if now.len() == n && !now.contains(&gone) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "worker {gone} was not replaced: {now:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with a pid we started.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// The master's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the master to exit, or panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                // Let the readers reach end-of-file so the log is complete
                // (bounded: a lingering process may hold the pipes open).
                let until = Instant::now() + Duration::from_secs(2);
                while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "master did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ClusterProc {
    fn drop(&mut self) {
        let mut pids = self.worker_pids();
        pids.extend(self.seen.lock().unwrap().iter().copied());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in pids {
            // SAFETY: kill with pids this test's master started; a pid that
            // is gone gives ESRCH, which is fine.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        if std::thread::panicking() {
            eprintln!(
                "----- cluster output -----\n{}\n--------------------------",
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `cmd`, again while the kernel says the binary is busy
/// (`ETXTBSY`): another test thread's fork can hold a copy of a write fd
/// of a binary a test just wrote, until that child's exec.
pub fn spawn_retrying_busy(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot start {:?}: {e}", cmd.get_program()),
        }
    }
}

/// The value of `key = "VALUE"` in a TOML text, read line by line (the
/// tests' configurations put each path on a line of its own).
fn config_path(config: &str, key: &str) -> Option<PathBuf> {
    config.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.trim().strip_prefix('=')?;
        Some(PathBuf::from(v.trim().trim_matches('"')))
    })
}

/// A config with one group `web` on a free port and the given extra keys.
pub fn web_config(extra: &str) -> String {
    format!("[groups.web]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// Median, p90, min and max of `samples` (sorted in place; not empty).
pub fn summary(samples: &mut [f64]) -> (f64, f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), samples[0], samples[n - 1])
}
