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
//! - `lib.rs`: the configuration types, loading ([`Config::load`]) and the
//!   error attribution that ties a bad value to its file or variable.
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

mod backend;
mod duration;
mod env;
mod error;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Table;

pub use backend::{BackendConfig, BackendKind};
pub use error::ConfigError;

use env::Override;
use validate::Violation;

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

/// The whole resolved configuration.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Master-process settings (`[server]`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Worker groups by name (`[groups.NAME]`), in file order. After loading
    /// there is at least one; with none configured, a single `web` group
    /// with default settings.
    #[serde(default, serialize_with = "serialize_user_groups")]
    pub groups: IndexMap<String, GroupConfig>,
    /// Storage backends by name (`[backends.NAME]`), in file order. May be
    /// empty: see [`Config::backend`] for names without a table.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub backends: IndexMap<String, BackendConfig>,
    /// The built-in admin worker (`[admin]`): off unless `listen` is set.
    /// When on, [`Config::groups`] holds its group, [`ADMIN_GROUP`].
    #[serde(default, skip_serializing_if = "AdminConfig::is_off")]
    pub admin: AdminConfig,
}

/// The name of the admin worker's group, added to [`Config::groups`] when
/// `[admin] listen` is set.
pub const ADMIN_GROUP: &str = "admin";

/// The name of the built-in admin worker implementation.
pub const ADMIN_WORKER: &str = "ringmaster-admin";

/// The built-in admin worker: the `[admin]` table.
///
/// With `listen` set, the master runs one more group, `admin`, whose
/// worker serves `/metrics`, `/status`, `/healthz`, `/readyz` and a live
/// dashboard. It is a worker like any other: the master itself still
/// serves no HTTP.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin worker listens, e.g. `127.0.0.1:9100`; `None`
    /// (default): no admin worker.
    #[serde(
        deserialize_with = "fields::some_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
    /// A bearer token every request but `/healthz` and `/readyz` must
    /// carry (`Authorization: Bearer TOKEN`, or once `/?token=TOKEN` in a
    /// browser). Required when `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl AdminConfig {
    /// Whether no admin worker runs.
    pub fn is_off(&self) -> bool {
        self.listen.is_none() && self.token.is_none()
    }

    /// The settings of the admin worker's group: one worker on `listen`,
    /// one runtime thread, no access log, a short drain (its long-lived
    /// streams end when it drains).
    fn group(&self, listen: SocketAddr) -> GroupConfig {
        GroupConfig {
            worker: Some(ADMIN_WORKER.to_owned()),
            count: 1,
            listen,
            threads: Some(1),
            access_log: false,
            drain_timeout: Duration::from_secs(5),
            ..GroupConfig::default()
        }
    }
}

