//! Starting one worker process and watching it.
//!
//! A worker is the current binary re-executed (never a bare `fork` of the
//! running, multi-threaded master) with the worker role in its environment,
//! its listener at [`LISTENER_FD`], its end of a fresh socket pair at
//! [`IPC_FD`] and the registry segment at [`REGISTRY_FD`]. Between `fork` and `exec` the child only duplicates fds and
//! sets `PR_SET_PDEATHSIG`: async-signal-safe calls, no allocation.
//!
//! Each worker gets two tasks. The watcher owns its [`Child`] (the only
//! place it is reaped) and the reading half of its IPC channel: it forwards
//! what the worker says to the supervisor as [`WorkerEvent`]s and carries
//! out [`WorkerCommand`]s. The writer owns the sending half and the
//! worker's bounded queue of encoded frames, and writes them in batches: a
//! worker that stops reading blocks only its own writer, never the watcher
//! (which must still be able to kill and reap it) or the supervisor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringmaster_proto::handoff::{self, ADOPT_FD, IPC_FD, LISTENER_FD, LOG_FD, REGISTRY_FD};
use ringmaster_proto::{
    Channel, LogStream, MasterMsg, Receiver, RecvError, Sender, WorkerMsg, write_batches,
};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::logs::{LogHub, Source, read_pipe};

/// Capacity of a worker's command queue; commands are rare (kill).
const COMMAND_QUEUE: usize = 16;
/// The writer adds queued frames to one write while it holds fewer bytes
/// than this (so a write passes it by at most one frame).
const WRITE_BATCH: usize = 64 * 1024;
/// How long to wait, after a worker exited, for the messages it sent last.
const LAST_WORDS: Duration = Duration::from_millis(100);

/// This master's [`handoff::ENV_INSTANCE`]: 16 random hex digits, drawn
/// once (from the pid and the clock if the kernel has no randomness to
/// give, which only a very old kernel lacks).
fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // SAFETY: the buffer is valid for writes of its length.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        let id = if n == bytes.len() as isize {
            u64::from_ne_bytes(bytes)
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (u64::from(std::process::id()) << 40) ^ now.as_nanos() as u64
        };
        format!("{id:016x}")
    })
}

/// What the master needs to start one worker.
pub(crate) struct SpawnSpec<'a> {
    pub(crate) exe: &'a Path,
    pub(crate) group: &'a str,
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    pub(crate) listener_fd: RawFd,
    pub(crate) config_toml: &'a str,
    pub(crate) master_pid: u32,
    /// Capacity of the worker's queue of frames (`server.ipc_queue`).
    pub(crate) queue: usize,
    /// The registry segment's fd and the worker's row in it, if it has one.
    pub(crate) registry: Option<(RawFd, u32)>,
    /// The log the worker's output goes to (else it inherits the master's).
    pub(crate) logs: Option<&'a LogHub>,
}

/// The master's handles on a started worker.
pub(crate) struct WorkerLink {
    pub(crate) pid: u32,
    /// Commands to its watcher.
    pub(crate) commands: mpsc::Sender<WorkerCommand>,
    /// Encoded frames for it, written in order by its writer task.
    pub(crate) frames: mpsc::Sender<Bytes>,
    /// The master's end of the socket it is handed connections on.
    pub(crate) adopt: std::os::unix::net::UnixDatagram,
}

/// Something that happened to a worker, reported by its watcher task.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// The worker sent a message.
    Message { serial: u64, msg: WorkerMsg },
    /// The worker sent a frame that is not a message of the protocol.
    IpcError { serial: u64, error: String },
    /// The process exited and was reaped.
    Exited { serial: u64, status: ExitStatus },
}

/// What the supervisor can ask of a worker's watcher.
#[derive(Debug)]
pub(crate) enum WorkerCommand {
    /// SIGKILL the worker's process group: the worker leads its own group,
    /// so processes it started go too (a no-op once it has been reaped).
    Kill,
}

/// What starts worker processes for the supervisor: [`Processes`] in the
/// master; a scripted fake in the supervisor's unit tests, which drive its
/// policies without a process.
pub(crate) trait Spawner {
    /// Starts the worker `spec` describes as `serial`; its watcher reports
    /// on `events`.
    fn spawn(
        &mut self,
        spec: &SpawnSpec<'_>,
        serial: u64,
        events: mpsc::Sender<WorkerEvent>,
    ) -> io::Result<WorkerLink>;
}

