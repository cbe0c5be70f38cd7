//! [`Query`]: one SQL statement that runs on whichever database a [`Db`]
//! holds, SQLite or PostgreSQL, with no macro. Parameters are `$1`, `$2`,
//! ... (both databases read them); rows are read into tuples (or any type
//! that implements sqlx's `FromRow` for both), so no derive is needed.
//!
//! It costs what the same sqlx call costs: the statement is built for the
//! pool's own driver when [`Db::query`] is called, and each `bind` encodes
//! into that driver's arguments at once. Errors become one [`AppError`]
//! (503 when the backend is unreachable), logged once per outage.
//!
//! For what only one database has, match on [`Db`] or use
//! [`on_db!`](crate::on_db).

#[allow(unused_imports)]
use sqlx::{Encode, FromRow, Type};

use crate::backend::Db;
use crate::error::{__db_outcome, AppError};

/// A value a [`Query`] can bind: it encodes for every SQL driver this
/// binary is built with (integers, floats, `bool`, `String`, `&str`,
/// `Vec<u8>`, `Option`s of them, ...).
pub trait SqlValue: SqliteValue + PgValue + Send {}

impl<T: SqliteValue + PgValue + Send> SqlValue for T {}

/// A row type a [`Query`] can read: tuples of [`SqlValue`]-like columns
/// (`(i64,)`, `(String, String, i64)`), or a struct that derives
/// `sqlx::FromRow` (add sqlx to your own `Cargo.toml` for the derive:
/// see the README).
pub trait SqlRow: SqliteRow + PgRow + Send + Unpin {}

impl<T: SqliteRow + PgRow + Send + Unpin> SqlRow for T {}

/// A value SQLite encodes (anything when the binary has no SQLite).
#[doc(hidden)]
#[cfg(feature = "sqlite")]
pub trait SqliteValue: for<'q> Encode<'q, sqlx::Sqlite> + Type<sqlx::Sqlite> {}
#[cfg(feature = "sqlite")]
impl<T: for<'q> Encode<'q, sqlx::Sqlite> + Type<sqlx::Sqlite>> SqliteValue for T {}
#[doc(hidden)]
#[cfg(not(feature = "sqlite"))]
pub trait SqliteValue {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteValue for T {}

/// A value PostgreSQL encodes (anything when the binary has no PostgreSQL).
#[doc(hidden)]
#[cfg(feature = "postgres")]
pub trait PgValue: for<'q> Encode<'q, sqlx::Postgres> + Type<sqlx::Postgres> {}
#[cfg(feature = "postgres")]
impl<T: for<'q> Encode<'q, sqlx::Postgres> + Type<sqlx::Postgres>> PgValue for T {}
#[doc(hidden)]
#[cfg(not(feature = "postgres"))]
pub trait PgValue {}
#[cfg(not(feature = "postgres"))]
impl<T> PgValue for T {}

/// A row SQLite decodes (anything when the binary has no SQLite).
#[doc(hidden)]
#[cfg(feature = "sqlite")]
pub trait SqliteRow: for<'r> FromRow<'r, sqlx::sqlite::SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> FromRow<'r, sqlx::sqlite::SqliteRow>> SqliteRow for T {}
#[doc(hidden)]
#[cfg(not(feature = "sqlite"))]
pub trait SqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteRow for T {}

/// A row PostgreSQL decodes (anything when the binary has no PostgreSQL).
#[doc(hidden)]
#[cfg(feature = "postgres")]
pub trait PgRow: for<'r> FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> FromRow<'r, sqlx::postgres::PgRow>> PgRow for T {}
#[doc(hidden)]
#[cfg(not(feature = "postgres"))]
pub trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}

#[cfg(feature = "sqlite")]
type SqliteQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;
#[cfg(feature = "postgres")]
type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// One statement on a [`Db`], built by [`Db::query`].
///
/// ```
/// # async fn f(db: &ringmaster_worker::Db) -> Result<(), ringmaster_worker::AppError> {
/// let (id, n): (i32, i32) = db
///     .query("SELECT id, randomnumber FROM world WHERE id = $1")
///     .bind(42)
///     .fetch_one()
///     .await?;
/// let deleted = db.query("DELETE FROM links WHERE code = $1").bind("abc").execute().await?;
/// # Ok(()) }
/// ```
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'a> {
    on: On<'a>,
}

enum On<'a> {
    #[cfg(feature = "sqlite")]
    Sqlite(&'a sqlx::SqlitePool, SqliteQuery),
    #[cfg(feature = "postgres")]
    Postgres(&'a sqlx::PgPool, PgQuery),
}

impl Db {
    /// A statement to run on this backend, whichever database it is.
    pub fn query(&self, sql: &'static str) -> Query<'_> {
        let on = match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => On::Sqlite(pool, sqlx::query(sql)),
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => On::Postgres(pool, sqlx::query(sql)),
        };
        Query { on }
    }
}

impl Query<'_> {
    /// Binds the next parameter (`$1`, then `$2`, ...).
    pub fn bind<T: SqlValue>(self, value: T) -> Self {
        let on = match self.on {
            #[cfg(feature = "sqlite")]
            On::Sqlite(pool, q) => On::Sqlite(pool, q.bind(value)),
            #[cfg(feature = "postgres")]
            On::Postgres(pool, q) => On::Postgres(pool, q.bind(value)),
        };
        Query { on }
    }

    /// Runs it; the number of rows it changed.
    pub async fn execute(self) -> Result<u64, AppError> {
        __db_outcome(match self.on {
            #[cfg(feature = "sqlite")]
            On::Sqlite(pool, q) => q.execute(pool).await.map(|r| r.rows_affected()),
            #[cfg(feature = "postgres")]
            On::Postgres(pool, q) => q.execute(pool).await.map(|r| r.rows_affected()),
        })
    }

    /// The one row it returns; none is a 404, as `sqlx::Error::RowNotFound`.
    pub async fn fetch_one<R: SqlRow>(self) -> Result<R, AppError> {
        __db_outcome(match self.on {
            #[cfg(feature = "sqlite")]
            On::Sqlite(pool, q) => q.fetch_one(pool).await.and_then(|row| R::from_row(&row)),
            #[cfg(feature = "postgres")]
            On::Postgres(pool, q) => q.fetch_one(pool).await.and_then(|row| R::from_row(&row)),
        })
    }

    /// The row it returns, if any.
    pub async fn fetch_optional<R: SqlRow>(self) -> Result<Option<R>, AppError> {
        __db_outcome(match self.on {
            #[cfg(feature = "sqlite")]
            On::Sqlite(pool, q) => match q.fetch_optional(pool).await {
                Ok(Some(row)) => R::from_row(&row).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            #[cfg(feature = "postgres")]
            On::Postgres(pool, q) => match q.fetch_optional(pool).await {
                Ok(Some(row)) => R::from_row(&row).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
        })
    }

    /// Every row it returns.
    pub async fn fetch_all<R: SqlRow>(self) -> Result<Vec<R>, AppError> {
        __db_outcome(match self.on {
            #[cfg(feature = "sqlite")]
            On::Sqlite(pool, q) => q
                .fetch_all(pool)
                .await
                .and_then(|rows| rows.iter().map(R::from_row).collect()),
            #[cfg(feature = "postgres")]
            On::Postgres(pool, q) => q
                .fetch_all(pool)
                .await
                .and_then(|rows| rows.iter().map(R::from_row).collect()),
        })
    }
}
