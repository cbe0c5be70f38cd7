//! Backend connections: SQLite, PostgreSQL (sqlx pools) and Redis
//! (a multiplexed connection manager).
//!
//! A worker opens the backends its modules declare, and only those, each
//! with the configured connect timeout and a health probe (`SELECT 1`,
//! `PING`). A failure names the backend and its URL with any password
//! redacted, and stops the boot.
//!
//! Each driver is a cargo feature (`sqlite`, the default, `postgres`,
//! `redis`): a binary built without one says so, naming the feature, when a
//! URL asks for it. At least one SQL driver is required.
//!
//! # Layout
//!
//! - `names`: the typed backend names modules declare ([`SqlBackend`],
//!   [`RedisBackend`], [`Backend`]);
//! - `drivers`: opening and probing one backend of each kind.

mod drivers;
mod names;

use std::collections::HashMap;

use ringmaster_config::{BackendConfig, BackendKind, Config};

pub use names::{Backend, RedisBackend, SqlBackend};

use crate::error::AppError;
#[cfg(feature = "redis")]
use drivers::open_redis;
use drivers::open_sql;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "ringmaster needs an SQL driver: enable the feature \"sqlite\" (the default) or \"postgres\""
);

/// Whether this binary has the driver for `kind`; if not, what to do.
pub(crate) fn compiled(kind: BackendKind) -> Result<(), String> {
    let feature = match kind {
        BackendKind::Sqlite if cfg!(feature = "sqlite") => return Ok(()),
        BackendKind::Postgres if cfg!(feature = "postgres") => return Ok(()),
        BackendKind::Redis if cfg!(feature = "redis") => return Ok(()),
        BackendKind::Sqlite => "sqlite",
        BackendKind::Postgres => "postgres",
        _ => "redis",
    };
    Err(format!(
        "this binary is built without the {kind} driver: enable ringmaster's cargo feature \"{feature}\" (features = [\"{feature}\"] in Cargo.toml)"
    ))
}

/// An SQL backend: the pool of its kind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Db {
    /// An SQLite file, in WAL mode with a busy timeout so that several
    /// worker processes share it (feature `sqlite`).
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL server (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Db {
    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// A Redis backend: a multiplexed connection that reconnects by itself
/// (feature `redis`).
#[cfg(feature = "redis")]
pub type Redis = redis::aio::ConnectionManager;

/// A backend that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("backend \"{name}\" ({url}) {what}: {cause}; {hint}")]
pub struct BackendError {
    /// The backend's name.
    pub name: String,
    /// Its URL, password redacted.
    pub url: String,
    what: &'static str,
    cause: String,
    hint: String,
}

impl BackendError {
    fn new(
        name: &str,
        cfg: &BackendConfig,
        what: &'static str,
        cause: impl std::fmt::Display,
    ) -> Self {
        let hint = match cfg.kind() {
            Ok(BackendKind::Sqlite) => format!(
                "check that the directory exists and is writable, or fix backends.{name}.url"
            ),
            Ok(_) => format!("start the service or fix backends.{name}.url"),
            Err(_) => format!("fix backends.{name}.url"),
        };
        BackendError {
            name: name.to_string(),
            url: cfg.redacted_url(),
            what,
            cause: redact_cause(&cause.to_string(), cfg),
            hint,
        }
    }

    fn with_hint(mut self, hint: &str) -> Self {
        self.hint = hint.to_string();
        self
    }
}

/// Driver messages may quote the URL; never let a password through.
fn redact_cause(cause: &str, cfg: &BackendConfig) -> String {
    if cfg.url != cfg.redacted_url() {
        cause.replace(&cfg.url, &cfg.redacted_url())
    } else {
        cause.to_string()
    }
}

/// The open backends of one worker, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backends {
    sql: HashMap<String, Db>,
    #[cfg(feature = "redis")]
    redis: HashMap<String, Redis>,
    /// The SQLite files opened, with their identity then (device, inode).
    files: Vec<SqliteFile>,
}

/// An SQLite file a worker opened, to notice it being replaced or removed.
#[derive(Debug, Clone)]
pub(crate) struct SqliteFile {
    pub(crate) backend: String,
    pub(crate) path: std::path::PathBuf,
    pub(crate) identity: Option<(u64, u64)>,
}

/// The (device, inode) of a file, if it exists.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether opening an SQLite backend may create its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
enum Create {
    /// `check`, `migrate`, app tests: a missing file is created.
    Yes,
    /// A worker of a cluster: the migrations created the file; a missing
    /// one was removed, and a new empty one would only answer "no such
    /// table".
    No,
}

impl Backends {
    /// Opens and probes each backend in `names` (duplicates once), with
    /// the settings of `config`; a missing SQLite file is created.
    pub(crate) async fn open(names: &[String], config: &Config) -> Result<Backends, BackendError> {
        Self::open_with(names, config, Create::Yes).await
    }

    /// As [`Backends::open`], for a worker of a cluster: an SQLite file must
    /// exist already (the master's migrations create it).
    pub(crate) async fn open_existing(
        names: &[String],
        config: &Config,
    ) -> Result<Backends, BackendError> {
        Self::open_with(names, config, Create::No).await
    }

    /// The SQLite files this worker opened.
    pub(crate) fn sqlite_files(&self) -> &[SqliteFile] {
        &self.files
    }

    async fn open_with(
        names: &[String],
        config: &Config,
        create: Create,
    ) -> Result<Backends, BackendError> {
        let mut backends = Backends::default();
        for name in names {
            if backends.is_open(name) {
                continue;
            }
            let cfg = config.backend(name);
            let kind = cfg
                .kind()
                .map_err(|e| BackendError::new(name, &cfg, "has an invalid URL", e))?;
            compiled(kind).map_err(|e| {
                BackendError::new(name, &cfg, "needs a driver this binary lacks", e)
                    .with_hint(&format!("or fix backends.{name}.url"))
            })?;
            let started = std::time::Instant::now();
            match kind {
                #[cfg(feature = "redis")]
                BackendKind::Redis => {
                    let conn = open_redis(name, &cfg).await?;
                    backends.redis.insert(name.clone(), conn);
                }
                _ => {
                    let (db, file) = open_sql(name, &cfg, kind, create).await?;
                    backends.sql.insert(name.clone(), db);
                    backends.files.extend(file);
                }
            }
            tracing::info!(
                backend = %name,
                url = %cfg.redacted_url(),
                ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "backend connected"
            );
        }
        Ok(backends)
    }

    /// The SQL backend `name`.
    pub(crate) fn db(&self, name: &str) -> Result<&Db, AppError> {
        self.sql.get(name).ok_or_else(|| {
            AppError::internal(format!(
                "no SQL backend \"{name}\" is open in this worker; declare it in the module's backends()"
            ))
        })
    }

    fn is_open(&self, name: &str) -> bool {
        #[cfg(feature = "redis")]
        if self.redis.contains_key(name) {
            return true;
        }
        self.sql.contains_key(name)
    }

    /// The Redis backend `name`.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self, name: &str) -> Result<Redis, AppError> {
        self.redis.get(name).cloned().ok_or_else(|| {
            AppError::internal(format!(
                "no Redis backend \"{name}\" is open in this worker; declare it in the module's backends()"
            ))
        })
    }

    /// Closes every pool.
    pub(crate) async fn close(&self) {
        for db in self.sql.values() {
            db.close().await;
        }
    }
}