/// Real worker processes ([`spawn_worker`]).
pub(crate) struct Processes;

impl Spawner for Processes {
    fn spawn(
        &mut self,
        spec: &SpawnSpec<'_>,
        serial: u64,
        events: mpsc::Sender<WorkerEvent>,
    ) -> io::Result<WorkerLink> {
        spawn_worker(spec, serial, events)
    }
}

/// Starts a worker process, its watcher and its writer.
pub(crate) fn spawn_worker(
    spec: &SpawnSpec<'_>,
    serial: u64,
    events: mpsc::Sender<WorkerEvent>,
) -> io::Result<WorkerLink> {
    let (master_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
    let (adopt, adopt_worker_end) = std::os::unix::net::UnixDatagram::pair()?;
    adopt.set_nonblocking(true)?;
    let mut cmd = worker_command(spec);
    let mut fds = FdMap::default();
    fds.push(spec.listener_fd, LISTENER_FD);
    fds.push(worker_end.as_raw_fd(), IPC_FD);
    fds.push(adopt_worker_end.as_raw_fd(), ADOPT_FD);
    if let Some((fd, row)) = spec.registry {
        fds.push(fd, REGISTRY_FD);
        cmd.env(handoff::ENV_REGISTRY_ROW, row.to_string());
    }
    let pipes = match spec.logs {
        Some(_) => Some(OutputPipes::attach(&mut cmd, &mut fds)?),
        None => None,
    };
    fds.install(&mut cmd);
    let child = cmd.spawn()?;
    // Our copy of the worker's end must go, or its end-of-file never arrives.
    drop(worker_end);
    drop(adopt_worker_end);
    let pid = child.id().unwrap_or(0);
    // `cmd` holds the stdout and stderr write ends: they must close here,
    // or the readers never see end-of-file.
    drop(cmd);
    if let (Some(pipes), Some(hub)) = (pipes, spec.logs) {
        pipes.read_into(hub, spec, pid);
    }
    let (commands, frames) = start_tasks(serial, child, master_end, spec.queue, events)?;
    Ok(WorkerLink {
        pid,
        commands,
        frames,
        adopt,
    })
}

/// The command that re-executes the binary as the worker `spec`
/// describes: named for `ps`, its handoff environment set afresh (none of
/// the master's own), no stdin, and a process group of its own.
fn worker_command(spec: &SpawnSpec<'_>) -> Command {
    let mut cmd = Command::new(spec.exe);
    // What `ps` shows: "ringmaster-demo worker web/0".
    let name = spec
        .exe
        .file_name()
        .unwrap_or(spec.exe.as_os_str())
        .to_string_lossy();
    cmd.arg0(format!("{name} worker {}/{}", spec.group, spec.slot));
    for var in handoff::ALL_ENV
        .iter()
        .chain(&handoff::SERVICE_MANAGER_ENV)
        .chain(&handoff::UPGRADE_ENV)
    {
        cmd.env_remove(var);
    }
    cmd.env(handoff::ENV_ROLE, handoff::ROLE_WORKER)
        .env(handoff::ENV_GROUP, spec.group)
        .env(handoff::ENV_SLOT, spec.slot.to_string())
        .env(handoff::ENV_GENERATION, spec.generation.to_string())
        .env(handoff::ENV_MASTER_PID, spec.master_pid.to_string())
        .env(handoff::ENV_INSTANCE, instance())
        .env(handoff::ENV_CONFIG, spec.config_toml)
        .env(handoff::ENV_ADOPT, "1")
        .stdin(Stdio::null())
        // A terminal's Ctrl-C reaches the master only; it decides how workers stop.
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// The fds a worker gets at fixed numbers, `(ours, its number)`: a fixed
/// array, so the child can place them without allocating.
#[derive(Default)]
struct FdMap {
    map: [(RawFd, RawFd); 5],
    len: usize,
}

impl FdMap {
    /// Hands `fd` to the worker as fd number `at`.
    fn push(&mut self, fd: RawFd, at: RawFd) {
        self.map[self.len] = (fd, at);
        self.len += 1;
    }

    /// Has the child place the fds at their numbers, between fork and
    /// exec, and die with the master.
    fn install(self, cmd: &mut Command) {
        let FdMap { map, len } = self;
        // SAFETY: the closure runs in the child between fork and exec and only
        // makes async-signal-safe calls (fcntl, dup2, prctl) on a fixed array.
        unsafe {
            cmd.pre_exec(move || remap_fds_and_tie_to_parent(&map[..len]));
        }
    }
}

/// The master's ends of a worker's output pipes (its tracing lines on
/// [`LOG_FD`], its stdout and stderr), and our copy of the log pipe's
/// write end, which must stay open until the worker has its own.
struct OutputPipes {
    log_r: OwnedFd,
    out_r: OwnedFd,
    err_r: OwnedFd,
    log_w: OwnedFd,
}

impl OutputPipes {
    /// Makes the pipes and gives the worker their write ends: the log
    /// pipe in `fds`, stdout and stderr through `cmd`.
    fn attach(cmd: &mut Command, fds: &mut FdMap) -> io::Result<Self> {
        let (log_r, log_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        fds.push(log_w.as_raw_fd(), LOG_FD);
        cmd.env(handoff::ENV_LOG_PIPE, "1")
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        Ok(OutputPipes {
            log_r,
            out_r,
            err_r,
            log_w,
        })
    }

    /// Once the worker runs: a reader task per pipe into `hub`, each
    /// line tagged with the worker's slot, `pid` and stream.
    fn read_into(self, hub: &LogHub, spec: &SpawnSpec<'_>, pid: u32) {
        drop(self.log_w);
        let streams = [
            (self.log_r, LogStream::Log),
            (self.out_r, LogStream::Stdout),
            (self.err_r, LogStream::Stderr),
        ];
        for (fd, stream) in streams {
            let source = Arc::new(Source::worker(
                spec.group,
                spec.slot,
                pid,
                spec.generation,
                stream,
            ));
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => {
                    tokio::spawn(read_pipe(rx, source, hub.clone()));
                }
                Err(e) => {
                    tracing::error!(pid, stream = stream.as_str(), error = %e, "cannot read a worker's output")
                }
            }
        }
    }
}

/// Starts the watcher and the writer of a started worker on the master's
/// end of its IPC socket; returns their command and frame queues.
fn start_tasks(
    serial: u64,
    mut child: Child,
    master_end: std::os::unix::net::UnixStream,
    queue: usize,
    events: mpsc::Sender<WorkerEvent>,
) -> io::Result<(mpsc::Sender<WorkerCommand>, mpsc::Sender<Bytes>)> {
    // Before anything can await: a PID 1 master's reaper must leave this
    // child's exit status to its watcher.
    let own = crate::reaper::Own::new(child.id().unwrap_or(0));
    let stream = master_end
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(master_end));
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            // Not a worker we could watch: it must not live on untracked.
            let _ = child.start_kill();
            return Err(e);
        }
    };
    let channel = Channel::<MasterMsg, WorkerMsg>::new(stream);
    let (tx, rx) = channel.split();
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (frames, frame_rx) = mpsc::channel(queue.max(1));
    tokio::spawn(watch(serial, (child, own), rx, command_rx, events));
    tokio::spawn(write(serial, tx, frame_rx));
    Ok((commands, frames))
}

