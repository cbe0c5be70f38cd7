//! The in-place upgrade as the supervisor runs it (the mechanics are in
//! `crate::upgrade`), on both sides.
//!
//! The old master, on USR2 or `upgrade`:
//! 1. runs the binary now on disk in its preflight mode (configuration,
//!    hand-over and registry layout versions); a failure changes nothing;
//! 2. starts it as a new master with every listening socket and the
//!    registry segment, and goes on serving;
//! 3. when the new master says it is ready, tells systemd its pid
//!    (`MAINPID=`), answers the client, drains its own workers (the
//!    sockets stay open in the new master, whose workers accept
//!    meanwhile), says `Done` and exits 0;
//! 4. when the new master fails, exits, or is not ready within
//!    [`READY_TIMEOUT`], stops it (TERM: its workers drain) and serves on.
//!
//! The new master takes the sockets instead of binding, copies every
//! counter from the old segment into its own, opens its control socket
//! beside the old one, and once every group is ready moves the socket
//! into place, writes the pid file and says `Ready`; on `Done` it copies
//! what the old workers counted since.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use ringmaster_proto::Lifecycle;
use ringmaster_proto::handoff::{Handover, Preflight};
use ringmaster_registry::{Segment, Totals};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Supervisor;
use super::replace::notify;
use crate::control::Events;
use crate::control::request::{error, ok};
use crate::upgrade::{self, NewMaster};

/// How long a new master may take to become ready (its migrations and
/// every group's boot) before the upgrade is given up.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a failed new master may drain before it is killed.
const FAILED_DRAIN: Duration = Duration::from_secs(10);

/// An upgrade the old master runs.
pub(super) struct Upgrading {
    exe: PathBuf,
    events: Option<Events>,
    phase: Phase,
}

enum Phase {
    Preflight(oneshot::Receiver<Result<Preflight, String>>),
    Starting {
        new: NewMaster,
        rx: mpsc::UnboundedReceiver<Handover>,
        deadline: Instant,
    },
    HandedOver {
        socket: UnixStream,
        /// Kept so the new master is not reaped as an orphan would be.
        _child: tokio::process::Child,
    },
}

/// What moved an upgrade on.
pub(super) enum Step {
    Preflight(Result<Preflight, String>),
    Message(Option<Handover>),
    Exited(String),
}

/// The next step of the upgrade in progress (pending without one).
pub(super) async fn next(up: &mut Option<Upgrading>) -> Step {
    let Some(up) = up else {
        return std::future::pending().await;
    };
    match &mut up.phase {
        Phase::Preflight(rx) => Step::Preflight(
            rx.await
                .unwrap_or_else(|_| Err("the preflight ended without an answer".into())),
        ),
        Phase::Starting { new, rx, .. } => tokio::select! {
            msg = rx.recv() => Step::Message(msg),
            status = new.child.wait() => Step::Exited(match status {
                Ok(s) => crate::spawn::describe_exit(s),
                Err(e) => e.to_string(),
            }),
        },
        Phase::HandedOver { .. } => std::future::pending().await,
    }
}

/// The old master's next word once this (new) master has taken over:
/// `Done` (or `None`: it is gone); pending before.
pub(super) async fn old_master_said(t: &mut Option<Takeover>) -> Option<Handover> {
    match t {
        Some(t) if t.ready_sent => t.rx.recv().await,
        _ => std::future::pending().await,
    }
}

/// The new master's side: the old master and what it handed over.
pub(super) struct Takeover {
    socket: UnixStream,
    rx: mpsc::UnboundedReceiver<Handover>,
    old_registry: Option<Segment>,
    copied: Totals,
    ready_sent: bool,
}

impl Takeover {
    /// The new master's side of `takeover`, with the old master's
    /// counters copied into `segment` once.
    pub(super) fn new(takeover: upgrade::Takeover, segment: &Segment) -> Takeover {
        let (tx, rx) = mpsc::unbounded_channel();
        upgrade::read_lines(&takeover.socket, tx);
        let copied = match &takeover.old_registry {
            Some(old) => {
                let (copied, refused) = segment.absorb(old, &Totals::default());
                warn_refused(&refused);
                copied
            }
            None => Totals::default(),
        };
        Takeover {
            socket: takeover.socket,
            rx,
            old_registry: takeover.old_registry,
            copied,
            ready_sent: false,
        }
    }

    /// Tells the old master this one cannot start.
    pub(super) fn fail(&mut self, why: &str) {
        upgrade::send_failed(&mut self.socket, why);
    }
}

