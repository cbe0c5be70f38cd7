//! The supervisor's policies: deadlines, scheduled restarts, applying a
//! re-read configuration, scaling and stopping. (Replacing workers with
//! their replacement ready first is `replace`.)

use std::time::Duration;

use ringmaster_config::{ADMIN_GROUP, BRIDGE_GROUP, Config};
use ringmaster_proto::{Lifecycle, MasterMsg};
use serde_json::json;
use tokio::time::Instant;

use super::replace::notify;
use super::{Phase, Slot, Stop, Supervisor, WorkerProc};
use crate::control::request::error;
use crate::spawn::WorkerCommand;

/// The loop wakes at least this often, whatever the deadlines.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often a PID 1 master looks for orphans besides at each SIGCHLD.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// A killed worker not reaped after this long is sent the kill again.
const KILL_RETRY: Duration = Duration::from_secs(1);
/// A worker found past its heartbeat or boot deadline is killed only if it
/// still is this much later: meanwhile the loop reads what the worker sent
/// (after a stall of the master itself, a SIGSTOP or a frozen VM, its
/// heartbeats are waiting on the socket).
pub(super) const CONFIRM: Duration = Duration::from_millis(250);

impl WorkerProc {
    /// When the master must next act on this worker, if ever: re-send a
    /// kill, or enforce its boot, heartbeat or drain deadline.
    fn deadline(&self) -> Option<Instant> {
        if let Some(killed_at) = self.killed_at {
            return Some(killed_at + KILL_RETRY);
        }
        if let Some(t) = self.overdue_since {
            return Some(t + CONFIRM);
        }
        match self.phase {
            Phase::Booting => Some(self.started + self.boot_timeout),
            Phase::Ready => Some(self.last_heartbeat + self.heartbeat_timeout),
            Phase::Draining => self.drain_deadline,
        }
    }
}

impl Supervisor {
    /// The earliest deadline of any worker or scheduled restart.
    pub(super) fn next_wakeup(&self, now: Instant) -> Instant {
        let mut wake = now + MAX_SLEEP;
        for w in self.workers.values() {
            if let Some(d) = w.deadline() {
                wake = wake.min(d);
            }
            if let Some(since) = w.queue_full_since {
                wake = wake.min(since + self.router.stall_timeout());
            }
        }
        if let Some(d) = self.router.next_deadline() {
            wake = wake.min(d);
        }
        for g in &self.groups {
            for s in &g.slots {
                if let Some(at) = s.restart_at {
                    wake = wake.min(at);
                }
            }
        }
        if let Some((at, _)) = self.migrate_retry
            && self.migrating.is_none()
        {
            wake = wake.min(at);
        }
        if let Some(at) = self.notifier.next_watchdog(now) {
            wake = wake.min(at);
        }
        if let Some(at) = self.drain_at {
            wake = wake.min(at);
        }
        if let Some(at) = self.upgrade_deadline() {
            wake = wake.min(at);
        }
        wake
    }

    /// The master's own duties each turn: what systemd hears, the
    /// upgrade's steps, orphans (as PID 1), the end of a shutdown delay.
    fn process_tick(&mut self, now: Instant) {
        self.service_tick(now);
        self.upgrade_tick(now);
        if crate::reaper::needed() && self.reaped_at.is_none_or(|at| now >= at + REAP_EVERY) {
            // An orphan that waited behind one of our own exiting children
            // at its SIGCHLD is reaped here, within a second.
            self.reaped_at = Some(now);
            crate::reaper::reap_orphans();
        }
        if self.drain_at.is_some_and(|at| now >= at) {
            self.drain_at = None;
            tracing::info!("server.shutdown_delay is over: draining every worker");
            self.stop_workers(Stop::Graceful);
        }
    }

