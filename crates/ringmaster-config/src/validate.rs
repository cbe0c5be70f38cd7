//! Checks that hold across keys or beyond what the types enforce.
//!
//! [`validate`] reports the first problem as a [`Violation`] naming the key
//! path (and any other key involved); the caller turns it into a
//! [`crate::ConfigError`] attributed to the file or environment variable
//! that set the key.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The longest duration any key accepts: longer values are mistakes, and
/// deadlines computed from them must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most runtime threads a worker may start.
const MAX_THREADS: usize = 1024;
/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The smallest `max_rss`: below it every worker would be recycled at once.
const MIN_MAX_RSS: u64 = 16 << 20;
/// Heartbeats more frequent than this would flood the master.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

use crate::backend::MAX_POOL_SIZE;
use crate::{
    ADMIN_GROUP, ADMIN_WORKER, BRIDGE_GROUP, BRIDGE_WORKER, BackendConfig, Config, GroupConfig,
    MAX_WORKERS, ServerConfig, bridge, duration,
};

/// A failed check: the key at fault, other keys involved, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Key path at fault, e.g. `["groups", "web", "count"]`.
    pub(crate) key: Vec<String>,
    /// Other keys whose values take part in the problem.
    pub(crate) related: Vec<Vec<String>>,
    /// What is wrong and what is expected.
    pub(crate) message: String,
}

fn group_key(group: &str, field: &str) -> Vec<String> {
    vec!["groups".to_owned(), group.to_owned(), field.to_owned()]
}

fn backend_key(backend: &str, field: &str) -> Vec<String> {
    vec!["backends".to_owned(), backend.to_owned(), field.to_owned()]
}

fn violation(key: Vec<String>, message: String) -> Violation {
    Violation {
        key,
        related: Vec::new(),
        message,
    }
}

/// Whether `name` may be used as a group or backend name: `[a-z0-9_-]+`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Validates a fully loaded config (groups already defaulted).
pub(crate) fn validate(config: &Config) -> Result<(), Violation> {
    if config.server.control_socket.as_os_str().is_empty() {
        return Err(violation(
            vec!["server".to_owned(), "control_socket".to_owned()],
            "expected a socket path such as \"ringmaster.sock\", got an empty string".to_owned(),
        ));
    }
    let socket_len = config.server.control_socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        return Err(violation(
            vec!["server".to_owned(), "control_socket".to_owned()],
            format!(
                "a Unix socket path has at most {MAX_SOCKET_PATH} bytes, this one {socket_len}; \
                 use a shorter (or relative) path"
            ),
        ));
    }
    validate_server(&config.server)?;
    for name in config.groups.keys() {
        if !is_valid_name(name) {
            return Err(violation(
                vec!["groups".to_owned(), name.clone()],
                format!(
                    "invalid group name {name:?}: use only lowercase letters, digits, `_` and \
                     `-`, so that environment variables (RINGMASTER__GROUPS__<NAME>__...) \
                     can address the group"
                ),
            ));
        }
    }
    for (name, group) in &config.groups {
        validate_group(name, group)?;
    }
    check_listen_conflicts(config)?;
    validate_registry_slots(config)?;
    for name in config.backends.keys() {
        if !is_valid_name(name) {
            return Err(violation(
                vec!["backends".to_owned(), name.clone()],
                format!(
                    "invalid backend name {name:?}: use only lowercase letters, digits, `_` \
                     and `-`, so that environment variables \
                     (RINGMASTER__BACKENDS__<NAME>__...) can address the backend"
                ),
            ));
        }
    }
    for (name, backend) in &config.backends {
        validate_backend(name, backend)?;
    }
    Ok(())
}

