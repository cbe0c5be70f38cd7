//! The supervisor's policies: deadlines, scheduled restarts, rolling reload,
//! scaling and stopping.

use std::collections::VecDeque;
use std::time::Duration;

use ringmaster_config::Config;
use tokio::time::Instant;

use super::migration::Purpose;
use super::{Phase, Slot, Stop, Supervisor, Worker};
use crate::spawn::WorkerCommand;

/// Strikes in a row after which a slot is reported as crash-looping.
pub(super) const CRASH_LOOP_STRIKES: u32 = 5;
/// The loop wakes at least this often, whatever the deadlines.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// A killed worker not reaped after this long is sent the kill again.
const KILL_RETRY: Duration = Duration::from_secs(1);

/// A rolling reload in progress: slots still to replace, one at a time.
#[derive(Debug)]
pub(super) struct Reload {
    queue: VecDeque<(usize, usize)>,
    /// The replacement booting now: (group, slot, serial).
    pending: Option<(usize, usize, u64)>,
}

impl Worker {
    /// When the master must next act on this worker, if ever: re-send a
    /// kill, or enforce its boot, heartbeat or drain deadline.
    fn deadline(&self) -> Option<Instant> {
        if let Some(killed_at) = self.killed_at {
            return Some(killed_at + KILL_RETRY);
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
        wake
    }

    /// Enforces deadlines, starts scheduled restarts and moves a reload on.
    pub(super) fn tick(&mut self, now: Instant) {
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
                    && !self.reload_owns_slot(g, s)
                {
                    self.start_slot(g, s);
                }
            }
        }
        self.advance_reload();
    }

    /// A worker reported `Ready`: if it is a reload's replacement, it takes
    /// over its slot and the old worker drains.
    pub(super) fn on_ready(&mut self, serial: u64) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let Some((g, s, pending)) = reload.pending else {
            return;
        };
        if pending != serial {
            return;
        }
        reload.pending = None;
        let slot = &mut self.groups[g].slots[s];
        let old = slot.current.replace(serial);
        slot.strikes = 0;
        slot.restart_at = None;
        if let Some(old) = old {
            self.drain(old);
        }
        self.advance_reload();
    }

    /// Whether a reload's replacement is booting for this slot.
    pub(super) fn reload_owns_slot(&self, g: usize, s: usize) -> bool {
        matches!(&self.reload, Some(Reload { pending: Some((pg, ps, _)), .. }) if *pg == g && *ps == s)
    }

    /// A worker that was not serving its slot exited unexpectedly: a reload's
    /// replacement that failed to boot. The reload stops; the running
    /// workers are kept.
    pub(super) fn on_replacement_failed(&mut self, serial: u64, w: &Worker, how: &str) {
        let reason = w.exit_reason("exited before it was ready");
        let group = &self.groups[w.group].name;
        let is_pending =
            matches!(&self.reload, Some(Reload { pending: Some((_, _, p)), .. }) if *p == serial);
        if is_pending {
            tracing::error!(
                group = %group, slot = w.slot, pid = w.pid, status = %how, reason,
                "reload aborted: the new worker failed to boot; the running workers are kept. \
                 Fix the cause and send HUP again"
            );
            self.reload = None;
            let slot = &mut self.groups[w.group].slots[w.slot];
            if slot.current.is_none() {
                // The old worker died meanwhile: the slot restarts normally.
                slot.restart_at = Some(Instant::now());
            }
        } else {
            tracing::warn!(group = %group, slot = w.slot, pid = w.pid, status = %how, reason, "worker exited");
        }
    }

    /// HUP: re-reads the configuration, then replaces every worker, one slot
    /// at a time: start the replacement, wait for `Ready`, drain the old one.
    pub(super) fn start_reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if self.reload.is_some() || self.migrating.is_some() {
            tracing::warn!("a reload is already in progress; this HUP is ignored");
            return;
        }
        let config = match self.reread_config() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "reload aborted: the configuration is invalid; the running workers are kept. \
                     Fix it and send HUP again"
                );
                return;
            }
        };
        if self.opts.migrate {
            // Migrations of the binary now on disk run before its workers do;
            // the loop goes on supervising meanwhile.
            tracing::info!("reload: running migrations first");
            self.spawn_migration(config, Purpose::Reload);
            return;
        }
        self.begin_rolling(config);
    }

    pub(super) fn begin_rolling(&mut self, config: Config) {
        // The slots that exist now are replaced one by one; slots that the
        // new configuration adds start with the new binary and settings
        // anyway, and slots it removes leave the queue as they go.
        let mut queue = VecDeque::new();
        for (g, group) in self.groups.iter().enumerate() {
            for s in 0..group.slots.len() {
                queue.push_back((g, s));
            }
        }
        tracing::info!(slots = queue.len(), "rolling reload started");
        self.reload = Some(Reload {
            queue,
            pending: None,
        });
        self.apply_config(config);
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
            if cfg.listen != old.listen
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

    fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.pending.is_some() {
                return;
            }
            let Some((g, s)) = reload.queue.pop_front() else {
                tracing::info!("rolling reload complete");
                self.reload = None;
                return;
            };
            if s >= self.groups[g].slots.len() {
                continue;
            }
            match self.spawn(g, s) {
                Some(serial) => {
                    if let Some(reload) = &mut self.reload {
                        reload.pending = Some((g, s, serial));
                    }
                    return;
                }
                None => {
                    tracing::error!(group = %self.groups[g].name, slot = s, "reload aborted: cannot start a new worker; the running workers are kept");
                    self.reload = None;
                    return;
                }
            }
        }
    }

    /// TTIN / TTOU: one worker more or fewer in every group (never below one).
    pub(super) fn scale_by(&mut self, delta: i64) {
        if self.stopping.is_some() {
            return;
        }
        let mut config = self.opts.config.clone();
        for group in &self.groups {
            let count = (group.slots.len() as i64 + delta).clamp(1, 1024) as usize;
            if let Some(cfg) = config.groups.get_mut(&group.name) {
                cfg.count = count;
            }
        }
        // Through apply_config, so new workers get the new counts (their
        // thread count depends on it) in the configuration they are handed.
        self.apply_config(config);
    }

    fn scale_group_to(&mut self, g: usize, count: usize) {
        let current = self.groups[g].slots.len();
        if count == current {
            return;
        }
        tracing::info!(group = %self.groups[g].name, from = current, to = count, "scaling");
        if count > current {
            if let Err(e) = self.groups[g].listeners.ensure_slots(count) {
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
            return;
        }
        let removed: Vec<Slot> = self.groups[g].slots.drain(count..).collect();
        for s in count..current {
            self.registry_on_slot_removed(g, s);
        }
        let mut orphaned_replacement = None;
        if let Some(r) = &mut self.reload {
            r.queue.retain(|&(rg, rs)| rg != g || rs < count);
            if let Some((pg, ps, serial)) = r.pending
                && pg == g
                && ps >= count
            {
                r.pending = None;
                orphaned_replacement = Some(serial);
            }
        }
        if let Some(serial) = orphaned_replacement {
            self.drain(serial);
        }
        // The master's copies of the slots' sockets close first; the draining
        // worker holds the last copy, sweeps its accept queue and closes it
        // (see `serve` in the worker, and listener::truncate_slots).
        self.groups[g].listeners.truncate_slots(count);
        for slot in removed {
            if let Some(serial) = slot.current {
                self.drain(serial);
            }
        }
    }

    /// Stops every worker: gracefully (drain) or at once (SIGKILL).
    pub(super) fn stop(&mut self, how: Stop) {
        if self.stopping == Some(how) {
            return;
        }
        self.stopping = Some(how);
        self.reload = None;
        for group in &mut self.groups {
            for slot in &mut group.slots {
                slot.restart_at = None;
            }
        }
        let serials: Vec<u64> = self.workers.keys().copied().collect();
        match how {
            Stop::Graceful => {
                tracing::info!(
                    workers = serials.len(),
                    "graceful stop: draining every worker"
                );
                for serial in serials {
                    self.drain(serial);
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
