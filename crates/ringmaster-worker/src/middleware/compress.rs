//! Compression of responses (gzip) for clients that accept it: tower-http's
//! [`Compression`], skipped without work when the request has no
//! `Accept-Encoding` header (what load generators, health checks and many
//! API clients send). tower-http alone parses the header, wraps every
//! response body (compressed or not) in its own body type and polls it
//! frame by frame; a request that cannot take compression pays nothing
//! here but a header lookup and, for a response that could have been
//! compressed, the `Vary: accept-encoding` that tower-http would add too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_RANGE, VARY};
use axum::http::{HeaderValue, Response};
use tower::{Layer, Service};
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::compression::{Compression, CompressionBody};

/// Wraps a service in [`Compress`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressLayer;

impl<S> Layer<S> for CompressLayer {
    type Service = Compress<S>;

    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            inner: Compression::new(inner),
        }
    }
}

/// The service [`CompressLayer`] makes: tower-http's compression when the
/// request names encodings, the inner service alone when it names none.
#[derive(Clone)]
pub struct Compress<S> {
    inner: Compression<S>,
}

/// tower-http's choice of what is worth compressing (32 bytes or more,
/// not images, gRPC or event streams), made once: cloning it per request
/// costs more than the check.
static WORTH_COMPRESSING: std::sync::LazyLock<DefaultPredicate> =
    std::sync::LazyLock::new(DefaultPredicate::new);

impl<S, E> Service<Request> for Compress<S>
where
    S: Service<Request, Response = Response<Body>, Error = E>,
{
    type Response = Response<Body>;
    type Error = E;
    type Future = CompressFuture<<Compression<S> as Service<Request>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.headers().contains_key(ACCEPT_ENCODING) {
            CompressFuture::Negotiated {
                inner: self.inner.call(req),
            }
        } else {
            CompressFuture::Plain {
                inner: self.inner.get_mut().call(req),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Compress`].
    #[project = Projected]
    pub enum CompressFuture<N, F> {
        /// The request named encodings: tower-http chooses.
        Negotiated {
            #[pin]
            inner: N,
        },
        /// The request named none: the response goes out as it is.
        Plain {
            #[pin]
            inner: F,
        },
    }
}

impl<N, F, E> Future for CompressFuture<N, F>
where
    N: Future<Output = Result<Response<CompressionBody<Body>>, E>>,
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Negotiated { inner } => {
                let response = ready!(inner.poll(cx))?;
                Poll::Ready(Ok(response.map(Body::new)))
            }
            Projected::Plain { inner } => {
                let mut response = ready!(inner.poll(cx))?;
                // As tower-http does: a response that could have been
                // compressed varies with Accept-Encoding, so that a cache
                // does not hand this one to a client that takes gzip.
                // The predicate first: a short body stops it at its size.
                let headers = response.headers();
                if WORTH_COMPRESSING.should_compress(&response)
                    && !headers.contains_key(CONTENT_ENCODING)
                    && !headers.contains_key(CONTENT_RANGE)
                    && !varies(&response)
                {
                    response
                        .headers_mut()
                        .append(VARY, HeaderValue::from_static("accept-encoding"));
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// Whether `response` already says it varies with Accept-Encoding.
fn varies<B>(response: &Response<B>) -> bool {
    let name = ACCEPT_ENCODING.as_str().as_bytes();
    response.headers().get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .windows(name.len())
            .any(|w| w.eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn answer(accept: Option<&str>, body: &'static str) -> Response<Body> {
        let app = axum::Router::new().route("/", axum::routing::get(move || async move { body }));
        let svc = CompressLayer.layer(app);
        let mut req = Request::get("/");
        if let Some(a) = accept {
            req = req.header(ACCEPT_ENCODING, a);
        }
        svc.oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    const LONG: &str = "a body long enough for the default predicate to compress it, twice over";

    #[tokio::test]
    async fn gzip_when_accepted_plain_and_varying_when_not() {
        let gz = answer(Some("gzip"), LONG).await;
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert_eq!(gz.headers()["vary"], "accept-encoding");

        let plain = answer(None, LONG).await;
        assert!(plain.headers().get("content-encoding").is_none());
        assert_eq!(plain.headers()["vary"], "accept-encoding");
        let bytes = axum::body::to_bytes(plain.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&bytes[..], LONG.as_bytes());

        let identity = answer(Some("identity"), LONG).await;
        assert!(identity.headers().get("content-encoding").is_none());
    }

    #[tokio::test]
    async fn a_short_body_is_not_marked_as_varying() {
        let plain = answer(None, "tiny").await;
        assert!(plain.headers().get("vary").is_none());
    }
}