/// The shortest `admin.token` accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Checks `[admin]` before its group is added: no group of the file may
/// take the admin worker's name or implementation, and an address other
/// than loopback needs a token. Returns the address to serve on, if any.
pub(crate) fn validate_admin(config: &Config) -> Result<Option<SocketAddr>, Violation> {
    let key = |field: &str| vec!["admin".to_owned(), field.to_owned()];
    for (name, group) in &config.groups {
        if group.worker.as_deref() == Some(ADMIN_WORKER) {
            return Err(violation(
                group_key(name, "worker"),
                format!(
                    "{ADMIN_WORKER:?} is the built-in admin worker; turn it on with [admin] listen = \"127.0.0.1:9100\" instead of a group"
                ),
            ));
        }
    }
    if let Some(token) = &config.admin.token
        && token.chars().count() < MIN_TOKEN_LEN
    {
        return Err(violation(
            key("token"),
            format!(
                "expected a token of at least {MIN_TOKEN_LEN} characters (a long random string, e.g. from `openssl rand -hex 24`), got {} characters",
                token.chars().count()
            ),
        ));
    }
    let Some(listen) = config.admin.listen else {
        return Ok(None);
    };
    if config.groups.contains_key(ADMIN_GROUP) {
        return Err(Violation {
            key: vec!["groups".to_owned(), ADMIN_GROUP.to_owned()],
            related: vec![key("listen")],
            message: format!(
                "the group name {ADMIN_GROUP:?} is the admin worker's when [admin] listen is set; rename this group"
            ),
        });
    }
    if !listen.ip().is_loopback() && config.admin.token.is_none() {
        return Err(Violation {
            key: key("token"),
            related: vec![key("listen")],
            message: format!(
                "required when admin.listen ({listen}) is not a loopback address: the admin worker shows the whole cluster and its logs; set admin.token (or RINGMASTER__ADMIN__TOKEN) to a long random string, or listen on 127.0.0.1"
            ),
        });
    }
    Ok(Some(listen))
}

/// Checks the settings of `[server]` alone.
fn validate_server(server: &ServerConfig) -> Result<(), Violation> {
    let key = |field: &str| vec!["server".to_owned(), field.to_owned()];
    // (key, value, min, max, unit)
    let ranges: [(&str, usize, usize, usize, &str); 7] = [
        ("ipc_queue", server.ipc_queue, 1, 1 << 20, ""),
        ("ipc_max_pending", server.ipc_max_pending, 1, 1 << 20, ""),
        (
            "registry_size",
            server.registry_size,
            1 << 20,
            1 << 34,
            " bytes",
        ),
        ("log_max_line", server.log_max_line, 256, 1 << 20, " bytes"),
        ("log_buffer", server.log_buffer, 64 << 10, 1 << 30, " bytes"),
        ("log_ring", server.log_ring, 0, 100_000, " lines"),
        ("log_keep", server.log_keep, 0, 10_000, " files"),
    ];
    for (field, value, min, max, unit) in ranges {
        if !(min..=max).contains(&value) {
            return Err(violation(
                key(field),
                format!("expected a number from {min} to {max}{unit}, got {value}"),
            ));
        }
    }
    if server.ipc_stall_timeout.is_zero() {
        return Err(zero_duration(key("ipc_stall_timeout")));
    }
    if server.shutdown_delay > MAX_DURATION {
        return Err(too_long(key("shutdown_delay"), server.shutdown_delay));
    }
    if server.ipc_stall_timeout > MAX_DURATION {
        return Err(too_long(key("ipc_stall_timeout"), server.ipc_stall_timeout));
    }
    if server.pid_file.as_os_str().is_empty() {
        return Err(violation(
            key("pid_file"),
            "expected a file path such as \"ringmaster.pid\", got an empty string".to_owned(),
        ));
    }
    if server
        .log_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(violation(
            key("log_file"),
            "expected a file path such as \"log/app.log\" (or no log_file: stderr), got an empty string".to_owned(),
        ));
    }
    Ok(())
}

/// Checks `server.registry_slots` against the groups' workers.
fn validate_registry_slots(config: &Config) -> Result<(), Violation> {
    let key = vec!["server".to_owned(), "registry_slots".to_owned()];
    let Some(slots) = config.server.registry_slots else {
        return Ok(());
    };
    if slots == 0 || slots > MAX_WORKERS * 4 {
        return Err(violation(
            key,
            format!(
                "expected a number from 1 to {}, got {slots}",
                MAX_WORKERS * 4
            ),
        ));
    }
    let workers: usize = config.groups.values().map(|g| g.count).sum();
    if slots < workers {
        let mut v = violation(
            key,
            format!(
                "the groups run {workers} workers but the registry has {slots} rows; raise registry_slots to at least {workers}"
            ),
        );
        v.related = config
            .groups
            .keys()
            .map(|g| group_key(g, "count"))
            .collect();
        return Err(v);
    }
    Ok(())
}

/// The error for a zero duration where a positive one is required.
fn zero_duration(key: Vec<String>) -> Violation {
    violation(
        key,
        "expected a duration greater than zero, such as \"30s\" or \"250ms\", got \"0s\""
            .to_owned(),
    )
}

/// The error for a duration above [`MAX_DURATION`].
fn too_long(key: Vec<String>, value: Duration) -> Violation {
    violation(
        key,
        format!(
            "expected a duration of at most 30 days, got {}",
            duration::format(value)
        ),
    )
}

