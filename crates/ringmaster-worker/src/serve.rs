//! The HTTP accept loop and per-connection drain.
//!
//! axum's own `serve` closes a connection that has not yet delivered its
//! first request the moment a graceful shutdown starts (hyper treats it as
//! idle). Under a rolling reload that resets requests that were already on
//! the wire: a failed request in a "zero-downtime" reload, the first pain in
//! `PEERS.md`. This loop drains differently:
//!
//! 1. stop accepting: the socket stays open in the master and in the
//!    replacement worker, so queued connections go to the replacement;
//! 2. a connection with a request in progress finishes it and closes
//!    (`Connection: close` on the response);
//! 3. an idle connection (new, or keep-alive between requests) gets up to
//!    [`DRAIN_LINGER`] for a request to arrive, which is then served the same
//!    way; after that it is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::Instrument;

/// How long an idle connection may still bring a request once a drain
/// starts.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(1000);

/// The drain trigger: `None` until a drain starts, then its grace period.
pub(crate) type DrainRx = watch::Receiver<Option<Duration>>;

/// Serves `app` on `listener` until a drain starts and every connection
/// has closed.
pub(crate) async fn serve(listener: TcpListener, app: Router, drain: DrainRx) {
    let mut connections = JoinSet::new();
    let started = drain_started(drain.clone());
    tokio::pin!(started);
    loop {
        tokio::select! {
            biased;
            () = &mut started => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let conn = connection(tcp, app.clone(), drain.clone());
                    connections.spawn(conn.in_current_span());
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Stop accepting; queued connections stay with the socket's other holders.
    drop(listener);
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

/// Requests of one connection: how many are running, how many started.
#[derive(Default)]
struct Requests {
    active: AtomicUsize,
    started: AtomicU64,
    notify: Notify,
}

/// Decrements `active` when a request's response is ready (or dropped).
struct Active(Arc<Requests>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(tcp: TcpStream, app: Router, drain: DrainRx) {
    let requests = Arc::new(Requests::default());
    let svc = {
        let requests = requests.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            requests.active.fetch_add(1, Ordering::AcqRel);
            requests.started.fetch_add(1, Ordering::AcqRel);
            requests.notify.notify_waiters();
            let active = Active(requests.clone());
            let response = app.clone().oneshot(req.map(Body::new));
            async move {
                let response = response.await;
                drop(active);
                response
            }
        })
    };
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
    // Draining: let a request that is on its way reach the app first.
    let before = requests.started.load(Ordering::Acquire);
    let linger = tokio::time::sleep(DRAIN_LINGER);
    tokio::pin!(linger);
    loop {
        let notified = requests.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if requests.active.load(Ordering::Acquire) > 0
            || requests.started.load(Ordering::Acquire) > before
        {
            break;
        }
        tokio::select! {
            result = conn.as_mut() => {
                let _ = result;
                return;
            }
            () = &mut notified => {}
            () = &mut linger => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error while draining");
    }
}
