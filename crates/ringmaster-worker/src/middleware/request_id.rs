//! Request ids: the `x-request-id` a request brings, or one generated
//! ([`RequestIds`]), unique across a cluster's life; recorded in the
//! request's span and echoed in its response.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};

/// The request id header.
pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids unique across a cluster's life: a prefix from the pid and
/// the start time, then a counter.
#[derive(Clone)]
pub(super) struct RequestIds {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    pub(super) fn new() -> Self {
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

    /// The id of `req`: the one it brings, else a new one, set on it so
    /// that the app sees it too. Recorded in the current (request) span.
    pub(super) fn of(&self, req: &mut Request) -> HeaderValue {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.next();
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        if let Ok(text) = id.to_str() {
            tracing::Span::current().record("request_id", text);
        }
        id
    }
}