    /// Enforces deadlines, starts scheduled restarts and moves a reload on.
    pub(super) fn tick(&mut self, now: Instant) {
        self.process_tick(now);
        self.ipc_tick(now);
        self.registry_tick(now);
        let mut overdue = Vec::new();
        for (&serial, w) in &mut self.workers {
            let Some(deadline) = w.deadline() else {
                continue;
            };
            if now < deadline {
                continue;
            }
            if w.killed_at.is_some() {
                tracing::warn!(
                    group = %self.groups[w.group].name, slot = w.slot, pid = w.pid,
                    "killed worker has not exited yet; killing it again"
                );
                w.killed_at = Some(now);
                let _ = w.commands.try_send(WorkerCommand::Kill);
                continue;
            }
            // Silence is judged only after the loop has read what arrived:
            // the first time past the deadline, look again a moment later.
            if w.phase != Phase::Draining && w.overdue_since.is_none() {
                w.overdue_since = Some(now);
                continue;
            }
            let cfg = &self.groups[w.group].cfg;
            let why = match w.phase {
                Phase::Booting => format!(
                    "did not report ready within boot_timeout ({:?}); raise groups.{}.boot_timeout if boot is slow",
                    w.boot_timeout, self.groups[w.group].name
                ),
                Phase::Ready => format!(
                    "sent no heartbeat for {:?} (heartbeat_timeout); its runtime is wedged",
                    now - w.last_heartbeat
                ),
                Phase::Draining => format!(
                    "did not finish draining within drain_timeout ({:?})",
                    cfg.drain_timeout
                ),
            };
            overdue.push((serial, why));
        }
        for (serial, why) in overdue {
            self.kill(serial, why);
        }
        if self.stopping.is_some() {
            return;
        }
        self.retry_migration(now);
        for g in 0..self.groups.len() {
            for s in 0..self.groups[g].slots.len() {
                let slot = &self.groups[g].slots[s];
                if slot.current.is_none()
                    && slot.restart_at.is_some_and(|at| at <= now)
                    && slot.replacement.is_none()
                {
                    self.start_slot(g, s);
                }
            }
        }
        self.recycle_tick(now);
        self.advance_reload();
    }

    pub(super) fn reread_config(&self) -> Result<Config, String> {
        let mut config =
            Config::load_from_env(self.opts.config_path.as_deref()).map_err(|e| e.to_string())?;
        config.resolve_workers(&self.opts.known_workers)?;
        Ok(config)
    }

    /// Takes a re-read configuration: settings of existing groups change
    /// now (counts through scaling); sockets and the set of groups stay
    /// until the master restarts.
    pub(super) fn apply_config(&mut self, mut config: Config) {
        config.groups.retain(|name, _| {
            let known = self.groups.iter().any(|g| &g.name == name);
            if !known {
                tracing::warn!(group = %name, "a new group in the configuration is started only when the master restarts");
            }
            known
        });
        for (name, cfg) in config.groups.iter_mut() {
            let Some(g) = self.groups.iter().position(|g| &g.name == name) else {
                continue;
            };
            let old = &self.groups[g].cfg;
            if self.groups[g].inherited {
                // Its socket is systemd's: it is what it is.
                cfg.listen = old.listen;
                cfg.listen_mode = old.listen_mode;
                cfg.backlog = old.backlog;
            } else if cfg.listen != old.listen
                || cfg.listen_mode != old.listen_mode
                || cfg.backlog != old.backlog
            {
                tracing::warn!(
                    group = %name,
                    "groups.{name}.listen, listen_mode and backlog take effect when the master restarts; \
                     the group keeps {} ({})", old.listen, old.listen_mode
                );
                cfg.listen = old.listen;
                cfg.listen_mode = old.listen_mode;
                cfg.backlog = old.backlog;
            }
        }
        for group in &self.groups {
            if !config.groups.contains_key(&group.name) {
                tracing::warn!(group = %group.name, "a group removed from the configuration keeps running until the master restarts");
                config.groups.insert(group.name.clone(), group.cfg.clone());
            }
        }
        match config.to_toml_string() {
            Ok(toml) => self.config_toml = toml,
            Err(e) => {
                tracing::error!(error = %e, "cannot hand the new configuration to workers; they keep the old one")
            }
        }
        for g in 0..self.groups.len() {
            let name = self.groups[g].name.clone();
            if let Some(cfg) = config.groups.get(&name) {
                let count = cfg.count;
                self.groups[g].cfg = cfg.clone();
                self.scale_group_to(g, count);
            }
        }
        // New per-worker queues apply to workers started from now on; the
        // master's inbox keeps its size until the master restarts.
        self.router.set_limits(
            config.server.ipc_max_pending,
            config.server.ipc_stall_timeout,
        );
        self.opts.config = config;
    }

