//! The control socket: a Unix socket at `server.control_socket` on which
//! the command line (and any client: `socat`, a script) asks the running
//! master for its status and tells it to reload, scale, restart or stop.
//! The protocol is line-delimited JSON (`request`, `docs/control.md`).
//!
//! **Who may talk.** The socket is made mode 0600 before it listens (no
//! window in which another user could connect), in a directory created
//! 0700 if it is missing; and every connection's peer uid
//! (`SO_PEERCRED`) must be the master's or root's. Anyone else gets an
//! error line and is logged by uid and pid.
//!
//! **Bounds.** A request line is at most [`MAX_LINE`] bytes; a client
//! idle for [`IDLE_TIMEOUT`] between requests is cut off; at most
//! [`MAX_CONNECTIONS`] connections are open, and when a new one arrives at
//! the limit the one idle the longest is closed to make room (so a heap of
//! silent connections never locks the operator out). A bad request gets an
//! error line and changes nothing.
//!
//! Connections run on tasks of the master's runtime; what needs the
//! supervisor (status, reload, ...) goes to it as a [`Command`] on a
//! channel; `logs` reads the [`LogHub`] and `events` the
//! [`LifecycleHub`] directly.

pub(crate) mod request;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) use request::{Command, EVENTS_QUEUE, Events, ScaleTo};
use request::{LogFilter, Request, error, is_final, log_event, ok};

use crate::lifecycle::LifecycleHub;
use crate::logs::LogHub;

/// Longest request line, in bytes.
pub(crate) const MAX_LINE: usize = 4096;
/// How long a client may stay silent waiting to send a request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections at most.
pub(crate) const MAX_CONNECTIONS: usize = 128;
/// A reply the client does not take within this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reply bytes gathered before a write, for a long tail.
const WRITE_CHUNK: usize = 64 << 10;
/// Log tails built at once, at most.
const MAX_TAILS: usize = 4;
/// A follower of the logs gets a heartbeat line after this much silence.
const FOLLOW_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long the supervisor may take to answer `status`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket, removed when the master stops.
pub(crate) struct Control {
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        // Only if it is still ours: a socket (not a file put there since).
        if is_socket(&self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// What every connection task shares.
struct Shared {
    logs: Option<LogHub>,
    lifecycle: LifecycleHub,
    commands: mpsc::Sender<Command>,
    conns: Mutex<Conns>,
    /// The uid allowed besides root: the master's own.
    uid: u32,
    /// Permits to build a log tail (each copies up to the whole ring).
    tails: tokio::sync::Semaphore,
}

/// The open connections, for the limit and for evicting the idlest.
#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, Conn>,
}

struct Conn {
    /// Since when it waits for a request; `None` while it is being served.
    idle_since: Option<Instant>,
    /// Closes it (with an error line) when it is evicted.
    evict: Option<oneshot::Sender<()>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, evicting the one idle the longest when
    /// the limit is reached; `None` when every connection is busy.
    fn admit(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut conns = self.lock();
        if conns.open.len() >= MAX_CONNECTIONS {
            let idlest = conns
                .open
                .iter()
                .filter_map(|(id, c)| c.idle_since.map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(evict) = conns.open.get_mut(&idlest).and_then(|c| c.evict.take()) {
                let _ = evict.send(());
            }
            conns.open.remove(&idlest);
        }
        let id = conns.next;
        conns.next += 1;
        let (tx, rx) = oneshot::channel();
        conns.open.insert(
            id,
            Conn {
                idle_since: Some(Instant::now()),
                evict: Some(tx),
            },
        );
        Some((id, rx))
    }

    fn set_idle(&self, id: u64, idle: bool) {
        if let Some(c) = self.lock().open.get_mut(&id) {
            c.idle_since = idle.then(Instant::now);
        }
    }

    fn leave(&self, id: u64) {
        self.lock().open.remove(&id);
    }
}

impl Control {
    /// Binds the socket and serves it; why not, if it cannot be bound
    /// (another master answers on it, a path that cannot be used): a master
    /// nobody can control does not start.
    pub(crate) fn start(
        path: &Path,
        logs: Option<LogHub>,
        lifecycle: LifecycleHub,
        commands: mpsc::Sender<Command>,
    ) -> Result<Control, String> {
        let listener = bind(path).map_err(|why| format!("{} ({why})", path.display()))?;
        let shared = Arc::new(Shared {
            logs,
            lifecycle,
            commands,
            conns: Mutex::new(Conns::default()),
            tails: tokio::sync::Semaphore::new(MAX_TAILS),
            // SAFETY: geteuid has no preconditions and cannot fail.
            uid: unsafe { libc::geteuid() },
        });
        tokio::spawn(accept(listener, shared));
        Ok(Control {
            path: path.to_path_buf(),
        })
    }
}

/// Binds the socket, owner-only from its first instant.
fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(
                "server.control_socket names a file that is not a socket; it is left alone".into(),
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err("another master answers on the control socket (set server.control_socket to another path)".into()),
            // Nobody listens: left by a master that died.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(path);
            }
            Err(e) => {
                return Err(format!(
                    "cannot tell whether another master uses the control socket ({e}); it is left alone"
                ));
            }
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                format!(
                    "cannot create the control socket's directory {}: {e}",
                    dir.display()
                )
            })?;
    }
    // Bind, make it the owner's only, and only then listen: until `listen`
    // every connect is refused, so there is no moment at which another
    // user could get in (and no process-wide umask to change).
    let fail = |e: std::io::Error| format!("cannot open the control socket: {e}");
    let socket =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).map_err(fail)?;
    socket
        .bind(&socket2::SockAddr::unix(path).map_err(fail)?)
        .map_err(fail)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    socket.listen(128).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(
        std::os::fd::OwnedFd::from(socket),
    ))
    .map_err(fail)
}

