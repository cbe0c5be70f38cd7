//! The supervisor: the master's one event loop and its worker table.
//!
//! Everything the master decides happens here, on one task of a
//! current-thread runtime: worker events (from the watcher tasks), signals,
//! and deadlines (boot, heartbeat, drain, scheduled restarts). Worker
//! processes are spawned from this thread only, so `PR_SET_PDEATHSIG` stays
//! tied to a thread that lives as long as the master.
//!
//! # Layout
//! - this file: the state, the loop, spawning and worker events;
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
//!   from the worker table.
//!
//! [`ClusterStatus`]: ringmaster_proto::ClusterStatus

mod commands;
mod ipc;
mod metrics;
mod migration;
mod policy;
mod replace;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ringmaster_config::GroupConfig;
use ringmaster_proto::{Lifecycle, MasterMsg, Origin, PROTOCOL_VERSION, WorkerMsg};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::lifecycle::LifecycleHub;
use crate::listener::GroupListeners;
use crate::restart::{Backoff, RestartPolicy};
use crate::signals::{Signal, Signals};
use crate::spawn::{self, SpawnSpec, Spawner, WorkerCommand, WorkerEvent, describe_exit};
use crate::{MasterError, ServeOptions};

/// Events handled in one go before deadlines are looked at again.
const EVENT_BATCH: usize = 256;

/// Phase of one worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Spawned; has not reported `Ready` yet.
    Booting,
    /// Serving and heartbeating.
    Ready,
    /// Told to drain; will be killed at its deadline.
    Draining,
}

impl Phase {
    /// As `status` shows it.
    fn name(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
        }
    }
}

/// One worker process, from spawn to reap.
#[derive(Debug)]
struct WorkerProc {
    group: usize,
    slot: usize,
    generation: u64,
    pid: u32,
    phase: Phase,
    started: Instant,
    /// When it reported `Ready`; stable-run uptime counts from here.
    ready_at: Option<Instant>,
    last_heartbeat: Instant,
    drain_deadline: Option<Instant>,
    /// The timeouts it was started with: a reload that changes them must
    /// not judge a worker by settings it never had.
    boot_timeout: Duration,
    heartbeat_timeout: Duration,
    commands: mpsc::Sender<WorkerCommand>,
    /// Its queue of encoded IPC frames (bounded by `server.ipc_queue`).
    frames: mpsc::Sender<Bytes>,
    /// The socket it is handed connections on (`spawn::hand_over_queue`).
    adopt: std::os::unix::net::UnixDatagram,
    /// Who it is, as the workers it sends messages to see it.
    origin: Origin,
    /// Topics it subscribed to, and request topics it serves.
    topics: Vec<String>,
    serves: Vec<String>,
    /// Since when its IPC queue has been full, if it is.
    queue_full_since: Option<Instant>,
    /// Messages for it dropped because its queue was full.
    ipc_dropped: u64,
    /// Its row in the registry segment (its slot's), if it got one.
    row: Option<u32>,
    /// Why the master killed it, if it did.
    killed_for: Option<String>,
    /// When the kill was (last) sent; it is sent again if the worker lingers.
    killed_at: Option<Instant>,
    /// What the worker said in its `Fatal` message, if it sent one.
    fatal: Option<String>,
    /// Resident memory and CPU, sampled every second.
    usage: status::Usage,
    /// Set once it is past a recycling limit: why (`recycled: max_rss`).
    recycle: Option<String>,
    /// Why it was told to drain (`reload`, `scale down`, ...).
    drain_reason: Option<String>,
    /// Why it was started besides its slot's serving worker, if it was.
    replaces: Option<replace::Why>,
    /// When it was first found past its boot or heartbeat deadline; it is
    /// killed if it still is a moment later (see `policy`).
    overdue_since: Option<Instant>,
}