/// Master-process settings: the `[server]` table.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Path of the Unix control socket the CLI talks to the master on.
    /// Default `ringmaster.sock`.
    pub control_socket: PathBuf,
    /// Development mode: templates are read from disk and reloaded on
    /// change. Default `false`.
    pub dev: bool,
    /// How many IPC messages the master queues for one worker (and in its
    /// own inbox) before it drops messages for that worker. Default 1024.
    #[serde(deserialize_with = "fields::uint")]
    pub ipc_queue: usize,
    /// How long a worker's IPC queue may stay full before the master
    /// restarts that worker as stalled. Default 10s.
    #[serde(with = "duration::serde")]
    pub ipc_stall_timeout: Duration,
    /// How many requests between workers may await a reply at once; more
    /// are refused at once. Default 4096.
    #[serde(deserialize_with = "fields::uint")]
    pub ipc_max_pending: usize,
    /// Size in bytes of the shared-memory registry (counters, gauges,
    /// histograms). Pages are allocated as they are used. Default 64 MiB.
    #[serde(deserialize_with = "fields::uint")]
    pub registry_size: usize,
    /// Worker rows in the registry: one per worker slot of every group, so
    /// at least the sum of the groups' counts; slots added later (TTIN)
    /// need spare rows. Default: twice the workers configured, at least 64
    /// (see [`Config::registry_slots`]).
    #[serde(
        default,
        deserialize_with = "fields::some_uint",
        skip_serializing_if = "Option::is_none"
    )]
    pub registry_slots: Option<usize>,
    /// Where the master writes its pid (for `stats`, scripts and
    /// supervisors); removed when it stops. Default `ringmaster.pid`.
    pub pid_file: PathBuf,
    /// How workers format their log lines: `text` (default) or `json`
    /// (one object per line; the master adds group, slot, pid, generation).
    pub log_format: LogFormat,
    /// The log file; `None` (default): the master's stderr. Reopened on
    /// SIGUSR1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Rotate the file before it would grow past this many bytes; 0: no
    /// size rotation. Default 100 MiB.
    #[serde(deserialize_with = "fields::uint")]
    pub log_max_size: u64,
    /// Rotate the file when the (UTC) date changes. Default `false`.
    pub log_daily: bool,
    /// Rotated files kept (`app.log.1` newest). Default 5.
    #[serde(deserialize_with = "fields::uint")]
    pub log_keep: usize,
    /// Compress rotated files with gzip (`app.log.1.gz`). Default `false`.
    pub log_gzip: bool,
    /// Longest log line, in bytes; longer ones are cut with a marker.
    /// Default 16384.
    #[serde(deserialize_with = "fields::uint")]
    pub log_max_line: usize,
    /// Bytes of log lines the master buffers for a slow sink before it
    /// drops lines (counted). Default 8 MiB.
    #[serde(deserialize_with = "fields::uint")]
    pub log_buffer: usize,
    /// Recent lines kept in memory for `logs`, 0 to 100,000 (the master
    /// tags them when `logs` asks, on its own thread). Default 1000.
    #[serde(deserialize_with = "fields::uint")]
    pub log_ring: usize,
}

/// How workers format log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            control_socket: PathBuf::from("ringmaster.sock"),
            dev: false,
            ipc_queue: 1024,
            ipc_stall_timeout: Duration::from_secs(10),
            ipc_max_pending: 4096,
            registry_size: 64 << 20,
            registry_slots: None,
            pid_file: PathBuf::from("ringmaster.pid"),
            log_format: LogFormat::Text,
            log_file: None,
            log_max_size: 100 << 20,
            log_daily: false,
            log_keep: 5,
            log_gzip: false,
            log_max_line: 16 * 1024,
            log_buffer: 8 << 20,
            log_ring: 1000,
        }
    }
}

