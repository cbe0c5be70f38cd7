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

mod answer;
mod lines;
pub(crate) mod request;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) use lines::fuzz_request_lines;
use lines::{LineReader, ReadError};
use request::error;
pub(crate) use request::{Command, Events, ScaleTo};

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
    /// The inode of our socket file: the path is removed only while it
    /// still names it (after an upgrade it names the new master's).
    ino: Option<u64>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if self.ino.is_some() && inode_of_socket(&self.path) == self.ino {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The inode of the socket file at `path`, if one is there.
fn inode_of_socket(path: &Path) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| m.ino())
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
            ino: inode_of_socket(path),
        })
    }

    /// The path of the socket a new master of an upgrade opens while the
    /// old one still answers at `path`; [`Control::move_to`] then puts it
    /// in the old one's place.
    pub(crate) fn beside(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".upgrade-{}", std::process::id()));
        path.with_file_name(name)
    }

    /// Where the socket is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the socket to `path` (an atomic rename over the old master's:
    /// every client from now on reaches this one).
    pub(crate) fn move_to(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, path)?;
        self.path = path.to_path_buf();
        Ok(())
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

/// Whether the peer may control the master (its uid is the master's or
/// root's); anyone else is told why and logged.
async fn allowed(
    cred: std::io::Result<tokio::net::unix::UCred>,
    shared: &Shared,
    write: &mut OwnedWriteHalf,
) -> bool {
    match cred {
        Ok(c) if c.uid() == shared.uid || c.uid() == 0 => true,
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
            let _ = send(write, &error("forbidden", message)).await;
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell who is on a control connection; refused");
            false
        }
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>) {
    let cred = stream.peer_cred();
    let (read, mut write) = stream.into_split();
    if !allowed(cred, &shared, &mut write).await {
        return;
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
        if answer::handle(&line, &shared, &mut write).await.is_err() {
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
