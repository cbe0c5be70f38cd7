//! The demo's side of the cluster-test harness (`ringmaster-testkit`): the
//! demo binary, with its test-only routes switched on.

#![allow(dead_code)]

use std::path::Path;

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
