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