    /// TTIN / TTOU: one worker more or fewer in every group (never below
    /// one), but the admin worker's, which runs one.
    pub(super) fn scale_all_by(&mut self, delta: i64) {
        if self.stopping.is_some() {
            return;
        }
        if let Err(e) = self.refuse_while_upgrading() {
            let why = e["error"]["message"].as_str().unwrap_or("");
            tracing::warn!("TTIN/TTOU ignored: {why}");
            return;
        }
        let mut config = self.opts.config.clone();
        for group in self.groups.iter().filter(|g| !g.is_builtin()) {
            let count = (group.slots.len() as i64 + delta).clamp(1, 1024) as usize;
            if let Some(cfg) = config.groups.get_mut(&group.name) {
                cfg.count = count;
            }
        }
        // Through apply_config, so new workers get the new counts (their
        // thread count depends on it) in the configuration they are handed.
        self.apply_config(config);
    }

    /// Sets group `g`'s worker count (`scale GROUP N`); the count it has
    /// afterwards.
    pub(super) fn scale_group(&mut self, g: usize, count: usize) -> usize {
        let mut config = self.opts.config.clone();
        if let Some(cfg) = config.groups.get_mut(&self.groups[g].name) {
            cfg.count = count;
        }
        self.apply_config(config);
        self.groups[g].slots.len()
    }

