//! [`Essentials`], the one layer every request pays for: it takes the
//! request id, arms the request timeout only when the handler does not
//! answer at once, catches a handler's panic, renders error responses,
//! records the metrics, writes the access log line and sets the worker's
//! response headers. One wrapper instead of six keeps the per-request cost
//! low.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::access_log::Access;
use super::error_page::{render_error, wants_html};
use super::metrics::{HttpMetrics, RequestTimer};
use super::request_id::{RequestIds, X_REQUEST_ID};
use crate::error::{ErrorInfo, json_error};

/// Request id, timeout, panic catcher, error rendering, metrics, access
/// line and response headers in one layer (see the module docs).
#[derive(Clone)]
pub struct Essentials<S> {
    inner: S,
    timeout: Duration,
    ids: RequestIds,
    metrics: Option<Arc<HttpMetrics>>,
    access_log: bool,
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

/// The [`Layer`] of [`Essentials`].
#[derive(Clone)]
pub struct EssentialsLayer {
    pub(super) timeout: Duration,
    pub(super) ids: RequestIds,
    pub(super) metrics: Option<Arc<HttpMetrics>>,
    pub(super) access_log: bool,
    pub(super) headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl Essentials<()> {
    /// The layer, with the request timeout and no metrics.
    pub fn layer(timeout: Duration) -> EssentialsLayer {
        EssentialsLayer {
            timeout,
            ids: RequestIds::new(),
            metrics: None,
            access_log: false,
            headers: Arc::new([]),
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
            headers: self.headers.clone(),
        }
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
        let id = self.ids.of(&mut req);
        let html = wants_html(req.headers());
        // One clock read for the metrics and the access log.
        let start = std::time::Instant::now();
        let timer = self.metrics.as_ref().map(|m| m.start(&req, start));
        let access = self.access_log.then(|| Access::new(&req, start));
        // A handler that panics (here, or when its future is polled) gets
        // 500 and the worker goes on: what tower-http's CatchPanic does,
        // without a layer of its own.
        let (inner, panicked) =
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(inner) => (Some(inner), None),
                Err(payload) => (None, Some(super::on_panic(payload))),
            };
        EssentialsFuture {
            inner,
            panicked,
            sleep: None,
            timeout: self.timeout,
            html,
            rendering: None,
            finish: Some(Finish {
                id,
                timer,
                access,
                headers: (!self.headers.is_empty()).then(|| self.headers.clone()),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Essentials`].
    pub struct EssentialsFuture<F> {
        // None once the handler panicked.
        #[pin]
        inner: Option<F>,
        panicked: Option<Response>,
        // Armed only when the handler did not answer on its first poll:
        // most requests never touch the timer wheel.
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
        html: bool,
        // Error responses that need their body read to be rendered.
        rendering: Option<Pin<Box<dyn Future<Output = Response> + Send>>>,
        // Taken when the response is ready.
        finish: Option<Finish>,
    }
}

/// What is done to a response once it is ready.
struct Finish {
    id: HeaderValue,
    timer: Option<RequestTimer>,
    access: Option<Access>,
    headers: Option<Arc<[(HeaderName, HeaderValue)]>>,
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
            return Poll::Ready(Ok(done(response, this.finish.take())));
        }
        let response = match this.inner.as_pin_mut() {
            // The handler panicked in `call`.
            None => this.panicked.take().unwrap_or_else(|| {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            }),
            Some(inner) => match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                // Never polled again: this future is done.
                Err(payload) => super::on_panic(payload),
                Ok(Poll::Ready(Ok(response))) => response.map(Body::new),
                Ok(Poll::Ready(Err(never))) => match never {},
                Ok(Poll::Pending) => {
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
            },
        };
        let finished = response.status().as_u16() < 400
            || (!*this.html && response.extensions().get::<ErrorInfo>().is_some());
        if finished {
            return Poll::Ready(Ok(done(response, this.finish.take())));
        }
        let mut rendering = Box::pin(render_error(response, *this.html));
        match rendering.as_mut().poll(cx) {
            Poll::Ready(response) => Poll::Ready(Ok(done(response, this.finish.take()))),
            Poll::Pending => {
                *this.rendering = Some(rendering);
                Poll::Pending
            }
        }
    }
}

/// The finished response: its request id and the worker's headers set,
/// its metrics recorded, its access log line written (the group, slot and
/// pid are added by the master).
fn done(mut response: Response, finish: Option<Finish>) -> Response {
    let Some(Finish {
        id,
        timer,
        access,
        headers,
    }) = finish
    else {
        return response;
    };
    let took = match (&timer, &access) {
        (Some(t), _) => t.start.elapsed(),
        (None, Some(a)) => a.start.elapsed(),
        (None, None) => Duration::ZERO,
    };
    if let Some(t) = timer {
        t.finish(response.status(), took);
    }
    if let Some(a) = access {
        a.write(response.status(), took, Some(&id));
    }
    let map = response.headers_mut();
    for (name, value) in headers.iter().flat_map(|h| h.iter()) {
        if !map.contains_key(name) {
            map.insert(name.clone(), value.clone());
        }
    }
    map.insert(X_REQUEST_ID.clone(), id);
    response
}
