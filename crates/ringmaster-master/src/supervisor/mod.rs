//! The supervisor: the master's one event loop and its worker table.
//!
//! Everything the master decides happens here, on one task of a
//! current-thread runtime: worker events (from the watcher tasks), signals,
//! and deadlines (boot, heartbeat, drain, scheduled restarts). Worker
//! processes are spawned from this thread only, so `PR_SET_PDEATHSIG` stays
//! tied to a thread that lives as long as the master.
//!
//! # Layout
//! - this file: the state, the loop, signals and spawning;
//! - `table`: the worker table's types (group, slot, worker process);
//! - `workers`: a worker's messages, its exit (the restart policy's
//!   verdict carried out), kill and drain;
//! - `policy`: deadlines, restarts with backoff, reload, scaling, stopping.
//! - `migration`: the migrate process before workers start and before a
//!   reload, retried with backoff at start-up.
//! - `ipc`: the IPC pool's routing (topics, requests, the master's
//!   services) and its backpressure.
//! - `metrics`: the registry segment: rows, registrations, folding, and
//!   the master's own series.
//! - `replace`: replacing a slot's worker with its replacement ready
//!   first: rolling reload, `restart`, recycling.
//! - `commands`: the control socket's commands (status, reload, scale,
//!   restart, stop) and their replies.
//! - `status`: the per-second samples and the [`ClusterStatus`] built
//!   from the worker table, and the summary systemd hears.
//! - `upgrade`: the in-place upgrade, on the old master's side and on the
//!   new one's.
//!
//! [`ClusterStatus`]: ringmaster_proto::ClusterStatus

mod commands;
mod ipc;
mod metrics;
mod migration;
mod policy;
mod replace;
mod status;
mod table;
#[cfg(test)]
mod tests;
mod upgrade;
mod workers;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ringmaster_proto::Lifecycle;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lifecycle::LifecycleHub;
use crate::pid_file::PidFile;
use crate::signals::{Signal, Signals};
use crate::spawn::{self, SpawnSpec, Spawner, WorkerEvent};
use crate::systemd::Notifier;
use crate::{MasterError, ServeOptions};
use table::{Group, Phase, Slot, Stop, WorkerProc, bind_group, inherit_group};

/// Events handled in one go before deadlines are looked at again.
const EVENT_BATCH: usize = 256;

/// The master's whole state.
pub(crate) struct Supervisor {
    opts: ServeOptions,
    exe: PathBuf,
    config_toml: String,
    master_pid: u32,
    started: Instant,
    groups: Vec<Group>,
    workers: HashMap<u64, WorkerProc>,
    next_serial: u64,
    events_tx: mpsc::Sender<WorkerEvent>,
    events_rx: mpsc::Receiver<WorkerEvent>,
    router: ipc::Router,
    registry: metrics::Registry,
    reload: Option<replace::Reload>,
    /// A reload waiting for its migrate process: the new configuration and
    /// the outcome to come.
    migrating: Option<migration::Migrating>,
    /// Start-up migrations failed: when to try again, and how often they did.
    migrate_retry: Option<(Instant, u32)>,
    stopping: Option<Stop>,
    /// The drain grace a `stop --timeout` asked for, instead of each
    /// group's `drain_timeout`.
    stop_grace: Option<Duration>,
    /// Control clients waiting for the stop to finish.
    stop_events: Vec<crate::control::Events>,
    /// Control clients waiting for a `restart`: by the replacement's serial.
    restart_events: HashMap<u64, crate::control::Events>,
    /// Commands from the control socket.
    control_tx: mpsc::Sender<crate::control::Command>,
    control_rx: mpsc::Receiver<crate::control::Command>,
    /// Bounds of the latency histogram (for p99 in `status`).
    latency_bounds: Vec<f64>,
    /// A HUP arrived during a reload: reload again once it ends.
    reload_queued: bool,
    /// What starts worker processes (a fake in unit tests).
    spawner: Box<dyn Spawner>,
    /// Where the lifecycle events go (the control socket's `events`).
    lifecycle: LifecycleHub,
    /// What systemd hears (`READY=1`, `STATUS=`, the watchdog).
    notifier: Notifier,
    /// A lifecycle event since the last `STATUS=` check.
    status_dirty: std::cell::Cell<bool>,
    /// When the summary for systemd was last looked at.
    summarized_at: Option<Instant>,
    /// When a PID 1 master last looked for orphans outside a SIGCHLD.
    reaped_at: Option<Instant>,
    /// A graceful stop waits for `server.shutdown_delay` before it drains:
    /// until then `/readyz` answers 503 and the workers serve on.
    drain_at: Option<Instant>,
    /// The upgrade this (old) master runs, if one is under way.
    upgrading: Option<upgrade::Upgrading>,
    /// The old master this (new) master takes over from, until it is done.
    takeover: Option<upgrade::Takeover>,
    /// This master handed over to a new one and drains.
    handed_over: bool,
    /// This new master gave up taking over (why): its `run` fails.
    takeover_failed: Option<String>,
    /// The control socket, once open.
    control: Option<crate::control::Control>,
    /// The pid file, once written (a new master of an upgrade writes it
    /// when it takes over).
    pid_file: Option<PidFile>,
}

