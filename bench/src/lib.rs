//! Shared helpers of the benchmark binaries: start a demo cluster, find its
//! workers, and speak plain HTTP/1.1 to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running demo cluster, killed (with its workers) on drop.
pub struct Cluster {
    child: Child,
    /// The first group's address.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Cluster {
    /// Starts `exe serve` with `config` (TOML); waits for the listen line.
    pub fn start(exe: &str, config: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("ringmaster-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("ringmaster.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RINGMASTER_LOG", "warn,ringmaster_master=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on http://").nth(1) {
                    let addr = url.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("cluster did not listen")
            .parse()
            .expect("listen address");
        Cluster { child, addr, dir }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's children (its workers).
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// Waits until exactly `n` workers answer.
    pub fn wait_workers(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let w = self.workers();
            if w.len() == n && get(self.addr, "/healthz").is_ok() {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} workers, have {w:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let workers = self.workers();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            // SAFETY: plain kill of our own cluster's workers.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Children of `pid` that are not zombies, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 2..].split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if state != Some("Z") && ppid == Some(pid) {
            out.push(p);
        }
    }
    out.sort_unstable();
    out
}

/// One GET on a fresh connection; returns the status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    Ok((status, body.to_string()))
}

/// The pid that answered `/healthz`.
pub fn health_pid(addr: SocketAddr) -> std::io::Result<u32> {
    let (_, body) = get(addr, "/healthz")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    v["pid"]
        .as_u64()
        .map(|p| p as u32)
        .ok_or_else(|| std::io::Error::other("no pid"))
}

/// Median, p90, min and max of `samples` (sorted in place).
pub fn summary(samples: &mut [f64]) -> (f64, f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), samples[0], samples[n - 1])
}

/// The demo binary: the first argument, or `target/release/ringmaster-demo`.
pub fn demo_exe() -> String {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ringmaster-demo".to_string())
}
