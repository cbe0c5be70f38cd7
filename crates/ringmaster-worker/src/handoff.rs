//! Reading what the master handed over to this process: its identity and
//! configuration (environment) and its listener and IPC socket (fds).

use std::os::fd::{AsRawFd, FromRawFd};

use ringmaster_config::{Config, GroupConfig};
use ringmaster_proto::handoff::{
    ENV_CONFIG, ENV_GENERATION, ENV_GROUP, ENV_MASTER_PID, ENV_ROLE, ENV_SLOT, IPC_FD, LISTENER_FD,
    ROLE_WORKER,
};

/// Whether this process was started by a master in the worker role.
pub fn is_worker_process() -> bool {
    std::env::var_os(ENV_ROLE).is_some_and(|v| v == ROLE_WORKER)
}

/// Whether this process was started by a master to run migrations.
pub fn is_migrate_process() -> bool {
    std::env::var_os(ENV_ROLE).is_some_and(|v| v == ringmaster_proto::handoff::ROLE_MIGRATE)
}

/// The hand-over cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// A variable the master sets is missing or malformed.
    #[error(
        "{var} is missing or invalid: this process must be started by a ringmaster master (`serve`), not by hand"
    )]
    Env {
        /// The variable.
        var: &'static str,
    },
    /// The master's pid is not our parent's: the master died while we started.
    #[error("the master (pid {master}) is not this worker's parent (pid {parent}); exiting")]
    Orphan {
        /// The pid the master gave.
        master: u32,
        /// Our actual parent.
        parent: u32,
    },
    /// The configuration the master passed cannot be read.
    #[error("the configuration from the master is invalid: {0}")]
    Config(String),
    /// The configuration has no section for our group.
    #[error("the configuration from the master has no group \"{0}\"")]
    NoGroup(String),
}

/// Identity and configuration of this worker, from its environment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Handoff {
    /// The group.
    pub group: String,
    /// The slot.
    pub slot: usize,
    /// The slot's generation.
    pub generation: u64,
    /// The master's pid.
    pub master_pid: u32,
    /// The master's resolved configuration.
    pub config: Config,
    /// The configuration of this worker's group.
    pub group_config: GroupConfig,
}

impl Handoff {
    /// Reads the environment and checks that the master is our parent.
    pub fn from_env() -> Result<Self, HandoffError> {
        let group = var(ENV_GROUP)?;
        let slot = var(ENV_SLOT)?
            .parse()
            .map_err(|_| HandoffError::Env { var: ENV_SLOT })?;
        let generation = var(ENV_GENERATION)?
            .parse()
            .map_err(|_| HandoffError::Env {
                var: ENV_GENERATION,
            })?;
        let master_pid: u32 = var(ENV_MASTER_PID)?
            .parse()
            .map_err(|_| HandoffError::Env {
                var: ENV_MASTER_PID,
            })?;
        // The master set PR_SET_PDEATHSIG before exec; if it died before
        // that, our parent is already someone else: close that race here.
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        if parent != master_pid {
            return Err(HandoffError::Orphan {
                master: master_pid,
                parent,
            });
        }
        let config = Config::from_toml_str(&var(ENV_CONFIG)?, ENV_CONFIG)
            .map_err(|e| HandoffError::Config(e.to_string()))?;
        let Some(group_config) = config.group(&group).cloned() else {
            return Err(HandoffError::NoGroup(group));
        };
        Ok(Handoff {
            group,
            slot,
            generation,
            master_pid,
            config,
            group_config,
        })
    }
}

fn var(name: &'static str) -> Result<String, HandoffError> {
    std::env::var(name).map_err(|_| HandoffError::Env { var: name })
}

/// Takes ownership of the listener at its fixed fd. Call once.
pub(crate) fn take_listener() -> std::io::Result<std::net::TcpListener> {
    claim(LISTENER_FD, "listening socket")?;
    // SAFETY: the master placed our listening socket at LISTENER_FD before
    // exec, and `claim` makes this the only owner in the process.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(LISTENER_FD) };
    set_cloexec(&listener)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Takes the socket the master hands connections over on, if it gave one
/// ([`ringmaster_proto::handoff::ADOPT_FD`]). Call once.
pub(crate) fn take_adopt() -> Option<std::io::Result<tokio::net::UnixDatagram>> {
    use ringmaster_proto::handoff::{ADOPT_FD, ENV_ADOPT};
    if std::env::var_os(ENV_ADOPT).is_none_or(|v| v != "1") {
        return None;
    }
    if let Err(e) = claim(ADOPT_FD, "hand-over socket") {
        return Some(Err(e));
    }
    // SAFETY: the master placed our end of the datagram pair at ADOPT_FD
    // before exec (it said so in ENV_ADOPT); `claim` makes this the only
    // owner in the process.
    let sock = unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(ADOPT_FD) };
    Some(
        set_cloexec(&sock)
            .and_then(|()| sock.set_nonblocking(true))
            .and_then(|()| tokio::net::UnixDatagram::from_std(sock)),
    )
}

/// Takes ownership of the IPC socket at its fixed fd. Call once.
pub(crate) fn take_ipc() -> std::io::Result<tokio::net::UnixStream> {
    claim(IPC_FD, "IPC socket")?;
    // SAFETY: the master placed our end of the socket pair at IPC_FD
    // before exec, and `claim` makes this the only owner in the process.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(IPC_FD) };
    set_cloexec(&stream)?;
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

/// Takes the registry segment at its fixed fd, with this worker's row, if
/// the master gave it one (`RINGMASTER_REGISTRY_ROW` set). Call once.
pub(crate) fn take_registry() -> Option<std::io::Result<(std::os::fd::OwnedFd, u32)>> {
    let row: u32 = std::env::var(ringmaster_proto::handoff::ENV_REGISTRY_ROW)
        .ok()?
        .parse()
        .ok()?;
    if let Err(e) = claim(ringmaster_proto::handoff::REGISTRY_FD, "registry segment") {
        return Some(Err(e));
    }
    // SAFETY: with the row set, the master placed the segment's memfd at
    // REGISTRY_FD before exec; `claim` makes this the only owner.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(ringmaster_proto::handoff::REGISTRY_FD) };
    Some(set_cloexec(&fd).map(|()| (fd, row)))
}

/// The handed-over fds already taken, one bit per fd number: a second
/// `take_*` of the same fd would make two owners of it (a double close,
/// or a read of whatever the number is reused for), so it fails instead.
static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes this call the one owner of the handed-over `fd`.
fn claim(fd: std::os::fd::RawFd, what: &str) -> std::io::Result<()> {
    let bit = 1u64 << (fd as u32 % 64);
    if TAKEN.fetch_or(bit, std::sync::atomic::Ordering::AcqRel) & bit != 0 {
        return Err(std::io::Error::other(format!(
            "the {what} (fd {fd}) from the master was taken already: it is taken once per process"
        )));
    }
    Ok(())
}

/// The hand-over cleared close-on-exec on our fds; set it again, so that a
/// process the app starts does not inherit the port or the master's socket.
fn set_cloexec(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd this process owns.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_handed_over_fd_is_taken_once() {
        // An fd number no hand-over uses.
        assert!(super::claim(63, "test socket").is_ok());
        let err = super::claim(63, "test socket").unwrap_err();
        assert!(err.to_string().contains("taken already"), "{err}");
    }
}