/// Writes a worker's queued frames, as many as are waiting in one write
/// ([`write_batches`]), until the supervisor drops its queue or the
/// worker's socket fails.
async fn write(serial: u64, tx: Sender<MasterMsg>, mut frames: mpsc::Receiver<Bytes>) {
    if let Err(e) = write_batches(&mut frames, tx, WRITE_BATCH).await {
        // The worker is gone or closed its end; its exit is reported by
        // the watcher.
        tracing::debug!(serial, error = %e, "IPC to worker closed");
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Places each `(from, to)` fd at its number, without close-on-exec, and asks
/// the kernel to SIGKILL this process when the spawning thread dies.
///
/// Two passes so that a source that sits on another's target number is not
/// overwritten: first duplicate every source above the targets (those copies
/// are close-on-exec and vanish at exec), then `dup2` into place.
fn remap_fds_and_tie_to_parent(map: &[(RawFd, RawFd)]) -> io::Result<()> {
    let mut high = [-1; 5];
    if map.len() > high.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (i, (from, _)) in map.iter().enumerate() {
        // SAFETY: plain fcntl on an fd we own in this (child) process.
        let fd = unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 16) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        high[i] = fd;
    }
    for (i, (_, to)) in map.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; the copy has no close-on-exec.
        if unsafe { libc::dup2(high[i], *to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Owns one worker process until it has been reaped.
async fn watch(
    serial: u64,
    (mut child, own): (Child, crate::reaper::Own),
    mut rx: Receiver<WorkerMsg>,
    mut commands: mpsc::Receiver<WorkerCommand>,
    events: mpsc::Sender<WorkerEvent>,
) {
    let mut ipc_open = true;
    let mut commands_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = rx.recv(), if ipc_open => ipc_open = forward(serial, msg, &events).await,
            cmd = commands.recv(), if commands_open => match cmd {
                Some(WorkerCommand::Kill) => kill(&mut child),
                None => commands_open = false,
            },
        }
    };
    // A worker that fails says why (`Fatal`) and exits at once: read what it
    // sent last before reporting the exit, so the reason is never lost.
    if ipc_open {
        let _ = tokio::time::timeout(LAST_WORDS, async {
            while let Ok(Some(msg)) = rx.recv().await {
                let _ = events.send(WorkerEvent::Message { serial, msg }).await;
            }
        })
        .await;
    }
    drop(own);
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            tracing::error!(serial, error = %e, "waiting for a worker failed");
            ExitStatus::from_raw(0xff00)
        }
    };
    let _ = events.send(WorkerEvent::Exited { serial, status }).await;
}

