//! What a master hands to a worker process it re-executes: file descriptors
//! at fixed numbers and a few environment variables.
//!
//! The master maps each fd to its number between `fork` and `exec`; the
//! worker takes ownership of them once, at start-up.

use std::os::fd::RawFd;

/// The listening TCP socket of the worker's group (or of its slot).
pub const LISTENER_FD: RawFd = 3;
/// The worker's end of its IPC socket pair (a Unix stream socket).
pub const IPC_FD: RawFd = 4;
/// The registry segment (a memfd) to map; see `ringmaster-registry`.
pub const REGISTRY_FD: RawFd = 5;
/// The write end of the pipe for the worker's `tracing` output, when
/// [`ENV_LOG_PIPE`] is set; the worker writes it without blocking.
pub const LOG_FD: RawFd = 6;
/// The worker's end of a Unix datagram socket pair on which the master
/// hands it connections, one fd per datagram (`SCM_RIGHTS`), when
/// [`ENV_ADOPT`] is set: those queued on the socket of a slot of its group
/// without a ready worker (one that died, or one still booting), so that
/// they wait for no replacement.
pub const ADOPT_FD: RawFd = 7;

/// Set to [`ROLE_WORKER`] in a worker's environment; absent in the master.
pub const ENV_ROLE: &str = "RINGMASTER_ROLE";
/// The value of [`ENV_ROLE`] that selects the worker role.
pub const ROLE_WORKER: &str = "worker";
/// The value of [`ENV_ROLE`] for the one-off process that runs migrations
/// before workers start; it gets [`ENV_CONFIG`] and [`ENV_MASTER_PID`] only.
pub const ROLE_MIGRATE: &str = "migrate";
/// Name of the worker's group.
pub const ENV_GROUP: &str = "RINGMASTER_GROUP";
/// Slot index of the worker inside its group (0-based).
pub const ENV_SLOT: &str = "RINGMASTER_SLOT";
/// Generation of the slot: how many processes the slot has started before.
pub const ENV_GENERATION: &str = "RINGMASTER_GENERATION";
/// Pid of the master; the worker exits at once if its parent is another one.
pub const ENV_MASTER_PID: &str = "RINGMASTER_MASTER_PID";
/// The master's resolved configuration, as TOML text.
pub const ENV_CONFIG: &str = "RINGMASTER_CONFIG";
/// Set to `1` when the master reads the worker's log lines on [`LOG_FD`].
pub const ENV_LOG_PIPE: &str = "RINGMASTER_LOG_PIPE";
/// The worker's row in the registry segment; absent when the registry has
/// no row for it (its metrics then stay in the process).
pub const ENV_REGISTRY_ROW: &str = "RINGMASTER_REGISTRY_ROW";

/// Set to `1` when the master hands connections over on [`ADOPT_FD`].
pub const ENV_ADOPT: &str = "RINGMASTER_ADOPT";

/// Every variable of the hand-over, so that a master can scrub inherited
/// values before it sets its own.
pub const ALL_ENV: [&str; 9] = [
    ENV_ADOPT,
    ENV_ROLE,
    ENV_GROUP,
    ENV_SLOT,
    ENV_GENERATION,
    ENV_MASTER_PID,
    ENV_CONFIG,
    ENV_REGISTRY_ROW,
    ENV_LOG_PIPE,
];

/// The service manager's variables (systemd's `sd_notify` and socket
/// activation): meant for the master alone, so a master removes them from
/// every process it starts. A worker that saw `NOTIFY_SOCKET` could tell
/// systemd it is the service; one that saw `LISTEN_FDS` could take the
/// master's sockets for its own.
pub const SERVICE_MANAGER_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];
