//! The cluster's status as the master sees it: what `status --json`, the
//! control socket, the admin worker's `/status` and [`Service::Status`]
//! all answer with, in one set of types.
//!
//! The same value travels as postcard over IPC and as JSON on the control
//! socket, so these types use no serde attribute that a format without
//! field names could not follow (nothing is skipped: an absent value is
//! `None`, JSON `null`). `docs/control.md` documents the JSON.
//!
//! [`Service::Status`]: crate::Service::Status

use serde::{Deserialize, Serialize};

use crate::{IpcStats, LogLevel};

/// The cluster as the master sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The master's process id.
    pub master_pid: u32,
    /// The application's version, as its binary declares it
    /// (`Cluster::version`; empty from a master that predates it).
    #[serde(default)]
    pub version: String,
    /// Milliseconds since the master started.
    pub uptime_ms: u64,
    /// `starting` (start-up migrations before the first workers),
    /// `running`, `reloading` or `stopping`.
    pub state: String,
    /// The rolling reload in progress, if any.
    pub reload: Option<ReloadProgress>,
    /// Every group, in configuration order.
    pub groups: Vec<GroupStatus>,
    /// Counters of the IPC pool.
    pub ipc: IpcStats,
    /// The bridge to other hosts, when `[bridge]` is on.
    pub bridge: Option<BridgeStatus>,
}

/// The bridge to other hosts over NATS, as the master reads it from the
/// bridge worker's registry row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// The NATS server(s), passwords replaced by `***`.
    pub url: String,
    /// The topics it carries.
    pub topics: Vec<String>,
    /// `connected`, `disconnected` (the bridge worker runs and reconnects)
    /// or `down` (no ready bridge worker) ([`BridgeState`]).
    pub state: String,
    /// Whether the cluster is unready while the bridge is not connected
    /// (`bridge.required`).
    pub required: bool,
    /// Local publications sent to NATS.
    pub sent: u64,
    /// Publications from other hosts delivered here.
    pub received: u64,
    /// Messages lost on the way in or out (NATS down, a slow consumer,
    /// a publish that failed).
    pub dropped: u64,
}

/// The names of the bridge's states, as [`BridgeStatus::state`] holds them.
#[derive(Debug)]
#[non_exhaustive]
pub struct BridgeState;

impl BridgeState {
    /// Connected to a NATS server.
    pub const CONNECTED: &'static str = "connected";
    /// The bridge worker runs but has no NATS connection; it reconnects.
    pub const DISCONNECTED: &'static str = "disconnected";
    /// No bridge worker is ready (booting, restarting, or crash-looping).
    pub const DOWN: &'static str = "down";
}

impl ClusterStatus {
    /// The groups that keep the cluster from being ready: below their
    /// desired ready count, or crash-looping. Empty when every group is
    /// ready (what `/readyz` checks).
    pub fn unready_groups(&self) -> Vec<&GroupStatus> {
        self.groups
            .iter()
            .filter(|g| g.ready < g.count || g.state == GroupState::CRASH_LOOPING)
            .collect()
    }

    /// Whether a required bridge (`bridge.required`) is not connected,
    /// which keeps the cluster from being ready.
    pub fn bridge_blocks_readiness(&self) -> bool {
        self.bridge
            .as_ref()
            .is_some_and(|b| b.required && b.state != BridgeState::CONNECTED)
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&GroupStatus> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// A rolling reload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadProgress {
    /// The groups it replaces.
    pub groups: Vec<String>,
    /// Slots replaced so far.
    pub done: u32,
    /// Slots to replace in all.
    pub total: u32,
}

/// The names of a group's states, as [`GroupStatus::state`] holds them.
#[derive(Debug)]
#[non_exhaustive]
pub struct GroupState;

impl GroupState {
    /// Every slot has a ready worker.
    pub const OK: &'static str = "ok";
    /// Fewer ready workers than the group's count.
    pub const DEGRADED: &'static str = "degraded";
    /// A slot's workers keep exiting before a stable run; the master
    /// retries with backoff.
    pub const CRASH_LOOPING: &'static str = "crash-looping";
}

/// One group's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group name.
    pub name: String,
    /// The concrete worker implementation it runs.
    pub worker: String,
    /// The address it listens on.
    pub listen: String,
    /// `reuseport` or `shared`.
    pub listen_mode: String,
    /// Desired number of workers.
    pub count: u32,
    /// Slots whose serving worker is ready.
    pub ready: u32,
    /// `ok`, `degraded` or `crash-looping` ([`GroupState`]).
    pub state: String,
    /// The group's most recent unexpected exit, if any.
    pub last_exit: Option<ExitInfo>,
    /// Every worker process of the group, and every slot that has none
    /// (waiting for a restart), by slot; during a reload a slot has two.
    pub workers: Vec<WorkerStatus>,
}

/// One worker process, or a slot waiting for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its slot.
    pub slot: u32,
    /// Its process id; `None` for a slot waiting for a restart.
    pub pid: Option<u32>,
    /// `booting`, `ready`, `draining`, or `waiting` (no process).
    pub state: String,
    /// How many workers the slot started before it.
    pub generation: u64,
    /// Milliseconds since it was started.
    pub uptime_ms: u64,
    /// Unexpected exits of this slot's workers since the master started.
    pub restarts: u64,
    /// Milliseconds since its last heartbeat (ready workers only).
    pub heartbeat_age_ms: Option<u64>,
    /// Resident memory in bytes, sampled every second.
    pub rss_bytes: u64,
    /// CPU use over the last second, in percent of one core.
    pub cpu_percent: f64,
    /// Requests being served by the slot now (from the registry).
    pub in_flight: i64,
    /// Requests the slot has served since the master started.
    pub requests_total: u64,
    /// Requests per second over the last 10 seconds.
    pub requests_per_sec: f64,
    /// 99th percentile latency over the last 10 seconds, in milliseconds;
    /// `None` without requests.
    pub p99_ms: Option<f64>,
    /// Why it is draining or being replaced: `reload`, `restart`,
    /// `scale down`, `stop`, `recycled: max_requests`, `recycled: max_rss`.
    pub reason: Option<String>,
    /// For a waiting slot: milliseconds until the next start.
    pub restart_in_ms: Option<u64>,
    /// How the slot's previous worker ended, if one did.
    pub last_exit: Option<ExitInfo>,
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Its process id.
    pub pid: u32,
    /// `exit code 1`, `signal 9 (SIGKILL)`.
    pub status: String,
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Why, as far as the master knows: its kill's reason, what the worker
    /// said in `Fatal`, `unexpected exit`, or the reason it was drained
    /// (`reload`, `recycled: max_rss`, ...).
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Lines of the master's log, for the admin worker's log tail
/// ([`Service::Logs`](crate::Service::Logs)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    /// The lines after the asked sequence number, oldest first.
    pub lines: Vec<LogLine>,
    /// The sequence number to ask after next time.
    pub next: u64,
    /// Lines that were newer than asked but are gone from the master's
    /// ring, or past the asked maximum.
    pub skipped: u64,
}

/// One tagged log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its sequence number in the master's log (1 for the first line).
    pub seq: u64,
    /// The group, or `master`.
    pub group: String,
    /// The slot, for a worker's line.
    pub slot: Option<u32>,
    /// Its level, when it has one (JSON: `"INFO"`).
    pub level: Option<LogLevel>,
    /// The line as written to the log.
    pub text: String,
}
