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
        // `PREFIX-COUNTER`, the counter in hex, written by hand: `format!`
        // was a third of this layer's cost.
        let prefix = self.prefix.as_bytes();
        let mut buf = [0u8; 64];
        let end = prefix.len().min(buf.len() - 17);
        buf[..end].copy_from_slice(&prefix[..end]);
        buf[end] = b'-';
        let digits = hex(n, &mut buf[end + 1..]);
        // Hex digits and '-' only: always a valid header value.
        HeaderValue::from_bytes(&buf[..end + 1 + digits])
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
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
        // The request span is at debug level: below it, there is nothing
        // to record into (the check is one load).
        if tracing::level_enabled!(tracing::Level::DEBUG)
            && let Ok(text) = id.to_str()
        {
            tracing::Span::current().record("request_id", text);
        }
        id
    }
}

/// Writes `n` in lower-case hex, without leading zeros, at the start of
/// `out` (at least 16 bytes); returns the number of digits.
fn hex(n: u64, out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let count = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, byte) in out[..count].iter_mut().enumerate() {
        let shift = 4 * (count - 1 - i);
        *byte = DIGITS[((n >> shift) & 0xf) as usize];
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_format() {
        for n in [0u64, 1, 9, 10, 15, 16, 255, 256, 0xdead_beef, u64::MAX] {
            let mut buf = [0u8; 16];
            let len = hex(n, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), format!("{n:x}"));
        }
    }

    #[test]
    fn ids_are_prefix_dash_counter_and_distinct() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_eq!(a.to_str().unwrap(), format!("{}-0", ids.prefix));
        assert_eq!(b.to_str().unwrap(), format!("{}-1", ids.prefix));
    }
}
