//! The access log line of a request (target `access`: method, path with
//! its query string, status, duration, request id), through the log pipe
//! when it is installed, else through `tracing`; the group, slot and pid
//! are added by the master.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, StatusCode};

use super::metrics::method_label;

/// What the access log line of a request needs.
pub(super) struct Access {
    method: &'static str,
    /// Path and query; none for a target without a path (`CONNECT`'s
    /// authority form).
    target: Option<PathAndQuery>,
    pub(super) start: Instant,
}

impl Access {
    /// The line of `req`, which arrived at `start`.
    pub(super) fn new(req: &Request, start: Instant) -> Access {
        Access {
            method: method_label(req.method()),
            // The request target as the client sent it, query included
            // (as nginx, Gunicorn and Puma log it). A clone shares the
            // parsed request's bytes: no allocation, query or not.
            target: req.uri().path_and_query().cloned(),
            start,
        }
    }

    /// Writes the line of the request answered `status` after `took`.
    pub(super) fn write(self, status: StatusCode, took: Duration, id: Option<&HeaderValue>) {
        let micros = took.as_micros() as u64;
        let rid = id.and_then(|v| v.to_str().ok()).unwrap_or("-");
        let status = status.as_u16();
        let path = self.target.as_ref().map_or("", PathAndQuery::as_str);
        if !crate::logpipe::access(self.method, path, status, micros, rid) {
            tracing::info!(
                target: "access",
                method = self.method,
                path,
                status,
                duration_ms = micros as f64 / 1000.0,
                request_id = rid,
                "request"
            );
        }
    }
}
