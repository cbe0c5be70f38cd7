//! The crate's single error type, [`ConfigError`].

use std::fmt;

use crate::backend::redact_text;

/// A configuration problem, attributed to where the bad value came from.
///
/// Displayed as `ORIGIN: KEY: MESSAGE`, for example
/// `ringmaster.toml: groups.web.count: expected a positive integer, got "abc"`,
/// or, for an environment override,
/// `environment variable RINGMASTER__GROUPS__WEB__COUNT="0": groups.web.count: expected an integer from 1 to 1024, got 0`.
/// The key part is left out when no single key is to blame (e.g. a TOML
/// syntax error, whose message carries toml's line, column and snippet).
///
/// Passwords in URLs (`postgres://user:secret@host/db`) are replaced by
/// `***` in the message and in an echoed environment value, so errors can be
/// logged safely.
///
/// Callers that exit on this error should use [`crate::EXIT_CONFIG`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {}{message}", EnvValue(.value), KeyPrefix(.key))]
pub struct ConfigError {
    /// File path, `environment variable RINGMASTER__…`, or `configuration`.
    origin: String,
    /// The environment variable's value, when the origin is one.
    value: Option<String>,
    /// Dotted key path such as `groups.web.count`, when known.
    key: Option<String>,
    /// What happened and what was expected.
    message: String,
}

impl ConfigError {
    /// Builds an error from its parts. `origin` is a file path,
    /// `environment variable NAME`, or `configuration`. URL passwords in
    /// `message` are redacted.
    pub(crate) fn new(
        origin: impl Into<String>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            origin: origin.into(),
            value: None,
            key,
            message: redact_text(&message.into()),
        }
    }

    /// An error caused by the environment variable `name` set to `value`.
    /// URL passwords in `value` and `message` are redacted.
    pub(crate) fn env(name: &str, value: &str, key: Option<String>, message: String) -> Self {
        Self {
            origin: env_origin(name),
            value: Some(redact_text(value)),
            key,
            message: redact_text(&message),
        }
    }

    /// Where the offending value came from: the config file's path,
    /// `environment variable RINGMASTER__X__Y`, or `configuration` (built-in
    /// defaults or a config with no file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The dotted key path at fault, such as `groups.web.count`, when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What went wrong and what was expected, without origin and key. URL
    /// passwords are shown as `***`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The origin string used for an environment variable.
pub(crate) fn env_origin(name: &str) -> String {
    format!("environment variable {name}")
}

/// Renders `="value"` after an environment variable's name, or nothing.
struct EnvValue<'a>(&'a Option<String>);

impl fmt::Display for EnvValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "={value:?}"),
            None => Ok(()),
        }
    }
}

/// Renders `key: ` before the message, or nothing.
struct KeyPrefix<'a>(&'a Option<String>);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, "{key}: "),
            None => Ok(()),
        }
    }
}