impl WorkerProc {
    /// Why it exited, as far as the master knows: its kill's reason, else
    /// what it said in `Fatal`, else `default`.
    fn exit_reason<'a>(&'a self, default: &'a str) -> &'a str {
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
struct Slot {
    /// Generation of the next worker started for this slot.
    next_generation: u64,
    /// Serial of the worker that serves this slot.
    current: Option<u64>,
    /// Early exits in a row (see `crate::restart`).
    strikes: u32,
    /// When the next worker of this slot may start, after a strike.
    restart_at: Option<Instant>,
    /// A worker booting to take over this slot (reload, restart, recycle).
    replacement: Option<u64>,
    /// Unexpected exits of this slot's workers.
    restarts: u64,
    /// How the slot's last worker ended.
    last_exit: Option<ringmaster_proto::ExitInfo>,
    /// Its registry row over the last seconds, for rates.
    window: status::Window,
    /// After a recycling replacement failed to boot: not before this.
    recycle_after: Option<Instant>,
}

/// A worker group: its configuration, sockets and slots.
#[derive(Debug)]
struct Group {
    name: String,
    cfg: GroupConfig,
    listeners: GroupListeners,
    slots: Vec<Slot>,
    /// The group's most recent unexpected exit.
    last_exit: Option<ringmaster_proto::ExitInfo>,
    /// Workers still holding sockets of slots a scale-down removed (new
    /// connections are steered away from those until they have exited).
    closing: Vec<u64>,
    /// Whether the log said once that this group cannot be steered.
    steer_warned: bool,
}

impl Group {
    fn restart_policy(&self) -> RestartPolicy {
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
enum Stop {
    Graceful,
    Immediate,
}

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
}

impl Supervisor {
    /// Binds every group's listeners; no process is started yet.
    pub(crate) fn new(opts: ServeOptions, exe: PathBuf) -> Result<Self, MasterError> {
        let config_toml = opts.config.to_toml_string().map_err(MasterError::Config)?;
        let mut groups = Vec::new();
        for (name, cfg) in &opts.config.groups {
            groups.push(bind_group(name, cfg)?);
        }
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
        })
    }

    /// Publishes a lifecycle event (see `crate::lifecycle`).
    fn publish(&self, what: Lifecycle) {
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
        let mut signals = Signals::new().map_err(MasterError::Signals)?;
        tracing::info!(pid = self.master_pid, exe = %self.exe.display(), "master started");
        // The control socket first: a master that finds another one
        // answering there stops before it touches that master's pid file.
        let _control = crate::control::Control::start(
            &self.opts.config.server.control_socket,
            self.opts.logs.clone(),
            self.lifecycle.clone(),
            self.control_tx.clone(),
        )
        .map_err(MasterError::Control)?;
        let _pid_file = PidFile::write(self.opts.config.server.pid_file.clone(), self.master_pid)
            .map_err(MasterError::PidFile)?;
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
                () = tokio::time::sleep_until(wake) => {}
            }
            self.tick(Instant::now());
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
        }
        tracing::info!("every worker has exited; master stopping");
        self.stopped().await;
        Ok(())
    }

    fn on_signal(&mut self, signal: Signal) {
        tracing::info!(signal = signal.name(), "signal received");
        match signal {
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
                } else if let Err(e) = self.start_reload(None, None) {
                    let why = e["error"]["message"].as_str().unwrap_or("");
                    tracing::warn!("HUP ignored: {why}");
                }
            }
            Signal::Ttin | Signal::Ttou if self.awaiting_startup_migrations() => {
                tracing::warn!(
                    "no worker runs until the start-up migrations pass; scaling is ignored until then"
                );
            }
            Signal::Ttin => self.scale_all_by(1),
            Signal::Ttou => self.scale_all_by(-1),
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
                let now = Instant::now();
                self.workers.insert(
                    serial,
                    WorkerProc {
                        group: g,
                        slot: s,
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
                        origin: ipc::origin(&group.name, s, pid),
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
                    },
                );
                Some(serial)
            }
            Err(e) => {
                tracing::error!(
                    group = %group.name,
                    slot = s,
                    exe = %self.exe.display(),
                    error = %e,
                    "cannot start a worker process; check that the binary still exists and is executable"
                );
                self.lifecycle.publish(Lifecycle::SpawnFailed {
                    group: group.name.clone(),
                    slot: s,
                    error: e.to_string(),
                });
                None
            }
        }
    }

    fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message { serial, msg } => self.on_message(serial, msg),
            WorkerEvent::IpcError { serial, error } => {
                self.kill(serial, format!("broke the IPC protocol ({error})"));
            }
            WorkerEvent::Exited { serial, status } => self.on_exit(serial, status),
        }
    }

    fn on_message(&mut self, serial: u64, msg: WorkerMsg) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        let group = &self.groups[w.group].name;
        match msg {
            WorkerMsg::Hello { version, pid } => {
                tracing::debug!(group = %group, slot = w.slot, pid, "worker said hello");
                if version != PROTOCOL_VERSION {
                    let why = format!(
                        "speaks IPC protocol version {version} but the master speaks {PROTOCOL_VERSION}; \
                         rebuild the binary or restart the master"
                    );
                    self.kill(serial, why);
                }
            }
            WorkerMsg::Ready { phases } => {
                // A `Ready` that crossed our kill in the queue changes nothing.
                if w.phase == Phase::Booting && w.killed_for.is_none() {
                    w.phase = Phase::Ready;
                    w.overdue_since = None;
                    w.ready_at = Some(Instant::now());
                    w.last_heartbeat = Instant::now();
                    let boot_ms = w.started.elapsed().as_secs_f64() * 1e3;
                    let phases: Vec<String> = phases
                        .iter()
                        .map(|p| format!("{}={:.1}ms", p.name, p.micros as f64 / 1e3))
                        .collect();
                    tracing::info!(
                        group = %group,
                        slot = w.slot,
                        pid = w.pid,
                        generation = w.generation,
                        boot_ms = format!("{boot_ms:.1}"),
                        phases = %phases.join(" "),
                        "worker ready"
                    );
                    self.lifecycle.publish(Lifecycle::WorkerReady {
                        group: group.clone(),
                        slot: w.slot,
                        pid: w.pid,
                        generation: w.generation,
                        boot_ms,
                    });
                    let g = w.group;
                    self.on_ready(serial);
                    self.update_steering(g);
                    // Requests may have waited for a worker like this one.
                    self.dispatch_parked();
                }
            }
            WorkerMsg::Heartbeat => {
                w.last_heartbeat = Instant::now();
                w.overdue_since = None;
            }
            WorkerMsg::Fatal { reason } => {
                tracing::error!(group = %group, slot = w.slot, pid = w.pid, reason = %reason, "worker failed");
                w.fatal = Some(reason);
            }
            WorkerMsg::Subscribe { topic } => self.on_subscribe(serial, topic),
            WorkerMsg::Serve { topic } => self.on_serve(serial, topic),
            WorkerMsg::Publish { to, topic, payload } => {
                self.on_publish(serial, to, topic, payload);
            }
            WorkerMsg::Request {
                id,
                group,
                topic,
                timeout_ms,
                payload,
            } => self.on_request(serial, id, group, topic, timeout_ms, payload),
            WorkerMsg::Reply { id, result } => self.on_reply(serial, id, result),
            WorkerMsg::Call { id, service } => self.on_call(serial, id, service),
            msg @ WorkerMsg::Register { .. } => self.on_register(serial, msg),
            WorkerMsg::Recycle { reason } => self.on_recycle_request(serial, &reason),
            other => {
                tracing::debug!(group = %group, slot = w.slot, pid = w.pid, message = ?other, "unhandled worker message");
            }
        }
    }

    fn on_exit(&mut self, serial: u64, status: std::process::ExitStatus) {
        let Some(g) = self.workers.get(&serial).map(|w| w.group) else {
            return;
        };
        self.on_exit_of(serial, status);
        // Its slot may have lost its serving worker, or got one back.
        self.update_steering(g);
    }

    fn on_exit_of(&mut self, serial: u64, status: std::process::ExitStatus) {
        let Some(w) = self.workers.remove(&serial) else {
            return;
        };
        self.ipc_forget(&w, serial);
        self.registry_on_exit(&w);
        self.on_closing_exit(w.group, serial);
        let uptime = w.started.elapsed();
        let ready_for = w.ready_at.map(|t| t.elapsed());
        let how = describe_exit(status);
        let expected = w.phase == Phase::Draining || self.stopping.is_some();
        if expected {
            let reason = w.exit_reason(if self.stopping.is_some() {
                "stop"
            } else {
                "drained"
            });
            self.record_exit(&w, status, reason, false);
            tracing::info!(
                group = %self.groups[w.group].name, slot = w.slot, pid = w.pid, status = %how, reason,
                "worker exited"
            );
            self.publish_exit(&w, &how, reason, true, 0, None);
            self.stop_progress(&w, &how);
            return;
        }
        let is_current = self.groups[w.group]
            .slots
            .get(w.slot)
            .and_then(|s| s.current)
            == Some(serial);
        if !is_current {
            // A replacement (reload, restart, recycling) that died before
            // it was ready; the slot's serving worker is kept.
            let reason = w.exit_reason("exited before it was ready");
            self.record_exit(&w, status, reason, false);
            self.publish_exit(&w, &how, reason, false, 0, None);
            self.on_replacement_failed(serial, &w, &how);
            return;
        }
        let reason = w.exit_reason("unexpected exit");
        self.record_exit(&w, status, reason, true);
        let policy = self.groups[w.group].restart_policy();
        let slot = &mut self.groups[w.group].slots[w.slot];
        slot.current = None;
        let verdict = policy.on_exit(slot.strikes, ready_for);
        let (strikes, delay) = (verdict.strikes, verdict.delay);
        slot.strikes = strikes;
        let replacing = slot.replacement.is_some();
        self.registry_count_restart(w.group, w.slot);
        let group = &self.groups[w.group].name;
        tracing::warn!(
            group = %group,
            slot = w.slot,
            pid = w.pid,
            status = %how,
            reason,
            uptime_ms = uptime.as_millis() as u64,
            strikes,
            restart_in_ms = delay.as_millis() as u64,
            "worker exited; restarting"
        );
        let restart_in = (!replacing).then_some(delay.as_millis() as u64);
        self.publish_exit(&w, &how, reason, false, strikes, restart_in);
        if verdict.crash_loop_begins {
            tracing::error!(
                group = %group,
                slot = w.slot,
                strikes,
                reason,
                "{group}/{} is crash-looping: {strikes} workers in a row exited before a stable run (min_uptime ready); \
                 the master keeps retrying with backoff; fix the cause (see the reason) and send HUP",
                w.slot
            );
            self.lifecycle.publish(Lifecycle::CrashLoop {
                group: group.clone(),
                slot: w.slot,
                strikes,
                reason: reason.to_string(),
            });
        }
        if replacing {
            // The slot's replacement is booting: it takes over.
            return;
        }
        if delay.is_zero() {
            self.start_slot(w.group, w.slot);
        } else {
            self.groups[w.group].slots[w.slot].restart_at = Some(Instant::now() + delay);
        }
    }

    /// SIGKILLs a worker and remembers why, for the exit log line.
    fn kill(&mut self, serial: u64, why: String) {
        if let Some(w) = self.workers.get_mut(&serial) {
            tracing::error!(
                group = %self.groups[w.group].name,
                slot = w.slot,
                pid = w.pid,
                reason = %why,
                "killing worker"
            );
            self.lifecycle.publish(Lifecycle::WorkerKilled {
                group: self.groups[w.group].name.clone(),
                slot: w.slot,
                pid: w.pid,
                reason: why.clone(),
            });
            w.killed_for = Some(why);
            w.killed_at = Some(Instant::now());
            let _ = w.commands.try_send(WorkerCommand::Kill);
        }
    }

    /// Publishes a worker's exit (see [`Lifecycle::WorkerExited`]).
    fn publish_exit(
        &self,
        w: &WorkerProc,
        how: &str,
        reason: &str,
        expected: bool,
        strikes: u32,
        restart_in_ms: Option<u64>,
    ) {
        self.publish(Lifecycle::WorkerExited {
            group: self.groups[w.group].name.clone(),
            slot: w.slot,
            pid: w.pid,
            status: how.to_string(),
            reason: reason.to_string(),
            expected,
            strikes,
            restart_in_ms,
        });
    }

    /// Tells a worker to drain within the group's drain timeout (or the
    /// grace a `stop --timeout` gave); `why` shows in `status` and in its
    /// exit.
    fn drain(&mut self, serial: u64, why: &str) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        if w.phase == Phase::Draining {
            return;
        }
        let grace = self
            .stop_grace
            .unwrap_or(self.groups[w.group].cfg.drain_timeout);
        w.phase = Phase::Draining;
        // A heartbeat overdue before the drain is judged by the drain
        // deadline now, not killed as a wedged worker.
        w.overdue_since = None;
        w.drain_reason = Some(why.to_string());
        // The worker enforces the grace itself; the master kills a little later.
        w.drain_deadline = Some(Instant::now() + grace + Duration::from_secs(1));
        tracing::info!(
            group = %self.groups[w.group].name,
            slot = w.slot,
            pid = w.pid,
            grace_ms = grace.as_millis() as u64,
            reason = why,
            "draining worker"
        );
        self.lifecycle.publish(Lifecycle::WorkerDraining {
            group: self.groups[w.group].name.clone(),
            slot: w.slot,
            pid: w.pid,
            reason: why.to_string(),
        });
        let msg = MasterMsg::Drain {
            grace_ms: grace.as_millis() as u64,
        };
        // A full queue loses the drain; the drain deadline still applies.
        self.send(serial, &msg);
    }
}