/// One group of identical worker processes: a `[groups.NAME]` table.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Name of the worker implementation to run; `None` means the
    /// application's only (or default) one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Number of worker processes, 1 to 1024. Default: the number of CPUs.
    #[serde(deserialize_with = "fields::uint")]
    pub count: usize,
    /// Address the group serves on. Default `127.0.0.1:3000`; port 0 picks a
    /// free port.
    #[serde(deserialize_with = "fields::socket_addr")]
    pub listen: SocketAddr,
    /// How workers share the listening address. Default [`ListenMode::Reuseport`].
    pub listen_mode: ListenMode,
    /// Listen backlog, at least 1. Default 1024.
    #[serde(deserialize_with = "fields::uint")]
    pub backlog: u32,
    /// Tokio worker threads per worker process, at least 1; `None` picks
    /// automatically.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "fields::some_uint"
    )]
    pub threads: Option<usize>,
    /// How long a worker may take to report ready. Default 60s.
    #[serde(with = "duration::serde")]
    pub boot_timeout: Duration,
    /// How often workers send a heartbeat. Default 1s.
    #[serde(with = "duration::serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a worker is considered hung; longer than
    /// `heartbeat_interval`. Default 30s.
    #[serde(with = "duration::serde")]
    pub heartbeat_timeout: Duration,
    /// How long a stopping worker may finish in-flight requests. Default 30s.
    #[serde(with = "duration::serde")]
    pub drain_timeout: Duration,
    /// A worker that exits sooner than this after starting counts as a
    /// crash (a strike). Default 5s.
    #[serde(with = "duration::serde")]
    pub min_uptime: Duration,
    /// First restart delay after a strike; may be 0. Default 100ms.
    #[serde(with = "duration::serde")]
    pub restart_backoff: Duration,
    /// Cap on the growing restart delay; at least `restart_backoff`.
    /// Default 15s.
    #[serde(with = "duration::serde")]
    pub restart_backoff_max: Duration,
    /// How long one request may take. Default 30s.
    #[serde(with = "duration::serde")]
    pub request_timeout: Duration,
    /// Largest accepted request body, in bytes, at least 1. Default
    /// 2 MiB (2097152). An integer: no unit suffixes.
    #[serde(deserialize_with = "fields::uint")]
    pub body_limit: u64,
    /// One log line per request (method, path, status, duration, request
    /// id). Default `true`.
    pub access_log: bool,
    /// Replace a worker once it has served this many requests (plus a
    /// random 0 to `max_requests_jitter` of its own), replacement ready
    /// first; 0 (default): never.
    #[serde(deserialize_with = "fields::uint")]
    pub max_requests: u64,
    /// The most requests a worker adds to `max_requests`, picked at random
    /// per worker so that workers started together are not all replaced at
    /// once. Default 0.
    #[serde(deserialize_with = "fields::uint")]
    pub max_requests_jitter: u64,
    /// Replace a worker whose resident memory passes this many bytes
    /// (checked every second), replacement ready first; 0 (default): never.
    #[serde(deserialize_with = "fields::uint")]
    pub max_rss: u64,
    /// How long a client may take to send a request's head (from the
    /// connection, or the previous response); then the connection is
    /// closed. Default 10s.
    #[serde(with = "duration::serde")]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed
    /// (after the response in progress, if any). Default 60s.
    #[serde(with = "duration::serde")]
    pub keepalive_timeout: Duration,
    /// Open connections per worker, at most; beyond, the worker stops
    /// accepting and the kernel's queue holds the rest (lowered to what
    /// the file descriptor limit allows). Default 10000.
    #[serde(deserialize_with = "fields::uint")]
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; larger
    /// gets 431. Default 16384.
    #[serde(deserialize_with = "fields::uint")]
    pub max_header_bytes: usize,
    /// Most headers in a request; more gets 431. Default 100.
    #[serde(deserialize_with = "fields::uint")]
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes; longer gets 414.
    /// Default 8192.
    #[serde(deserialize_with = "fields::uint")]
    pub max_uri_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            worker: None,
            count: std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_WORKERS),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 3000)),
            listen_mode: ListenMode::default(),
            backlog: 1024,
            threads: None,
            boot_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            min_uptime: Duration::from_secs(5),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
            body_limit: 2 * 1024 * 1024,
            access_log: true,
            max_requests: 0,
            max_requests_jitter: 0,
            max_rss: 0,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// How the workers of a group share its listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// The master binds one socket and every worker accepts on it.
    Shared,
    /// Each worker binds its own socket with `SO_REUSEPORT` and the kernel
    /// balances connections between them.
    #[default]
    Reuseport,
}

impl fmt::Display for ListenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shared => "shared",
            Self::Reuseport => "reuseport",
        })
    }
}