    fn scale_group_to(&mut self, g: usize, count: usize) {
        let current = self.groups[g].slots.len();
        if count == current {
            return;
        }
        tracing::info!(group = %self.groups[g].name, from = current, to = count, "scaling");
        if count > current {
            let closing = self.groups[g].closing.len();
            if let Err(e) = self.groups[g].listeners.ensure_slots(count, closing) {
                tracing::error!(group = %self.groups[g].name, error = %e, "cannot bind sockets for new slots; the group keeps its size");
                return;
            }
            let start = !self.awaiting_startup_migrations();
            for s in current..count {
                self.groups[g].slots.push(Slot::default());
                if start {
                    self.start_slot(g, s);
                }
            }
            // The new slots get connections once their workers are ready.
            self.update_steering(g);
            self.publish_scaled(g, current, count);
            return;
        }
        let removed: Vec<Slot> = self.groups[g].slots.drain(count..).collect();
        for s in count..current {
            self.registry_on_slot_removed(g, s);
        }
        self.reload_forget_slots(g, count);
        // New connections go to the kept slots only from now on; then the
        // master's copies of the removed sockets close; each draining worker
        // holds the last copy, sweeps its accept queue and closes it (see
        // `serve` in the worker). Once they have all exited, steering goes
        // by readiness alone (`on_closing_exit`): the kernel spreads over
        // every socket again when every slot is ready.
        let holders: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.group == g && w.slot >= count)
            .map(|(serial, _)| *serial)
            .collect();
        self.groups[g].closing.extend(holders);
        self.update_steering(g);
        self.groups[g].listeners.truncate_slots(count);
        for slot in removed {
            if let Some(serial) = slot.replacement {
                let events = self.restart_events.remove(&serial);
                notify(
                    events.as_ref(),
                    error("scaled_down", "the slot was removed by a scale down".into()),
                );
                self.drain(serial, "scale down");
            }
            if let Some(serial) = slot.current {
                self.drain(serial, "scale down");
            }
        }
        // A reload whose pending slot went moves on at the next tick.
        self.publish_scaled(g, current, count);
    }

    fn publish_scaled(&self, g: usize, from: usize, to: usize) {
        self.publish(Lifecycle::Scaled {
            group: self.groups[g].name.clone(),
            from,
            to,
        });
    }

    /// Stops every worker: gracefully (drain) or at once (SIGKILL).
    pub(super) fn stop(&mut self, how: Stop) {
        if self.stopping == Some(how) {
            return;
        }
        self.stopping = Some(how);
        self.cancel_upgrade();
        self.publish(Lifecycle::Stopping {
            graceful: how == Stop::Graceful,
        });
        self.finish_reload(Err(error(
            "stopping",
            "the master is stopping; the reload did not finish".into(),
        )));
        for (_, events) in self.restart_events.drain() {
            notify(
                Some(&events),
                error(
                    "stopping",
                    "the master is stopping; the restart did not finish".into(),
                ),
            );
        }
        for group in &mut self.groups {
            for slot in &mut group.slots {
                slot.restart_at = None;
            }
        }
        if self.handed_over {
            // The new master serves: no readiness to fail, no delay.
            self.stop_workers(how);
            return;
        }
        // Cached readiness answers are stale now: `/readyz` fails at once.
        let serials: Vec<u64> = self.workers.keys().copied().collect();
        for &serial in &serials {
            self.send(serial, &MasterMsg::StatusChanged);
        }
        let delay = self.opts.config.server.shutdown_delay;
        if how == Stop::Graceful && !delay.is_zero() && self.drain_at.is_none() {
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "graceful stop: /readyz answers 503 for server.shutdown_delay while every worker serves; then they drain"
            );
            self.drain_at = Some(Instant::now() + delay);
            return;
        }
        self.drain_at = None;
        self.stop_workers(how);
    }

    /// Drains (graceful) or kills (immediate) every worker.
    fn stop_workers(&mut self, how: Stop) {
        let serials: Vec<u64> = self.workers.keys().copied().collect();
        match how {
            Stop::Graceful => {
                tracing::info!(
                    workers = serials.len(),
                    "graceful stop: draining every worker"
                );
                for serial in serials {
                    self.drain(serial, "stop");
                }
            }
            Stop::Immediate => {
                tracing::warn!(
                    workers = serials.len(),
                    "immediate stop: killing every worker"
                );
                for serial in serials {
                    if let Some(w) = self.workers.get_mut(&serial) {
                        w.killed_for = Some("immediate stop".into());
                        w.killed_at = Some(Instant::now());
                        let _ = w.commands.try_send(WorkerCommand::Kill);
                    }
                }
            }
        }
    }
}

impl super::Group {
    /// Whether this is the built-in admin worker's group.
    pub(super) fn is_admin(&self) -> bool {
        self.name == ADMIN_GROUP
            && self.cfg.worker.as_deref() == Some(ringmaster_config::ADMIN_WORKER)
    }

    /// Whether this is the built-in bridge worker's group.
    pub(super) fn is_bridge(&self) -> bool {
        self.name == BRIDGE_GROUP
            && self.cfg.worker.as_deref() == Some(ringmaster_config::BRIDGE_WORKER)
    }

    /// Whether it is the admin or the bridge group: one worker each,
    /// never scaled.
    pub(super) fn is_builtin(&self) -> bool {
        self.is_admin() || self.is_bridge()
    }
}

impl Supervisor {
    /// A worker exited while the master stops: tells the clients following
    /// the stop.
    pub(super) fn stop_progress(&self, w: &WorkerProc, how: &str) {
        if self.stopping.is_none() {
            return;
        }
        let line = json!({
            "event": "exited", "group": self.groups[w.group].name, "slot": w.slot,
            "pid": w.pid, "status": how, "left": self.workers.len(),
        });
        for events in &self.stop_events {
            notify(Some(events), line.clone());
        }
    }

