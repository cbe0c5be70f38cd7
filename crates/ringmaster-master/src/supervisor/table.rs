//! The worker table's types: a group, its slots, and each worker process
//! from spawn to reap, as the supervisor keeps them; and binding a group's
//! sockets.

use std::time::Duration;

use bytes::Bytes;
use ringmaster_config::{GroupConfig, ListenMode};
use ringmaster_proto::Origin;
use socket2::SockRef;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{replace, status};
use crate::MasterError;
use crate::listener::GroupListeners;
use crate::restart::{Backoff, RestartPolicy};
use crate::spawn::{WorkerCommand, WorkerLink};

/// Phase of one worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Spawned; has not reported `Ready` yet.
    Booting,
    /// Serving and heartbeating.
    Ready,
    /// Told to drain; will be killed at its deadline.
    Draining,
}

impl Phase {
    /// As `status` shows it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// One worker process, from spawn to reap.
#[derive(Debug)]
pub(super) struct WorkerProc {
    pub(super) group: usize,
    pub(super) slot: usize,
    pub(super) generation: u64,
    pub(super) pid: u32,
    pub(super) phase: Phase,
    pub(super) started: Instant,
    /// When it reported `Ready`; stable-run uptime counts from here.
    pub(super) ready_at: Option<Instant>,
    pub(super) last_heartbeat: Instant,
    pub(super) drain_deadline: Option<Instant>,
    /// The timeouts it was started with: a reload that changes them must
    /// not judge a worker by settings it never had.
    pub(super) boot_timeout: Duration,
    pub(super) heartbeat_timeout: Duration,
    pub(super) commands: mpsc::Sender<WorkerCommand>,
    /// Its queue of encoded IPC frames (bounded by `server.ipc_queue`).
    pub(super) frames: mpsc::Sender<Bytes>,
    /// The socket it is handed connections on (`spawn::hand_over_queue`).
    pub(super) adopt: std::os::unix::net::UnixDatagram,
    /// Who it is, as the workers it sends messages to see it.
    pub(super) origin: Origin,
    /// Topics it subscribed to, and request topics it serves.
    pub(super) topics: Vec<String>,
    pub(super) serves: Vec<String>,
    /// Since when its IPC queue has been full, if it is.
    pub(super) queue_full_since: Option<Instant>,
    /// Messages for it dropped because its queue was full.
    pub(super) ipc_dropped: u64,
    /// Its row in the registry segment (its slot's), if it got one.
    pub(super) row: Option<u32>,
    /// Why the master killed it, if it did.
    pub(super) killed_for: Option<String>,
    /// When the kill was (last) sent; it is sent again if the worker lingers.
    pub(super) killed_at: Option<Instant>,
    /// What the worker said in its `Fatal` message, if it sent one.
    pub(super) fatal: Option<String>,
    /// Resident memory and CPU, sampled every second.
    pub(super) usage: status::Usage,
    /// Set once it is past a recycling limit: why (`recycled: max_rss`).
    pub(super) recycle: Option<String>,
    /// Why it was told to drain (`reload`, `scale down`, ...).
    pub(super) drain_reason: Option<String>,
    /// Why it was started besides its slot's serving worker, if it was.
    pub(super) replaces: Option<replace::Why>,
    /// When it was first found past its boot or heartbeat deadline; it is
    /// killed if it still is a moment later (see `policy`).
    pub(super) overdue_since: Option<Instant>,
}

impl WorkerProc {
    /// A worker just started as `link` for slot `slot` of `group` (index
    /// `g`), booting, judged by the group's timeouts of now.
    pub(super) fn new(
        group: &Group,
        g: usize,
        slot: usize,
        generation: u64,
        row: Option<u32>,
        link: WorkerLink,
    ) -> WorkerProc {
        let now = Instant::now();
        let pid = link.pid;
        WorkerProc {
            group: g,
            slot,
            generation,
            pid,
            phase: Phase::Booting,
            started: now,
            ready_at: None,
            last_heartbeat: now,
            drain_deadline: None,
            boot_timeout: group.cfg.boot_timeout,
            heartbeat_timeout: group.cfg.heartbeat_timeout,
            commands: link.commands,
            frames: link.frames,
            adopt: link.adopt,
            origin: super::ipc::origin(&group.name, slot, pid),
            topics: Vec::new(),
            serves: Vec::new(),
            queue_full_since: None,
            ipc_dropped: 0,
            row,
            killed_for: None,
            killed_at: None,
            fatal: None,
            usage: status::Usage::default(),
            recycle: None,
            drain_reason: None,
            replaces: None,
            overdue_since: None,
        }
    }