impl Default for Config {
    /// The configuration used with no file and no overrides: default server
    /// settings, one `web` group with default settings and no backends.
    fn default() -> Self {
        let mut groups = IndexMap::new();
        groups.insert(DEFAULT_GROUP.to_owned(), GroupConfig::default());
        Self {
            server: ServerConfig::default(),
            groups,
            backends: IndexMap::new(),
            admin: AdminConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: the TOML file at `path` if given (`None`
    /// means built-in defaults), then overrides from the `RINGMASTER__…`
    /// entries of `env` (other names are ignored) in sorted name order, then
    /// validation.
    ///
    /// `env` is passed in so callers and tests control it; see
    /// [`Config::load_from_env`] for the process environment. An explicit
    /// `path` that does not exist is an error.
    ///
    /// ```
    /// use ringmaster_config::Config;
    ///
    /// let env = [
    ///     ("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "4".to_owned()),
    ///     ("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT".to_owned(), "5s".to_owned()),
    ///     ("HOME".to_owned(), "/root".to_owned()),
    /// ];
    /// let config = Config::load(None, env)?;
    /// let web = config.group("web").expect("web is configured by the environment");
    /// assert_eq!(web.count, 4);
    /// assert_eq!(web.drain_timeout, std::time::Duration::from_secs(5));
    ///
    /// let bad = [("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "abc".to_owned())];
    /// let err = Config::load(None, bad).expect_err("count must be an integer");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "environment variable RINGMASTER__GROUPS__WEB__COUNT=\"abc\": \
    ///      groups.web.count: expected a positive integer, got \"abc\"",
    /// );
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, mut config) = match path {
            Some(path) => {
                let origin = path.display().to_string();
                return Self::load_str(&read_file(path, &origin)?, &origin, env);
            }
            None => {
                let config = Table::new()
                    .try_into::<Config>()
                    .map_err(|e| ConfigError::new(NO_FILE_ORIGIN, None, e.message()))?;
                (Table::new(), config)
            }
        };
        let overrides = env::collect(env)?;
        for over in &overrides {
            (table, config) = apply_override(&table, over)?;
        }
        finish(config, NO_FILE_ORIGIN, &overrides)
    }

    /// [`Config::load`] of a file whose text is `text`, named `origin` in
    /// errors, with the environment overrides in `env`.
    ///
    /// ```
    /// use ringmaster_config::Config;
    ///
    /// let env = [("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "3".to_owned())];
    /// let config = Config::load_str("[groups.web]\ncount = 1\n", "app.toml", env)?;
    /// assert_eq!(config.group("web").map(|g| g.count), Some(3));
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn load_str(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, mut config) = parse_document(text, origin)?;
        let overrides = env::collect(env)?;
        for over in &overrides {
            (table, config) = apply_override(&table, over)?;
        }
        finish(config, origin, &overrides)
    }

