//! Storage backends (`[backends.NAME]`): their settings, the kind of store
//! a URL names, and password redaction.
//!
//! Backend URLs may carry credentials (`postgres://user:secret@host/db`).
//! Nothing this crate shows may echo them: [`BackendConfig::redacted_url`]
//! replaces the password with `***`, its `Debug` output is redacted, and
//! every [`crate::ConfigError`] passes its message and echoed value through
//! [`redact_text`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{duration, fields};

/// What replaces a password in anything shown to people.
const REDACTED: &str = "***";

/// The schemes [`BackendConfig::kind`] accepts, as shown in its errors.
const SUPPORTED: &str = "expected sqlite://, postgres:// or redis://";

/// One storage backend: a `[backends.NAME]` table.
///
/// Modules refer to backends by name; a name without a table is the
/// embedded SQLite file `NAME.db` (see [`crate::Config::backend`]).
///
/// `Debug` shows the URL with its password redacted; serialization
/// ([`crate::Config::to_toml_string`]) keeps it, so workers can connect.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Connection URL, e.g. `sqlite://app.db`, `postgres://user:pw@host/db`
    /// or `redis://host:6379`; its scheme selects the [`BackendKind`].
    /// Required.
    pub url: String,
    /// Maximum number of pooled connections, 1 to 1024. Default 8.
    #[serde(default = "default_pool_size", deserialize_with = "fields::uint")]
    pub pool_size: u32,
    /// How long opening one connection may take. Default 5s.
    #[serde(default = "default_connect_timeout", with = "duration::serde")]
    pub connect_timeout: Duration,
    /// How long a request may wait for a pooled connection (a free one, or
    /// a new one opened) before it fails with 503: short, so that a
    /// backend that is down fails requests fast. Default 250ms.
    #[serde(default = "default_acquire_timeout", with = "duration::serde")]
    pub acquire_timeout: Duration,
}

fn default_acquire_timeout() -> Duration {
    Duration::from_millis(250)
}

/// Largest allowed `pool_size`.
pub(crate) const MAX_POOL_SIZE: u32 = 1024;

fn default_pool_size() -> u32 {
    8
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The kind of store a backend URL names, from its scheme.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// An SQLite database file (`sqlite:`).
    Sqlite,
    /// A PostgreSQL server (`postgres:` or `postgresql:`).
    Postgres,
    /// A Redis server (`redis:`, or `rediss:` for TLS).
    Redis,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        })
    }
}

impl BackendConfig {
    /// A backend at `url` with default pool size (8) and connect timeout (5s).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            acquire_timeout: default_acquire_timeout(),
        }
    }

    /// The kind of store the URL names, from its scheme (case-insensitive):
    /// `sqlite:`, `postgres:`/`postgresql:`, `redis:`/`rediss:`.
    ///
    /// The error says what was found and which schemes are supported; it
    /// shows the URL only redacted.
    ///
    /// ```
    /// use ringmaster_config::{BackendConfig, BackendKind};
    ///
    /// let pg = BackendConfig::new("postgresql://app:secret@db/app");
    /// assert_eq!(pg.kind(), Ok(BackendKind::Postgres));
    /// let err = BackendConfig::new("mysql://app:secret@db/app").kind().unwrap_err();
    /// assert_eq!(
    ///     err,
    ///     "unsupported scheme \"mysql\" in \"mysql://app:***@db/app\"; \
    ///      expected sqlite://, postgres:// or redis://",
    /// );
    /// ```
    pub fn kind(&self) -> Result<BackendKind, String> {
        let Some(scheme) = scheme(&self.url) else {
            return Err(format!(
                "missing scheme in {:?}; {SUPPORTED}",
                self.redacted_url()
            ));
        };
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => return Ok(BackendKind::Sqlite),
            "postgres" | "postgresql" => BackendKind::Postgres,
            "redis" | "rediss" => BackendKind::Redis,
            _ => {
                return Err(format!(
                    "unsupported scheme {scheme:?} in {:?}; {SUPPORTED}",
                    self.redacted_url()
                ));
            }
        };
        if let Some(port) = network_port(&self.url)
            && port.parse::<u16>().is_err()
        {
            return Err(format!(
                "the port {port:?} in {:?} is not a number from 0 to 65535",
                self.redacted_url()
            ));
        }
        Ok(kind)
    }

    /// The URL with its password, if any, replaced by `***`:
    /// `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`,
    /// `redis://:pw@h:6379` becomes `redis://:***@h:6379`. URLs without a
    /// password are returned unchanged. Use this whenever a URL is shown.
    ///
    /// The userinfo is what lies between `://` and the last `@` before the
    /// first `/` after it; the password is what follows its first `:`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// The port text of a network URL (`scheme://[userinfo@]host[:port]/...`),
/// if it has one; an IPv6 host is in brackets.
fn network_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.1,
        None => hostport,
    };
    let (_, port) = after_host.rsplit_once(':')?;
    Some(port)
}