    /// Why it exited, as far as the master knows: its kill's reason, else
    /// what it said in `Fatal`, else `default`.
    pub(super) fn exit_reason<'a>(&'a self, default: &'a str) -> &'a str {
        self.killed_for
            .as_deref()
            .or(self.fatal.as_deref())
            .or(self.drain_reason.as_deref())
            .unwrap_or(default)
    }
}

/// One place in a group: at most one serving worker at a time, plus its
/// replacement during a reload.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Generation of the next worker started for this slot.
    pub(super) next_generation: u64,
    /// Serial of the worker that serves this slot.
    pub(super) current: Option<u64>,
    /// Early exits in a row (see `crate::restart`).
    pub(super) strikes: u32,
    /// When the next worker of this slot may start, after a strike.
    pub(super) restart_at: Option<Instant>,
    /// A worker booting to take over this slot (reload, restart, recycle).
    pub(super) replacement: Option<u64>,
    /// Unexpected exits of this slot's workers.
    pub(super) restarts: u64,
    /// How the slot's last worker ended.
    pub(super) last_exit: Option<ringmaster_proto::ExitInfo>,
    /// Its registry row over the last seconds, for rates.
    pub(super) window: status::Window,
    /// After a recycling replacement failed to boot: not before this.
    pub(super) recycle_after: Option<Instant>,
}

/// A worker group: its configuration, sockets and slots.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: String,
    pub(super) cfg: GroupConfig,
    pub(super) listeners: GroupListeners,
    pub(super) slots: Vec<Slot>,
    /// The group's most recent unexpected exit.
    pub(super) last_exit: Option<ringmaster_proto::ExitInfo>,
    /// Workers still holding sockets of slots a scale-down removed (new
    /// connections are steered away from those until they have exited).
    pub(super) closing: Vec<u64>,
    /// Whether the log said once that this group cannot be steered.
    pub(super) steer_warned: bool,
    /// Whether its socket came from systemd (socket activation): its
    /// `listen` and `listen_mode` are what the socket is, whatever a
    /// re-read configuration says.
    pub(super) inherited: bool,
}

impl Group {
    pub(super) fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            min_uptime: self.cfg.min_uptime,
            backoff: Backoff {
                initial: self.cfg.restart_backoff,
                max: self.cfg.restart_backoff_max,
            },
        }
    }
}

/// How the master is stopping, once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Graceful,
    Immediate,
}

/// Binds one group's sockets, with an error that names the group and address.
pub(super) fn bind_group(name: &str, cfg: &GroupConfig) -> Result<Group, MasterError> {
    let listeners = GroupListeners::bind(cfg.listen, cfg.listen_mode, cfg.backlog, cfg.count)
        .map_err(|source| MasterError::Bind {
            group: name.to_string(),
            addr: cfg.listen,
            source,
        })?;
    Ok(new_group(name, cfg, listeners, false))
}

/// A group on the socket systemd passed for it (`systemd::activation`):
/// `cfg` is changed to say what that socket is (its address; shared mode).
pub(super) fn inherit_group(
    name: &str,
    cfg: &mut GroupConfig,
    passed: crate::systemd::activation::Passed,
) -> Group {
    if cfg.listen_mode == ListenMode::Reuseport && cfg.count > 1 {
        tracing::info!(
            group = %name,
            "groups.{name}.listen_mode = \"reuseport\", but systemd passed one socket: \
             the group's workers share it (shared mode)"
        );
    }
    let _ = SockRef::from(&passed.fd).set_tcp_nodelay(true);
    cfg.listen = passed.addr;
    cfg.listen_mode = ListenMode::Shared;
    tracing::info!(
        group = %name, addr = %passed.addr, fd_name = passed.name.as_deref().unwrap_or(""),
        "group {name} uses the socket systemd passed"
    );
    new_group(
        name,
        cfg,
        GroupListeners::inherited(passed.fd, passed.addr),
        true,
    )
}

/// A group on the sockets the old master of an upgrade passed: `cfg` is
/// changed to say what they are (their address, and shared mode unless
/// they are one reuseport socket per slot).
pub(super) fn passed_group(
    name: &str,
    cfg: &mut GroupConfig,
    sockets: Vec<std::os::fd::OwnedFd>,
    ordered: bool,
) -> std::io::Result<Group> {
    let reuseport = sockets.len() > 1
        || (cfg.listen_mode == ListenMode::Reuseport
            && SockRef::from(&sockets[0]).reuse_port().unwrap_or(false));
    let mode = if reuseport {
        ListenMode::Reuseport
    } else {
        ListenMode::Shared
    };
    if reuseport && sockets.len() > cfg.count {
        // Fewer slots than sockets would leave a socket whose queue no
        // worker accepts from; a reload scales down the usual way.
        tracing::warn!(
            group = %name,
            "groups.{name}.count = {} applies at the next reload: the old master had {} slots, and each keeps its socket",
            cfg.count, sockets.len()
        );
        cfg.count = sockets.len();
    }
    let listeners = GroupListeners::passed(sockets, mode, cfg.backlog, cfg.count, ordered)?;
    // Sockets systemd bound for the old master stay what they are.
    let inherited = listeners.addr() != cfg.listen || mode != cfg.listen_mode;
    cfg.listen = listeners.addr();
    cfg.listen_mode = mode;
    Ok(new_group(name, cfg, listeners, inherited))
}

fn new_group(name: &str, cfg: &GroupConfig, listeners: GroupListeners, inherited: bool) -> Group {
    Group {
        name: name.to_string(),
        cfg: cfg.clone(),
        listeners,
        slots: (0..cfg.count).map(|_| Slot::default()).collect(),
        last_exit: None,
        closing: Vec::new(),
        steer_warned: false,
        inherited,
    }
}