/// Opens backend `name` as `config` says, probes it and closes it again
/// (what `check` does for each backend); a missing SQLite file is created.
pub async fn probe(name: &str, config: &Config) -> Result<(), BackendError> {
    let backends = Backends::open(&[name.to_string()], config).await?;
    backends.close().await;
    Ok(())
}

/// Runs the same sqlx code against whichever pool a [`Db`] holds, so one
/// query serves SQLite and PostgreSQL (write parameters `$1`, `$2`, ... in
/// order: both databases read them); for code the driver-neutral
/// [`Db::query`] cannot express. Only the drivers this binary is built with
/// are matched.
///
/// ```
/// # async fn f(db: &ringmaster_worker::Db) -> Result<(), ringmaster_worker::AppError> {
/// let (n,): (i64,) = ringmaster_worker::on_db!(db, |pool| {
///     ringmaster_worker::sqlx::query_as("SELECT 1 + $1").bind(1_i64).fetch_one(pool).await
/// })?;
/// # Ok(()) }
/// ```
#[cfg(all(feature = "sqlite", feature = "postgres"))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $crate::__db_outcome($body),
            $crate::Db::Postgres($pool) => $crate::__db_outcome($body),
            // `Db` is non-exhaustive: a driver added later.
            #[allow(unreachable_patterns)]
            _ => Err($crate::AppError::internal(
                "a database kind this code does not handle",
            )),
        }
    };
}

/// Runs sqlx code on the pool a [`Db`] holds (this binary has SQLite only).
#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite($pool) => $crate::__db_outcome($body),
            // `Db` is non-exhaustive: a driver added later.
            #[allow(unreachable_patterns)]
            _ => Err($crate::AppError::internal(
                "a database kind this code does not handle",
            )),
        }
    };
}

/// Runs sqlx code on the pool a [`Db`] holds (this binary has PostgreSQL
/// only).
#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Postgres($pool) => $crate::__db_outcome($body),
            // `Db` is non-exhaustive: a driver added later.
            #[allow(unreachable_patterns)]
            _ => Err($crate::AppError::internal(
                "a database kind this code does not handle",
            )),
        }
    };
}