async fn accept(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move { connection(stream, shared).await });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let cred = stream.peer_cred();
    let (read, mut write) = stream.into_split();
    match cred {
        Ok(c) if c.uid() == shared.uid || c.uid() == 0 => {}
        Ok(c) => {
            tracing::warn!(
                uid = c.uid(),
                peer_pid = c.pid(),
                "refused a control connection from uid {} (only uid {} and root may control this master)",
                c.uid(),
                shared.uid
            );
            let message = format!(
                "uid {} may not control this master; run the command as uid {} (the master's user) or root",
                c.uid(),
                shared.uid
            );
            let _ = send(&mut write, &error("forbidden", message)).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell who is on a control connection; refused");
            return;
        }
    }
    let Some((id, mut evicted)) = shared.admit() else {
        let message = format!(
            "{MAX_CONNECTIONS} control connections are busy (following logs or a reload); close one and retry"
        );
        let _ = send(&mut write, &error("too_many_clients", message)).await;
        return;
    };
    let mut reader = LineReader::new(read);
    loop {
        let next = tokio::select! {
            line = tokio::time::timeout(IDLE_TIMEOUT, reader.next()) => line,
            _ = &mut evicted => {
                let message = format!("closed to make room: {MAX_CONNECTIONS} connections were open and this one was idle the longest");
                let _ = send(&mut write, &error("evicted", message)).await;
                return;
            }
        };
        let line = match next {
            Err(_) => {
                let message = format!("no request for {} s; closing", IDLE_TIMEOUT.as_secs());
                let _ = send(&mut write, &error("idle", message)).await;
                break;
            }
            Ok(Ok(None)) | Ok(Err(ReadError::Io)) => break,
            Ok(Err(ReadError::TooLong)) => {
                let message =
                    format!("the request line is longer than {MAX_LINE} bytes; nothing was done");
                let _ = send(&mut write, &error("line_too_long", message)).await;
                reader.discard(Duration::from_secs(1)).await;
                break;
            }
            Ok(Ok(Some(line))) => line,
        };
        shared.set_idle(id, false);
        if handle(&line, &shared, &mut write).await.is_err() {
            break;
        }
        shared.set_idle(id, true);
    }
    shared.leave(id);
}

/// Writes one reply line.
async fn send(write: &mut OwnedWriteHalf, line: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(line).unwrap_or_default();
    bytes.push(b'\n');
    write_all(write, &bytes).await
}

/// Writes `bytes`, or fails when the client has not taken them within
/// [`WRITE_TIMEOUT`] (a client that stops reading is cut off, never kept).
async fn write_all(write: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read",
        )),
    }
}

