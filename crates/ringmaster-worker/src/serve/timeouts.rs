//! The head and keep-alive timeouts of a connection, kept with atomics
//! rather than a timer reset per request: [`ConnState`], what the
//! connection's stream, service and watchdog share; [`Tracked`], the
//! stream that notes every byte moved; and [`watchdog`], which completes
//! when one of the timeouts has passed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// No head in progress (`ConnState::head_started`).
pub(super) const NO_HEAD: u64 = u64::MAX;

/// Milliseconds on the coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`:
/// the kernel's last tick, read from the vDSO without a counter read, a
/// few milliseconds behind at most). The stream notes the time of every
/// read and write: at the precision of the timeouts (seconds), the coarse
/// clock is exact enough and a fraction of the cost. It is the real
/// clock: a test that pauses tokio's time does not move it (no test of
/// the timeouts does).
pub(super) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        // Not on this kernel: the precise clock, on the same base.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// What a connection's stream, service and watchdog share, in
/// milliseconds of [`coarse_ms`].
pub(super) struct ConnState {
    /// When a byte last moved either way.
    pub(super) last_io: AtomicU64,
    /// When the first byte of a request head in progress arrived (the
    /// connection's start, for its first request), or [`NO_HEAD`].
    pub(super) head_started: AtomicU64,
    /// Requests whose response head is not out yet.
    pub(super) busy: AtomicU64,
    /// Chosen to be closed to make room (once).
    pub(super) evicted: AtomicBool,
    /// Wakes the connection when it is chosen.
    pub(super) evict: tokio::sync::Notify,
}

impl ConnState {
    pub(super) fn new() -> ConnState {
        let now = coarse_ms();
        ConnState {
            last_io: AtomicU64::new(now),
            // A new connection owes its first head from the start.
            head_started: AtomicU64::new(now),
            busy: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        coarse_ms()
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

    /// A whole head arrived: one more request being answered, and no head
    /// in progress until the next byte.
    pub(super) fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
    }

    /// Whether the connection is in the middle of a head: no request being
    /// answered, and bytes of the next head already in.
    pub(super) fn mid_head(&self) -> bool {
        self.busy.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) != NO_HEAD
    }
}

/// What a connection's watchdog found.
pub(super) enum Expired {
    Head,
    Idle,
}

/// Completes when the connection's head has been incomplete for
/// `head_timeout` since its first byte, or the connection has moved no
/// byte for `idle_timeout`.
pub(super) async fn watchdog(
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
        // One tick early at most (the coarse clock lags): the loop looks
        // again.
        tokio::time::sleep(Duration::from_millis(next.saturating_sub(now).max(1))).await;
    }
}

pin_project_lite::pin_project! {
    /// A stream that notes when it moved bytes, for the connection's
    /// watchdog (head and keep-alive timeouts).
    pub(super) struct Tracked<S> {
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
    pub(super) fn new(inner: S, permit: OwnedSemaphorePermit, state: Arc<ConnState>) -> Self {
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
