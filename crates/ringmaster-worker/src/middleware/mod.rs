//! The common middleware every worker's app gets, outermost first:
//!
//! 1. a tracing span per request (method, path, request id), at `debug`
//!    level: free when the log level is `info`, on with `RINGMASTER_LOG=debug`;
//! 2. compression of responses (gzip) for clients that accept it;
//! 3. [`Essentials`], one layer for the jobs that every request pays for:
//!    the request id (`x-request-id` taken from the request or generated,
//!    and echoed, and recorded in the request span), error rendering (every
//!    response with status >= 400 becomes JSON for API clients and an HTML
//!    page for browsers, keeping its headers), the request timeout
//!    (`groups.NAME.request_timeout`, then 503: the server was too slow,
//!    not the client), whose timer is armed only if the handler does not
//!    answer at once, and the built-in metrics ([`HttpMetrics`]):
//!    `http_requests_total{group,route,method,status}`,
//!    `http_request_duration_seconds{group,route}` and
//!    `http_requests_in_flight{group}`, in the cluster's registry, and the
//!    access log line (target `access`: method, path with its query
//!    string, status, duration, request id; `groups.NAME.access_log =
//!    false` turns it off);
//! 4. a panic catcher: a panicking handler gives 500, is logged, and the
//!    worker keeps serving;
//! 5. a body size limit (`groups.NAME.body_limit`, then 413).
//!
//! Graceful drain is the accept loop's (`serve`). `bench/http.sh` measures
//! the stack against a bare axum server.
//!
//! # Layout
//!
//! - `essentials`: the [`Essentials`] layer and its future;
//! - `request_id`: taking or generating the request id;
//! - `span`: the request span;
//! - `metrics`: [`HttpMetrics`] and the timer of one request;
//! - `access_log`: the access log line;
//! - `error_page`: rendering error responses as JSON or HTML.

mod access_log;
mod error_page;
mod essentials;
mod metrics;
mod request_id;
mod span;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use ringmaster_config::GroupConfig;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

pub use essentials::{Essentials, EssentialsFuture, EssentialsLayer};
pub use metrics::{HttpMetrics, LATENCY_BUCKETS};

use crate::error::json_error;
use request_id::RequestIds;

/// Wraps `router` in the common middleware, configured by `cfg`, without
/// the built-in metrics.
pub fn common<S: Clone + Send + Sync + 'static>(router: Router<S>, cfg: &GroupConfig) -> Router<S> {
    common_with_metrics(router, cfg, None)
}

/// Wraps `router` in the common middleware, recording every request in
/// `metrics` (what a worker's boot does).
pub fn common_with_metrics<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    cfg: &GroupConfig,
    metrics: Option<Arc<HttpMetrics>>,
) -> Router<S> {
    let limit = usize::try_from(cfg.body_limit).unwrap_or(usize::MAX);
    // One `layer` call: axum boxes the route once per call, so one stack
    // costs one box per request instead of one per layer.
    let stack = tower::ServiceBuilder::new()
        .layer(span::RequestSpanLayer)
        .layer(CompressionLayer::new())
        .layer(EssentialsLayer {
            timeout: cfg.request_timeout,
            ids: RequestIds::new(),
            metrics,
            access_log: cfg.access_log,
        })
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(RequestBodyLimitLayer::new(limit));
    router.layer(stack)
}

/// The panic catcher's answer: the panic is logged, the client gets 500.
fn on_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    tracing::error!(panic = %message, "handler panicked; answered 500, the worker keeps serving");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}
