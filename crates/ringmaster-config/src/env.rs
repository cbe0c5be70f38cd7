//! Environment overrides: `RINGMASTER__GROUPS__WEB__LISTEN=127.0.0.1:4000`
//! sets `groups.web.listen`.
//!
//! The name after [`ENV_PREFIX`] is split on `__` into lowercased key
//! segments. The value is read as a TOML value when it parses as one
//! (`4`, `true`, `"quoted"`, `[1, 2]`), otherwise as a plain string
//! (`127.0.0.1:4000`, `30s`). Overrides are returned sorted by variable name,
//! which is the order they are applied in.

use toml::{Table, Value};

use crate::ENV_PREFIX;
use crate::error::ConfigError;

/// One `RINGMASTER__…` variable, split into its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    /// The variable's full name, e.g. `RINGMASTER__GROUPS__WEB__COUNT`.
    pub(crate) name: String,
    /// The raw value as found in the environment.
    pub(crate) value: String,
    /// Lowercased key segments, e.g. `["groups", "web", "count"]`.
    pub(crate) path: Vec<String>,
}

impl Override {
    /// The dotted key path, e.g. `groups.web.count`.
    pub(crate) fn key(&self) -> String {
        self.path.join(".")
    }

    /// The value as TOML: a parsed TOML value if it is one, else a string.
    pub(crate) fn typed_value(&self) -> Value {
        self.value
            .parse::<Value>()
            .unwrap_or_else(|_| Value::String(self.value.clone()))
    }

    /// The value taken literally as a string.
    pub(crate) fn string_value(&self) -> Value {
        Value::String(self.value.clone())
    }

    /// An error attributed to this variable.
    pub(crate) fn error(&self, message: String) -> ConfigError {
        ConfigError::env(&self.name, &self.value, Some(self.key()), message)
    }
}

/// Picks the `RINGMASTER__…` variables out of `env`, sorted by name.
///
/// Fails on a variable with an empty key segment (`RINGMASTER__` alone,
/// `RINGMASTER__GROUPS____X`, a trailing `__`).
pub(crate) fn collect(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::env(
                &name,
                &value,
                None,
                format!(
                    "empty key segment in the variable name; name keys as \
                     {ENV_PREFIX}SECTION__KEY with single `__` separators, \
                     e.g. {ENV_PREFIX}GROUPS__WEB__COUNT=4"
                ),
            ));
        }
        overrides.push(Override { name, value, path });
    }
    overrides.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(overrides)
}

/// Sets `path` to `value` inside `table`, creating intermediate tables.
///
/// Fails with a message when an intermediate key exists but is not a table.
pub(crate) fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".to_owned());
    };
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(inner) => inner,
            other => {
                return Err(format!(
                    "cannot set a key inside `{}`, which is a {}, not a table",
                    path[..=depth].join("."),
                    other.type_str()
                ));
            }
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn collects_only_prefixed_sorted_and_lowercased() {
        let got = collect(vars(&[
            ("PATH", "/bin"),
            ("RINGMASTER__SERVER__CONTROL_SOCKET", "/run/rm.sock"),
            ("RINGMASTER__GROUPS__WEB__COUNT", "4"),
            ("RINGMASTER_SINGLE", "ignored"),
        ]))
        .expect("valid names");
        let paths: Vec<String> = got.iter().map(Override::key).collect();
        assert_eq!(paths, ["groups.web.count", "server.control_socket"]);
    }

    #[test]
    fn empty_segments_are_errors_naming_the_variable() {
        for name in [
            "RINGMASTER__",
            "RINGMASTER__GROUPS____X",
            "RINGMASTER__GROUPS__",
        ] {
            let err = collect(vars(&[(name, "1")])).expect_err(name);
            assert_eq!(err.origin(), format!("environment variable {name}"));
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn values_are_toml_when_they_parse_else_strings() {
        let ov = |value: &str| Override {
            name: "RINGMASTER__X".to_owned(),
            value: value.to_owned(),
            path: vec!["x".to_owned()],
        };
        assert_eq!(ov("4").typed_value(), Value::Integer(4));
        assert_eq!(ov("true").typed_value(), Value::Boolean(true));
        assert_eq!(ov("\"q\"").typed_value(), Value::String("q".to_owned()));
        assert_eq!(
            ov("127.0.0.1:4000").typed_value(),
            Value::String("127.0.0.1:4000".to_owned())
        );
        assert_eq!(ov("30s").typed_value(), Value::String("30s".to_owned()));
        assert!(ov("[1, 2]").typed_value().is_array());
    }

    #[test]
    fn set_creates_tables_and_refuses_to_descend_into_scalars() {
        let mut table = Table::new();
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        set(&mut table, &path("groups.api.count"), Value::Integer(2)).expect("set");
        assert_eq!(
            table["groups"]["api"]["count"].as_integer(),
            Some(2),
            "{table:?}"
        );
        let err = set(&mut table, &path("groups.api.count.x"), Value::Integer(1))
            .expect_err("count is an integer");
        assert!(err.contains("groups.api.count"), "{err}");
    }
}
