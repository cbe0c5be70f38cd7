//! The request span: one `debug` span per request (method, path, request
//! id), entered while the inner services run and their future is polled.
//!
//! It replaces tower-http's `TraceLayer`, which for the same span also read
//! the clock when a request arrived and on every response frame, and
//! wrapped every response body, whatever the log level: with the level at
//! `info` this layer costs one disabled span check per request.

use std::task::{Context, Poll};

use axum::extract::Request;
use tower::{Layer, Service};
use tracing::Instrument;

/// Wraps a service in [`RequestSpan`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner }
    }
}

/// The service [`RequestSpanLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S> Service<Request> for RequestSpan<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // `Essentials`, inside, records the id it takes or generates.
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = tracing::field::Empty
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        future.instrument(span)
    }
}