/// Says which old series could not be carried over (a new release that
/// registers one with another kind or other buckets keeps its own).
fn warn_refused(refused: &[ringmaster_registry::RegistryError]) {
    for e in refused {
        tracing::warn!(error = %e, "upgrade: a series of the old master is not carried over");
    }
}

impl Supervisor {
    /// Refuses what would change the sockets or the workers while an
    /// upgrade runs, on either master, until the old one is done (the new
    /// master was handed the sockets as they were).
    pub(super) fn refuse_while_upgrading(&self) -> Result<(), Value> {
        if self.upgrading.is_some() || self.takeover.is_some() {
            return Err(error(
                "busy",
                "an upgrade is in progress; retry once it is done (`events` shows it)".into(),
            ));
        }
        Ok(())
    }

    /// Starts an upgrade to the binary on disk (USR2, `upgrade`); an error
    /// is the reply line for the client: nothing was started.
    pub(super) fn begin_upgrade(&mut self, events: Option<Events>) -> Result<(), Value> {
        let refuse = |code: &str, why: &str| Err(error(code, why.to_string()));
        if crate::reaper::needed() {
            return refuse(
                "pid1",
                "the master is PID 1 (a container): its exit would end the container, so it cannot \
                 hand over; deploy a new image instead (a rolling update)",
            );
        }
        if self.stopping.is_some() {
            return refuse("stopping", "the master is stopping");
        }
        if self.upgrading.is_some() || self.takeover.is_some() {
            return refuse("busy", "an upgrade is in progress");
        }
        if let Some(g) = self.groups.iter().find(|g| !g.closing.is_empty()) {
            let why = format!(
                "group {} is still closing sockets of a scale-down; upgrade once its workers have drained",
                g.name
            );
            return Err(error("busy", why));
        }
        if self.reload.is_some() || self.migrating.is_some() || self.awaiting_startup_migrations() {
            return refuse(
                "busy",
                "a reload or migrations are in progress; upgrade once they are done",
            );
        }
        let exe = crate::current_exe().unwrap_or_else(|_| self.exe.clone());
        tracing::info!(exe = %exe.display(), "upgrade: preflight of the binary on disk");
        notify(
            events.as_ref(),
            json!({"event": "preflight", "exe": exe.display().to_string()}),
        );
        let (tx, rx) = oneshot::channel();
        let (path, args) = (exe.clone(), master_args());
        tokio::spawn(async move {
            let _ = tx.send(upgrade::preflight(&path, &args).await);
        });
        self.upgrading = Some(Upgrading {
            exe,
            events,
            phase: Phase::Preflight(rx),
        });
        Ok(())
    }

    /// Carries out one step of the upgrade in progress.
    pub(super) fn on_upgrade(&mut self, step: Step) {
        match step {
            Step::Preflight(Ok(report)) => self.start_new_master(&report),
            Step::Preflight(Err(why)) => self.fail_upgrade(&why, Ending::Term),
            Step::Message(Some(Handover::Ready { pid, version })) => self.hand_over(pid, &version),
            Step::Message(Some(Handover::Failed { error })) => {
                // It stops by itself, draining its workers.
                self.fail_upgrade(
                    &format!("the new master cannot start: {error}"),
                    Ending::Wait,
                );
            }
            Step::Message(Some(Handover::Done | Handover::Announced)) => {}
            Step::Message(None) => self.fail_upgrade(
                "the new master closed the hand-over before it was ready; its lines are in the log",
                Ending::Term,
            ),
            Step::Exited(how) => self.fail_upgrade(
                &format!(
                    "the new master exited ({how}) before it was ready; its lines are in the log"
                ),
                Ending::Term,
            ),
        }
    }

