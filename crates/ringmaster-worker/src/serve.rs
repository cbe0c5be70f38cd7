//! The HTTP accept loop and per-connection drain.
//!
//! axum's own `serve` closes a connection that has not yet delivered its
//! first request the moment a graceful shutdown starts (hyper treats it as
//! idle), and a keep-alive connection whose response has just gone out is
//! closed while its client may already be sending the next request. Under a
//! rolling reload both fail requests that were on the wire: the first pain
//! in `PEERS.md`. This loop drains differently:
//!
//! 1. stop accepting, after taking what is already queued: the socket stays
//!    open in the master and in the replacement worker, so later connections
//!    go to the replacement;
//! 2. from then on every response carries `Connection: close`, so the
//!    client learns to reconnect with the response itself, and the
//!    connection closes right after it;
//! 3. a connection that brings no request within [`DRAIN_LINGER`] is closed
//!    (a request in progress then still finishes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::Instrument;

/// How long an idle connection may still bring a request once a drain
/// starts.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(1000);

/// The drain trigger: `None` until a drain starts, then its grace period.
pub(crate) type DrainRx = watch::Receiver<Option<Duration>>;

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

    fn count(&self) {
        if self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.limit {
            (self.reached)();
        }
    }
}

/// Serves `app` on `listener` until a drain starts and every connection
/// has closed; `limit` counts the requests served.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    drain: DrainRx,
    limit: Option<Arc<RequestLimit>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener with the runtime");
            return;
        }
    };
    let mut connections = JoinSet::new();
    // Set when the drain starts: from then on every response says
    // `Connection: close`. One relaxed load per response.
    let draining = Arc::new(AtomicBool::new(false));
    let started = drain_started(drain.clone());
    tokio::pin!(started);
    let serve_one = |connections: &mut JoinSet<()>, tcp: TcpStream| {
        let _ = tcp.set_nodelay(true);
        let conn = connection(
            tcp,
            app.clone(),
            drain.clone(),
            draining.clone(),
            limit.clone(),
        );
        connections.spawn(conn.in_current_span());
    };
    loop {
        tokio::select! {
            biased;
            () = &mut started => {
                draining.store(true, Ordering::Relaxed);
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => serve_one(&mut connections, tcp),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Take what is queued already: when this worker holds the last copy of
    // its socket (a slot removed by scale-down), closing it would reset
    // those connections. Elsewhere the socket stays open in the master.
    match listener.into_std() {
        Ok(std_listener) => {
            while let Ok((tcp, _peer)) = std_listener.accept() {
                if let Ok(tcp) = tcp
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(tcp))
                {
                    serve_one(&mut connections, tcp);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot sweep the accept queue"),
    }
    let open = connections.len();
    if open > 0 {
        tracing::debug!(open, "waiting for open connections");
    }
    while connections.join_next().await.is_some() {}
}

/// Completes when a drain starts (never, if the trigger is gone).
pub(crate) async fn drain_started(mut rx: DrainRx) {
    if rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn connection(
    tcp: TcpStream,
    app: Router,
    drain: DrainRx,
    draining: Arc<AtomicBool>,
    limit: Option<Arc<RequestLimit>>,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let response = app.clone().oneshot(req.map(Body::new));
        let draining = draining.clone();
        if let Some(limit) = &limit {
            limit.count();
        }
        async move {
            let mut response = response.await;
            if draining.load(Ordering::Relaxed)
                && let Ok(r) = &mut response
            {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = drain_started(drain) => {}
    }
    // Draining: the next response closes the connection; give a client
    // that is about to send a request the time to do so.
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error while draining");
            }
            return;
        }
        () = tokio::time::sleep(DRAIN_LINGER) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error while draining");
    }
}
