//! The common middleware every worker's app gets, outermost first:
//!
//! 1. a tracing span per request (method, path, request id), at `debug`
//!    level: free when the log level is `info`, on with `RINGMASTER_LOG=debug`;
//! 2. compression of responses (gzip) for clients that accept it, skipped
//!    without work for a request with no `Accept-Encoding`;
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
//!    false` turns it off), the panic catcher (a panicking handler gives
//!    500, is logged, and the worker keeps serving) and the worker's
//!    [`response_header`](crate::Worker::response_header)s;
//! 4. a body size limit (`groups.NAME.body_limit`, then 413), which
//!    watches only the bodies whose length is unknown.
//!
//! Each layer is a concrete service and future, with no box on the common
//! path (a compressed body, a chunked request body under the limit, a
//! slow handler's timer and an error page to render are boxed);
//! `bench/instructions.sh` counts what a request costs, in
//! `docs/performance.md`.
//!
//! Graceful drain is the accept loop's (`serve`). `bench/http.sh` measures
//! the stack against a bare axum server.
//!
//! # Layout
//!
//! - `essentials`: the [`Essentials`] layer and its future;
//! - `request_id`: taking or generating the request id;
//! - `span`: the request span;
//! - `compress`: compression, skipped for clients that name no encoding;
//! - `body_limit`: the body size limit;
//! - `metrics`: [`HttpMetrics`] and the timer of one request;
//! - `access_log`: the access log line;
//! - `error_page`: rendering error responses as JSON or HTML.

mod access_log;
mod body_limit;
mod compress;
mod error_page;
mod essentials;
mod metrics;
mod request_id;
mod span;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use ringmaster_config::GroupConfig;

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
    stack(router, cfg, metrics, Vec::new())
}

/// The common middleware around `router`, adding `headers` to every
/// response that does not set them itself.
pub(crate) fn stack<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    cfg: &GroupConfig,
    metrics: Option<Arc<HttpMetrics>>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Router<S> {
    // One `layer` call: axum boxes the route once per call, so one stack
    // costs one box per request instead of one per layer.
    let stack = tower::ServiceBuilder::new()
        .layer(span::RequestSpanLayer)
        .layer(compress::CompressLayer)
        .layer(EssentialsLayer {
            timeout: cfg.request_timeout,
            ids: RequestIds::new(),
            metrics,
            access_log: cfg.access_log,
            headers: headers.into(),
        })
        .layer(body_limit::BodyLimitLayer {
            limit: cfg.body_limit,
        });
    // Two stacks rather than an optional layer: `Either` would cost every
    // request a few hundred instructions for nothing.
    match extractor_limit(cfg.body_limit) {
        Some(limit) => router.layer(stack.layer(limit)),
        None => router.layer(stack),
    }
}

/// axum's own body limit for its extractors (`Bytes`, `Json`, `Form`...).
const AXUM_EXTRACTOR_LIMIT: u64 = 2 * 1024 * 1024;

/// axum's extractors cut a body at 2 MiB unless told otherwise: a larger
/// `body_limit` tells them (one request extension). Under 2 MiB, the body
/// limit's own check comes first and axum's never applies.
fn extractor_limit(limit: u64) -> Option<axum::extract::DefaultBodyLimit> {
    (limit > AXUM_EXTRACTOR_LIMIT)
        .then(|| axum::extract::DefaultBodyLimit::max(usize::try_from(limit).unwrap_or(usize::MAX)))
}

/// The panic catcher's answer: the panic is logged, the client gets 500.
pub(super) fn on_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    tracing::error!(panic = %message, "handler panicked; answered 500, the worker keeps serving");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn post(body_limit: u64, len: usize) -> StatusCode {
        let app = Router::new().route(
            "/",
            axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() }),
        );
        let mut cfg = GroupConfig::default();
        cfg.body_limit = body_limit;
        let req = axum::http::Request::post("/")
            .header("content-length", len)
            .body(axum::body::Body::from(vec![b'a'; len]))
            .unwrap();
        common(app, &cfg).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn a_body_limit_over_axums_own_reaches_the_extractors() {
        assert_eq!(post(4 << 20, 3 << 20).await, StatusCode::OK);
        assert_eq!(post(4 << 20, 5 << 20).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(post(2 << 20, 3 << 20).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            post(1 << 20, (1 << 20) + 1).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