/// Checks one backend. Messages show its URL only redacted.
fn validate_backend(name: &str, backend: &BackendConfig) -> Result<(), Violation> {
    let key = |field: &str| backend_key(name, field);
    if backend.url.trim().is_empty() {
        return Err(violation(
            key("url"),
            "expected a backend URL such as \"sqlite://app.db\", \"postgres://user@host/db\" \
             or \"redis://host:6379\", got an empty string (omit the backend to use \
             sqlite://NAME.db)"
                .to_owned(),
        ));
    }
    backend
        .kind()
        .map_err(|message| violation(key("url"), message))?;
    if !(1..=MAX_POOL_SIZE).contains(&backend.pool_size) {
        return Err(violation(
            key("pool_size"),
            format!(
                "expected an integer from 1 to {MAX_POOL_SIZE}, got {}",
                backend.pool_size
            ),
        ));
    }
    if backend.connect_timeout.is_zero() {
        return Err(zero_duration(key("connect_timeout")));
    }
    if backend.connect_timeout > MAX_DURATION {
        return Err(too_long(key("connect_timeout"), backend.connect_timeout));
    }
    if backend.acquire_timeout.is_zero() {
        return Err(zero_duration(key("acquire_timeout")));
    }
    if backend.acquire_timeout > MAX_DURATION {
        return Err(too_long(key("acquire_timeout"), backend.acquire_timeout));
    }
    Ok(())
}

/// Checks one group, concern by concern, in a fixed order: the first
/// problem found is the one reported.
fn validate_group(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    check_processes(name, group)?;
    check_sizes(name, group)?;
    check_durations(name, group)?;
    check_heartbeat(name, group)?;
    check_recycling(name, group)?;
    check_backoff(name, group)?;
    Ok(())
}

/// The group's worker implementation, process count, backlog and
/// runtime threads.
fn check_processes(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    if let Some(worker) = &group.worker
        && worker.trim().is_empty()
    {
        return Err(violation(
            key("worker"),
            "expected the name of a worker implementation, got an empty string \
             (omit the key to use the default worker)"
                .to_owned(),
        ));
    }
    if !(1..=MAX_WORKERS).contains(&group.count) {
        return Err(violation(
            key("count"),
            format!(
                "expected an integer from 1 to {MAX_WORKERS}, got {}",
                group.count
            ),
        ));
    }
    if group.backlog == 0 {
        return Err(violation(
            key("backlog"),
            "expected a positive integer, got 0".to_owned(),
        ));
    }
    if let Some(threads) = group.threads
        && !(1..=MAX_THREADS).contains(&threads)
    {
        return Err(violation(
            key("threads"),
            format!(
                "expected an integer from 1 to {MAX_THREADS} (runtime threads per worker), got \
                 {threads} (omit the key to pick automatically)"
            ),
        ));
    }
    Ok(())
}

/// The body limit and the bounds of connections and request heads.
fn check_sizes(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    if group.body_limit == 0 {
        return Err(violation(
            key("body_limit"),
            "expected a positive number of bytes, got 0".to_owned(),
        ));
    }
    // (key, value, min, max, unit)
    let ranges: [(&str, usize, usize, usize, &str); 4] = [
        ("max_connections", group.max_connections, 1, 1_000_000, ""),
        (
            "max_header_bytes",
            group.max_header_bytes,
            1024,
            1 << 20,
            " bytes",
        ),
        ("max_headers", group.max_headers, 1, 10_000, ""),
        ("max_uri_bytes", group.max_uri_bytes, 16, 1 << 20, " bytes"),
    ];
    for (field, value, min, max, unit) in ranges {
        if !(min..=max).contains(&value) {
            return Err(violation(
                key(field),
                format!("expected a number from {min} to {max}{unit}, got {value}"),
            ));
        }
    }
    Ok(())
}