impl Supervisor {
    /// Binds every group's listeners (or takes them from systemd, or from
    /// the old master of an upgrade); no process is started yet.
    pub(crate) fn new(opts: ServeOptions, exe: PathBuf) -> Result<Self, MasterError> {
        let mut takeover = crate::upgrade::Takeover::from_env().map_err(MasterError::Upgrade)?;
        match Self::build(opts, exe, takeover.as_mut()) {
            Ok(mut sup) => {
                if let Some(t) = takeover {
                    sup.takeover = Some(upgrade::Takeover::new(t, &sup.registry.segment));
                    sup.notifier.hold();
                }
                Ok(sup)
            }
            Err(e) => {
                if let Some(t) = &mut takeover {
                    crate::upgrade::send_failed(&mut t.socket, &e.to_string());
                }
                Err(e)
            }
        }
    }

    fn build(
        mut opts: ServeOptions,
        exe: PathBuf,
        takeover: Option<&mut crate::upgrade::Takeover>,
    ) -> Result<Self, MasterError> {
        let groups = match takeover {
            Some(t) => take_listeners(&mut opts, t)?,
            None => listen(&mut opts)?,
        };
        let config_toml = opts.config.to_toml_string().map_err(MasterError::Config)?;
        // The master's inbox: watchers wait when it is full (the worker's
        // socket then fills and the worker waits), so nothing is dropped.
        let (events_tx, events_rx) = mpsc::channel(opts.config.server.ipc_queue.max(1));
        let router = ipc::Router::new(
            opts.config.server.ipc_max_pending,
            opts.config.server.ipc_stall_timeout,
        );
        let rows = u32::try_from(opts.config.registry_slots()).unwrap_or(u32::MAX);
        let segment = ringmaster_registry::Segment::create(opts.config.server.registry_size, rows)
            .map_err(MasterError::Registry)?;
        let (control_tx, control_rx) = mpsc::channel(64);
        let started = Instant::now();
        Ok(Supervisor {
            opts,
            exe,
            config_toml,
            master_pid: std::process::id(),
            started,
            groups,
            workers: HashMap::new(),
            next_serial: 0,
            events_tx,
            events_rx,
            router,
            registry: metrics::Registry::new(segment),
            reload: None,
            migrating: None,
            migrate_retry: None,
            stopping: None,
            stop_grace: None,
            stop_events: Vec::new(),
            restart_events: HashMap::new(),
            control_tx,
            control_rx,
            latency_bounds: Vec::new(),
            reload_queued: false,
            spawner: Box::new(spawn::Processes),
            lifecycle: LifecycleHub::new(started),
            notifier: Notifier::from_env(std::process::id()),
            status_dirty: std::cell::Cell::new(true),
            summarized_at: None,
            reaped_at: None,
            drain_at: None,
            upgrading: None,
            takeover: None,
            handed_over: false,
            takeover_failed: None,
            control: None,
            pid_file: None,
        })
    }

