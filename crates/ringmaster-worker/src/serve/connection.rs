//! One connection, from its first byte to its close: hyper serves it with
//! the app ([`Respond`] answers each request, refusing what breaks the
//! limits and saying `Connection: close` once the drain starts), until it
//! ends by itself, is closed to make room, times out (head or keep-alive),
//! or the drain starts; then it lingers for a last request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ringmaster_config::GroupConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use super::limits::{Limits, RequestLimit, refusal, refuse};
use super::room::{Open, Place};
use super::timeouts::{ConnState, Expired, Tracked, watchdog};
use super::{DRAIN_LINGER, DrainRx, drain_started};

/// Serves one connection until it closes; see the module docs.
pub(super) async fn connection<S>(
    tcp: S,
    place: Place,
    app: Router,
    drain: DrainRx,
    draining: Arc<AtomicBool>,
    limit: Option<Arc<RequestLimit>>,
    limits: Arc<Limits>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Place {
        permit,
        state,
        registered,
    } = place;
    let io = Tracked::new(tcp, permit, state.clone());
    let respond = Respond {
        app,
        limits: limits.clone(),
        state: state.clone(),
        draining,
        limit,
    };
    let svc = hyper::service::service_fn(move |req| respond.call(req));
    let conn = limits
        .builder()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    // In the table until this function returns (an upgraded connection
    // leaves it: it is the application's then, never closed to make room).
    // Declared after `conn`, so it is dropped first: the connection leaves
    // the table before its permit (in the IO) is released. The other way
    // round, a client at the limit could take the permit and then choose
    // this connection, already gone, to make room, and wait for a permit
    // that never comes.
    let _registered = registered;
    let end = until_drain(conn.as_mut(), &state, drain, &limits).await;
    match end {
        End::Done => {}
        End::Shutdown(what) => {
            conn.as_mut().graceful_shutdown();
            log_end(conn.await, what);
        }
        End::Draining => {
            // Draining: the next response closes the connection; give a
            // client that is about to send a request the time to do so.
            if linger(conn.as_mut()).await {
                return;
            }
            conn.as_mut().graceful_shutdown();
            log_end(conn.await, "connection ended with an error while draining");
        }
    }
}

/// How a connection's first stretch, until the drain, ended.
enum End {
    /// Closed, or to be dropped as it is (a head still coming).
    Done,
    /// To be closed after the response in progress, if any; the words
    /// that go with an error then.
    Shutdown(&'static str),
    /// The drain started.
    Draining,
}

/// Drives `conn` until it ends, is closed to make room, times out, or the
/// drain starts.
async fn until_drain<C>(
    conn: Pin<&mut C>,
    state: &Arc<ConnState>,
    drain: DrainRx,
    limits: &Limits,
) -> End
where
    C: Future<Output = hyper::Result<()>>,
{
    let watchdog = watchdog(
        state.clone(),
        limits.header_read_timeout,
        limits.keepalive_timeout,
    );
    tokio::pin!(watchdog);
    let evicted = state.evict.notified();
    tokio::pin!(evicted);
    tokio::select! {
        () = &mut evicted => {
            // Closed to make room for a new client: a head still coming is
            // dropped; otherwise the response in progress, if any, ends
            // first.
            let mid_head = state.mid_head();
            tracing::debug!(mid_head, "connection closed to make room under max_connections");
            if mid_head {
                End::Done
            } else {
                End::Shutdown("connection closed for room ended with an error")
            }
        }
        result = conn => {
            log_end(result, "connection ended with an error");
            End::Done
        }
        () = drain_started(drain) => End::Draining,
        expired = &mut watchdog => match expired {
            // A head that does not come whole in time: drop the
            // connection (no response is in progress).
            Expired::Head => {
                tracing::debug!("request head too slow; connection closed");
                End::Done
            }
            // No byte either way for keepalive_timeout: close, after
            // the response in progress if there is one.
            Expired::Idle => End::Shutdown("idle connection ended with an error"),
        },
    }
}

/// Waits [`DRAIN_LINGER`] for the connection to end by itself; whether it
/// did.
async fn linger<C>(conn: Pin<&mut C>) -> bool
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        result = conn => {
            log_end(result, "connection ended with an error while draining");
            true
        }
        () = tokio::time::sleep(DRAIN_LINGER) => false,
    }
}

/// Logs how a connection ended, if with an error.
fn log_end(result: hyper::Result<()>, what: &str) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "{what}");
    }
}

/// What the service of one connection needs to answer its requests.
struct Respond {
    app: Router,
    limits: Arc<Limits>,
    state: Arc<ConnState>,
    draining: Arc<AtomicBool>,
    limit: Option<Arc<RequestLimit>>,
}

impl Respond {
    /// Answers one request whose head just came whole. The future takes
    /// what it needs (`use<>`: it borrows nothing of `self`), since hyper
    /// may hold it past this call.
    fn call(
        &self,
        req: hyper::Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<> {
        // A whole head arrived: no head is in progress until the next byte.
        self.state.request_started();
        let refused = refuse(&req, &self.limits);
        let response = self.app.clone().oneshot(req.map(Body::new));
        let draining = self.draining.clone();
        if let Some(limit) = &self.limit {
            limit.count();
        }
        let state = self.state.clone();
        async move {
            let done = Done(&state);
            if let Some((status, message)) = refused {
                return Ok(refusal(status, message));
            }
            let mut response = response.await;
            drop(done);
            // Not on a 101: its `Connection: upgrade` is the upgrade (the
            // application sees the drain and closes the socket itself).
            if draining.load(Ordering::Relaxed)
                && let Ok(r) = &mut response
                && r.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// Ends a request in the connection's count, even when its future is
/// dropped (a client that went away).
struct Done<'a>(&'a ConnState);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the fuzz target `http_head` and its proptest version run: `input`
/// sent on one connection of this loop, in writes of `step` bytes, to `app`
/// with the bounds of `cfg`, then the write side closed. Returns what the
/// connection answered, once it has closed.
pub(crate) async fn fuzz_connection(
    input: &[u8],
    step: usize,
    app: Router,
    cfg: &GroupConfig,
) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(64 * 1024);
    let permit = Arc::new(Semaphore::new(1))
        .acquire_owned()
        .await
        .expect("a fresh semaphore has a permit");
    let (_trigger, drain) = watch::channel(None);
    let place = Place::new(permit, &Arc::new(Open::default()));
    let conn = tokio::spawn(connection(
        server,
        place,
        app,
        drain,
        Arc::new(AtomicBool::new(false)),
        None,
        Arc::new(Limits::new(cfg)),
    ));
    let (mut read, mut write) = tokio::io::split(client);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in input.chunks(step.max(1)) {
            if write.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut out = Vec::new();
    let _ = read.read_to_end(&mut out).await;
    let _ = writer.await;
    conn.await.expect("the connection task panicked");
    out
}
