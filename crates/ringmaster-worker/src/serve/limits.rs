//! The bounds of every connection and request, from the group's settings:
//! [`Limits`] (timeouts, head sizes, the connection count fitted to the
//! file descriptor limit), the checks that refuse a request before it
//! reaches the app (`Host`, URI length), and [`RequestLimit`], the count
//! behind `max_requests`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use ringmaster_config::GroupConfig;

/// The bounds of every connection, from the group's settings.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(super) header_read_timeout: Duration,
    pub(super) keepalive_timeout: Duration,
    pub(super) max_connections: usize,
    max_header_bytes: usize,
    max_headers: usize,
    max_uri_bytes: usize,
}

/// hyper's own default header count: setting it moves headers to the heap
/// (a cost on every request), so it is only set when the group asks for
/// another.
const HYPER_MAX_HEADERS: usize = 100;

impl Limits {
    pub(crate) fn new(cfg: &GroupConfig) -> Self {
        Limits {
            header_read_timeout: cfg.header_read_timeout,
            keepalive_timeout: cfg.keepalive_timeout,
            max_connections: cfg.max_connections.max(1),
            max_header_bytes: cfg.max_header_bytes,
            max_headers: cfg.max_headers,
            max_uri_bytes: cfg.max_uri_bytes,
        }
    }

    /// The connection limit, lowered to what the file descriptor limit
    /// allows (raised to its hard limit first): a worker must never reach
    /// EMFILE, where every new client would hang.
    pub(crate) fn fit_to_fd_limit(mut self) -> Self {
        let fds = raise_fd_limit();
        // Room for backends, logs, the IPC socket and the like.
        let room = fds.saturating_sub(128).max(16) as usize;
        if self.max_connections > room {
            tracing::warn!(
                max_connections = self.max_connections,
                fd_limit = fds,
                "max_connections is above what the file descriptor limit allows; using {room} \
                 (raise LimitNOFILE / ulimit -n)"
            );
            self.max_connections = room;
        }
        self
    }

    pub(super) fn builder(&self) -> hyper::server::conn::http1::Builder {
        // No hyper timer: its header read timeout resets a timer per
        // request (measured: about 3% of /plaintext); the connection's
        // watchdog keeps both timeouts with atomics instead.
        let mut b = hyper::server::conn::http1::Builder::new();
        b.max_header_size(self.max_header_bytes);
        // A client that closes its side after sending (`nc`, a shell's
        // `printf | nc`, some health checkers) still gets its answer; by
        // default hyper drops a request in progress at the end of input.
        b.half_close(true);
        if self.max_headers != HYPER_MAX_HEADERS {
            b.max_headers(self.max_headers);
        }
        b
    }
}

/// Raises this process's soft limit of open files to its hard limit; the
/// soft limit now.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Counts the requests a worker served and fires once when they reach a
/// limit (`max_requests`): one relaxed atomic add per request.
pub(crate) struct RequestLimit {
    limit: u64,
    served: AtomicU64,
    reached: Box<dyn Fn() + Send + Sync>,
}

impl RequestLimit {
    pub(crate) fn new(limit: u64, reached: impl Fn() + Send + Sync + 'static) -> Self {
        RequestLimit {
            limit,
            served: AtomicU64::new(0),
            reached: Box::new(reached),
        }
    }

    pub(super) fn count(&self) {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            (self.reached)();
        }
    }
}

/// Why a request is refused before it reaches the app, if it is.
pub(super) fn refuse(
    req: &hyper::Request<Incoming>,
    limits: &Limits,
) -> Option<(StatusCode, &'static str)> {
    if req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1
    {
        return Some((
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header (RFC 9112)\n",
        ));
    }
    let uri = req.uri();
    let len = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if len > limits.max_uri_bytes {
        return Some((StatusCode::URI_TOO_LONG, "the URI is too long\n"));
    }
    None
}

/// The response to a refused request; it closes the connection.
pub(super) fn refusal(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(message));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}