    /// Publishes a lifecycle event (see `crate::lifecycle`), and tells
    /// systemd what it must hear of it.
    fn publish(&self, what: Lifecycle) {
        match &what {
            Lifecycle::ReloadStarted { .. } => self.notifier.reloading(),
            Lifecycle::MigrationStarted { purpose } if purpose == "reload" => {
                self.notifier.reloading();
            }
            Lifecycle::ReloadFinished { .. } | Lifecycle::ReloadAborted { .. } => {
                self.notifier.reloaded();
            }
            Lifecycle::Stopping { .. } => self.notifier.stopping(),
            _ => {}
        }
        self.status_dirty.set(true);
        self.lifecycle.publish(what);
    }

    /// The address each group listens on, in configuration order.
    pub(crate) fn addresses(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.groups
            .iter()
            .map(|g| (g.name.clone(), g.listeners.addr()))
            .collect()
    }

    /// Runs until every worker has exited after a stop (a signal, or
    /// `shutdown` completing, which is a graceful stop).
    pub(crate) async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), MasterError> {
        let mut signals = Signals::new(crate::reaper::needed()).map_err(MasterError::Signals)?;
        tracing::info!(pid = self.master_pid, exe = %self.exe.display(), "master started");
        if let Err(e) = self.open_control() {
            if let Some(t) = &mut self.takeover {
                t.fail(&e.to_string());
            }
            return Err(e);
        }
        self.announce();
        if self.notifier.active() {
            tracing::info!(
                watchdog_ms = self.notifier.watchdog_every().map(|d| d.as_millis() as u64),
                "systemd is told of readiness, reloads and stops (NOTIFY_SOCKET)"
            );
        }
        if crate::reaper::needed() {
            tracing::info!("the master is PID 1: it reaps orphaned processes");
        }
        if self.opts.migrate {
            // Workers start once the schema is up to date; until then the
            // sockets are bound and connections wait in their queues.
            let config = self.opts.config.clone();
            self.spawn_migration(config, migration::Purpose::Startup);
        } else {
            self.start_all();
        }
        tokio::pin!(shutdown);
        let mut shutdown_done = false;
        loop {
            let wake = self.next_wakeup(Instant::now());
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    self.on_event(event);
                    // Under a flood of messages, handle what is queued
                    // before looking at deadlines again.
                    for _ in 1..EVENT_BATCH {
                        match self.events_rx.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                signal = signals.recv() => self.on_signal(signal),
                Some(cmd) = self.control_rx.recv() => self.on_command(cmd),
                () = &mut shutdown, if !shutdown_done => {
                    shutdown_done = true;
                    self.stop(Stop::Graceful);
                }
                Some(result) = migration::done(&mut self.migrating) => {
                    self.migrating = None;
                    self.after_migration(result);
                }
                step = upgrade::next(&mut self.upgrading) => self.on_upgrade(step),
                msg = upgrade::old_master_said(&mut self.takeover) => self.on_old_master(msg),
                () = tokio::time::sleep_until(wake) => {}
            }
            self.tick(Instant::now());
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
        }
        tracing::info!("every worker has exited; master stopping");
        self.stopped().await;
        match self.takeover_failed.take() {
            Some(why) => Err(MasterError::Upgrade(why)),
            None => Ok(()),
        }
    }

    /// Opens the control socket, then writes the pid file. The control
    /// socket first: a master that finds another one answering there stops
    /// before it touches that master's pid file. A new master of an
    /// upgrade opens its socket beside the old master's and writes the pid
    /// file when it takes over (`upgrade`).
    fn open_control(&mut self) -> Result<(), MasterError> {
        let path = self.opts.config.server.control_socket.clone();
        let at = match self.takeover {
            Some(_) => crate::control::Control::beside(&path),
            None => path,
        };
        self.control = Some(
            crate::control::Control::start(
                &at,
                self.opts.logs.clone(),
                self.lifecycle.clone(),
                self.control_tx.clone(),
            )
            .map_err(MasterError::Control)?,
        );
        if self.takeover.is_none() {
            self.pid_file = Some(
                PidFile::write(self.opts.config.server.pid_file.clone(), self.master_pid)
                    .map_err(MasterError::PidFile)?,
            );
        }
        Ok(())
    }

    /// Says where the master logs and where each group listens (also on
    /// stderr when the log goes to a file: whatever started the master
    /// still learns where it is).
    fn announce(&self) {
        let to_file = self.opts.config.server.log_file.as_ref();
        if let Some(file) = to_file {
            // The terminal (or whatever started us) still learns where we are.
            eprintln!(
                "ringmaster: master {} logging to {}",
                self.master_pid,
                file.display()
            );
        }
        for group in &self.groups {
            tracing::info!(
                group = %group.name,
                workers = group.cfg.count,
                mode = %group.listeners.mode(),
                "group {} listening on http://{}",
                group.name,
                group.listeners.addr()
            );
            if to_file.is_some() {
                eprintln!(
                    "ringmaster: group {} listening on http://{}",
                    group.name,
                    group.listeners.addr()
                );
            }
        }
    }

    fn on_signal(&mut self, signal: Signal) {
        if signal == Signal::Child {
            crate::reaper::reap_orphans();
            return;
        }
        tracing::info!(signal = signal.name(), "signal received");
        match signal {
            Signal::Child => {}
            Signal::Term | Signal::Int => match self.stopping {
                None => self.stop(Stop::Graceful),
                // A second TERM or Ctrl-C: stop now.
                Some(_) => self.stop(Stop::Immediate),
            },
            Signal::Quit => self.stop(Stop::Immediate),
            Signal::Hup if self.awaiting_startup_migrations() => self.retry_startup_migrations(),
            Signal::Hup => {
                if self.reload.is_some() || self.migrating.is_some() {
                    // A deploy during a reload: its binary and file are
                    // picked up by one more reload, once this one ends.
                    tracing::info!("a reload is in progress; this HUP reloads again when it ends");
                    self.reload_queued = true;
                } else {
                    // Every HUP is a reload to systemd (`Type=notify-reload`
                    // waits for RELOADING=1, then READY=1), refused or not.
                    self.notifier.reloading();
                    if let Err(e) = self.start_reload(None, None) {
                        let why = e["error"]["message"].as_str().unwrap_or("");
                        tracing::warn!("HUP ignored: {why}");
                        self.notifier.reloaded();
                    }
                }
            }
            Signal::Ttin | Signal::Ttou if self.awaiting_startup_migrations() => {
                tracing::warn!(
                    "no worker runs until the start-up migrations pass; scaling is ignored until then"
                );
            }
            Signal::Ttin => self.scale_all_by(1),
            Signal::Ttou => self.scale_all_by(-1),
            Signal::Usr2 => {
                if let Err(e) = self.begin_upgrade(None) {
                    let why = e["error"]["message"].as_str().unwrap_or("");
                    tracing::warn!("USR2 ignored: {why}");
                }
            }
            Signal::Usr1 => match &self.opts.logs {
                Some(logs) if self.opts.config.server.log_file.is_some() => logs.reopen(),
                _ => tracing::info!("USR1 reopens the log file; there is none (server.log_file)"),
            },
        }
    }

    /// Starts every slot of every group.
    fn start_all(&mut self) {
        for g in 0..self.groups.len() {
            for s in 0..self.groups[g].slots.len() {
                self.start_slot(g, s);
            }
        }
    }

    /// Whether the first workers still wait for start-up migrations.
    fn awaiting_startup_migrations(&self) -> bool {
        self.migrate_retry.is_some()
            || self
                .migrating
                .as_ref()
                .is_some_and(migration::Migrating::is_startup)
    }

    /// Starts the serving worker of slot `s` of group `g`, unless it has
    /// one. A process that cannot even be started counts a strike, like one
    /// that failed at boot.
    fn start_slot(&mut self, g: usize, s: usize) {
        if self.groups[g].slots[s].current.is_some() {
            return;
        }
        match self.spawn(g, s) {
            Some(serial) => self.groups[g].slots[s].current = Some(serial),
            None => {
                let policy = self.groups[g].restart_policy();
                let slot = &mut self.groups[g].slots[s];
                let verdict = policy.on_exit(slot.strikes, None);
                let (strikes, delay) = (verdict.strikes, verdict.delay);
                slot.strikes = strikes;
                slot.restart_at = Some(Instant::now() + delay);
                tracing::warn!(
                    group = %self.groups[g].name, slot = s, strikes,
                    retry_in_ms = delay.as_millis() as u64,
                    "will retry starting the worker"
                );
            }
        }
    }

    /// Starts a worker process for slot `s` of group `g`; returns its serial,
    /// or `None` (logged) when the process cannot be started.
    fn spawn(&mut self, g: usize, s: usize) -> Option<u64> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let row = self.registry.row_for(g, s);
        if row.is_none() {
            tracing::warn!(
                group = %self.groups[g].name, slot = s,
                "no registry row left for this slot (server.registry_slots): its metrics stay inside the worker"
            );
        }
        let registry = self
            .registry
            .segment
            .fd()
            .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd))
            .zip(row);
        let group = &mut self.groups[g];
        let slot = &mut group.slots[s];
        let generation = slot.next_generation;
        slot.next_generation += 1;
        let spec = SpawnSpec {
            exe: &self.exe,
            group: &group.name,
            slot: s,
            generation,
            listener_fd: group.listeners.fd_for_slot(s),
            config_toml: &self.config_toml,
            master_pid: self.master_pid,
            queue: self.opts.config.server.ipc_queue,
            registry,
            logs: self.opts.logs.as_ref(),
        };
        match self.spawner.spawn(&spec, serial, self.events_tx.clone()) {
            Ok(link) => {
                let pid = link.pid;
                // Only now: a start that failed keeps the slot's restart due.
                group.slots[s].restart_at = None;
                tracing::info!(group = %group.name, slot = s, pid, generation, "worker spawned");
                self.lifecycle.publish(Lifecycle::WorkerSpawned {
                    group: group.name.clone(),
                    slot: s,
                    pid,
                    generation,
                });
                let proc = WorkerProc::new(group, g, s, generation, row, link);
                self.workers.insert(serial, proc);
                Some(serial)
            }
            Err(e) => {
                self.spawn_failed(g, s, &e);
                None
            }
        }
    }

    /// A worker process that could not be started: said and published
    /// (the caller counts the strike).
    fn spawn_failed(&self, g: usize, s: usize, e: &std::io::Error) {
        let group = &self.groups[g].name;
        tracing::error!(
            group = %group,
            slot = s,
            exe = %self.exe.display(),
            error = %e,
            "cannot start a worker process; check that the binary still exists and is executable"
        );
        self.publish(Lifecycle::SpawnFailed {
            group: group.clone(),
            slot: s,
            error: e.to_string(),
        });
    }
}

