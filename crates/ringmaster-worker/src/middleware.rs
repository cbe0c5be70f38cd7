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

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use ringmaster_config::GroupConfig;
use tokio::time::Sleep;
use tower::{Layer, Service};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ErrorInfo, json_error};
use crate::registry::{Counter, Gauge, Histogram, Registry};

/// The request id header.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // `Essentials`, inside, records the id it takes or generates.
            tracing::debug_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = tracing::field::Empty
            )
        }))
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

/// Request ids unique across a cluster's life: a prefix from the pid and
/// the start time, then a counter.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        RequestIds {
            prefix: format!("{:x}{:05x}", std::process::id(), nanos & 0xfffff).into(),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n:x}", self.prefix);
        // Hex digits and '-' only: always a valid header value.
        HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Request id, error rendering and request timeout in one layer (see the
/// module docs); one wrapper instead of four keeps the per-request cost low.
#[derive(Clone)]
pub struct Essentials<S> {
    inner: S,
    timeout: Duration,
    ids: RequestIds,
    metrics: Option<Arc<HttpMetrics>>,
    access_log: bool,
}

/// The [`Layer`] of [`Essentials`].
#[derive(Clone)]
pub struct EssentialsLayer {
    timeout: Duration,
    ids: RequestIds,
    metrics: Option<Arc<HttpMetrics>>,
    access_log: bool,
}

impl Essentials<()> {
    /// The layer, with the request timeout and no metrics.
    pub fn layer(timeout: Duration) -> EssentialsLayer {
        EssentialsLayer {
            timeout,
            ids: RequestIds::new(),
            metrics: None,
            access_log: false,
        }
    }
}

impl<S> Layer<S> for EssentialsLayer {
    type Service = Essentials<S>;

    fn layer(&self, inner: S) -> Essentials<S> {
        Essentials {
            inner,
            timeout: self.timeout,
            ids: self.ids.clone(),
            metrics: self.metrics.clone(),
            access_log: self.access_log,
        }
    }
}

/// The built-in HTTP metrics of one worker, in the cluster's registry.
pub struct HttpMetrics {
    registry: Registry,
    group: String,
    in_flight: Gauge,
    routes: RwLock<HashMap<Arc<str>, Arc<RouteMetrics>>>,
}

/// Bucket bounds of `http_request_duration_seconds`: from 100 µs, since a
/// Rust handler often answers in tens of microseconds (with the default
/// buckets' 1 ms floor, every p50 and p99 `status` and the dashboard show
/// would read "under 1 ms"), up to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The series of one route.
struct RouteMetrics {
    route: Arc<str>,
    duration: Histogram,
    counts: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The method as a label: the standard ones, else `OTHER` (a client must
/// not be able to make series without bound).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl HttpMetrics {
    /// The metrics of a worker of `group`, recorded in `registry`.
    pub fn new(registry: &Registry, group: &str) -> Arc<Self> {
        Arc::new(HttpMetrics {
            registry: registry.clone(),
            group: group.to_string(),
            in_flight: registry.gauge_with(
                "http_requests_in_flight",
                "Requests being handled now.",
                &[("group", group)],
            ),
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// The series of `route` (the matched path pattern, so a handful per app).
    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        if let Some(r) = read(&self.routes).get(route) {
            return r.clone();
        }
        let mut routes = write(&self.routes);
        routes
            .entry(route.into())
            .or_insert_with(|| {
                Arc::new(RouteMetrics {
                    route: route.into(),
                    duration: self.registry.histogram_with(
                        "http_request_duration_seconds",
                        "Time from the request to its response head, in seconds.",
                        &[("group", &self.group), ("route", route)],
                        &LATENCY_BUCKETS,
                    ),
                    counts: RwLock::new(Vec::new()),
                })
            })
            .clone()
    }

    fn count(&self, route: &RouteMetrics, method: &'static str, status: u16) {
        let found = read(&route.counts)
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, c)| c.clone());
        let counter = match found {
            Some(c) => c,
            None => {
                let c = self.registry.counter_with(
                    "http_requests_total",
                    "Requests answered, by route, method and status.",
                    &[
                        ("group", &self.group),
                        ("route", &route.route),
                        ("method", method),
                        ("status", &status.to_string()),
                    ],
                );
                write(&route.counts).push((method, status, c.clone()));
                c
            }
        };
        counter.inc();
    }
}

/// One request being measured; leaving it (answered or dropped) lowers
/// the in-flight gauge.
struct RequestTimer {
    metrics: Arc<HttpMetrics>,
    route: Arc<RouteMetrics>,
    method: &'static str,
    start: std::time::Instant,
}

impl RequestTimer {
    fn finish(self, status: StatusCode, took: Duration) {
        self.route.duration.observe_duration(took);
        self.metrics
            .count(&self.route, self.method, status.as_u16());
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl<S, B> Service<Request> for Essentials<S>
where
    S: Service<Request, Response = axum::http::Response<B>, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EssentialsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        if let Ok(text) = id.to_str() {
            tracing::Span::current().record("request_id", text);
        }
        let html = wants_html(req.headers());
        // One clock read for the metrics and the access log.
        let start = std::time::Instant::now();
        let timer = self.metrics.as_ref().map(|m| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            m.in_flight.inc();
            RequestTimer {
                metrics: m.clone(),
                route: m.route(route),
                method: method_label(req.method()),
                start,
            }
        });
        let access = self.access_log.then(|| Access {
            method: method_label(req.method()),
            // The request target as the client sent it, query included
            // (as nginx, Gunicorn and Puma log it). A clone shares the
            // parsed request's bytes: no allocation, query or not.
            target: req.uri().path_and_query().cloned(),
            start,
        });
        EssentialsFuture {
            access,
            inner: self.inner.call(req),
            sleep: None,
            timeout: self.timeout,
            id: Some(id),
            html,
            rendering: None,
            timer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Essentials`].
    pub struct EssentialsFuture<F> {
        #[pin]
        inner: F,
        // Armed only when the handler did not answer on its first poll:
        // most requests never touch the timer wheel.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        id: Option<HeaderValue>,
        html: bool,
        // Error responses that need their body read to be rendered.
        rendering: Option<Pin<Box<dyn Future<Output = Response> + Send>>>,
        timer: Option<RequestTimer>,
        access: Option<Access>,
    }
}

impl<F, B> Future for EssentialsFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(rendering) = this.rendering {
            let response = std::task::ready!(rendering.as_mut().poll(cx));
            return Poll::Ready(Ok(done(
                response,
                this.id.take(),
                this.timer.take(),
                this.access.take(),
            )));
        }
        let response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response.map(Body::new),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                let timeout = *this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the request took longer than request_timeout",
                )
            }
        };
        let finished = response.status().as_u16() < 400
            || (!*this.html && response.extensions().get::<ErrorInfo>().is_some());
        if finished {
            return Poll::Ready(Ok(done(
                response,
                this.id.take(),
                this.timer.take(),
                this.access.take(),
            )));
        }
        let mut rendering = Box::pin(render_error(response, *this.html));
        match rendering.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Ok(done(
                response,
                this.id.take(),
                this.timer.take(),
                this.access.take(),
            ))),
            Poll::Pending => {
                *this.rendering = Some(rendering);
                Poll::Pending
            }
        }
    }
}

/// What the access log line of a request needs.
struct Access {
    method: &'static str,
    /// Path and query; none for a target without a path (`CONNECT`'s
    /// authority form).
    target: Option<PathAndQuery>,
    start: std::time::Instant,
}

/// The finished response: its request id, its metrics recorded, its
/// access log line written (the group, slot and pid are added by the
/// master).
fn done(
    mut response: Response,
    id: Option<HeaderValue>,
    timer: Option<RequestTimer>,
    access: Option<Access>,
) -> Response {
    let took = match (&timer, &access) {
        (Some(t), _) => t.start.elapsed(),
        (None, Some(a)) => a.start.elapsed(),
        (None, None) => Duration::ZERO,
    };
    if let Some(t) = timer {
        t.finish(response.status(), took);
    }
    if let Some(a) = access {
        let micros = took.as_micros() as u64;
        let rid = id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
        let status = response.status().as_u16();
        let path = a.target.as_ref().map_or("", PathAndQuery::as_str);
        if !crate::logpipe::access(a.method, path, status, micros, rid) {
            tracing::info!(
                target: "access",
                method = a.method,
                path,
                status,
                duration_ms = micros as f64 / 1000.0,
                request_id = rid,
                "request"
            );
        }
    }
    if let Some(id) = id {
        response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    }
    response
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
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

/// The largest error body read to become the message of a rendered error.
const MAX_ERROR_BODY: usize = 4096;

/// Renders an error response (status >= 400) the same way whoever made
/// it: JSON for API clients, an HTML page for browsers. The message is the
/// `AppError`'s, else the body's text (an extractor's rejection says what
/// was wrong), else the status's reason. The response's headers are kept
/// (`WWW-Authenticate`, `Retry-After`, CORS...), but for the body's own; a
/// JSON error body made by the app is left as it is for API clients.
async fn render_error(response: Response, wants_html: bool) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let message = match parts.extensions.get::<ErrorInfo>() {
        Some(info) => info.0.clone(),
        None => {
            let json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("json"));
            if json && !wants_html {
                return Response::from_parts(parts, body);
            }
            match axum::body::to_bytes(body, MAX_ERROR_BODY).await {
                Ok(text) if !text.is_empty() => String::from_utf8_lossy(&text).trim().to_string(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            }
        }
    };
    let mut rendered = if wants_html {
        let mut page = Response::new(Body::from(error_page(status, &message)));
        *page.status_mut() = status;
        page.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page
    } else {
        json_error(status, &message)
    };
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered
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
