//! The mechanics of an in-place upgrade (`USR2`, `upgrade`): the old
//! master checks the binary now on disk (preflight), starts it as a new
//! master beside itself with its listening sockets and its registry
//! segment (at fds 3, 4, ... and named in [`handoff`] variables), and the
//! two talk over a hand-over socket ([`Handover`] lines). The supervisor
//! decides when each step happens (`supervisor::upgrade`).
//!
//! Why a new master beside the old one, rather than re-executing in
//! place: the old master keeps serving until the new one is ready (a new
//! binary that cannot start, or whose workers cannot boot, changes
//! nothing), no worker has to be adopted across an `exec` (their IPC
//! streams, log pipes and the IPC pool's routing would have to be carried
//! mid-frame), and the sockets never close (both masters hold them while
//! their workers overlap). The cost: the pid changes, so under systemd the
//! old master announces `MAINPID=` of the new one, and as a container's
//! PID 1 the master cannot hand over at all (its exit ends the
//! container): there, an upgrade is a new image (docs/deploy.md).

use std::io::{self, BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ringmaster_proto::handoff::{self, Handover, Preflight};
use ringmaster_registry::Segment;

/// The first fd of the passed listening sockets.
const FIRST_FD: RawFd = 3;
/// How long a preflight may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// The new master's side: what the old one handed over.
pub(crate) struct Takeover {
    /// The hand-over socket to the old master.
    pub(crate) socket: UnixStream,
    /// The listening sockets, each with its group's name, in the order
    /// passed (a reuseport group's in slot order).
    pub(crate) listeners: Vec<(String, OwnedFd)>,
    /// The old master's registry segment, read-only.
    pub(crate) old_registry: Option<Segment>,
    /// The groups whose sockets are not in slot order in the kernel.
    pub(crate) unordered: Vec<String>,
}

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Takeover")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

/// Takes ownership of an fd the old master passed, close-on-exec from now.
fn take_fd(raw: RawFd, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: F_SETFD changes no memory; on a closed fd it fails (EBADF).
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(format!(
            "upgrade: the old master passed no {what} at fd {raw}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: open (checked above), passed to this process for it alone
    // (the variables naming it are this process's), taken once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn env_fd(name: &str) -> Result<Option<RawFd>, String> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("upgrade: {name}={v:?} is not an fd number")),
    }
}

impl Takeover {
    /// What an old master handed this process, if it is a new master of
    /// an upgrade ([`handoff::ENV_UPGRADE_FD`] is set).
    pub(crate) fn from_env() -> Result<Option<Takeover>, String> {
        let Some(fd) = env_fd(handoff::ENV_UPGRADE_FD)? else {
            return Ok(None);
        };
        let socket = UnixStream::from(take_fd(fd, "hand-over socket")?);
        let count = env_fd(handoff::ENV_UPGRADE_LISTEN_FDS)?.unwrap_or(0);
        let names = std::env::var(handoff::ENV_UPGRADE_LISTEN_NAMES).unwrap_or_default();
        let names: Vec<&str> = names.split(':').collect();
        let mut listeners = Vec::new();
        for i in 0..count {
            let name = names.get(i as usize).copied().unwrap_or_default();
            listeners.push((name.to_string(), take_fd(FIRST_FD + i, "listening socket")?));
        }
        let old_registry = match env_fd(handoff::ENV_UPGRADE_REGISTRY_FD)? {
            Some(fd) => Some(
                Segment::open(take_fd(fd, "registry segment")?, false)
                    .map_err(|e| format!("upgrade: cannot read the old master's registry: {e}"))?,
            ),
            None => None,
        };
        let unordered = std::env::var(handoff::ENV_UPGRADE_UNORDERED)
            .unwrap_or_default()
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Some(Takeover {
            socket,
            listeners,
            old_registry,
            unordered,
        }))
    }

    /// The sockets of `group`, in slot order (none if it got none), and
    /// whether the kernel still holds them in that order.
    pub(crate) fn take_listeners(&mut self, group: &str) -> (Vec<OwnedFd>, bool) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|(name, _)| name == group);
        self.listeners = rest;
        let ordered = !self.unordered.iter().any(|g| g == group);
        (mine.into_iter().map(|(_, fd)| fd).collect(), ordered)
    }
}

