//! Schema migrations: each module lists its own, per backend, with SQL for
//! SQLite and for PostgreSQL. They run once, in a one-off process the
//! master starts before any worker (and again before a reload's new
//! workers), or through the `migrate` command; never in every worker.
//!
//! Applied migrations are recorded in `ringmaster_migrations`
//! (module, version); each runs in its own transaction with its record.

use std::collections::BTreeMap;

use ringmaster_config::Config;

use crate::backend::{Backend, BackendError, Backends, Db, SqlBackend};
use crate::worker::Worker;

/// One migration of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Migration {
    /// The backend it applies to.
    pub backend: SqlBackend,
    /// Ordering key within the module; never reuse or reorder one.
    pub version: i64,
    /// A short description.
    pub name: &'static str,
    /// The SQL for SQLite (several statements allowed).
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL.
    pub postgres: &'static str,
}

impl Migration {
    /// A migration with the same SQL for both databases.
    pub const fn new(
        backend: SqlBackend,
        version: i64,
        name: &'static str,
        sql: &'static str,
    ) -> Self {
        Migration {
            backend,
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A migration whose SQL differs between SQLite and PostgreSQL.
    pub const fn per_database(
        backend: SqlBackend,
        version: i64,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Migration {
            backend,
            version,
            name,
            sqlite,
            postgres,
        }
    }
}

/// A migration run that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A backend could not be opened.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A migration failed; nothing of it was applied.
    #[error("migration {module} {version} ({name}) on backend \"{backend}\" failed: {cause}")]
    Failed {
        /// The module.
        module: String,
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: String,
        /// The backend.
        backend: String,
        /// The database's error.
        cause: String,
    },
    /// The configuration does not say which worker a group runs.
    #[error("{0}")]
    Workers(String),
    /// Two modules of the same name bring different migrations.
    #[error("two modules named {0} bring different migrations; rename one")]
    NameClash(String),
    /// A backend that migrations name is not an SQL database.
    #[error(
        "module {module} has migrations for backend \"{backend}\", which is not an SQL database"
    )]
    NotSql {
        /// The module.
        module: String,
        /// The backend.
        backend: String,
    },
}

/// Runs the pending migrations of every module of every worker that a group
/// of `config` runs (a group without a `worker` key runs the only worker,
/// or the one named like it, as `serve` decides); returns how many were
/// applied.
pub async fn migrate(workers: &[Worker], config: &Config) -> Result<usize, MigrateError> {
    let mut resolved = config.clone();
    let known: Vec<String> = workers.iter().map(|w| w.name().to_string()).collect();
    resolved
        .resolve_workers(&known)
        .map_err(MigrateError::Workers)?;
    let config = &resolved;
    let (modules, sqlite_files) = collect(workers, config);
    let mut names: Vec<String> = modules
        .values()
        .flatten()
        .map(|m| m.backend.name().to_string())
        .collect();
    names.extend(sqlite_files);
    let backends = Backends::open(&names, config).await?;
    let applied = apply_all(&backends, modules).await?;
    backends.close().await;
    Ok(applied)
}

/// What the groups of `config` run: each module's migrations, by module
/// name (once even if several groups run it), and the names of the SQLite
/// backends the modules declare.
fn collect(workers: &[Worker], config: &Config) -> (BTreeMap<String, Vec<Migration>>, Vec<String>) {
    let mut modules: BTreeMap<String, Vec<Migration>> = BTreeMap::new();
    let mut sqlite_files: Vec<String> = Vec::new();
    for group in config.groups.values() {
        let Some(worker) = workers
            .iter()
            .find(|w| Some(w.name()) == group.worker.as_deref())
        else {
            continue;
        };
        for module in &worker.modules {
            // Every SQLite file a worker will open is created here, with
            // or without migrations: workers of a cluster never create one
            // (a missing file there was removed, not new).
            for backend in module.backends() {
                let Backend::Sql(sql) = backend else { continue };
                let name = sql.name();
                let is_sqlite =
                    config.backend(name).kind() == Ok(ringmaster_config::BackendKind::Sqlite);
                if is_sqlite && !sqlite_files.iter().any(|n| n == name) {
                    sqlite_files.push(name.to_string());
                }
            }
            let migrations = module.migrations();
            if !migrations.is_empty() {
                modules.insert(module.name().to_string(), migrations);
            }
        }
    }
    (modules, sqlite_files)
}

/// Applies the pending migrations of each module, in version order;
/// returns how many ran.
async fn apply_all(
    backends: &Backends,
    modules: BTreeMap<String, Vec<Migration>>,
) -> Result<usize, MigrateError> {
    let mut applied = 0;
    for (module, mut migrations) in modules {
        migrations.sort_by_key(|m| m.version);
        for m in migrations {
            let db = backends
                .db(m.backend.name())
                .map_err(|_| MigrateError::NotSql {
                    module: module.clone(),
                    backend: m.backend.name().to_string(),
                })?;
            if apply(db, &module, &m)
                .await
                .map_err(|e| MigrateError::Failed {
                    module: module.clone(),
                    version: m.version,
                    name: m.name.to_string(),
                    backend: m.backend.name().to_string(),
                    cause: e.to_string(),
                })?
            {
                tracing::info!(module = %module, version = m.version, name = m.name, "migration applied");
                applied += 1;
            }
        }
    }
    Ok(applied)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ringmaster_migrations (\
    module TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, \
    PRIMARY KEY (module, version))";

/// Applies one migration unless it is recorded; returns whether it ran.
async fn apply(db: &Db, module: &str, m: &Migration) -> Result<bool, sqlx::Error> {
    macro_rules! run {
        ($pool:expr, $lock:expr, $sql:expr, $check:literal, $record:literal) => {{
            let mut tx = $pool.begin().await?;
            // One runner at a time (several hosts, or `migrate` by hand
            // during a reload): the others wait here, then see the record.
            if let Some(lock) = $lock {
                sqlx::raw_sql(lock).execute(&mut *tx).await?;
            }
            sqlx::raw_sql(CREATE_TABLE).execute(&mut *tx).await?;
            let done: Option<(i64,)> = sqlx::query_as($check)
                .bind(module)
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::raw_sql($sql).execute(&mut *tx).await?;
            sqlx::query($record)
                .bind(module)
                .bind(m.version)
                .bind(m.name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        }};
    }
    match db {
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool) => run!(
            pool,
            None::<&'static str>,
            m.sqlite,
            "SELECT version FROM ringmaster_migrations WHERE module = ?1 AND version = ?2",
            "INSERT INTO ringmaster_migrations (module, version, name) VALUES (?1, ?2, ?3)"
        ),
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => run!(
            pool,
            Some("SELECT pg_advisory_xact_lock(7262696)"),
            m.postgres,
            "SELECT version FROM ringmaster_migrations WHERE module = $1 AND version = $2",
            "INSERT INTO ringmaster_migrations (module, version, name) VALUES ($1, $2, $3)"
        ),
    }
}