    fn start_new_master(&mut self, report: &Preflight) {
        if self.stopping.is_some() {
            return self.fail_upgrade("the master is stopping", Ending::Term);
        }
        let Some(up) = self.upgrading.as_mut() else {
            return;
        };
        let listeners: Vec<(String, std::os::fd::RawFd)> = self
            .groups
            .iter()
            .flat_map(|g| {
                g.listeners
                    .raw_fds()
                    .into_iter()
                    .map(|fd| (g.name.clone(), fd))
            })
            .collect();
        let registry = self
            .registry
            .segment
            .fd()
            .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd));
        let unordered: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !g.listeners.order_known())
            .map(|g| g.name.clone())
            .collect();
        match upgrade::start(&up.exe, &master_args(), &listeners, &unordered, registry) {
            Ok(new) => {
                tracing::info!(
                    pid = new.pid, version = %report.version, exe = %up.exe.display(),
                    "upgrade: new master started; this one serves until it is ready"
                );
                notify(
                    up.events.as_ref(),
                    json!({"event": "started", "pid": new.pid, "version": report.version}),
                );
                let (tx, rx) = mpsc::unbounded_channel();
                upgrade::read_lines(&new.socket, tx);
                let exe = up.exe.display().to_string();
                let pid = new.pid;
                up.phase = Phase::Starting {
                    new,
                    rx,
                    deadline: Instant::now() + READY_TIMEOUT,
                };
                self.publish(Lifecycle::UpgradeStarted { exe, pid });
            }
            Err(e) => {
                let why = format!("cannot start {}: {e}", up.exe.display());
                self.fail_upgrade(&why, Ending::Term);
            }
        }
    }

    /// The new master serves: hand systemd over to it and drain.
    fn hand_over(&mut self, pid: u32, version: &str) {
        let Some(up) = self.upgrading.as_mut() else {
            return;
        };
        let Phase::Starting { new, .. } =
            std::mem::replace(&mut up.phase, Phase::Preflight(oneshot::channel().1))
        else {
            return;
        };
        up.phase = Phase::HandedOver {
            socket: new.socket,
            _child: new.child,
        };
        let events = up.events.take();
        self.notifier.hand_over(pid);
        if let Phase::HandedOver { socket, .. } = &mut up.phase
            && let Err(e) = upgrade::send(socket, &Handover::Announced)
        {
            tracing::warn!(error = %e, "upgrade: cannot tell the new master it was announced");
        }
        tracing::info!(
            pid,
            version,
            "upgrade: the new master is ready and serves; draining this master's workers"
        );
        self.publish(Lifecycle::UpgradeFinished {
            pid,
            version: version.to_string(),
        });
        notify(
            events.as_ref(),
            ok(json!({"pid": pid, "version": version, "old_pid": self.master_pid})),
        );
        self.handed_over = true;
        self.stop(super::Stop::Graceful);
    }

    /// An upgrade not handed over yet ends because this master stops.
    pub(super) fn cancel_upgrade(&mut self) {
        if !self.handed_over && self.upgrading.is_some() {
            self.fail_upgrade("the master is stopping", Ending::Term);
        }
    }

    /// The upgrade failed: said, and the new master (if any) stopped.
    fn fail_upgrade(&mut self, why: &str, ending: Ending) {
        let Some(up) = self.upgrading.take() else {
            return;
        };
        // Steering was left to the sockets' state while the new master
        // booted: this master's view applies again.
        for g in 0..self.groups.len() {
            self.update_steering(g);
        }
        tracing::error!(reason = why, "upgrade failed; this master serves on");
        self.publish(Lifecycle::UpgradeFailed {
            reason: why.to_string(),
        });
        notify(up.events.as_ref(), error("upgrade_failed", why.to_string()));
        if let Phase::Starting { mut new, .. } = up.phase {
            // TERM: its workers, which may already serve, drain first (a
            // new master that said `Failed` is stopping by itself: a
            // second TERM would kill its workers at once).
            if ending == Ending::Term
                && let Some(pid) = new.child.id()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            tokio::spawn(async move {
                if tokio::time::timeout(FAILED_DRAIN, new.child.wait())
                    .await
                    .is_err()
                {
                    let _ = new.child.start_kill();
                    let _ = new.child.wait().await;
                }
            });
        }
    }

    /// Deadlines and readiness of both sides of an upgrade.
    pub(super) fn upgrade_tick(&mut self, now: Instant) {
        if let Some(Upgrading {
            phase: Phase::Starting { deadline, .. },
            ..
        }) = &self.upgrading
            && now >= *deadline
        {
            self.fail_upgrade(
                &format!("the new master was not ready within {READY_TIMEOUT:?}"),
                Ending::Term,
            );
        }
        if self.takeover.as_ref().is_some_and(|t| !t.ready_sent) {
            if let Some(why) = self.first_boot_failure() {
                // The old master serves on; waiting for a crash loop to
                // settle would only make it wait.
                self.give_up_takeover(why);
            } else if self.summary(now).1 {
                self.take_over();
            }
        }
    }

    /// The first unexpected exit of this (new) master's workers, told as
    /// the reason the upgrade cannot go on.
    fn first_boot_failure(&self) -> Option<String> {
        self.groups.iter().find_map(|g| {
            let exit = g.last_exit.as_ref()?;
            Some(format!(
                "group {}: a worker of the new binary exited before the group was ready ({}: {})",
                g.name, exit.status, exit.reason
            ))
        })
    }

    /// This new master cannot take over: the old one is told, and this
    /// one stops (its `run` then fails with `why`).
    fn give_up_takeover(&mut self, why: String) {
        tracing::error!(reason = %why, "upgrade: this new master gives up; the old master serves on");
        if let Some(mut t) = self.takeover.take() {
            t.fail(&why);
        }
        self.takeover_failed = Some(why);
        // As after a hand-over: the old master's workers serve these
        // sockets, so no steering, no shutdown delay.
        self.handed_over = true;
        self.stop(super::Stop::Graceful);
    }

    /// When the next upgrade deadline falls.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match &self.upgrading {
            Some(Upgrading {
                phase: Phase::Starting { deadline, .. },
                ..
            }) => Some(*deadline),
            _ => None,
        }
    }

    /// The new master's every group is ready: the old master is told
    /// (it answers with `Announced`, see [`Supervisor::announced`]).
    fn take_over(&mut self) {
        let version = self.opts.version.clone();
        let pid = self.master_pid;
        let Some(t) = &mut self.takeover else {
            return;
        };
        t.ready_sent = true;
        if let Err(e) = upgrade::send(&mut t.socket, &Handover::Ready { pid, version }) {
            tracing::warn!(error = %e, "upgrade: cannot tell the old master this one is ready");
        }
        // systemd hears this master once the old one has announced it as
        // the main process (`Announced`).
        tracing::info!("upgrade: every group is ready; this master takes over");
    }

    /// What the old master said after this (new) master's `Ready`.
    pub(super) fn on_old_master(&mut self, msg: Option<Handover>) {
        match msg {
            Some(Handover::Announced) => self.announced(),
            Some(Handover::Done) | None => {
                // `None`: gone without a word; announced or not, this one
                // is the service now.
                self.announced();
                self.old_master_done();
            }
            Some(other) => tracing::warn!(
                message = ?other,
                "upgrade: the old master said something out of turn; ignored"
            ),
        }
    }

    /// The old master accepted the hand-over and announced this one to
    /// systemd: the control socket and the pid file become this master's,
    /// and it speaks to systemd from now on (`READY=1` with the next
    /// summary, a `WATCHDOG=1` at once).
    pub(super) fn announced(&mut self) {
        if self
            .control
            .as_ref()
            .is_some_and(|c| c.path() != self.opts.config.server.control_socket)
        {
            let path = self.opts.config.server.control_socket.clone();
            if let Some(control) = &mut self.control
                && let Err(e) = control.move_to(&path)
            {
                tracing::error!(
                    error = %e, path = %path.display(), at = %control.path().display(),
                    "upgrade: cannot move the control socket into place; the commands reach this master at the path it has"
                );
            }
        }
        if self.pid_file.is_none() {
            match crate::pid_file::PidFile::write(
                self.opts.config.server.pid_file.clone(),
                self.master_pid,
            ) {
                Ok(pid_file) => self.pid_file = Some(pid_file),
                Err(e) => {
                    tracing::error!(error = %e, "upgrade: cannot write the pid file (server.pid_file)")
                }
            }
        }
        self.notifier.release();
        self.status_dirty.set(true);
    }

    /// The old master's workers have all exited (`Done`, or the old
    /// master is gone without a word: its segment is still mapped here
    /// either way): copy what they counted since this master started, and
    /// let go of the old segment.
    pub(super) fn old_master_done(&mut self) {
        let Some(t) = self.takeover.take() else {
            return;
        };
        if let Some(old) = &t.old_registry {
            let (_, refused) = self.registry.segment.absorb(old, &t.copied);
            warn_refused(&refused);
        }
        tracing::info!(
            "upgrade: the old master has drained and exited; its counters are carried over"
        );
    }

    /// At the end of an old master that handed over: `Done` to the new
    /// one (every counter of this one is final).
    pub(super) fn say_done(&mut self) {
        if let Some(Upgrading {
            phase: Phase::HandedOver { socket, .. },
            ..
        }) = &mut self.upgrading
            && let Err(e) = upgrade::send(socket, &Handover::Done)
        {
            tracing::warn!(error = %e, "upgrade: cannot tell the new master this one is done");
        }
    }
}

/// How a failed upgrade's new master is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// TERM: it drains its workers and exits (killed if it has not after
    /// [`FAILED_DRAIN`]).
    Term,
    /// It is stopping by itself: wait, then kill it if it has not exited.
    Wait,
}

/// The master's own arguments (`serve --config PATH`), for the new one.
fn master_args() -> Vec<std::ffi::OsString> {
    std::env::args_os().skip(1).collect()
}
