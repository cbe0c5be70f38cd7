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
