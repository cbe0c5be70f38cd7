//! A `[groups.NAME]` table ([`GroupConfig`]): one group of identical
//! worker processes (count, address, timeouts, limits, recycling), with
//! its defaults, and [`ListenMode`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{MAX_WORKERS, duration, fields};

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
