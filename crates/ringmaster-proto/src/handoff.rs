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
/// A random id of the master process (hex), the same for every worker it
/// starts and new with every master: what tells one host's bridge from
/// another's, whatever their host names and pids.
pub const ENV_INSTANCE: &str = "RINGMASTER_INSTANCE";
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
pub const ALL_ENV: [&str; 10] = [
    ENV_ADOPT,
    ENV_ROLE,
    ENV_GROUP,
    ENV_SLOT,
    ENV_GENERATION,
    ENV_MASTER_PID,
    ENV_INSTANCE,
    ENV_CONFIG,
    ENV_REGISTRY_ROW,
    ENV_LOG_PIPE,
];

/// Set in a new master that an old one starts for an in-place upgrade:
/// the fd number of its end of the hand-over socket (a Unix stream socket
/// carrying [`Handover`] lines).
pub const ENV_UPGRADE_FD: &str = "RINGMASTER_UPGRADE_FD";
/// In an upgrade: how many listening sockets the old master passes, at
/// fds 3, 4, ... (as systemd's `LISTEN_FDS`).
pub const ENV_UPGRADE_LISTEN_FDS: &str = "RINGMASTER_UPGRADE_LISTEN_FDS";
/// In an upgrade: the group of each passed socket, `:`-separated, in fd
/// order (a reuseport group's sockets in slot order).
pub const ENV_UPGRADE_LISTEN_NAMES: &str = "RINGMASTER_UPGRADE_LISTEN_NAMES";
/// In an upgrade: the fd of the old master's registry segment, read to
/// carry every counter's value over.
pub const ENV_UPGRADE_REGISTRY_FD: &str = "RINGMASTER_UPGRADE_REGISTRY_FD";
/// In an upgrade: the reuseport groups (`,`-separated) whose sockets the
/// kernel no longer holds in slot order (sockets were added while others
/// closed): the new master does not steer them either.
pub const ENV_UPGRADE_UNORDERED: &str = "RINGMASTER_UPGRADE_UNORDERED";

/// The upgrade's variables: set in a new master only, so removed from
/// every process a master starts.
pub const UPGRADE_ENV: [&str; 5] = [
    ENV_UPGRADE_FD,
    ENV_UPGRADE_LISTEN_FDS,
    ENV_UPGRADE_LISTEN_NAMES,
    ENV_UPGRADE_REGISTRY_FD,
    ENV_UPGRADE_UNORDERED,
];

/// The version of the upgrade hand-over (these variables and the
/// [`Handover`] lines): an old master upgrades only to a binary whose
/// preflight reports the same.
pub const HANDOVER_VERSION: u32 = 1;

/// A line on the hand-over socket between an old master and the new one
/// it started (JSON, one per line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handover {
    /// New to old: every group has its ready count; the new master serves
    /// and owns the control socket and the pid file from now on.
    Ready {
        /// The new master's pid.
        pid: u32,
        /// Its application version.
        version: String,
    },
    /// New to old: the new master cannot start; it exits.
    Failed {
        /// Why, as the new master would print it.
        error: String,
    },
    /// Old to new: systemd was told the new master is the service's main
    /// process (`MAINPID=`), so the new master speaks to systemd from now
    /// on (before, systemd would refuse its messages).
    Announced,
    /// Old to new: every old worker has exited; the old master exits now
    /// (its counters are final).
    Done,
}

/// What a binary's preflight prints (one JSON line) before an old master
/// upgrades to it: the configuration loaded and its worker
/// implementations resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preflight {
    /// [`HANDOVER_VERSION`] of the binary.
    pub handover: u32,
    /// The registry segment's layout of the binary.
    pub registry_layout: String,
    /// The application version.
    pub version: String,
}

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