/// Durations that must be positive, and every duration's upper bound.
fn check_durations(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    let positive: [(&str, Duration); 9] = [
        ("boot_timeout", group.boot_timeout),
        ("heartbeat_interval", group.heartbeat_interval),
        ("heartbeat_timeout", group.heartbeat_timeout),
        ("drain_timeout", group.drain_timeout),
        ("min_uptime", group.min_uptime),
        ("restart_backoff_max", group.restart_backoff_max),
        ("request_timeout", group.request_timeout),
        ("header_read_timeout", group.header_read_timeout),
        ("keepalive_timeout", group.keepalive_timeout),
    ];
    for (field, value) in positive {
        if value.is_zero() {
            return Err(zero_duration(key(field)));
        }
    }
    let all: [(&str, Duration); 10] = [
        ("boot_timeout", group.boot_timeout),
        ("heartbeat_interval", group.heartbeat_interval),
        ("heartbeat_timeout", group.heartbeat_timeout),
        ("drain_timeout", group.drain_timeout),
        ("min_uptime", group.min_uptime),
        ("restart_backoff", group.restart_backoff),
        ("restart_backoff_max", group.restart_backoff_max),
        ("request_timeout", group.request_timeout),
        ("header_read_timeout", group.header_read_timeout),
        ("keepalive_timeout", group.keepalive_timeout),
    ];
    for (field, value) in all {
        if value > MAX_DURATION {
            return Err(too_long(key(field), value));
        }
    }
    Ok(())
}

/// The heartbeat interval's floor, and a timeout longer than it.
fn check_heartbeat(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    if group.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
        return Err(violation(
            key("heartbeat_interval"),
            format!(
                "expected at least 10ms (each heartbeat is a message to the master), got {}",
                duration::format(group.heartbeat_interval)
            ),
        ));
    }
    if group.heartbeat_timeout <= group.heartbeat_interval {
        return Err(Violation {
            key: key("heartbeat_timeout"),
            related: vec![key("heartbeat_interval")],
            message: format!(
                "expected a duration longer than heartbeat_interval ({}), got {}",
                duration::format(group.heartbeat_interval),
                duration::format(group.heartbeat_timeout)
            ),
        });
    }
    Ok(())
}

/// `max_requests_jitter` needs `max_requests`; `max_rss` has a floor.
fn check_recycling(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    if group.max_requests_jitter > 0 && group.max_requests == 0 {
        return Err(Violation {
            key: key("max_requests_jitter"),
            related: vec![key("max_requests")],
            message: "has no effect without max_requests; set max_requests too (or remove \
                      max_requests_jitter)"
                .to_owned(),
        });
    }
    if group.max_rss > 0 && group.max_rss < MIN_MAX_RSS {
        return Err(violation(
            key("max_rss"),
            format!(
                "expected at least {MIN_MAX_RSS} bytes (16 MiB; a worker's own resident \
                 memory is rarely below it) or 0 for no limit, got {}",
                group.max_rss
            ),
        ));
    }
    Ok(())
}

/// The restart backoff's cap is at least its start.
fn check_backoff(name: &str, group: &GroupConfig) -> Result<(), Violation> {
    let key = |field: &str| group_key(name, field);
    if group.restart_backoff_max < group.restart_backoff {
        return Err(Violation {
            key: key("restart_backoff_max"),
            related: vec![key("restart_backoff")],
            message: format!(
                "expected a duration at least restart_backoff ({}), got {}",
                duration::format(group.restart_backoff),
                duration::format(group.restart_backoff_max)
            ),
        });
    }
    Ok(())
}

/// Whether two listen addresses would collide when both are bound.
/// Port 0 never collides (the kernel picks a free port for each).
fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (a, b) = (a.ip(), b.ip());
    if a == b {
        return true;
    }
    // A wildcard address covers every address of its family, and the IPv6
    // wildcard (dual-stack by default on Linux) covers IPv4 as well.
    let v6_wildcard = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    let same_family = a.is_ipv4() == b.is_ipv4();
    v6_wildcard(a) || v6_wildcard(b) || (same_family && (a.is_unspecified() || b.is_unspecified()))
}

/// How to resolve a listen conflict.
const FIX: &str = "give each group its own address or port (port 0 picks a free one)";

fn check_listen_conflicts(config: &Config) -> Result<(), Violation> {
    for (index, (name, group)) in config.groups.iter().enumerate() {
        for (earlier, other) in config.groups.iter().take(index) {
            if collides(group.listen, other.listen) {
                return Err(Violation {
                    key: group_key(name, "listen"),
                    related: vec![group_key(earlier, "listen")],
                    message: if group.listen == other.listen {
                        format!(
                            "groups {earlier:?} and {name:?} both listen on {}; {FIX}",
                            group.listen
                        )
                    } else {
                        format!(
                            "groups {earlier:?} ({}) and {name:?} ({}) listen on overlapping \
                             addresses; {FIX}",
                            other.listen, group.listen
                        )
                    },
                });
            }
        }
    }
    Ok(())
}

/// The longest IPC topic name (the master's limit).
const MAX_TOPIC_LEN: usize = 256;