/// The URL scheme: the text before the first `:`, if it is a valid scheme
/// (a letter, then letters, digits, `+`, `-` or `.`).
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Replaces the password in an authority (`user:pw@host:port`) by `***`.
/// The userinfo ends at the last `@`; the password follows its first `:`.
fn redact_authority(authority: &str, out: &mut String) {
    let redacted = authority.rfind('@').and_then(|at| {
        let colon = authority[..at].find(':')?;
        Some((&authority[..=colon], &authority[at..]))
    });
    match redacted {
        Some((user, host)) => {
            out.push_str(user);
            out.push_str(REDACTED);
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
}

/// [`BackendConfig::redacted_url`] for a bare string: redacts the authority
/// after the first `://`, which ends at the next `/` or the end.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(index) = url.find("://") else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(index + 3);
    let end = rest.find('/').unwrap_or(rest.len());
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    redact_authority(&rest[..end], &mut out);
    out.push_str(&rest[end..]);
    out
}

/// Redacts the password of every URL in free text (an error message, an
/// echoed value, a TOML snippet): each authority after a `://` runs to the
/// next `/` or line break. This errs towards hiding too much: text after a
/// URL on the same line that contains `@` may be hidden as well.
pub(crate) fn redact_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find("://") {
        let (head, tail) = rest.split_at(index + 3);
        out.push_str(head);
        let end = tail.find(['/', '\n', '\r']).unwrap_or(tail.len());
        redact_authority(&tail[..end], &mut out);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(url: &str) -> Result<BackendKind, String> {
        BackendConfig::new(url).kind()
    }

    #[test]
    fn a_port_that_is_not_a_number_is_refused() {
        assert!(
            kind("postgres://u@h:notaport/db")
                .unwrap_err()
                .contains("\"notaport\"")
        );
        assert!(
            kind("redis://h:99999")
                .unwrap_err()
                .contains("not a number from 0 to 65535")
        );
        assert_eq!(
            kind("postgres://u:p:w@h:5432/db"),
            Ok(BackendKind::Postgres)
        );
        assert_eq!(
            kind("postgres://u@[::1]:5432/db"),
            Ok(BackendKind::Postgres)
        );
        assert_eq!(kind("postgres://u@[::1]/db"), Ok(BackendKind::Postgres));
        assert_eq!(kind("redis://h"), Ok(BackendKind::Redis));
    }

    #[test]
    fn kind_from_each_scheme() {
        assert_eq!(kind("sqlite://app.db"), Ok(BackendKind::Sqlite));
        assert_eq!(kind("sqlite::memory:"), Ok(BackendKind::Sqlite));
        assert_eq!(kind("sqlite:///var/lib/app.db"), Ok(BackendKind::Sqlite));
        assert_eq!(kind("postgres://u:p@h/db"), Ok(BackendKind::Postgres));
        assert_eq!(kind("postgresql://h/db"), Ok(BackendKind::Postgres));
        assert_eq!(kind("POSTGRES://h/db"), Ok(BackendKind::Postgres));
        assert_eq!(kind("redis://h:6379"), Ok(BackendKind::Redis));
        assert_eq!(kind("rediss://:pw@h:6380/0"), Ok(BackendKind::Redis));
        assert_eq!(BackendKind::Sqlite.to_string(), "sqlite");
        assert_eq!(BackendKind::Postgres.to_string(), "postgres");
        assert_eq!(BackendKind::Redis.to_string(), "redis");
    }

    #[test]
    fn unsupported_or_missing_scheme_is_explained_without_the_password() {
        assert_eq!(
            kind("mysql://root:hunter2@db:3306/app"),
            Err(
                "unsupported scheme \"mysql\" in \"mysql://root:***@db:3306/app\"; \
                 expected sqlite://, postgres:// or redis://"
                    .to_owned()
            )
        );
        for bad in ["app.db", "", "127.0.0.1:5432", "://x", "1pg://h"] {
            let err = kind(bad).expect_err(bad);
            assert!(err.starts_with("missing scheme in "), "{bad}: {err}");
            assert!(err.ends_with(SUPPORTED), "{bad}: {err}");
        }
        // Prefixes and lookalikes are not the supported schemes.
        for bad in ["sqlite3://a.db", "redis+sentinel://h", "postgre://h"] {
            assert!(kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction() {
        let cases = [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            ("redis://:pw@h:6379", "redis://:***@h:6379"),
            ("rediss://:pw@h:6380/0", "rediss://:***@h:6380/0"),
            // `@` in the password: the userinfo ends at the last `@`.
            (
                "postgres://u:p@ss@w0rd@host:5432/db",
                "postgres://u:***@host:5432/db",
            ),
            // A `:` in the password: the password starts at the first `:`.
            ("postgres://u:a:b@h/db", "postgres://u:***@h/db"),
            // `@` after the first `/` belongs to the path, not the userinfo.
            ("postgres://host/db?user=a@b", "postgres://host/db?user=a@b"),
            ("sqlite:///data/a@b:c.db", "sqlite:///data/a@b:c.db"),
            // No password, or no userinfo at all: unchanged.
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host:5432/db", "postgres://host:5432/db"),
            ("redis://h:6379", "redis://h:6379"),
            ("sqlite://app.db", "sqlite://app.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(BackendConfig::new(url).redacted_url(), want, "{url}");
            assert_eq!(redact_text(url), want, "{url}");
        }
    }

    #[test]
    fn redaction_in_free_text_and_debug() {
        let text = "got \"postgres://u:s3cret@h/db\" and \"redis://:pw@h:6379\", done\n\
                    3 | uri = \"rediss://x:y@z\"\n  | ^^^";
        let shown = redact_text(text);
        assert_eq!(
            shown,
            "got \"postgres://u:***@h/db\" and \"redis://:***@h:6379\", done\n\
             3 | uri = \"rediss://x:***@z\"\n  | ^^^"
        );
        assert_eq!(redact_text("no urls: a:b@c"), "no urls: a:b@c");
        let debug = format!("{:?}", BackendConfig::new("postgres://u:s3cret@h/db"));
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("postgres://u:***@h/db"), "{debug}");
    }
}