/// Passes on what a worker said (or its bad frame) to the supervisor;
/// returns whether its IPC is still open.
async fn forward(
    serial: u64,
    msg: Result<Option<WorkerMsg>, RecvError>,
    events: &mpsc::Sender<WorkerEvent>,
) -> bool {
    match msg {
        Ok(Some(msg)) => {
            let _ = events.send(WorkerEvent::Message { serial, msg }).await;
            true
        }
        Ok(None) => false,
        Err(RecvError::Frame(e)) => {
            let error = RecvError::Frame(e).to_string();
            let _ = events.send(WorkerEvent::IpcError { serial, error }).await;
            false
        }
        Err(e) => {
            // A reset, or a frame cut short, is how the socket of a worker
            // that is exiting ends (it closed with our messages unread, or
            // died mid-write): the end of its IPC, not a protocol
            // violation. Its exit follows; a worker that lives on without
            // IPC stops heartbeating.
            tracing::debug!(serial, error = %e, "worker's IPC socket ended");
            false
        }
    }
}

/// SIGKILLs the worker's process group, then the worker itself.
fn kill(child: &mut Child) {
    if let Some(pid) = child.id() {
        // The child is not reaped yet (we are its only reaper), so its
        // pid, which is also its process group id, still names it.
        let group = nix::unistd::Pid::from_raw(-(pid as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.start_kill();
}

/// Describes an exit status for a log line: `exit code 1`, `signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        None => "unknown status".to_string(),
    }
}

/// Takes the connections waiting in the accept queue of `listener` (the
/// socket of a slot without a ready worker) and hands each to one of `to`,
/// in turn, as `SCM_RIGHTS` datagrams; returns how many were handed over.
/// A connection goes to the next worker when one's socket is full; when all
/// are full the rest stay queued (and the one in hand is closed).
pub(crate) fn hand_over_queue(
    listener: std::os::fd::RawFd,
    to: &[&std::os::unix::net::UnixDatagram],
) -> usize {
    let mut handed = 0;
    if to.is_empty() {
        return 0;
    }
    // Never block the master: the socket's file status is shared with its
    // workers, which want it non-blocking too.
    // SAFETY: fcntl on a socket this process owns.
    unsafe {
        let flags = libc::fcntl(listener, libc::F_GETFL);
        if flags < 0 || libc::fcntl(listener, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return 0;
        }
    }
    let mut next = 0;
    loop {
        // SAFETY: accept4 on a listening socket this process owns; a null
        // address is allowed.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return handed;
        }
        // SAFETY: accept4 returned a new fd that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        let taken = (0..to.len()).any(|i| {
            let sock = to[(next + i) % to.len()];
            send_fd(sock, conn.as_raw_fd()).is_ok()
        });
        if !taken {
            return handed;
        }
        handed += 1;
        next += 1;
    }
}

/// Sends `fd` as the one `SCM_RIGHTS` right of a one-byte datagram.
fn send_fd(sock: &std::os::unix::net::UnixDatagram, fd: std::os::fd::RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one fd, aligned as cmsghdr needs.
    let mut space = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space_len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    assert!(space_len <= std::mem::size_of_val(&space));
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = space_len as _;
    // SAFETY: msg_control points at `space_len` bytes; the first header
    // fits, and its data holds one c_int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    // SAFETY: sendmsg on a socket this process owns with a valid msghdr.
    let n = unsafe {
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions() {
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
    }
}
