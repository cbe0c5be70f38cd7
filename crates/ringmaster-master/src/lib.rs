//! The ringmaster master: it binds the listening sockets, starts groups of
//! worker processes (the current binary, re-executed in the worker role),
//! watches them and restarts them, and answers signals.
//!
//! The master runs no user code, no web stack and no database driver: this
//! crate depends on neither `ringmaster-worker` nor axum, sqlx or redis. If
//! the master dies the application is down, so it stays small.
//!
//! # Layout
//!
//! - `listener`: the sockets, shared or one `SO_REUSEPORT` socket per slot.
//! - `spawn`: re-executing a worker with its fds, and its watcher task.
//! - `steer`: the BPF program that steers new connections away from
//!   reuseport sockets about to close.
//! - `supervisor`: the event loop, the worker table and the policies
//!   (restart with backoff, timeouts, rolling reload, scaling, stopping).
//! - `restart`: the restart policy: strikes, exponential backoff, stable
//!   runs, the crash-loop threshold.
//! - `migrate_process`: the one-off migrate process before workers start
//!   (`supervisor::migration` decides when it runs and what a failure does).
//! - `upgrade`: the in-place upgrade's mechanics (preflight, the new
//!   master started beside this one, the hand-over socket).
//! - `signals`: the signals the master answers.
//! - `reaper`: reaping re-parented orphans when the master is PID 1.
//! - `systemd`: `sd_notify` (readiness, status, reload, stop, watchdog)
//!   and socket activation.
//! - [`logs`]: the application log: capture, tagging, sinks, rotation.
//! - `control`: the control socket (`logs`, `logs --follow`).
#![warn(missing_docs)]

mod control;
#[doc(hidden)]
pub mod fuzzing;
mod lifecycle;
mod listener;
pub mod logs;
mod migrate_process;
mod pid_file;
mod reaper;
mod restart;
mod signals;
mod spawn;
mod steer;
mod supervisor;
mod systemd;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use ringmaster_config::{Config, ConfigError};

/// Everything [`serve`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The loaded configuration.
    pub config: Config,
    /// The file it came from, re-read on HUP (`None`: defaults and
    /// environment only).
    pub config_path: Option<PathBuf>,
    /// Names of the worker implementations the binary registered; each
    /// group runs one of them.
    pub known_workers: Vec<String>,
    /// The binary to re-execute for workers; `None` is the current one.
    pub exe: Option<PathBuf>,
    /// Whether to run the binary once in the migrate role before starting
    /// workers, and before each reload's new workers.
    pub migrate: bool,
    /// The application log the workers' output goes to; `None`: workers
    /// write to the master's stdout and stderr directly.
    pub logs: Option<logs::LogHub>,
    /// The application's version (`status`, the upgrade's report).
    pub version: String,
}

impl ServeOptions {
    /// Options for `config`, with the given worker implementations.
    pub fn new(config: Config, known_workers: Vec<String>) -> Self {
        ServeOptions {
            config,
            config_path: None,
            known_workers,
            exe: None,
            migrate: false,
            logs: None,
            version: String::new(),
        }
    }

    /// Sets the application's version.
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Sends the workers' output to `logs`.
    pub fn logs(mut self, logs: logs::LogHub) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Runs migrations (a one-off process) before workers start.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Sets the file re-read on HUP.
    pub fn config_path(mut self, path: Option<PathBuf>) -> Self {
        self.config_path = path;
        self
    }
}

/// Why the master could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MasterError {
    /// A group's address cannot be bound.
    #[error(
        "cannot listen on {addr} for group \"{group}\": {source}; stop the other process \
         or set groups.{group}.listen (or RINGMASTER__GROUPS__{}__LISTEN)",
        group.to_uppercase()
    )]
    Bind {
        /// The group.
        group: String,
        /// The configured address.
        addr: SocketAddr,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// The sockets systemd passed (socket activation) do not fit the
    /// groups.
    #[error("{0}")]
    Activation(String),
    /// This new master of an upgrade could not take over (the old one
    /// serves on).
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(#[source] ConfigError),
    /// A group names no worker implementation this binary has.
    #[error("{0}")]
    Worker(String),
    /// The path of the current binary cannot be found.
    #[error("cannot find the path of the running binary to start workers: {0}")]
    Exe(#[source] std::io::Error),
    /// The migrations failed; no worker was started.
    #[error("{0}")]
    Migrate(String),
    /// The runtime could not be built.
    #[error("cannot start the master's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The pid file cannot be written (`server.pid_file`).
    #[error("server.pid_file: {0}")]
    PidFile(String),
    /// The control socket cannot be opened (`server.control_socket`).
    #[error("server.control_socket: {0}")]
    Control(String),
    /// The registry segment could not be created.
    #[error(
        "cannot create the metrics registry: {0}; check server.registry_size and the memory limits"
    )]
    Registry(#[source] ringmaster_registry::RegistryError),
}

/// A master that has bound its sockets and is ready to [`Master::run`].
pub struct Master {
    supervisor: supervisor::Supervisor,
}

impl Master {
    /// Checks the groups' worker names and binds every group's address. No
    /// worker is started yet: a port in use fails here, before any process.
    ///
    /// Must be called inside a tokio runtime (it creates channels and
    /// sockets registered with it).
    pub fn bind(mut opts: ServeOptions) -> Result<Self, MasterError> {
        opts.config
            .resolve_workers(&opts.known_workers)
            .map_err(MasterError::Worker)?;
        let exe = match opts.exe.clone() {
            Some(exe) => exe,
            None => current_exe().map_err(MasterError::Exe)?,
        };
        Ok(Master {
            supervisor: supervisor::Supervisor::new(opts, exe)?,
        })
    }

    /// The address each group listens on (the real port when the
    /// configuration said 0), in configuration order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.supervisor.addresses()
    }

    /// Starts the workers and supervises them until a stop signal, or until
    /// `shutdown` completes (a graceful stop), and every worker has exited.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        self.supervisor.run(shutdown).await
    }
}

/// Runs a master on a current-thread runtime until it is stopped by a signal.
pub fn serve(opts: ServeOptions) -> Result<(), MasterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MasterError::Runtime)?;
    let logs = opts.logs.clone();
    runtime.block_on(async {
        let master = Master::bind(opts)?;
        let result = master.run(std::future::pending()).await;
        if let Some(logs) = logs {
            logs.drain(std::time::Duration::from_secs(2)).await;
        }
        result
    })
}

/// What this binary's preflight prints (`__preflight`), for an old master
/// about to upgrade to it: its hand-over and registry layout versions and
/// the application's `version`.
pub fn preflight_report(version: &str) -> ringmaster_proto::handoff::Preflight {
    ringmaster_proto::handoff::Preflight {
        handover: ringmaster_proto::handoff::HANDOVER_VERSION,
        registry_layout: ringmaster_registry::LAYOUT.to_string(),
        version: version.to_string(),
    }
}

/// The path of the running binary, for re-executing it. When the file was
/// replaced on disk (a new build), the path names the new binary, which is
/// what a reload should start.
pub(crate) fn current_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(stripped) => Ok(PathBuf::from(stripped)),
        None => Ok(exe),
    }
}
