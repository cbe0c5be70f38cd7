//! The `[bridge]` table ([`BridgeConfig`]): IPC topics carried between
//! hosts over NATS by the built-in bridge worker, off unless `url` is set,
//! and the names of its group and implementation.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{GroupConfig, backend, fields};

/// The name of the bridge worker's group, added to
/// [`Config::groups`](crate::Config::groups) when `[bridge] url` is set.
pub const BRIDGE_GROUP: &str = "bridge";

/// The name of the built-in bridge worker implementation.
pub const BRIDGE_WORKER: &str = "ringmaster-bridge";

/// The default [`BridgeConfig::subject_prefix`].
pub const DEFAULT_SUBJECT_PREFIX: &str = "ringmaster";

/// The bridge: the `[bridge]` table.
///
/// With `url` set, the master runs one more group, `bridge`, whose one
/// worker connects to NATS. A publication to every worker
/// (`Target::All`) on one of `topics` then also reaches the subscribed
/// workers of every other host whose bridge carries that topic, on the
/// NATS subject `SUBJECT_PREFIX.TOPIC`. The master itself never talks to
/// NATS.
///
/// ```
/// use ringmaster_config::Config;
///
/// let config = Config::from_toml_str(
///     "[bridge]\nurl = \"nats://127.0.0.1:4222\"\ntopics = [\"links.invalidate\"]\n",
///     "ringmaster.toml",
/// )?;
/// assert_eq!(config.bridge.subject("links.invalidate"), "ringmaster.links.invalidate");
/// assert!(config.groups.contains_key("bridge"));
/// # Ok::<(), ringmaster_config::ConfigError>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// The NATS server(s): `nats://host:4222`, `tls://host:4222`, or
    /// several separated by commas; a user and password may be in the
    /// URL (`nats://user:pass@host:4222`). `None` (default): no bridge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The IPC topics carried over NATS, e.g. `["links.invalidate"]`.
    /// Every other topic stays on its host.
    pub topics: Vec<String>,
    /// The first tokens of every NATS subject the bridge uses. Default
    /// `ringmaster`: topic `links.invalidate` is subject
    /// `ringmaster.links.invalidate`. Give each application (or each
    /// environment sharing one NATS) its own.
    pub subject_prefix: String,
    /// When true, a bridge that is not connected makes `/readyz` answer
    /// 503 and the cluster count as not ready. Default false: a host
    /// without its bridge still serves.
    pub required: bool,
    /// The user name, with `password` (or put both in the URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password of `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A token (NATS `authorization { token }`), instead of a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A credentials file (`.creds`: a JWT and an NKey seed, as `nsc`
    /// writes them), instead of a user or a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// Insist on TLS even when the URL says `nats://`.
    pub tls_required: bool,
    /// A PEM file of the certificate authorities to trust, in place of
    /// the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate, with `tls_key`, for servers that verify
    /// clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Where the bridge worker serves its own state as JSON (`GET /`).
    /// Default `127.0.0.1:0` (a free port: `status` shows it).
    #[serde(deserialize_with = "fields::socket_addr")]
    pub listen: SocketAddr,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            url: None,
            topics: Vec::new(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            required: false,
            user: None,
            password: None,
            token: None,
            credentials: None,
            tls_required: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl BridgeConfig {
    /// Whether the table is absent (every key at its default).
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Whether a bridge runs (`url` is set).
    pub fn is_on(&self) -> bool {
        self.url.is_some()
    }

    /// Whether `topic` is carried over NATS.
    pub fn bridges(&self, topic: &str) -> bool {
        self.is_on() && self.topics.iter().any(|t| t == topic)
    }

    /// The NATS subject of `topic`: `SUBJECT_PREFIX.TOPIC`, or the topic
    /// alone with an empty prefix.
    pub fn subject(&self, topic: &str) -> String {
        if self.subject_prefix.is_empty() {
            topic.to_owned()
        } else {
            format!("{}.{topic}", self.subject_prefix)
        }
    }

    /// `url` with every password replaced by `***`, for logs and status.
    pub fn redacted_url(&self) -> String {
        self.url
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|u| backend::redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The settings of the bridge worker's group: one worker on
    /// `listen`, one runtime thread, no access log, a short drain.
    pub(crate) fn group(&self) -> GroupConfig {
        GroupConfig {
            worker: Some(BRIDGE_WORKER.to_owned()),
            count: 1,
            listen: self.listen,
            threads: Some(1),
            access_log: false,
            drain_timeout: std::time::Duration::from_secs(2),
            ..GroupConfig::default()
        }
    }
}

/// Whether `s` is a sequence of NATS subject tokens: dot-separated,
/// none empty, no whitespace and no wildcard (`*`, `>`).
pub(crate) fn is_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}
