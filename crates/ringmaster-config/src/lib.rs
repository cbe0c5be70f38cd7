//! Layered configuration for ringmaster.
//!
//! This crate owns how a ringmaster cluster is configured: an optional TOML
//! file, then environment overrides (`RINGMASTER__GROUPS__WEB__COUNT=4`), then
//! validation. Every error names its source (the file path, or the
//! environment variable and its value), the dotted key (`groups.web.count`)
//! and what was expected, so an operator can fix it without reading code.
//! The resolved [`Config`] serializes back to TOML ([`Config::to_toml_string`])
//! so the master can hand it to worker processes unchanged.
//!
//! It is a pure library: it prints nothing, never exits the process, and
//! reads the process environment only in [`Config::load_from_env`].
//!
//! # File format
//!
//! ```toml
//! [server]
//! control_socket = "ringmaster.sock"
//! dev = false             # true: templates read from disk, reloaded on change
//! ipc_queue = 1024        # IPC messages queued per worker (and in the master's inbox)
//! ipc_stall_timeout = "10s"   # a worker whose IPC queue stays full this long is restarted
//! ipc_max_pending = 4096  # requests between workers awaiting a reply
//! registry_size = 67108864    # bytes of the shared metrics segment
//! registry_slots = 64     # worker rows in it (default: 2 x the workers, at least 64)
//! pid_file = "ringmaster.pid"
//! log_format = "text"     # or "json"
//! log_file = "log/app.log"    # default: the master's stderr
//! log_max_size = 104857600    # rotate at this many bytes (0: never)
//! log_daily = false       # rotate at midnight (UTC)
//! log_keep = 5            # rotated files kept
//! log_gzip = false        # compress rotated files
//!
//! [groups.web]            # groups keep file order; no groups = one "web" group
//! count = 4               # default: number of CPUs
//! listen = "0.0.0.0:3000"
//! listen_mode = "reuseport"   # or "shared"
//! heartbeat_timeout = "30s"   # durations: "250ms", "1.5s", "2m", "1h"
//! request_timeout = "30s"
//! body_limit = 2097152    # bytes
//!
//! [backends.main]         # a backend without a table is sqlite://NAME.db
//! url = "postgres://app:secret@db/app"   # passwords never appear in errors
//! pool_size = 8
//! connect_timeout = "5s"
//! ```
//!
//! # Layout
//!
//! - `lib.rs`: the crate's constants and re-exports: every public item is
//!   reachable at the crate root.
//! - `config.rs`: [`Config`], its default and what callers ask of it.
//! - `server.rs`: [`ServerConfig`] (`[server]`) and [`LogFormat`].
//! - `group.rs`: [`GroupConfig`] (`[groups.NAME]`) and [`ListenMode`].
//! - `admin.rs`: [`AdminConfig`] (`[admin]`), [`ADMIN_GROUP`] and
//!   [`ADMIN_WORKER`].
//! - `bridge.rs`: [`BridgeConfig`] (`[bridge]`), [`BRIDGE_GROUP`] and
//!   [`BRIDGE_WORKER`].
//! - `load.rs`: loading ([`Config::load`] and its siblings) and the error
//!   attribution that ties a bad value to its file or variable.
//! - `backend.rs`: [`BackendConfig`] and [`BackendKind`] (`[backends.NAME]`)
//!   and the password redaction applied to every URL this crate shows.
//! - `error.rs`: [`ConfigError`], the crate's only error type.
//! - `duration.rs`: the `"30s"` / `"250ms"` duration parser and formatter
//!   used by every duration field.
//! - `fields.rs`: serde helpers giving integer and address fields clear
//!   "expected …, got …" messages.
//! - `env.rs`: turning `RINGMASTER__…` variables into key paths and values.
//! - `validate.rs`: range and cross-key checks run after loading.

#![warn(missing_docs)]

mod admin;
mod backend;
mod bridge;
mod config;
mod cpus;
mod duration;
mod env;
mod error;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod load;
mod server;
mod validate;

use std::time::Duration;

pub use admin::{ADMIN_GROUP, ADMIN_WORKER, AdminConfig};
pub use backend::{BackendConfig, BackendKind};
pub use bridge::{BRIDGE_GROUP, BRIDGE_WORKER, BridgeConfig, DEFAULT_SUBJECT_PREFIX};
pub use config::Config;
pub use cpus::CpuBudget;
pub use error::ConfigError;
pub use group::{GroupConfig, ListenMode};
pub use server::{LogFormat, ServerConfig};

/// Prefix of the environment variables that override configuration keys:
/// `RINGMASTER__GROUPS__WEB__LISTEN=127.0.0.1:4000` sets `groups.web.listen`.
pub const ENV_PREFIX: &str = "RINGMASTER__";

/// Process exit code for configuration errors (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// Largest allowed `count` of workers in one group.
pub(crate) const MAX_WORKERS: usize = 1024;

/// Name of the group created when the configuration defines none.
const DEFAULT_GROUP: &str = "web";

/// Origin used for errors when no config file is involved.
const NO_FILE_ORIGIN: &str = "configuration";

/// Parses a duration as the configuration writes them: `"250ms"`, `"30s"`,
/// `"1.5s"`, `"2m"`, `"1h"` (for command-line options that take one).
///
/// ```
/// assert_eq!(ringmaster_config::parse_duration("1.5s"), Ok(std::time::Duration::from_millis(1500)));
/// assert!(ringmaster_config::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

#[cfg(test)]
mod tests;