/// Every group's sockets: the ones systemd passed (socket activation),
/// else bound here. With sockets passed, a group that gets none is an
/// error: the master then binds nothing itself.
fn take_listeners(
    opts: &mut ServeOptions,
    takeover: &mut crate::upgrade::Takeover,
) -> Result<Vec<Group>, MasterError> {
    let mut groups = Vec::new();
    for (name, cfg) in opts.config.groups.iter_mut() {
        let (sockets, ordered) = takeover.take_listeners(name);
        if sockets.is_empty() {
            // A group the new configuration adds: bound here.
            groups.push(bind_group(name, cfg)?);
            continue;
        }
        groups.push(
            table::passed_group(name, cfg, sockets, ordered).map_err(|source| {
                MasterError::Bind {
                    group: name.clone(),
                    addr: cfg.listen,
                    source,
                }
            })?,
        );
    }
    Ok(groups)
}

fn listen(opts: &mut ServeOptions) -> Result<Vec<Group>, MasterError> {
    let activation = crate::systemd::activation::Activation::from_env(std::process::id())
        .map_err(MasterError::Activation)?;
    let Some(mut activation) = activation else {
        return opts
            .config
            .groups
            .iter()
            .map(|(name, cfg)| bind_group(name, cfg))
            .collect();
    };
    let mut groups = Vec::new();
    for (name, cfg) in opts.config.groups.iter_mut() {
        let passed = activation
            .take(name, cfg.listen)
            .map_err(MasterError::Activation)?;
        groups.push(inherit_group(name, cfg, passed));
    }
    for unused in activation.left() {
        tracing::warn!(
            addr = %unused.addr, fd_name = unused.name.as_deref().unwrap_or(""),
            "systemd passed a socket no group uses; it is closed (name it after a group with FileDescriptorName=)"
        );
    }
    Ok(groups)
}
