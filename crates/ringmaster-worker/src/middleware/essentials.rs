//! [`Essentials`], the one layer every request pays for: it takes the
//! request id, arms the request timeout only when the handler does not
//! answer at once, renders error responses, records the metrics and writes
//! the access log line. One wrapper instead of four keeps the per-request
//! cost low.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::access_log::Access;
use super::error_page::{render_error, wants_html};
use super::metrics::{HttpMetrics, RequestTimer};
use super::request_id::{RequestIds, X_REQUEST_ID};
use crate::error::{ErrorInfo, json_error};

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
    pub(super) timeout: Duration,
    pub(super) ids: RequestIds,
    pub(super) metrics: Option<Arc<HttpMetrics>>,
    pub(super) access_log: bool,
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
        a.write(response.status(), took, id.as_ref());
    }
    if let Some(id) = id {
        response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    }
    response
}