    /// Every worker has exited: the clients following the stop get their
    /// final line, and up to a second to receive it before the master
    /// exits (a connection's task drops its end once it wrote the line).
    pub(super) async fn stopped(&mut self) {
        self.say_done();
        let line = crate::control::request::ok(json!({"master_pid": self.master_pid}));
        let events: Vec<_> = self.stop_events.drain(..).collect();
        for tx in &events {
            notify(Some(tx), line.clone());
        }
        let written = async {
            for tx in &events {
                tx.closed().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
    }
}

impl Supervisor {
    /// A worker that held a removed slot's socket exited.
    pub(super) fn on_closing_exit(&mut self, g: usize, serial: u64) {
        let closing = &mut self.groups[g].closing;
        let before = closing.len();
        closing.retain(|s| *s != serial);
        if closing.len() < before {
            self.update_steering(g);
        }
    }

    /// Sends new connections of group `g` (reuseport) only to slots whose
    /// worker is ready: around a slot whose worker is down (a crash loop,
    /// a backend that is down at boot: its queue would hold connections
    /// nobody accepts) and away from removed slots whose sockets still
    /// close; the kernel's own spread when every slot is ready (or none).
    pub(super) fn update_steering(&mut self, g: usize) {
        if self.handed_over || self.upgrading.is_some() {
            // The sockets serve the new master's workers too (or soon):
            // steering or moving queued connections by this master's view
            // of its own workers would take them from the new ones.
            return;
        }
        let group = &self.groups[g];
        let serving: Vec<usize> = (0..group.slots.len())
            .filter(|s| {
                group.slots[*s]
                    .current
                    .and_then(|c| self.workers.get(&c))
                    .is_some_and(|w| w.phase == Phase::Ready)
            })
            .collect();
        let all = serving.len() == group.slots.len() && group.closing.is_empty();
        let target = (!all && !serving.is_empty()).then_some(serving.as_slice());
        let name = group.name.clone();
        let needs = target.is_some();
        match self.groups[g].listeners.steer(target) {
            Ok(true) => {}
            Ok(false)
                if needs
                    && !self.groups[g].steer_warned
                    && self.groups[g].listeners.mode()
                        == ringmaster_config::ListenMode::Reuseport =>
            {
                self.groups[g].steer_warned = true;
                tracing::warn!(
                    group = %name,
                    "new connections cannot be steered to the ready slots only (slots were added \
                     while removed ones still closed, so the kernel's order is unknown until the \
                     master restarts); a slot without a worker keeps its share of new connections"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                group = %name, error = %e,
                "cannot steer new connections to the ready slots; a slot without a worker keeps its share"
            ),
        }
        if target.is_some() {
            self.hand_over_queues(g, &serving);
        }
    }

    /// Connections already queued on the socket of a slot without a ready
    /// worker (they arrived before it was steered around) would wait for
    /// its next ready worker, for a whole backend outage if its
    /// replacements cannot boot: the master takes them and hands them to
    /// the ready workers of the group.
    fn hand_over_queues(&self, g: usize, serving: &[usize]) {
        let group = &self.groups[g];
        if group.listeners.mode() != ringmaster_config::ListenMode::Reuseport {
            return;
        }
        let to: Vec<&std::os::unix::net::UnixDatagram> = serving
            .iter()
            .filter_map(|s| group.slots[*s].current.and_then(|c| self.workers.get(&c)))
            .map(|w| &w.adopt)
            .collect();
        for s in (0..group.slots.len()).filter(|s| !serving.contains(s)) {
            let handed = crate::spawn::hand_over_queue(group.listeners.fd_for_slot(s), &to);
            if handed > 0 {
                tracing::info!(
                    group = %group.name, slot = s, handed,
                    "handed the connections queued on a slot without a ready worker to the ready ones"
                );
            }
        }
    }
}