/// Checks `[bridge]` before its group is added: a URL the NATS client
/// reads, topics that are NATS subjects, one way to log in, and no group
/// of the file taking the bridge's name or implementation.
pub(crate) fn validate_bridge(config: &Config) -> Result<(), Violation> {
    let key = |field: &str| vec!["bridge".to_owned(), field.to_owned()];
    let b = &config.bridge;
    for (name, group) in &config.groups {
        if group.worker.as_deref() == Some(BRIDGE_WORKER) {
            return Err(violation(
                group_key(name, "worker"),
                format!(
                    "{BRIDGE_WORKER:?} is the built-in bridge worker; turn it on with [bridge] url = \"nats://127.0.0.1:4222\" instead of a group"
                ),
            ));
        }
    }
    let Some(url) = &b.url else {
        if b.is_off() {
            return Ok(());
        }
        return Err(violation(
            key("url"),
            "required: [bridge] has settings but no url; set bridge.url = \"nats://127.0.0.1:4222\" (or remove [bridge])".to_owned(),
        ));
    };
    if config.groups.contains_key(BRIDGE_GROUP) {
        return Err(Violation {
            key: vec!["groups".to_owned(), BRIDGE_GROUP.to_owned()],
            related: vec![key("url")],
            message: format!(
                "the group name {BRIDGE_GROUP:?} is the bridge worker's when [bridge] url is set; rename this group"
            ),
        });
    }
    for server in url.split(',').map(str::trim) {
        let scheme = server.split_once("://").map(|(s, _)| s);
        let host = server.split_once("://").map_or("", |(_, h)| h);
        if !matches!(scheme, Some("nats" | "tls")) || host.is_empty() {
            return Err(violation(
                key("url"),
                format!(
                    "expected nats://HOST:PORT or tls://HOST:PORT (several separated by commas), got {:?}",
                    crate::backend::redact_url(server)
                ),
            ));
        }
    }
    if b.topics.is_empty() {
        return Err(violation(
            key("topics"),
            "expected the IPC topics to carry between hosts, e.g. topics = [\"links.invalidate\"]; got none".to_owned(),
        ));
    }
    for (i, topic) in b.topics.iter().enumerate() {
        if !bridge::is_subject(topic) || topic.len() > MAX_TOPIC_LEN {
            return Err(violation(
                key("topics"),
                format!(
                    "topic {topic:?} cannot be a NATS subject: expected dot-separated words of at most {MAX_TOPIC_LEN} bytes in all, without spaces, empty words or the wildcards * and >"
                ),
            ));
        }
        if b.topics[..i].contains(topic) {
            return Err(violation(
                key("topics"),
                format!("topic {topic:?} is listed twice"),
            ));
        }
    }
    if !b.subject_prefix.is_empty() && !bridge::is_subject(&b.subject_prefix) {
        return Err(violation(
            key("subject_prefix"),
            format!(
                "expected dot-separated words without spaces or wildcards, such as \"myapp.prod\" (or \"\" for none), got {:?}",
                b.subject_prefix
            ),
        ));
    }
    let logins = [
        b.user.is_some() || b.password.is_some(),
        b.token.is_some(),
        b.credentials.is_some(),
    ];
    if logins.iter().filter(|on| **on).count() > 1 {
        return Err(violation(
            key("token"),
            "set one way to log in: user and password, token, or credentials".to_owned(),
        ));
    }
    if b.user.is_some() != b.password.is_some() {
        let (at, missing) = if b.user.is_some() {
            ("user", "password")
        } else {
            ("password", "user")
        };
        return Err(Violation {
            key: key(missing),
            related: vec![key(at)],
            message: format!("required with bridge.{at}"),
        });
    }
    if b.tls_cert.is_some() != b.tls_key.is_some() {
        let missing = if b.tls_cert.is_some() {
            "tls_key"
        } else {
            "tls_cert"
        };
        return Err(violation(
            key(missing),
            "a client certificate needs both bridge.tls_cert and bridge.tls_key".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in ["web", "api-v2", "jobs_1", "0"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Web", "a.b", "a b", "héllo", "a/b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn collisions() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect(s);
        assert!(collides(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(collides(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(collides(addr("[::]:80"), addr("127.0.0.1:80")));
        assert!(!collides(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!collides(addr("127.0.0.1:80"), addr("127.0.0.1:81")));
        assert!(!collides(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!collides(addr("0.0.0.0:80"), addr("[::1]:80")));
    }
}
