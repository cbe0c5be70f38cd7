//! Loading: the optional TOML file, then the `RINGMASTER__…` overrides in
//! order, then the default and admin groups and validation
//! ([`Config::load`] and its siblings); and the error attribution that
//! ties a bad value to its file or environment variable, with toml's
//! location when there is one.

use std::path::Path;

use toml::Table;

use crate::env::{self, Override};
use crate::validate::{self, Violation};
use crate::{
    ADMIN_GROUP, BRIDGE_GROUP, Config, ConfigError, DEFAULT_GROUP, GroupConfig, NO_FILE_ORIGIN,
};

impl Config {
    /// Loads the configuration: the TOML file at `path` if given (`None`
    /// means built-in defaults), then overrides from the `RINGMASTER__…`
    /// entries of `env` (other names are ignored) in sorted name order, then
    /// validation.
    ///
    /// `env` is passed in so callers and tests control it; see
    /// [`Config::load_from_env`] for the process environment. An explicit
    /// `path` that does not exist is an error.
    ///
    /// ```
    /// use ringmaster_config::Config;
    ///
    /// let env = [
    ///     ("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "4".to_owned()),
    ///     ("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT".to_owned(), "5s".to_owned()),
    ///     ("HOME".to_owned(), "/root".to_owned()),
    /// ];
    /// let config = Config::load(None, env)?;
    /// let web = config.group("web").expect("web is configured by the environment");
    /// assert_eq!(web.count, 4);
    /// assert_eq!(web.drain_timeout, std::time::Duration::from_secs(5));
    ///
    /// let bad = [("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "abc".to_owned())];
    /// let err = Config::load(None, bad).expect_err("count must be an integer");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "environment variable RINGMASTER__GROUPS__WEB__COUNT=\"abc\": \
    ///      groups.web.count: expected a positive integer, got \"abc\"",
    /// );
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, mut config) = match path {
            Some(path) => {
                let origin = path.display().to_string();
                return Self::load_str(&read_file(path, &origin)?, &origin, env);
            }
            None => {
                let config = Table::new()
                    .try_into::<Config>()
                    .map_err(|e| ConfigError::new(NO_FILE_ORIGIN, None, e.message()))?;
                (Table::new(), config)
            }
        };
        let overrides = env::collect(env)?;
        for over in &overrides {
            (table, config) = apply_override(&table, over)?;
        }
        finish(config, NO_FILE_ORIGIN, &overrides)
    }

    /// [`Config::load`] of a file whose text is `text`, named `origin` in
    /// errors, with the environment overrides in `env`.
    ///
    /// ```
    /// use ringmaster_config::Config;
    ///
    /// let env = [("RINGMASTER__GROUPS__WEB__COUNT".to_owned(), "3".to_owned())];
    /// let config = Config::load_str("[groups.web]\ncount = 1\n", "app.toml", env)?;
    /// assert_eq!(config.group("web").map(|g| g.count), Some(3));
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn load_str(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, mut config) = parse_document(text, origin)?;
        let overrides = env::collect(env)?;
        for over in &overrides {
            (table, config) = apply_override(&table, over)?;
        }
        finish(config, origin, &overrides)
    }

    /// [`Config::load`] with the process environment.
    ///
    /// Names and values that are not valid Unicode are converted lossily, so
    /// a mangled `RINGMASTER__…` value surfaces as a validation error rather
    /// than being skipped.
    pub fn load_from_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        Self::load(path, env)
    }

    /// Parses `text` as if it were the config file named `origin` (no
    /// environment overrides), then validates it. Errors name `origin`.
    ///
    /// ```
    /// use ringmaster_config::{Config, ListenMode};
    ///
    /// let config = Config::from_toml_str(
    ///     r#"
    ///     [groups.api]
    ///     count = 2
    ///     listen = "127.0.0.1:8080"
    ///     listen_mode = "shared"
    ///     heartbeat_timeout = "10s"
    ///     "#,
    ///     "ringmaster.toml",
    /// )?;
    /// let api = config.group("api").expect("api is configured");
    /// assert_eq!(api.count, 2);
    /// assert_eq!(api.listen_mode, ListenMode::Shared);
    /// assert!(config.group("web").is_none());
    ///
    /// let err = Config::from_toml_str("[groups.web]\ncount = 0\n", "ringmaster.toml")
    ///     .expect_err("count must be at least 1");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "ringmaster.toml: groups.web.count: expected an integer from 1 to 1024, got 0",
    /// );
    /// # Ok::<(), ringmaster_config::ConfigError>(())
    /// ```
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let (_, config) = parse_document(text, origin)?;
        finish(config, origin, &[])
    }
}

/// Reads the config file, turning "not found" into an actionable message.
fn read_file(path: &Path, origin: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            format!("config file {origin} not found; pass an existing path to --config")
        } else {
            format!("cannot read config file {origin}: {e}")
        };
        ConfigError::new(origin, None, message)
    })
}