/// Tells the old master this new one cannot start (best effort: it also
/// sees the exit).
pub(crate) fn send_failed(socket: &mut UnixStream, why: &str) {
    let _ = send(
        socket,
        &Handover::Failed {
            error: why.to_string(),
        },
    );
}

/// Sends one hand-over line on a blocking socket (a few bytes: the
/// socket's buffer takes them at once).
pub(crate) fn send(socket: &mut UnixStream, msg: &Handover) -> io::Result<()> {
    let mut line = serde_json::to_string(msg).map_err(io::Error::other)?;
    line.push('\n');
    socket.write_all(line.as_bytes())
}

/// Runs the binary at `exe` in its preflight mode (`__preflight`, with
/// the configuration the master was started with): it loads the
/// configuration, resolves its worker implementations and prints one
/// [`Preflight`] line. An error says what the binary said.
pub(crate) async fn preflight(
    exe: &Path,
    args: &[std::ffi::OsString],
) -> Result<Preflight, String> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__preflight")
        .args(config_args(args))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in handoff::ALL_ENV
        .iter()
        .chain(&handoff::SERVICE_MANAGER_ENV)
        .chain(&handoff::UPGRADE_ENV)
    {
        cmd.env_remove(var);
    }
    let out = match tokio::time::timeout(PREFLIGHT_TIMEOUT, output_once_written(&mut cmd)).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", exe.display())),
        Err(_) => {
            return Err(format!(
                "{} did not finish its preflight within {PREFLIGHT_TIMEOUT:?}",
                exe.display()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = last_line(&String::from_utf8_lossy(&out.stderr))
        .or_else(|| last_line(&stdout))
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    if !out.status.success() {
        return Err(format!(
            "the new binary's preflight failed ({}){said}",
            crate::spawn::describe_exit(out.status)
        ));
    }
    let report: Preflight = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "{} printed no preflight report: is it a ringmaster binary of this version?{said}",
                exe.display()
            )
        })?;
    compatible(report)
}

/// The report, if this master can hand over to the binary that made it.
fn compatible(report: Preflight) -> Result<Preflight, String> {
    if report.handover != handoff::HANDOVER_VERSION {
        return Err(format!(
            "the new binary speaks hand-over version {}, this master {}: stop and start the service instead",
            report.handover,
            handoff::HANDOVER_VERSION
        ));
    }
    if report.registry_layout != ringmaster_registry::LAYOUT {
        return Err(format!(
            "the new binary's registry layout is {}, this master's {}: its counters could not be carried; \
             stop and start the service instead",
            report.registry_layout,
            ringmaster_registry::LAYOUT
        ));
    }
    Ok(report)
}

