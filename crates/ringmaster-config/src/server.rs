//! The `[server]` table ([`ServerConfig`]): the master process's own
//! settings (control socket, IPC queues, the metrics registry, logging),
//! with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{duration, fields};

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
    /// (see [`Config::registry_slots`](crate::Config::registry_slots)).
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
    /// On a graceful stop (TERM, `stop`), how long `/readyz` answers 503
    /// while every worker still serves, before the drain starts: time for
    /// a load balancer (a Kubernetes Service's endpoints) to stop sending
    /// new requests, so none is refused. Default 0 (drain at once).
    #[serde(with = "duration::serde")]
    pub shutdown_delay: Duration,
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
            shutdown_delay: Duration::ZERO,
        }
    }
}
