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

use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ringmaster_config::GroupConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

/// How long an idle connection may still bring a request once a drain
/// starts.
pub(crate) const DRAIN_LINGER: Duration = Duration::from_millis(1000);

/// The drain trigger: `None` until a drain starts, then its grace period.
pub(crate) type DrainRx = watch::Receiver<Option<Duration>>;

/// The bounds of every connection, from the group's settings.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    header_read_timeout: Duration,
    keepalive_timeout: Duration,
    max_connections: usize,
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

    fn builder(&self) -> hyper::server::conn::http1::Builder {
        // No hyper timer: its header read timeout resets a timer per
        // request (measured: about 3% of /plaintext); the watchdog of
        // `connection` keeps both timeouts with atomics instead.
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
    mut adopt: Option<tokio::net::UnixDatagram>,
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
    let mut connections = JoinSet::new();
    // Set when the drain starts: from then on every response says
    // `Connection: close`. One relaxed load per response.
    let draining = Arc::new(AtomicBool::new(false));
    let started = drain_started(drain.clone());
    tokio::pin!(started);
    // One permit per open connection: at `max_connections` the loop waits
    // for one before it accepts, and the kernel's queue holds the rest.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let open = Arc::new(Open::default());
    let serve_one =
        |connections: &mut JoinSet<()>, tcp: TcpStream, permit: OwnedSemaphorePermit| {
            let _ = tcp.set_nodelay(true);
            let place = Place::new(permit, &open);
            let conn = connection(
                tcp,
                place,
                app.clone(),
                drain.clone(),
                draining.clone(),
                limit.clone(),
                limits.clone(),
            );
            connections.spawn(conn.in_current_span());
        };
    let mut errors = Throttle::default();
    // A client accepted at the limit, waiting for the room its arrival made.
    let mut waiting: Option<TcpStream> = None;
    let mut full = FullThrottle::default();
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // At `max_connections`: a client that arrives makes room by
                // closing the open connection that costs least to lose (the
                // longest idle between requests, else the oldest head still
                // incomplete), as nginx reuses keep-alive connections. A
                // connection answering a request is never closed for it.
                tokio::select! {
                    biased;
                    () = &mut started => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    accepted = listener.accept() => {
                        match accepted {
                            Ok((tcp, _peer)) => {
                                let made_room = open.evict_one();
                                full.note(made_room, limits.max_connections);
                                waiting = Some(tcp);
                                // Every connection was answering a request,
                                // or the one chosen is slow to close (it
                                // finishes a response): look again as they
                                // finish, choosing another one each time.
                                let mut again = tokio::time::interval(EVICT_AGAIN);
                                again.reset();
                                let permit = loop {
                                    tokio::select! {
                                        biased;
                                        () = &mut started => break None,
                                        permit = permits.clone().acquire_owned() => break permit.ok(),
                                        _ = again.tick() => {
                                            open.evict_one();
                                        }
                                    }
                                };
                                let Some(permit) = permit else { break };
                                if let Some(tcp) = waiting.take() {
                                    serve_one(&mut connections, tcp, permit);
                                }
                            }
                            Err(e) => {
                                errors.note(&e);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        continue;
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                }
            }
        };
        tokio::select! {
            biased;
            () = &mut started => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => serve_one(&mut connections, tcp, permit),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so at most once a second.
                    errors.note(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // A connection the master took from the queue of a slot of
            // this group that has no ready worker.
            adopted = adopted(adopt.as_ref()), if adopt.is_some() => match adopted {
                Ok(tcp) => serve_one(&mut connections, tcp, permit),
                Err(e) => {
                    tracing::debug!(error = %e, "the master's hand-over socket failed; no more adopted connections");
                    adopt = None;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    draining.store(true, Ordering::Relaxed);
    // A client accepted at the limit is served as the others drain.
    if let Some(tcp) = waiting.take()
        && let Ok(permit) = permits.clone().acquire_owned().await
    {
        serve_one(&mut connections, tcp, permit);
    }
    // So are connections the master handed over and this loop has not
    // taken yet (closing the socket would reset them).
    while let Some(sock) = &adopt {
        let Ok(Some(fd)) = sock.try_io(tokio::io::Interest::READABLE, || recv_fd(sock.as_raw_fd()))
        else {
            break;
        };
        match (adopt_fd(fd), permits.clone().acquire_owned().await) {
            (Ok(tcp), Ok(permit)) => serve_one(&mut connections, tcp, permit),
            _ => break,
        }
    }
    // Take what is queued already: when this worker holds the last copy of
    // its socket (a slot removed by scale-down), closing it would reset
    // those connections. Elsewhere the socket stays open in the master.
    match listener.into_std() {
        Ok(std_listener) => loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let Ok((tcp, _peer)) = std_listener.accept() else {
                break;
            };
            if let Ok(tcp) = tcp
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(tcp))
            {
                serve_one(&mut connections, tcp, permit);
            }
        },
        Err(e) => tracing::debug!(error = %e, "cannot sweep the accept queue"),
    }
    let open = connections.len();
    if open > 0 {
        tracing::debug!(open, "waiting for open connections");
    }
    while connections.join_next().await.is_some() {}
    // Upgraded connections (WebSocket) left hyper with their permit: they
    // are done when the application drops them (it sees the drain through
    // `AppContext::draining`); the drain deadline cuts the rest.
    let upgraded = limits.max_connections - permits.available_permits();
    if upgraded > 0 {
        tracing::debug!(upgraded, "waiting for upgraded connections");
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(all).await;
    }
}

/// The next connection handed over on `sock` (one fd per datagram).
async fn adopted(sock: Option<&tokio::net::UnixDatagram>) -> std::io::Result<TcpStream> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || recv_fd(sock.as_raw_fd())) {
            Ok(Some(fd)) => match adopt_fd(fd) {
                Ok(tcp) => return Ok(tcp),
                // That connection only: the socket still hands over others.
                Err(e) => tracing::debug!(error = %e, "a handed-over connection cannot be served"),
            },
            // A datagram without a right: nothing to serve.
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The connection behind an fd received by `SCM_RIGHTS`.
fn adopt_fd(fd: std::os::fd::RawFd) -> std::io::Result<TcpStream> {
    // SAFETY: the fd arrived by SCM_RIGHTS: this process owns it.
    let tcp = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    tcp.set_nonblocking(true)?;
    TcpStream::from_std(tcp)
}

/// Receives one datagram and the fd it carries, if any.
fn recv_fd(sock: std::os::fd::RawFd) -> std::io::Result<Option<std::os::fd::RawFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: recvmsg on a socket this process owns with a valid msghdr;
    // rights received get close-on-exec.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: walking the control messages recvmsg filled in.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let got = std::ptr::read_unaligned(data.add(i));
                    if fd.is_none() {
                        fd = Some(got);
                    } else {
                        // One right per datagram: close any extra.
                        libc::close(got);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(fd)
}

/// Completes when a drain starts (never, if the trigger is gone).
pub(crate) async fn drain_started(mut rx: DrainRx) {
    if rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// At most one log line a second.
#[derive(Default)]
struct OncePerSecond(Option<Instant>);

impl OncePerSecond {
    /// Whether a line may go out now (then the next one waits a second).
    fn due(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// Accept errors, logged at most once a second with how many there were.
#[derive(Default)]
struct Throttle {
    line: OncePerSecond,
    since: u64,
}

impl Throttle {
    fn note(&mut self, e: &std::io::Error) {
        self.since += 1;
        if !self.line.due() {
            return;
        }
        tracing::warn!(
            error = %e,
            errors = self.since,
            "accept failed ({} times since the last such line); new connections wait in the queue",
            self.since
        );
        self.since = 0;
    }
}

/// Why a request is refused before it reaches the app, if it is.
fn refuse(req: &hyper::Request<Incoming>, limits: &Limits) -> Option<(StatusCode, &'static str)> {
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

fn refusal(status: StatusCode, message: &'static str) -> Response<Body> {
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

async fn connection<S>(
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
    let checks = limits.clone();
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // A whole head arrived: no head is in progress until the next byte.
        svc_state.request_started();
        let refused = refuse(&req, &checks);
        let response = app.clone().oneshot(req.map(Body::new));
        let draining = draining.clone();
        if let Some(limit) = &limit {
            limit.count();
        }
        let state = svc_state.clone();
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
    });
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
            let mid_head = state.busy.load(Ordering::Relaxed) == 0
                && state.head_started.load(Ordering::Relaxed) != NO_HEAD;
            tracing::debug!(mid_head, "connection closed to make room under max_connections");
            if !mid_head {
                conn.as_mut().graceful_shutdown();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed for room ended with an error");
                }
            }
            return;
        }
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = drain_started(drain) => {}
        expired = &mut watchdog => {
            match expired {
                // A head that does not come whole in time: drop the
                // connection (no response is in progress).
                Expired::Head => tracing::debug!("request head too slow; connection closed"),
                // No byte either way for keepalive_timeout: close, after
                // the response in progress if there is one.
                Expired::Idle => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "idle connection ended with an error");
                    }
                }
            }
            return;
        }
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

/// What a connection's watchdog found.
enum Expired {
    Head,
    Idle,
}

/// Ends a request in the connection's count, even when its future is
/// dropped (a client that went away).
struct Done<'a>(&'a ConnState);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes when the connection's head has been incomplete for
/// `head_timeout` since its first byte, or the connection has moved no
/// byte for `idle_timeout`.
async fn watchdog(
    state: Arc<ConnState>,
    head_timeout: Duration,
    idle_timeout: Duration,
) -> Expired {
    loop {
        let now = state.now_ms();
        let idle_at = state.last_io.load(Ordering::Relaxed) + idle_timeout.as_millis() as u64;
        let head = state.head_started.load(Ordering::Relaxed);
        let mut head_at = (head != NO_HEAD).then(|| head + head_timeout.as_millis() as u64);
        if head_at.is_some_and(|at| now >= at) {
            if state.busy.load(Ordering::Relaxed) == 0 {
                return Expired::Head;
            }
            // A pipelined head waits behind a request being answered:
            // look again a little later.
            head_at = Some(now + 100);
        }
        if now >= idle_at {
            return Expired::Idle;
        }
        let next = head_at.map_or(idle_at, |h| h.min(idle_at));
        tokio::time::sleep_until(state.born + Duration::from_millis(next)).await;
    }
}

/// No head in progress (`ConnState::head_started`).
const NO_HEAD: u64 = u64::MAX;

/// At the limit, how long a client that arrived waits for the room it made
/// before another connection is chosen to close.
const EVICT_AGAIN: Duration = Duration::from_millis(20);

/// What a connection's stream, service and watchdog share, in
/// milliseconds since the connection began.
struct ConnState {
    born: Instant,
    /// When a byte last moved either way.
    last_io: AtomicU64,
    /// When the first byte of a request head in progress arrived (the
    /// connection's start, for its first request), or [`NO_HEAD`].
    head_started: AtomicU64,
    /// Requests whose response head is not out yet.
    busy: AtomicU64,
    /// Chosen to be closed to make room (once).
    evicted: AtomicBool,
    /// Wakes the connection when it is chosen.
    evict: tokio::sync::Notify,
}

/// A connection's place under `max_connections`: its permit, its state,
/// and its entry in the table of open connections.
struct Place {
    permit: OwnedSemaphorePermit,
    state: Arc<ConnState>,
    registered: Registered,
}

impl Place {
    fn new(permit: OwnedSemaphorePermit, open: &Arc<Open>) -> Place {
        let state = Arc::new(ConnState::new());
        Place {
            permit,
            registered: open.register(state.clone()),
            state,
        }
    }
}

/// The open connections that may be closed to make room at the limit (not
/// the upgraded ones).
#[derive(Default)]
struct Open {
    next: AtomicU64,
    conns: std::sync::Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
}

/// Takes a connection out of [`Open`] when it ends.
struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Arc<ConnState>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a connection as it is accepted (before its task runs, so that
    /// a client arriving right after can already close it for room).
    fn register(self: &Arc<Self>, state: Arc<ConnState>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, state);
        Registered {
            open: self.clone(),
            id,
        }
    }

    /// Asks the connection that costs least to lose to close: the longest
    /// idle between requests, else the one whose incomplete head started
    /// first; never one answering a request. False if there is none.
    fn evict_one(&self) -> bool {
        let conns = self.lock();
        let best = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0 && !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| {
                let head = c.head_started.load(Ordering::Relaxed);
                let (tier, since) = if head == NO_HEAD {
                    (0, c.last_io.load(Ordering::Relaxed))
                } else {
                    (1, head)
                };
                (tier, c.born + Duration::from_millis(since))
            });
        match best {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// At the limit, says at most once a second how often room was made and
/// how often there was none (every connection answering a request).
#[derive(Default)]
struct FullThrottle {
    line: OncePerSecond,
    made: u64,
    none: u64,
}

impl FullThrottle {
    fn note(&mut self, made_room: bool, max: usize) {
        if made_room {
            self.made += 1;
        } else {
            self.none += 1;
        }
        if !self.line.due() {
            return;
        }
        tracing::warn!(
            max_connections = max,
            closed_for_room = self.made,
            all_busy = self.none,
            "at max_connections: {} idle or incomplete connections closed to make room, {} \
             times every connection was answering a request (raise max_connections or add workers)",
            self.made,
            self.none
        );
        self.made = 0;
        self.none = 0;
    }
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection owes its first head from the start.
            head_started: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Bytes came in: the time, and the start of a head if none is being
    /// read and no request is being answered.
    fn read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_started.store(now, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A stream that notes when it moved bytes, for the connection's
    /// watchdog (head and keep-alive timeouts).
    struct Tracked<S> {
        #[pin]
        inner: S,
        state: Arc<ConnState>,
        // The connection's place under `max_connections`, held by the IO
        // itself: an upgraded connection keeps it until the application
        // drops the socket.
        permit: OwnedSemaphorePermit,
    }
}

impl<S> Tracked<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, state: Arc<ConnState>) -> Self {
        Tracked {
            inner,
            permit,
            state,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.read();
        }
        res
    }
}

impl<S: AsyncWrite> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.wrote();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.wrote();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
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