/// Answers one request; an error is the client gone.
async fn handle(line: &str, shared: &Shared, write: &mut OwnedWriteHalf) -> std::io::Result<()> {
    let request = match request::parse(line) {
        Ok(r) => r,
        Err(e) => return send(write, &e).await,
    };
    match request {
        Request::Status {} => {
            let (tx, rx) = oneshot::channel();
            let answer = match ask(shared, Command::Status(tx), rx).await {
                Ok(status) => ok(serde_json::to_value(status).unwrap_or(Value::Null)),
                Err(e) => e,
            };
            send(write, &answer).await
        }
        Request::Logs {
            follow,
            lines,
            group,
            slot,
            level,
        } => match LogFilter::new(group, slot, level.as_deref()) {
            Ok(filter) => logs(shared, write, filter, lines, follow).await,
            Err(e) => send(write, &e).await,
        },
        Request::Events { last } => events(shared, write, last).await,
        Request::Scale {
            group,
            count,
            delta,
        } => {
            let to = match (count, delta) {
                (Some(n), None) => ScaleTo::Count(n),
                (None, Some(d)) => ScaleTo::Delta(d),
                _ => {
                    let e = error(
                        "bad_request",
                        "scale takes either \"count\" (the new number of workers) or \"delta\" (+K or -K)".into(),
                    );
                    return send(write, &e).await;
                }
            };
            let (tx, rx) = oneshot::channel();
            let cmd = Command::Scale {
                group,
                to,
                reply: tx,
            };
            let answer = ask(shared, cmd, rx).await.unwrap_or_else(|e| e);
            send(write, &answer).await
        }
        Request::Reload { group } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            stream(shared, write, Command::Reload { group, events }, rx).await
        }
        Request::Restart { group, slot } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            let cmd = Command::Restart {
                group,
                slot,
                events,
            };
            stream(shared, write, cmd, rx).await
        }
        Request::Stop { timeout_ms } => {
            let (events, rx) = mpsc::channel(EVENTS_QUEUE);
            let timeout = timeout_ms.map(Duration::from_millis);
            stream(shared, write, Command::Stop { timeout, events }, rx).await
        }
    }
}

/// Sends a command with a one-shot answer and waits for it.
async fn ask<T>(shared: &Shared, cmd: Command, rx: oneshot::Receiver<T>) -> Result<T, Value> {
    let gone = || {
        error(
            "unavailable",
            "the master is stopping and no longer takes commands".into(),
        )
    };
    shared.commands.send(cmd).await.map_err(|_| gone())?;
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(gone()),
        Err(_) => Err(error(
            "timeout",
            format!(
                "the master did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Sends a command whose reply lines stream in, and relays them until the
/// final one.
async fn stream(
    shared: &Shared,
    write: &mut OwnedWriteHalf,
    cmd: Command,
    mut rx: mpsc::Receiver<Value>,
) -> std::io::Result<()> {
    if shared.commands.send(cmd).await.is_err() {
        let e = error(
            "unavailable",
            "the master is stopping and no longer takes commands".into(),
        );
        return send(write, &e).await;
    }
    while let Some(line) = rx.recv().await {
        send(write, &line).await?;
        if is_final(&line) {
            return Ok(());
        }
    }
    // The supervisor dropped the stream without a final line: it stopped.
    let e = error(
        "unavailable",
        "the master stopped before the command finished".into(),
    );
    send(write, &e).await
}

/// `logs`: the last `lines` lines that pass `filter`, then with `follow`
/// every new one until the client goes away.
async fn logs(
    shared: &Shared,
    write: &mut OwnedWriteHalf,
    filter: LogFilter,
    lines: usize,
    follow: bool,
) -> std::io::Result<()> {
    let Some(hub) = &shared.logs else {
        let e = error(
            "unavailable",
            "this master does not capture its workers' logs".into(),
        );
        return send(write, &e).await;
    };
    // Subscribe before reading the ring, so no line falls between.
    let mut rx = follow.then(|| hub.subscribe());
    let sent = {
        // A tail copies up to the whole ring: a few at a time, so that
        // many clients cannot make the master hold many copies.
        let _permit = shared.tails.acquire().await;
        let tail = hub.tail(lines, |l| filter.keeps(l));
        let mut out = Vec::new();
        for line in &tail {
            push_line(&mut out, &log_event(line));
            if out.len() >= WRITE_CHUNK {
                write_all(write, &out).await?;
                out.clear();
            }
        }
        write_all(write, &out).await?;
        tail.len()
    };
    let Some(rx) = &mut rx else {
        return send(write, &ok(json!({"lines": sent}))).await;
    };
    let mut last_write = Instant::now();
    loop {
        // A follower that hung up is noticed by the next write: when
        // nothing was written for a while (a quiet log, or a filter that
        // drops everything), a heartbeat line is that write, so gone
        // followers cannot keep every connection busy.
        let quiet = (last_write + FOLLOW_HEARTBEAT).saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(next) => next,
            Err(_) => {
                send(write, &json!({"event": "heartbeat"})).await?;
                last_write = Instant::now();
                continue;
            }
        };
        let block = match next {
            Ok(b) => b,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                send(write, &json!({"event": "skipped", "blocks": n})).await?;
                continue;
            }
            Err(_) => return Ok(()),
        };
        let mut out = Vec::new();
        for line in block.lines().filter(|l| filter.keeps(l)) {
            push_line(&mut out, &log_event(&line));
        }
        if !out.is_empty() {
            write_all(write, &out).await?;
            last_write = Instant::now();
        }
    }
}

/// `events`: the last `last` lifecycle events kept, then every new one
/// until the client goes away (a heartbeat line after a quiet while, so a
/// client that hung up is noticed, as for `logs --follow`).
async fn events(shared: &Shared, write: &mut OwnedWriteHalf, last: usize) -> std::io::Result<()> {
    let (replay, mut rx) = shared.lifecycle.subscribe(last);
    let mut out = Vec::new();
    for record in &replay {
        push_record(&mut out, record);
    }
    // From here on nothing is missed: a client may now act and wait for
    // what follows (a test sends its signal only after this line).
    push_line(&mut out, &json!({"event": "subscribed"}));
    write_all(write, &out).await?;
    loop {
        let record = match tokio::time::timeout(FOLLOW_HEARTBEAT, rx.recv()).await {
            Err(_) => {
                send(write, &json!({"event": "heartbeat"})).await?;
                continue;
            }
            Ok(Ok(record)) => record,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                send(write, &json!({"event": "skipped", "events": n})).await?;
                continue;
            }
            Ok(Err(_)) => return Ok(()),
        };
        out.clear();
        push_record(&mut out, &record);
        // What else is queued goes in the same write.
        while let Ok(record) = rx.try_recv() {
            push_record(&mut out, &record);
        }
        write_all(write, &out).await?;
    }
}

fn push_record(out: &mut Vec<u8>, record: &ringmaster_proto::LifecycleRecord) {
    if serde_json::to_writer(&mut *out, record).is_ok() {
        out.push(b'\n');
    }
}

fn push_line(out: &mut Vec<u8>, line: &Value) {
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}

/// Why a request line could not be read.
#[derive(Debug)]
enum ReadError {
    TooLong,
    Io,
}

/// Reads lines of at most [`MAX_LINE`] bytes; cancel-safe (what was read
/// stays in the buffer).
struct LineReader<R = OwnedReadHalf> {
    read: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> LineReader<R> {
    fn new(read: R) -> Self {
        LineReader {
            read,
            buf: Vec::with_capacity(512),
        }
    }

    /// The next line without its newline; `None` at end-of-file.
    async fn next(&mut self) -> Result<Option<String>, ReadError> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                if nl > MAX_LINE {
                    return Err(ReadError::TooLong);
                }
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..nl]).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(text));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            let mut chunk = [0u8; 4096];
            match self.read.read(&mut chunk).await {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(ReadError::Io),
            }
        }
    }

    /// Reads and drops what the client still sends, for at most `limit`,
    /// so that closing does not reset the connection before the client
    /// has read the error line.
    async fn discard(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            let mut chunk = [0u8; 16 * 1024];
            let mut total = 0usize;
            while let Ok(n) = self.read.read(&mut chunk).await {
                total += n;
                if n == 0 || total > 64 << 20 {
                    break;
                }
            }
        })
        .await;
    }
}

