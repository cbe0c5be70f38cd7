//! Opening one backend of each kind, SQLite, PostgreSQL or Redis, within
//! its connect timeout and after a health probe (`SELECT 1`, a rolled-back
//! write for SQLite, `PING`); a failure names the backend and its URL with
//! any password redacted.

use std::str::FromStr;
#[cfg(any(feature = "sqlite", feature = "redis"))]
use std::time::Duration;

use ringmaster_config::{BackendConfig, BackendKind};
use sqlx::Connection;
#[cfg(feature = "postgres")]
use sqlx::postgres::PgPoolOptions;
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[cfg(feature = "redis")]
use super::Redis;
#[cfg(feature = "sqlite")]
use super::file_identity;
use super::{BackendError, Create, Db, SqliteFile};

/// How long SQLite waits for a lock held by another process (worker).
#[cfg(feature = "sqlite")]
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `connect` within the backend's connect timeout; any failure names
/// the backend and its redacted URL.
async fn within<T, E: std::fmt::Display>(
    name: &str,
    cfg: &BackendConfig,
    connect: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(cfg.connect_timeout, connect).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(BackendError::new(name, cfg, "is unreachable", e)),
        Err(_) => Err(BackendError::new(
            name,
            cfg,
            "is unreachable",
            format!(
                "no connection within connect_timeout ({:?})",
                cfg.connect_timeout
            ),
        )),
    }
}

/// Opens a pool whose requests wait at most `acquire_timeout` for a
/// connection (so a backend that is down fails them fast), after a probe
/// on a connection of its own that may take `connect_timeout` (a boot may
/// wait for a slow connect; a request must not).
pub(super) async fn open_sql(
    name: &str,
    cfg: &BackendConfig,
    kind: BackendKind,
    create: Create,
) -> Result<(Db, Option<SqliteFile>), BackendError> {
    #[cfg(not(feature = "sqlite"))]
    let _ = create;
    match kind {
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => open_sqlite(name, cfg, create).await,
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => open_postgres(name, cfg).await,
        other => Err(BackendError::new(
            name,
            cfg,
            "is not an SQL database",
            format!("its URL is {other}"),
        )),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(
    name: &str,
    cfg: &BackendConfig,
    create: Create,
) -> Result<(Db, Option<SqliteFile>), BackendError> {
    let options = SqliteConnectOptions::from_str(&cfg.url)
        .map_err(|e| BackendError::new(name, cfg, "has an invalid URL", e))?;
    let path = options.get_filename().to_path_buf();
    let memory = path.as_os_str().is_empty() || path.as_os_str() == ":memory:";
    if create == Create::No && !memory && !path.exists() {
        return Err(BackendError::new(
            name,
            cfg,
            "has no database file",
            format!("{} does not exist (removed?)", path.display()),
        )
        .with_hint("the master creates it with the migrations: restore it, or send HUP (or `reload`) to run them"));
    }
    let db = within(name, cfg, async {
        let options = options
            .create_if_missing(create == Create::Yes)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        probe_sqlite(&options).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(cfg.pool_size)
            .acquire_timeout(cfg.acquire_timeout)
            .connect_lazy_with(options);
        Ok::<Db, sqlx::Error>(Db::Sqlite(pool))
    })
    .await
    .map_err(read_only)?;
    let file = (!memory).then(|| SqliteFile {
        backend: name.to_string(),
        identity: file_identity(&path),
        path,
    });
    Ok((db, file))
}

/// Connects once on a connection of its own and checks that the database
/// answers and takes a write.
#[cfg(feature = "sqlite")]
async fn probe_sqlite(options: &SqliteConnectOptions) -> Result<(), sqlx::Error> {
    let mut probe = sqlx::SqliteConnection::connect_with(options).await?;
    sqlx::query("SELECT 1").execute(&mut probe).await?;
    // A write, rolled back: a file (or a file system) that became
    // read-only fails here, at boot, not at every request's write.
    let (version,): (i64,) = sqlx::query_as("PRAGMA user_version")
        .fetch_one(&mut probe)
        .await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut probe).await?;
    let wrote = sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {version}"
    )))
    .execute(&mut probe)
    .await;
    sqlx::query("ROLLBACK").execute(&mut probe).await?;
    wrote?;
    let _ = probe.close().await;
    Ok(())
}

/// A probe that failed on a read-only database says so, and what to do.
#[cfg(feature = "sqlite")]
fn read_only(e: BackendError) -> BackendError {
    if e.cause.contains("readonly database") {
        BackendError {
            what: "is read-only",
            ..e
        }
        .with_hint(
            "make the file, its directory and its file system writable by this user; \
             workers retry by themselves",
        )
    } else {
        e
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    name: &str,
    cfg: &BackendConfig,
) -> Result<(Db, Option<SqliteFile>), BackendError> {
    within(name, cfg, async {
        let options = sqlx::postgres::PgConnectOptions::from_str(&cfg.url)?;
        let mut probe = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut probe).await?;
        let _ = probe.close().await;
        let db = Db::Postgres(
            PgPoolOptions::new()
                .max_connections(cfg.pool_size)
                .acquire_timeout(cfg.acquire_timeout)
                .connect_lazy_with(options),
        );
        Ok::<(Db, Option<SqliteFile>), sqlx::Error>((db, None))
    })
    .await
}

#[cfg(feature = "redis")]
pub(super) async fn open_redis(name: &str, cfg: &BackendConfig) -> Result<Redis, BackendError> {
    let client = redis::Client::open(cfg.url.as_str())
        .map_err(|e| BackendError::new(name, cfg, "has an invalid URL", e))?;
    within(name, cfg, async {
        // One quick retry, not redis-rs's six growing ones (6 s in all): a
        // request waits for the reconnect, and must fail fast while Redis
        // is down; the next request tries again.
        let options = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_connection_timeout(Some(cfg.connect_timeout));
        let mut conn = redis::aio::ConnectionManager::new_with_config(client, options).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok::<Redis, redis::RedisError>(conn)
    })
    .await
}
