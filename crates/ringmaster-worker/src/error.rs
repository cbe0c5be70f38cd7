//! Errors a handler returns, rendered for the client that asked: JSON for
//! API clients, an HTML page for browsers (see `middleware`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error response: a status and a message for the client.
///
/// ```
/// use ringmaster_worker::AppError;
/// fn find(code: &str) -> Result<String, AppError> {
///     Err(AppError::not_found(format!("no link with code {code}")))
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
    /// What went wrong, for the operator, when the client gets a generic
    /// message (a 500 or a 503): `Display` shows it, so an `init` that
    /// fails with it says why.
    cause: Option<String>,
}

/// Marks a response as an error whose message is safe to show; the error
/// page middleware renders it as JSON or HTML.
#[derive(Debug, Clone)]
pub(crate) struct ErrorInfo(pub(crate) String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    status: u16,
    message: &'a str,
}

impl AppError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
            cause: None,
        }
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 422 Unprocessable Entity: the input is well-formed but invalid.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 500 Internal Server Error; the cause is logged, the client gets a
    /// generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            .with_cause(cause.to_string())
    }

    fn with_cause(mut self, cause: String) -> Self {
        self.cause = Some(cause);
        self
    }

    /// 503 Service Unavailable (a backend is down).
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "backend unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a backend service is unavailable; try again later",
        )
        .with_cause(cause.to_string())
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.status,
            self.cause.as_deref().unwrap_or(&self.message)
        )
    }
}

impl std::error::Error for AppError {}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => AppError::not_found("not found"),
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                backend_down(&e);
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a backend service is unavailable; try again later",
                )
                .with_cause(e.to_string())
            }
            other => AppError::internal(other),
        }
    }
}

/// Requests that failed because an SQL backend was unreachable since one
/// last answered (0: it answers): the log says so when this goes from 0
/// to 1 and when it goes back, not once per request. One count for every
/// SQL backend of the process, like `REDIS_DOWN`.
static SQL_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn backend_down(e: &sqlx::Error) {
    if SQL_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
        tracing::error!(
            error = %e,
            "an SQL backend is unavailable; requests that need it answer 503 at once (logged again when it is back)"
        );
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for AppError {
    /// A Redis backend that cannot be reached (refused, dropped, timed out)
    /// is a 503, logged once per outage; anything else a 500.
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
        {
            if !REDIS_DOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(
                    error = %e,
                    "a Redis backend is unavailable; requests that need it answer 503 (it reconnects by itself)"
                );
            }
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "a backend service is unavailable; try again later",
            )
            .with_cause(e.to_string())
        } else {
            AppError::internal(e)
        }
    }
}

/// Whether a Redis command failed for want of a connection since one last
/// succeeded through [`redis_outcome`]. One flag for every Redis backend of
/// the process: with two, a success on one says "answers again" while the
/// other may still be down (the lines are a hint; the 503s are exact).
#[cfg(feature = "redis")]
static REDIS_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A Redis command's result as an [`AppError`] (503 when Redis cannot be
/// reached); a success after an outage says once that Redis is back.
///
/// ```
/// # async fn handler(ctx: ringmaster_worker::AppContext) -> Result<String, ringmaster_worker::AppError> {
/// const CACHE: ringmaster_worker::RedisBackend = ringmaster_worker::RedisBackend::new("cache");
/// let mut redis = ctx.redis(CACHE)?;
/// let n: u64 = ringmaster_worker::redis_outcome(
///     ringmaster_worker::redis::cmd("INCR").arg("visits").query_async(&mut redis).await,
/// )?;
/// # Ok(n.to_string()) }
/// ```
#[cfg(feature = "redis")]
pub fn redis_outcome<T>(result: Result<T, redis::RedisError>) -> Result<T, AppError> {
    match result {
        Ok(v) => {
            if REDIS_DOWN.load(std::sync::atomic::Ordering::Relaxed)
                && REDIS_DOWN.swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!("the Redis backend answers again");
            }
            Ok(v)
        }
        Err(e) => Err(AppError::from(e)),
    }
}

/// What [`on_db!`](crate::on_db) makes of a query's result: an error
/// becomes an [`AppError`] (503 when the backend is unreachable); success
/// after failures says once that the backend is back.
#[doc(hidden)]
pub fn __db_outcome<T>(result: Result<T, sqlx::Error>) -> Result<T, AppError> {
    match result {
        Ok(v) => {
            if SQL_FAILURES.load(std::sync::atomic::Ordering::Relaxed) != 0 {
                let failed = SQL_FAILURES.swap(0, std::sync::atomic::Ordering::Relaxed);
                if failed > 0 {
                    tracing::info!(
                        failed,
                        "the SQL backend answers again ({failed} requests failed meanwhile)"
                    );
                }
            }
            Ok(v)
        }
        Err(e) => Err(AppError::from(e)),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        json_error(self.status, &self.message)
    }
}

/// The JSON error body every error response uses.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            status: status.as_u16(),
            message,
        },
    };
    let mut response = (status, Json(body)).into_response();
    response
        .extensions_mut()
        .insert(ErrorInfo(message.to_string()));
    response
}
