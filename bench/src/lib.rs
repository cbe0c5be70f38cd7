//! Shared helpers of the benchmark binaries, on top of `ringmaster-testkit`.

use std::path::PathBuf;

pub use ringmaster_testkit::{ClusterProc, get, health_pid, scratch_dir, summary};

/// The demo binary: the first argument, or `target/release/ringmaster-demo`.
pub fn demo_exe() -> PathBuf {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ringmaster-demo".to_string())
        .into()
}

/// Starts the demo binary with `config`, logging warnings and the master's
/// events only, and waits until it listens.
pub fn start(config: &str) -> ClusterProc {
    ClusterProc::start(
        &demo_exe(),
        scratch_dir(),
        config,
        &[("RINGMASTER_LOG", "warn,ringmaster_master=info")],
    )
}

/// Whether this process is the app of a benchmark binary that is itself a
/// ringmaster app (`ipc`, `logs`): a master its driver started (`serve`),
/// or a process that master started (`RINGMASTER_ROLE`).
pub fn is_app_process() -> bool {
    std::env::args().nth(1).as_deref() == Some("serve")
        || std::env::var_os("RINGMASTER_ROLE").is_some()
}

/// The app of such a binary: one worker, `bench`, with one module whose
/// `init` is the benchmark's code.
pub fn bench_app(
    init: fn(&mut ringmaster::Init) -> Result<(), ringmaster::BootError>,
) -> ringmaster::Worker {
    ringmaster::Worker::new("bench").module(BenchModule(init))
}

struct BenchModule(fn(&mut ringmaster::Init) -> Result<(), ringmaster::BootError>);

impl ringmaster::Module for BenchModule {
    fn name(&self) -> &str {
        "bench"
    }

    fn routes(&self) -> ringmaster::Controller {
        ringmaster::Controller::new("/")
    }

    async fn init(&self, init: &mut ringmaster::Init) -> Result<(), ringmaster::BootError> {
        (self.0)(init)
    }
}

/// Waits until every worker of every group is ready, asking the master.
pub async fn all_ready(ipc: &ringmaster::Ipc) {
    loop {
        if let Ok(s) = ipc.status().await
            && s.groups.iter().all(|g| g.ready == g.count)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A master of the running benchmark binary (`serve --config` in a scratch
/// directory), for the binaries that are themselves ringmaster apps: the
/// lines its workers print on stdout (the master captures them into its
/// log, tagged) come back through [`SelfMaster::wait_for`]. Dropped, it is
/// sent SIGTERM and waited for.
pub struct SelfMaster {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its scratch directory (the worker's working directory).
    pub dir: PathBuf,
}

impl SelfMaster {
    /// Starts a master of this binary with `config` and the variables
    /// `env`; `RINGMASTER_LOG` is `warn` unless set.
    pub fn start(config: &str, env: &[(&str, &str)]) -> SelfMaster {
        use std::io::{BufRead, BufReader};
        let dir = scratch_dir();
        let path = dir.join("bench.toml");
        std::fs::write(&path, config).expect("write the config");
        let exe = std::env::current_exe().expect("own path");
        let mut child = std::process::Command::new(exe)
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(&dir)
            .envs(env.iter().copied())
            .env(
                "RINGMASTER_LOG",
                std::env::var("RINGMASTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the master");
        let log = child.stderr.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                // `bench/0 4242 g0 | RESULT ...`: what the worker said,
                // after its tag.
                if let Some(at) = line.find("| ")
                    && tx.send(line[at + 2..].to_string()).is_err()
                {
                    return;
                }
            }
        });
        SelfMaster { child, lines, dir }
    }

    /// The next line a process of this master printed that starts with
    /// `what`; panics after `limit`.
    pub fn wait_for(&mut self, what: &str, limit: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(what) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no {what} line within {limit:?} from the master in {:?}",
                    self.dir
                ),
            }
        }
    }
}

impl Drop for SelfMaster {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The number after `name=` in a `RESULT name=N ...` line; panics without
/// one.
pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
/// machine, so a send time in a message gives the delivery's latency.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A `u64` as postcard encodes it (a varint), as a topic's payload.
pub fn postcard_u64(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
