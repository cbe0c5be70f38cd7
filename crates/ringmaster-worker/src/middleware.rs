//! The common middleware every worker's app gets, outermost first:
//!
//! 1. request id: `x-request-id` taken from the request or generated, and
//!    echoed on the response;
//! 2. a tracing span per request (method, path, request id);
//! 3. compression of responses (gzip) for clients that accept it;
//! 4. error rendering: error responses become JSON for API clients and an
//!    HTML page for browsers (`Accept: text/html`);
//! 5. a panic catcher: a panicking handler gives 500, is logged, and the
//!    worker keeps serving;
//! 6. a request timeout (`groups.NAME.request_timeout`, then 408);
//! 7. a body size limit (`groups.NAME.body_limit`, then 413).
//!
//! Graceful drain is the accept loop's (`serve`).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ringmaster_config::GroupConfig;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ErrorInfo, json_error};

/// Wraps `router` in the common middleware, configured by `cfg`.
pub fn common<S: Clone + Send + Sync + 'static>(router: Router<S>, cfg: &GroupConfig) -> Router<S> {
    let limit = usize::try_from(cfg.body_limit).unwrap_or(usize::MAX);
    router
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, cfg.request_timeout))
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn(render_errors))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NextRequestId::new()))
}

/// Request ids unique across a cluster's life: pid, then a counter.
#[derive(Clone)]
struct NextRequestId {
    prefix: String,
    counter: std::sync::Arc<AtomicU64>,
}

impl NextRequestId {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        NextRequestId {
            prefix: format!("{:x}{:05x}", std::process::id(), nanos & 0xfffff),
            counter: std::sync::Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

fn on_panic(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    tracing::error!(panic = %message, "handler panicked; answered 500, the worker keeps serving");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

/// Renders every error response (status >= 400) the same way: JSON for API
/// clients, an HTML page for browsers.
async fn render_errors(req: Request, next: Next) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let response = next.run(req).await;
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let message = match response.extensions().get::<ErrorInfo>() {
        Some(info) => info.0.clone(),
        None => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    if wants_html {
        let mut page = Response::new(Body::from(error_page(status, &message)));
        *page.status_mut() = status;
        page.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return page;
    }
    if response.extensions().get::<ErrorInfo>().is_some() {
        return response;
    }
    json_error(status, &message).into_response()
}

fn error_page(status: StatusCode, message: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><p>{message}</p></body></html>\n",
        code = status.as_u16(),
        reason = escape(reason),
        message = escape(message),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