/// Parses a TOML document into both its raw table (for overrides) and a
/// typed `Config`. Errors keep toml's line, column and snippet.
fn parse_document(text: &str, origin: &str) -> Result<(Table, Config), ConfigError> {
    let config = toml::from_str::<Config>(text).map_err(|e| toml_error(text, origin, &e))?;
    let table = text
        .parse::<Table>()
        .map_err(|e| toml_error(text, origin, &e))?;
    if table
        .get("groups")
        .and_then(toml::Value::as_table)
        .is_some_and(Table::is_empty)
    {
        return Err(ConfigError::new(
            origin,
            Some("groups".to_owned()),
            "the [groups] table defines no group; add one such as [groups.web] (or remove \
             [groups] to run the default web group)"
                .to_owned(),
        ));
    }
    Ok((table, config))
}

/// Converts a toml error from parsing `text` into a [`ConfigError`] whose
/// message starts with what went wrong, followed by toml's location snippet.
fn toml_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let rendered = error.to_string();
    let rendered = rendered.trim_end();
    let original = error.message().trim_end();
    // toml says "duplicate key" without naming it: the span does.
    let what = match error.span().and_then(|s| text.get(s)) {
        Some(key) if original == "duplicate key" => {
            format!("duplicate key `{}`: it is set twice", key.trim())
        }
        _ => original.to_owned(),
    };
    let message = match rendered.strip_suffix(original) {
        Some(location) if !original.is_empty() && !location.trim().is_empty() => {
            format!("{what}\n{}", location.trim_end())
        }
        _ => rendered.to_owned(),
    };
    ConfigError::new(origin, toml_error_key(text), message)
}

/// The dotted key a toml type error is about, if there is one.
///
/// toml only exposes the key path in its rendering of span-less errors
/// (``in `groups.web` ``), so the document is re-checked without spans. For
/// an unknown field the field itself is appended (`groups.web.cout`).
fn toml_error_key(text: &str) -> Option<String> {
    let table = text.parse::<Table>().ok()?;
    let error = table.try_into::<Config>().err()?;
    let rendered = error.to_string();
    let parent = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'));
    let unknown = error
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    match (parent, unknown) {
        (Some(parent), Some(field)) => Some(format!("{parent}.{field}")),
        (parent, field) => parent.or(field).map(str::to_owned),
    }
}

/// Applies one environment override to `table` and re-checks the result.
///
/// A value that parsed as a non-string TOML value but does not fit the key
/// is retried as a plain string (e.g. `worker=123`); if that fails too, the
/// first error is reported against the variable.
fn apply_override(table: &Table, over: &Override) -> Result<(Table, Config), ConfigError> {
    let attempt = |value: toml::Value| -> Result<(Table, Config), String> {
        let mut candidate = table.clone();
        env::set(&mut candidate, &over.path, value)?;
        let config = candidate
            .clone()
            .try_into::<Config>()
            .map_err(|e| e.message().to_owned())?;
        Ok((candidate, config))
    };
    let typed = over.typed_value();
    let was_string = typed.is_str();
    match attempt(typed) {
        Ok(applied) => Ok(applied),
        Err(first) if !was_string => attempt(over.string_value()).map_err(|_| over.error(first)),
        Err(first) => Err(over.error(first)),
    }
}

/// Inserts the default group if none is configured and the admin and
/// bridge workers' groups if `[admin]` and `[bridge]` ask for them, then
/// validates.
fn finish(mut config: Config, origin: &str, overrides: &[Override]) -> Result<Config, ConfigError> {
    if config.groups.is_empty() {
        config
            .groups
            .insert(DEFAULT_GROUP.to_owned(), GroupConfig::default());
    }
    let admin = validate::validate_admin(&config).map_err(|v| attribute(v, origin, overrides))?;
    if let Some(listen) = admin {
        let group = config.admin.group(listen);
        config.groups.insert(ADMIN_GROUP.to_owned(), group);
    }
    validate::validate_bridge(&config).map_err(|v| attribute(v, origin, overrides))?;
    if config.bridge.is_on() {
        let group = config.bridge.group();
        config.groups.insert(BRIDGE_GROUP.to_owned(), group);
    }
    validate::validate(&config).map_err(|v| attribute(v, origin, overrides))?;
    Ok(config)
}

/// Blames a violation on the last environment variable that set its key (or
/// a related key, or a table containing one), else on `origin`.
fn attribute(violation: Violation, origin: &str, overrides: &[Override]) -> ConfigError {
    let overlaps = |a: &[String], b: &[String]| a.starts_with(b) || b.starts_with(a);
    let key = violation.key.join(".");
    std::iter::once(&violation.key)
        .chain(&violation.related)
        .find_map(|path| overrides.iter().rev().find(|o| overlaps(&o.path, path)))
        .map_or_else(
            || ConfigError::new(origin, Some(key.clone()), violation.message.clone()),
            |over| {
                ConfigError::env(
                    &over.name,
                    &over.value,
                    Some(key.clone()),
                    violation.message.clone(),
                )
            },
        )
}
