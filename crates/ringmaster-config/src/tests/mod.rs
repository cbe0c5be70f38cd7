//! Unit tests for loading, overrides, validation and error messages, by
//! topic; the helpers and the full example file they share are here.

mod admin;
mod backends;
mod bridge;
mod loading;
mod messages;
mod overrides;
mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A config file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ringmaster-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp config");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn group<'a>(config: &'a Config, name: &str) -> &'a GroupConfig {
    config
        .group(name)
        .unwrap_or_else(|| panic!("group {name} in {config:?}"))
}

fn from_str_err(text: &str) -> ConfigError {
    Config::from_toml_str(text, "ringmaster.toml").expect_err(text)
}

const FULL: &str = r#"
[server]
control_socket = "/run/ringmaster/control.sock"
dev = true

[groups.web]
worker = "http"
count = 3
listen = "0.0.0.0:8080"
listen_mode = "shared"
backlog = 512
threads = 2
boot_timeout = "90s"
heartbeat_interval = "250ms"
heartbeat_timeout = "1.5s"
drain_timeout = "2m"
min_uptime = "1h"
restart_backoff = "0s"
restart_backoff_max = "15us"
request_timeout = "1500ms"
body_limit = 1048576

[groups.jobs]
count = 1
listen = "127.0.0.1:0"

[backends.main]
url = "postgres://app:s3cret@db.internal:5432/app"
pool_size = 16
connect_timeout = "2.5s"

[backends.cache]
url = "redis://:pw@127.0.0.1:6379/0"
"#;
