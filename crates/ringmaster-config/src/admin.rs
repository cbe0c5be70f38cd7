//! The `[admin]` table ([`AdminConfig`]): the built-in admin worker, off
//! unless `listen` is set, and the names of its group and implementation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{GroupConfig, fields};

/// The name of the admin worker's group, added to
/// [`Config::groups`](crate::Config::groups) when `[admin] listen` is set.
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
    pub(crate) fn group(&self, listen: SocketAddr) -> GroupConfig {
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