/// The master's pid file: written at start (its directory created),
/// removed at exit if it still holds this master's pid. One that cannot be
/// written stops the start: scripts and `stats` rely on it.
struct PidFile(Option<PathBuf>, u32);

impl PidFile {
    fn write(path: PathBuf, pid: u32) -> Result<PidFile, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the directory {} of {}: {e}",
                    dir.display(),
                    path.display()
                )
            })?;
        }
        std::fs::write(&path, format!("{pid}\n")).map_err(|e| {
            format!(
                "cannot write {}: {e}; point pid_file at a writable place",
                path.display()
            )
        })?;
        Ok(PidFile(Some(path), pid))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && std::fs::read_to_string(path).is_ok_and(|t| t.trim() == self.1.to_string())
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds one group's sockets, with an error that names the group and address.
fn bind_group(name: &str, cfg: &GroupConfig) -> Result<Group, MasterError> {
    let listeners = GroupListeners::bind(cfg.listen, cfg.listen_mode, cfg.backlog, cfg.count)
        .map_err(|source| MasterError::Bind {
            group: name.to_string(),
            addr: cfg.listen,
            source,
        })?;
    Ok(Group {
        name: name.to_string(),
        cfg: cfg.clone(),
        listeners,
        slots: (0..cfg.count).map(|_| Slot::default()).collect(),
        last_exit: None,
        closing: Vec::new(),
        steer_warned: false,
    })
}