/// Runs `cmd` for its output; while the kernel says the binary is still
/// open for writing (`ETXTBSY`: a deploy that has just put it there), a
/// few more times.
async fn output_once_written(
    cmd: &mut tokio::process::Command,
) -> io::Result<std::process::Output> {
    let mut tries = 0;
    loop {
        match cmd.output().await {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// `--config PATH` (or `-c PATH`, `--config=PATH`) from the master's own
/// arguments, for the preflight.
fn config_args(args: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let text = a.to_string_lossy();
        if text == "--config" || text == "-c" {
            out.push(a.clone());
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if text.starts_with("--config=") {
            out.push(a.clone());
        }
    }
    out
}

/// A new master being started: its process and the old master's end of
/// the hand-over socket.
pub(crate) struct NewMaster {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) socket: UnixStream,
}

/// Starts `exe` with the master's own arguments as a new master, handing
/// it `listeners` (each with its group) and the registry segment.
pub(crate) fn start(
    exe: &Path,
    args: &[std::ffi::OsString],
    listeners: &[(String, RawFd)],
    unordered: &[String],
    registry: Option<RawFd>,
) -> io::Result<NewMaster> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut map: Vec<(RawFd, RawFd)> = Vec::new();
    for (i, (_, fd)) in listeners.iter().enumerate() {
        map.push((*fd, FIRST_FD + i as RawFd));
    }
    let socket_at = FIRST_FD + listeners.len() as RawFd;
    map.push((theirs.as_raw_fd(), socket_at));
    let registry_at = socket_at + 1;
    if let Some(fd) = registry {
        map.push((fd, registry_at));
    }
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    hand_over_env(
        &mut cmd,
        listeners,
        socket_at,
        registry.map(|_| registry_at),
    );
    cmd.env(handoff::ENV_UPGRADE_UNORDERED, unordered.join(","));
    place_fds(&mut cmd, map);
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or(0);
    Ok(NewMaster {
        child,
        pid,
        socket: ours,
    })
}

/// The new master's environment: the master's own, with the hand-over's
/// variables.
fn hand_over_env(
    cmd: &mut tokio::process::Command,
    listeners: &[(String, RawFd)],
    socket_at: RawFd,
    registry_at: Option<RawFd>,
) {
    let names: Vec<&str> = listeners.iter().map(|(g, _)| g.as_str()).collect();
    // Systemd's sockets of this master are passed as ours; its watchdog
    // is for whoever is the main process (the new master, once ready).
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID"]
        .iter()
        .chain(&handoff::UPGRADE_ENV)
    {
        cmd.env_remove(var);
    }
    cmd.env(handoff::ENV_UPGRADE_FD, socket_at.to_string())
        .env(handoff::ENV_UPGRADE_LISTEN_FDS, listeners.len().to_string())
        .env(handoff::ENV_UPGRADE_LISTEN_NAMES, names.join(":"));
    if let Some(at) = registry_at {
        cmd.env(handoff::ENV_UPGRADE_REGISTRY_FD, at.to_string());
    }
}

/// Has the child place each `(from, to)` fd at its number, between fork
/// and exec: first above every target (close-on-exec copies), then each
/// into place, so that no source is overwritten by another's target.
fn place_fds(cmd: &mut tokio::process::Command, map: Vec<(RawFd, RawFd)>) {
    let mut high = vec![-1; map.len()];
    let above = map.iter().map(|(_, to)| *to).max().unwrap_or(0) + 1;
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (fcntl, dup2) on memory allocated before the
    // fork. No PDEATHSIG: the new master outlives this one.
    unsafe {
        cmd.pre_exec(move || {
            for (i, (from, _)) in map.iter().enumerate() {
                let fd = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, above);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = fd;
            }
            for (i, (_, to)) in map.iter().enumerate() {
                if libc::dup2(high[i], *to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Reads hand-over lines from `socket` on a blocking thread of its own
/// and sends each to `tx`; ends at end-of-file or an error.
pub(crate) fn read_lines(socket: &UnixStream, tx: tokio::sync::mpsc::UnboundedSender<Handover>) {
    let Ok(socket) = socket.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        for line in io::BufReader::new(socket).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str(&line) {
                Ok(msg) => {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(line, error = %e, "upgrade: a hand-over line that makes no sense; ignored")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preflight_gets_the_masters_config_arguments_only() {
        let args: Vec<std::ffi::OsString> = ["serve", "--config", "/etc/r.toml", "-x"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(config_args(&args), ["--config", "/etc/r.toml"]);
        let args: Vec<std::ffi::OsString> = ["serve", "--config=/a.toml"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(config_args(&args), ["--config=/a.toml"]);
        assert!(config_args(&["serve".into()]).is_empty());
    }

    #[test]
    fn hand_over_lines_read_back() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        read_lines(&b, tx);
        send(
            &mut a,
            &Handover::Ready {
                pid: 7,
                version: "1.2".into(),
            },
        )
        .unwrap();
        send(&mut a, &Handover::Done).unwrap();
        drop(a);
        drop(b);
        assert_eq!(
            rx.blocking_recv(),
            Some(Handover::Ready {
                pid: 7,
                version: "1.2".into()
            })
        );
        assert_eq!(rx.blocking_recv(), Some(Handover::Done));
        assert_eq!(rx.blocking_recv(), None);
    }
}