/// What the fuzz target `control_request` and its proptest version run:
/// `bytes` read in reads of `step` bytes by the connection's line reader,
/// each line parsed as a request (and a `logs` request's filter built), as
/// a connection does before it asks the supervisor anything. Panics if a
/// refused line's reply is not a final error line with a code and a
/// message, or if the reader takes more than [`MAX_LINE`] bytes for a line.
pub(crate) fn fuzz_request_lines(bytes: &[u8], step: usize) {
    let mut reader = LineReader::new(Chunks {
        rest: bytes,
        step: step.max(1),
    });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        // The reader never waits: `Chunks` is always ready.
        let polled = std::pin::pin!(reader.next()).poll(&mut cx);
        let std::task::Poll::Ready(next) = polled else {
            panic!("the line reader waited on a reader that is always ready");
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::TooLong) => {
                assert!(
                    reader.buf.len() > MAX_LINE,
                    "refused a line of at most MAX_LINE bytes"
                );
                return;
            }
        };
        assert!(
            line.len() <= 3 * MAX_LINE,
            "lossy UTF-8 grows a line at most threefold"
        );
        let reply = match request::parse(&line) {
            Ok(Request::Logs {
                group, slot, level, ..
            }) => LogFilter::new(group, slot, level.as_deref()).err(),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = reply {
            assert!(is_final(&e), "{e}");
            assert!(e["error"]["code"].is_string(), "{e}");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{e}"
            );
        }
    }
}

/// A reader that hands out `step` bytes per read.
struct Chunks<'a> {
    rest: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.rest.len()).min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        std::task::Poll::Ready(Ok(()))
    }
}
