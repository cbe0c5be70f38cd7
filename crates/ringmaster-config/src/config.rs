//! [`Config`], the whole resolved configuration: its sections, its
//! default, what the master and workers ask of it (a group, a backend,
//! which worker a group runs, registry rows) and its TOML form for the
//! workers.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::{
    ADMIN_GROUP, ADMIN_WORKER, AdminConfig, BRIDGE_GROUP, BRIDGE_WORKER, BackendConfig,
    BridgeConfig, ConfigError, DEFAULT_GROUP, GroupConfig, NO_FILE_ORIGIN, ServerConfig,
};

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
    /// The bridge to other hosts over NATS (`[bridge]`): off unless `url`
    /// is set. When on, [`Config::groups`] holds its group, [`BRIDGE_GROUP`].
    #[serde(default, skip_serializing_if = "BridgeConfig::is_off")]
    pub bridge: BridgeConfig,
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
            bridge: BridgeConfig::default(),
        }
    }
}

impl Config {
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
        // The built-in admin and bridge workers are chosen only by name: a
        // binary with one worker of its own still runs that one by default.
        let builtin = |k: &str| k == ADMIN_WORKER || k == BRIDGE_WORKER;
        if self.bridge.is_on() && !known.iter().any(|k| k == BRIDGE_WORKER) {
            return Err(
                "[bridge] is set, but this binary has no bridge worker: build it with \
                 ringmaster's \"nats\" feature (ringmaster = { version = \"...\", features = \
                 [\"nats\"] }), or remove [bridge]"
                    .to_string(),
            );
        }
        let known: Vec<String> = known.iter().filter(|k| !builtin(k)).cloned().collect();
        for (name, group) in self.groups.iter_mut() {
            if is_builtin_group(name, group) {
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

/// Whether `name` is the group of the built-in admin or bridge worker
/// (derived from `[admin]` or `[bridge]`, not from a `[groups]` table).
pub(crate) fn is_builtin_group(name: &str, group: &GroupConfig) -> bool {
    let worker = group.worker.as_deref();
    (name == ADMIN_GROUP && worker == Some(ADMIN_WORKER))
        || (name == BRIDGE_GROUP && worker == Some(BRIDGE_WORKER))
}

/// Serializes the groups the file or environment defined, not the admin
/// or bridge worker's: they are derived from `[admin]` and `[bridge]`
/// again when the text is read back.
fn serialize_user_groups<S: serde::Serializer>(
    groups: &IndexMap<String, GroupConfig>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let user = groups.iter().filter(|(name, g)| !is_builtin_group(name, g));
    let mut map = serializer.serialize_map(None)?;
    for (name, group) in user {
        map.serialize_entry(name, group)?;
    }
    map.end()
}