    /// [`Config::load`] with the process environment.
    ///
    /// Names and values that are not valid Unicode are converted lossily, so
    /// a mangled `RINGMASTER__…` value surfaces as a validation error rather
    /// than being skipped.
    pub fn load_from_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        Self::load(path, env)
    }

    /// Parses `text` as if it were the config file named `origin` (no
    /// environment overrides), then validates it. Errors name `origin`.
    ///
    /// ```
    /// use ringmaster_config::{Config, ListenMode};
    ///
    /// let config = Config::from_toml_str(
    ///     r#"
    ///     [groups.api]
    ///     count = 2
    ///     listen = "127.0.0.1:8080"
    ///     listen_mode = "shared"
    ///     heartbeat_timeout = "10s"
    ///     "#,
    ///     "ringmaster.toml",
    /// )?;
    /// let api = config.group("api").expect("api is configured");
    /// assert_eq!(api.count, 2);
    /// assert_eq!(api.listen_mode, ListenMode::Shared);
    /// assert!(config.group("web").is_none());
    ///
    /// let err = Config::from_toml_str("[groups.web]\ncount = 0\n", "ringmaster.toml")
    ///     .expect_err("count must be at least 1");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "ringmaster.toml: groups.web.count: expected an integer from 1 to 1024, got 0",
    /// );
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let (_, config) = parse_document(text, origin)?;
        finish(config, origin, &[])
    }

    /// Serializes to TOML that [`Config::from_toml_str`] reads back to an
    /// equal `Config`; used to hand the resolved configuration to workers.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| {
            ConfigError::new(
                NO_FILE_ORIGIN,
                None,
                format!("cannot write the configuration as TOML: {e}"),
            )
        })
    }

    /// Decides which worker implementation each group runs, among the names
    /// `known` that the binary registered: the group's `worker` key, else the
    /// only implementation, else the one named like the group. Writes the
    /// choice into `groups.NAME.worker`; the error says which key to set.
    pub fn resolve_workers(&mut self, known: &[String]) -> Result<(), String> {
        // The built-in admin worker is chosen only by name: a binary with one
        // worker of its own still runs that one by default.
        let known: Vec<String> = known
            .iter()
            .filter(|k| *k != ADMIN_WORKER)
            .cloned()
            .collect();
        for (name, group) in self.groups.iter_mut() {
            if group.worker.as_deref() == Some(ADMIN_WORKER) && name == ADMIN_GROUP {
                continue;
            }
            let chosen = match &group.worker {
                Some(w) if known.iter().any(|k| k == w) => w.clone(),
                Some(w) => {
                    return Err(format!(
                        "groups.{name}.worker = \"{w}\" is not a worker this binary knows; known: {}",
                        known.join(", ")
                    ));
                }
                None if known.len() == 1 => known[0].clone(),
                None if known.iter().any(|k| k == name) => name.clone(),
                None => {
                    return Err(format!(
                        "group \"{name}\" does not say which worker it runs; set groups.{name}.worker to one of: {}",
                        known.join(", ")
                    ));
                }
            };
            group.worker = Some(chosen);
        }
        Ok(())
    }

    /// Worker rows of the registry: `server.registry_slots`, or twice the
    /// workers configured, at least 64.
    pub fn registry_slots(&self) -> usize {
        let workers: usize = self.groups.values().map(|g| g.count).sum();
        self.server
            .registry_slots
            .unwrap_or_else(|| (workers * 2).max(64))
    }

    /// The group named `name`, if configured.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.get(name)
    }

    /// The backend named `name`: the configured one, or, when absent, the
    /// embedded default `sqlite://NAME.db` (created on first use, relative
    /// to the working directory) with default settings.
    ///
    /// `name` should follow the backend name rule (`[a-z0-9_-]+`), which
    /// configured names are checked against; other names are used as given.
    ///
    /// ```
    /// use ringmaster_config::{BackendKind, Config};
    ///
    /// let config = Config::from_toml_str(
    ///     "[backends.cache]\nurl = \"redis://:pw@127.0.0.1:6379\"\n",
    ///     "ringmaster.toml",
    /// )?;
    /// assert_eq!(config.backend("cache").kind(), Ok(BackendKind::Redis));
    /// assert_eq!(config.backend("cache").redacted_url(), "redis://:***@127.0.0.1:6379");
    /// assert_eq!(config.backend("blog").url, "sqlite://blog.db");
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn backend(&self, name: &str) -> BackendConfig {
        self.backends
            .get(name)
            .cloned()
            .unwrap_or_else(|| BackendConfig::new(format!("sqlite://{name}.db")))
    }
}

/// Reads the config file, turning "not found" into an actionable message.
fn read_file(path: &Path, origin: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            format!("config file {origin} not found; pass an existing path to --config")
        } else {
            format!("cannot read config file {origin}: {e}")
        };
        ConfigError::new(origin, None, message)
    })
}

/// Parses a TOML document into both its raw table (for overrides) and a
/// typed `Config`. Errors keep toml's line, column and snippet.
fn parse_document(text: &str, origin: &str) -> Result<(Table, Config), ConfigError> {
    let config = toml::from_str::<Config>(text).map_err(|e| toml_error(text, origin, &e))?;
    let table = text
        .parse::<Table>()
        .map_err(|e| toml_error(text, origin, &e))?;
    if table
        .get("groups")
        .and_then(toml::Value::as_table)
        .is_some_and(Table::is_empty)
    {
        return Err(ConfigError::new(
            origin,
            Some("groups".to_owned()),
            "the [groups] table defines no group; add one such as [groups.web] (or remove \
             [groups] to run the default web group)"
                .to_owned(),
        ));
    }
    Ok((table, config))
}

/// Converts a toml error from parsing `text` into a [`ConfigError`] whose
/// message starts with what went wrong, followed by toml's location snippet.
fn toml_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let rendered = error.to_string();
    let rendered = rendered.trim_end();
    let original = error.message().trim_end();
    // toml says "duplicate key" without naming it: the span does.
    let what = match error.span().and_then(|s| text.get(s)) {
        Some(key) if original == "duplicate key" => {
            format!("duplicate key `{}`: it is set twice", key.trim())
        }
        _ => original.to_owned(),
    };
    let message = match rendered.strip_suffix(original) {
        Some(location) if !original.is_empty() && !location.trim().is_empty() => {
            format!("{what}\n{}", location.trim_end())
        }
        _ => rendered.to_owned(),
    };
    ConfigError::new(origin, toml_error_key(text), message)
}

