//! The request body limit (`groups.NAME.body_limit`): a request that
//! declares a longer body gets 413 at once; a body of unknown length
//! (chunked) is cut at the limit, and the handler reading it gets 413.
//!
//! What tower-http's `RequestBodyLimit` does, without wrapping (and so
//! boxing again) the bodies that need no watch: an empty body, or one
//! whose declared length is within the limit (hyper delivers no more than
//! the declared length).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use tower::{Layer, Service};

/// Wraps a service in [`BodyLimit`].
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    /// The largest body accepted, in bytes.
    pub limit: u64,
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`BodyLimitLayer`] makes.
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: u64,
}

impl<S, E> Service<Request> for BodyLimit<S>
where
    S: Service<Request, Response = Response<Body>, Error = E>,
{
    type Response = Response<Body>;
    type Error = E;
    type Future = BodyLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let body = req.body();
        let hint = body.size_hint();
        if hint.lower() > self.limit {
            return BodyLimitFuture::TooLarge;
        }
        // A declared length over the limit was refused above: what is left
        // to watch is a body of unknown length.
        let watched = !body.is_end_stream() && hint.exact().is_none();
        let req = if watched {
            let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
            req.map(|b| Body::new(http_body_util::Limited::new(b, limit)))
        } else {
            req
        };
        BodyLimitFuture::Inner {
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`BodyLimit`].
    #[project = Projected]
    pub enum BodyLimitFuture<F> {
        /// The request goes on.
        Inner {
            #[pin]
            inner: F,
        },
        /// The declared body is over the limit.
        TooLarge,
    }
}

impl<F, E> Future for BodyLimitFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Inner { inner } => inner.poll(cx),
            Projected::TooLarge => {
                let mut response = Response::new(Body::from("length limit exceeded"));
                *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn send(body: Body, length: Option<u64>) -> StatusCode {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() }),
        );
        let svc = BodyLimitLayer { limit: 10 }.layer(app);
        let mut req = Request::post("/");
        if let Some(n) = length {
            req = req.header("content-length", n);
        }
        let response = svc.oneshot(req.body(body).unwrap()).await.unwrap();
        response.status()
    }

    #[tokio::test]
    async fn within_over_and_unknown_lengths() {
        assert_eq!(
            send(Body::from("0123456789"), Some(10)).await,
            StatusCode::OK
        );
        assert_eq!(
            send(Body::from("0123456789a"), Some(11)).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(send(Body::empty(), None).await, StatusCode::OK);
        // A stream of unknown length: cut at the limit.
        let chunks = |n: usize| {
            let parts: Vec<Result<&'static [u8], std::io::Error>> =
                (0..n).map(|_| Ok(&b"01234"[..])).collect();
            Body::from_stream(futures_stream(parts))
        };
        assert_eq!(send(chunks(2), None).await, StatusCode::OK);
        assert_eq!(send(chunks(3), None).await, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A stream of the given items, without a futures-util dependency.
    fn futures_stream<T: Unpin + Send + 'static>(
        items: Vec<T>,
    ) -> impl futures_core::Stream<Item = T> + Send + 'static {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T: Unpin> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
                Poll::Ready(self.0.next())
            }
        }
        Iter(items.into_iter())
    }
}
