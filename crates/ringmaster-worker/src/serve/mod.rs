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
//!
//! Every connection is bounded ([`Limits`], the group's settings): a
//! request head whose first byte came `header_read_timeout` ago and that is
//! still incomplete closes the connection, a connection with no bytes
//! either way for `keepalive_timeout` is closed (after the response in
//! progress, if any; a watchdog per connection keeps both with atomics, no
//! timer reset per request), heads are limited in size
//! (431) and header count (431), URIs in length (414), and an HTTP/1.1
//! request needs exactly one `Host` (400, RFC 9112). At most
//! `max_connections` are open: at the limit a client that arrives makes room
//! by closing the idle or incomplete connection that costs least to lose
//! (never one answering a request); when there is none the kernel's queue
//! holds the rest, and the worker never runs out of file descriptors.
//! Accept errors are logged at most once a second.
//!
//! An upgraded connection (WebSocket) leaves hyper, but not the count: its
//! place under `max_connections` belongs to the socket itself, so the
//! drain waits for the application to close it (it sees the drain through
//! `AppContext::draining`) and the drain deadline cuts what does not.
//!
//! # Layout
//!
//! - `accept`: the accept loop until the drain, and making room at the
//!   limit;
//! - `handover`: connections the master hands over (`SCM_RIGHTS`);
//! - `connection`: one connection, its service and its drain;
//! - `timeouts`: the head and keep-alive watchdog and what it reads;
//! - `room`: places under `max_connections` and choosing whom to close;
//! - `limits`: [`Limits`], request refusals and [`RequestLimit`];
//! - `throttle`: the loop's once-a-second warnings;
//! - `drain`: serving what is on its way once the drain starts, then
//!   waiting for every connection.

mod accept;
mod connection;
mod drain;
mod handover;
mod limits;
mod room;
mod throttle;
mod timeouts;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub(crate) use connection::fuzz_connection;
pub(crate) use limits::{Limits, RequestLimit};

use accept::Accept;
use connection::connection;
use room::{Open, Place};

/// How long an idle connection may still bring a request once a drain
/// starts.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(1000);

/// The drain trigger: `None` until a drain starts, then its grace period.
pub(crate) type DrainRx = watch::Receiver<Option<Duration>>;

/// Serves `app` on `listener` until a drain starts and every connection
/// has closed; `limit` counts the requests served.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    adopt: Option<tokio::net::UnixDatagram>,
    app: Router,
    drain: DrainRx,
    limit: Option<Arc<RequestLimit>>,
    limits: Limits,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener with the runtime");
            return;
        }
    };
    let mut accept = Accept::new(listener, adopt, drain.clone());
    let mut server = Server::new(app, drain, limit, limits);
    accept.run(&mut server).await;
    drain::finish(server, accept).await;
}

/// What every connection of the loop shares, and the connections' tasks.
struct Server {
    app: Router,
    drain: DrainRx,
    /// Set when the drain starts: from then on every response says
    /// `Connection: close`. One relaxed load per response.
    draining: Arc<AtomicBool>,
    limit: Option<Arc<RequestLimit>>,
    limits: Arc<Limits>,
    /// One permit per open connection: at `max_connections` the loop waits
    /// for one before it accepts, and the kernel's queue holds the rest.
    permits: Arc<Semaphore>,
    open: Arc<Open>,
    connections: JoinSet<()>,
}

impl Server {
    fn new(app: Router, drain: DrainRx, limit: Option<Arc<RequestLimit>>, limits: Limits) -> Self {
        Server {
            app,
            drain,
            draining: Arc::new(AtomicBool::new(false)),
            limit,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits: Arc::new(limits),
            open: Arc::new(Open::default()),
            connections: JoinSet::new(),
        }
    }

    /// Serves `tcp` on a task of its own, in the place `permit` gives it.
    fn serve_one(&mut self, tcp: TcpStream, permit: OwnedSemaphorePermit) {
        let _ = tcp.set_nodelay(true);
        let place = Place::new(permit, &self.open);
        let conn = connection(
            tcp,
            place,
            self.app.clone(),
            self.drain.clone(),
            self.draining.clone(),
            self.limit.clone(),
            self.limits.clone(),
        );
        self.connections.spawn(conn.in_current_span());
    }
}

/// Completes when a drain starts (never, if the trigger is gone).
pub(crate) async fn drain_started(mut rx: DrainRx) {
    if rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}