/// The dotted key a toml type error is about, if there is one.
///
/// toml only exposes the key path in its rendering of span-less errors
/// (``in `groups.web` ``), so the document is re-checked without spans. For
/// an unknown field the field itself is appended (`groups.web.cout`).
fn toml_error_key(text: &str) -> Option<String> {
    let table = text.parse::<Table>().ok()?;
    let error = table.try_into::<Config>().err()?;
    let rendered = error.to_string();
    let parent = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'));
    let unknown = error
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (parent, unknown) {
        (Some(parent), Some(field)) => Some(format!("{parent}.{field}")),
        (parent, field) => parent.or(field).map(str::to_owned),
    }
}

/// Applies one environment override to `table` and re-checks the result.
///
/// A value that parsed as a non-string TOML value but does not fit the key
/// is retried as a plain string (e.g. `worker=123`); if that fails too, the
/// first error is reported against the variable.
fn apply_override(table: &Table, over: &Override) -> Result<(Table, Config), ConfigError> {
    let attempt = |value: toml::Value| -> Result<(Table, Config), String> {
        let mut candidate = table.clone();
        env::set(&mut candidate, &over.path, value)?;
        let config = candidate
            .clone()
            .try_into::<Config>()
            .map_err(|e| e.message().to_owned())?;
        Ok((candidate, config))
    };
    let typed = over.typed_value();
    let was_string = typed.is_str();
    match attempt(typed) {
        Ok(applied) => Ok(applied),
        Err(first) if !was_string => attempt(over.string_value()).map_err(|_| over.error(first)),
        Err(first) => Err(over.error(first)),
    }
}

/// Inserts the default group if none is configured and the admin
/// worker's group if `[admin]` asks for it, then validates.
fn finish(mut config: Config, origin: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    if config.groups.is_empty() {
        config
            .groups
            .insert(DEFAULT_GROUP.to_owned(), GroupConfig::default());
    }
    let admin = validate::validate_admin(&config).map_err(|v| attribute(v, origin, overrides))?;
    if let Some(listen) = admin {
        let group = config.admin.group(listen);
        config.groups.insert(ADMIN_GROUP.to_owned(), group);
    }
    validate::validate(&config).map_err(|v| attribute(v, origin, overrides))?;
    Ok(config)
}

/// Serializes the groups the file or environment defined, not the admin
/// worker's: it is derived from `[admin]` again when the text is read back.
fn serialize_user_groups<S: serde::Serializer>(
    groups: &IndexMap<String, GroupConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let user = groups
        .iter()
        .filter(|(name, g)| !(*name == ADMIN_GROUP && g.worker.as_deref() == Some(ADMIN_WORKER)));
    let mut map = serializer.serialize_map(None)?;
    for (name, group) in user {
        map.serialize_entry(name, group)?;
    }
    map.end()
}

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

/// Blames a violation on the last environment variable that set its key (or
/// a related key, or a table containing one), else on `origin`.
fn attribute(violation: Violation, origin: &str, overrides: &[Override]) -> ConfigError {
    let overlaps = |a: &[String], b: &[String]| a.starts_with(b) || b.starts_with(a);
    let key = violation.key.join(".");
    std::iter::once(&violation.key)
        .chain(&violation.related)
        .find_map(|path| overrides.iter().rev().find(|o| overlaps(&o.path, path)))
        .map_or_else(
            || ConfigError::new(origin, Some(key.clone()), violation.message.clone()),
            |over| {
                ConfigError::env(
                    &over.name,
                    &over.value,
                    Some(key.clone()),
                    violation.message.clone(),
                )
            },
        )
}

#[cfg(test)]
mod tests;
