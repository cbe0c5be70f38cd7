//! Replacing a slot's serving worker with its replacement ready first:
//! the rolling reload (HUP, `reload [--group G]`), `restart GROUP/SLOT`,
//! and recycling (`max_requests`, `max_rss`).
//!
//! A replacement is a second worker of the slot: it boots beside the one
//! serving, takes the slot over when it reports `Ready`, and only then is
//! the old worker drained, so capacity never drops. One that fails to
//! boot changes nothing: the old worker keeps serving (a reload stops
//! there and says why).

use std::collections::VecDeque;
use std::time::Duration;

use ringmaster_config::Config;
use ringmaster_proto::Lifecycle;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Supervisor;
use super::migration::Purpose;
use crate::control::Events;
use crate::control::request::{error, ok};

/// After a recycling replacement failed to boot, the next try waits this
/// long (the old worker keeps serving meanwhile).
const RECYCLE_RETRY: Duration = Duration::from_secs(15);

/// Why a worker was started beside its slot's serving worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    Reload,
    Restart,
    Recycle,
}

impl Why {
    /// As the old worker's drain reason (recycling has its own, the limit).
    pub(super) fn name(self) -> &'static str {
        match self {
            Why::Reload => "reload",
            Why::Restart => "restart",
            Why::Recycle => "recycled",
        }
    }
}

/// A rolling reload in progress: slots still to replace, one at a time.
#[derive(Debug)]
pub(super) struct Reload {
    queue: VecDeque<(usize, usize)>,
    /// The replacement booting now: (group, slot, serial).
    pub(super) pending: Option<(usize, usize, u64)>,
    /// The groups it replaces.
    pub(super) groups: Vec<usize>,
    pub(super) done: u32,
    pub(super) total: u32,
    /// The control client following it, if one asked.
    events: Option<Events>,
    started: Instant,
}

/// Sends a reply line to a control client, never waiting: a client that
/// does not read loses events, the supervisor never stalls. The last place
/// in the queue is kept for the final line.
pub(super) fn notify(events: Option<&Events>, line: Value) {
    if let Some(tx) = events
        && (crate::control::request::is_final(&line) || tx.capacity() > 1)
    {
        let _ = tx.try_send(line);
    }
}

impl Supervisor {
    /// Starts a worker to take over slot `s` of group `g`; its serial, or
    /// `None` (logged) when no process could be started.
    fn start_replacement(&mut self, g: usize, s: usize, why: Why) -> Option<u64> {
        let serial = self.spawn(g, s)?;
        if let Some(w) = self.workers.get_mut(&serial) {
            w.replaces = Some(why);
        }
        let slot = &mut self.groups[g].slots[s];
        slot.replacement = Some(serial);
        slot.restart_at = None;
        Some(serial)
    }

    /// A worker reported `Ready`: a replacement takes over its slot and
    /// the worker it replaces drains.
    pub(super) fn on_ready(&mut self, serial: u64) {
        let Some(w) = self.workers.get(&serial) else {
            return;
        };
        let (g, s, pid, why) = (w.group, w.slot, w.pid, w.replaces);
        let ready_ms = w.started.elapsed().as_millis() as u64;
        let Some(why) = why else {
            return;
        };
        let Some(slot) = self.groups[g].slots.get_mut(s) else {
            return;
        };
        if slot.replacement != Some(serial) {
            return;
        }
        slot.replacement = None;
        slot.strikes = 0;
        slot.restart_at = None;
        let old = slot.current.replace(serial);
        let old_worker = old.and_then(|o| self.workers.get(&o));
        let old_pid = old_worker.map(|w| w.pid);
        let reason = match why {
            Why::Recycle => old_worker.and_then(|w| w.recycle.clone()),
            _ => None,
        }
        .unwrap_or_else(|| why.name().to_string());
        if let Some(old) = old {
            self.drain(old, &reason);
        }
        let group = self.groups[g].name.clone();
        let event = json!({
            "event": "replaced", "group": group, "slot": s,
            "old_pid": old_pid, "new_pid": pid, "ready_ms": ready_ms,
        });
        match why {
            Why::Restart => {
                let events = self.restart_events.remove(&serial);
                notify(events.as_ref(), event.clone());
                notify(events.as_ref(), ok(event));
            }
            Why::Recycle => {
                tracing::info!(group = %group, slot = s, old_pid, new_pid = pid, reason = %reason, "worker recycled: its replacement is ready");
            }
            Why::Reload => {
                if let Some(r) = &mut self.reload
                    && r.pending.is_some_and(|(_, _, p)| p == serial)
                {
                    r.pending = None;
                    r.done += 1;
                    notify(r.events.as_ref(), event);
                }
                self.advance_reload();
            }
        }
    }

    /// A worker that was not serving its slot exited before it was ready:
    /// a replacement that failed to boot. The slot's worker is kept; a
    /// reload stops, a restart reports the failure, recycling retries
    /// later.
    pub(super) fn on_replacement_failed(&mut self, serial: u64, w: &super::WorkerProc, how: &str) {
        let reason = w.exit_reason("exited before it was ready");
        let group = self.groups[w.group].name.clone();
        let now = Instant::now();
        if let Some(slot) = self.groups[w.group].slots.get_mut(w.slot) {
            if slot.replacement == Some(serial) {
                slot.replacement = None;
            }
            if slot.current.is_none() && slot.replacement.is_none() {
                // The old worker died meanwhile: the slot restarts normally.
                slot.restart_at = Some(now);
            }
            if w.replaces == Some(Why::Recycle) {
                slot.recycle_after = Some(now + RECYCLE_RETRY);
            }
        }
        let message = format!(
            "{group}/{}: the new worker (pid {}) failed to boot: {reason} ({how}); the running worker is kept",
            w.slot, w.pid
        );
        match w.replaces {
            Some(Why::Reload)
                if self
                    .reload
                    .as_ref()
                    .is_some_and(|r| r.pending.is_some_and(|(_, _, p)| p == serial)) =>
            {
                tracing::error!(
                    group = %group, slot = w.slot, pid = w.pid, status = %how, reason,
                    "reload aborted: the new worker failed to boot; the running workers are kept. \
                     Fix the cause and reload again"
                );
                self.finish_reload(Err(error("reload_failed", message)));
            }
            Some(Why::Restart) => {
                tracing::error!(group = %group, slot = w.slot, pid = w.pid, status = %how, reason, "restart failed: the new worker failed to boot; the running worker is kept");
                let events = self.restart_events.remove(&serial);
                notify(events.as_ref(), error("restart_failed", message));
            }
            Some(Why::Recycle) => tracing::warn!(
                group = %group, slot = w.slot, pid = w.pid, status = %how, reason,
                retry_in_s = RECYCLE_RETRY.as_secs(),
                "recycling: the replacement failed to boot; the worker past its limit keeps serving"
            ),
            _ => {
                tracing::warn!(group = %group, slot = w.slot, pid = w.pid, status = %how, reason, "worker exited")
            }
        }
    }

    /// A rolling reload of group `only` (or of every group): re-reads the
    /// configuration (for `only`, that group's settings only), runs the
    /// migrations, then replaces every worker, one slot at a time. `events`
    /// follows its progress. An error (the reload did not start) is a
    /// reply line for the client.
    pub(super) fn start_reload(
        &mut self,
        only: Option<usize>,
        events: Option<Events>,
    ) -> Result<(), Value> {
        if self.stopping.is_some() {
            return Err(error("stopping", "the master is stopping".into()));
        }
        self.refuse_while_upgrading()?;
        if self.reload.is_some() || self.migrating.is_some() {
            return Err(error(
                "busy",
                "a reload is in progress; wait for it to finish (`status` shows its progress)"
                    .into(),
            ));
        }
        let config = match self.reread_config() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "reload aborted: the configuration is invalid; the running workers are kept. \
                     Fix it and reload again"
                );
                self.publish(Lifecycle::ReloadAborted {
                    reason: format!("the configuration is invalid: {e}"),
                });
                return Err(error(
                    "bad_config",
                    format!("the configuration is invalid, nothing was reloaded: {e}"),
                ));
            }
        };
        let config = match only {
            Some(g) => self.with_group_settings(config, g),
            None => config,
        };
        if self.opts.migrate {
            // Migrations of the binary now on disk run before its workers do;
            // the loop goes on supervising meanwhile.
            tracing::info!("reload: running migrations first");
            notify(events.as_ref(), json!({"event": "migrating"}));
            self.spawn_migration(config, Purpose::Reload { only, events });
            return Ok(());
        }
        self.begin_rolling(config, only, events);
        Ok(())
    }

    /// The configuration as it runs, with group `g`'s settings from `new`
    /// (a reload of one group leaves the others' settings for their own).
    fn with_group_settings(&self, mut new: Config, g: usize) -> Config {
        let name = &self.groups[g].name;
        let fresh = new.groups.get(name).cloned();
        new.groups = self.opts.config.groups.clone();
        if let Some(cfg) = fresh {
            new.groups.insert(name.clone(), cfg);
        }
        new
    }

    /// Applies `config` and starts replacing the slots of `only` (or of
    /// every group).
    pub(super) fn begin_rolling(
        &mut self,
        config: Config,
        only: Option<usize>,
        events: Option<Events>,
    ) {
        // The slots that exist now are replaced one by one; slots the new
        // configuration adds start with the new binary and settings anyway,
        // and slots it removes leave the queue as they go (apply_config,
        // after the reload exists).
        let groups: Vec<usize> = match only {
            Some(g) => vec![g],
            None => (0..self.groups.len()).collect(),
        };
        let queue: VecDeque<(usize, usize)> = groups
            .iter()
            .flat_map(|&g| (0..self.groups[g].slots.len()).map(move |s| (g, s)))
            .collect();
        let names: Vec<&str> = groups
            .iter()
            .map(|g| self.groups[*g].name.as_str())
            .collect();
        tracing::info!(slots = queue.len(), groups = %names.join(","), "rolling reload started");
        self.publish(Lifecycle::ReloadStarted {
            groups: names.iter().map(|n| n.to_string()).collect(),
        });
        notify(
            events.as_ref(),
            json!({"event": "started", "groups": names, "slots": queue.len()}),
        );
        self.reload = Some(Reload {
            total: queue.len() as u32,
            queue,
            pending: None,
            groups,
            done: 0,
            events,
            started: Instant::now(),
        });
        self.apply_config(config);
        self.advance_reload();
    }

    /// Starts the next slot's replacement, or finishes the reload.
    pub(super) fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.pending.is_some() {
                return;
            }
            let Some((g, s)) = reload.queue.pop_front() else {
                tracing::info!("rolling reload complete");
                let result = json!({
                    "replaced": reload.done,
                    "ms": reload.started.elapsed().as_millis() as u64,
                });
                self.finish_reload(Ok(result));
                return;
            };
            let Some(slot) = self.groups[g].slots.get(s) else {
                continue;
            };
            if slot.replacement.is_some() {
                // Being replaced already (recycling): its turn comes when
                // that replacement is done.
                reload.queue.push_front((g, s));
                return;
            }
            match self.start_replacement(g, s, Why::Reload) {
                Some(serial) => {
                    if let Some(reload) = &mut self.reload {
                        reload.pending = Some((g, s, serial));
                    }
                    return;
                }
                None => {
                    let group = &self.groups[g].name;
                    tracing::error!(group = %group, slot = s, "reload aborted: cannot start a new worker; the running workers are kept");
                    let message = format!(
                        "{group}/{s}: cannot start a new worker process (see the master's log); the running workers are kept"
                    );
                    self.finish_reload(Err(error("reload_failed", message)));
                    return;
                }
            }
        }
    }

    /// Slots `count..` of group `g` were removed (scale down): the reload
    /// no longer replaces them (their replacements drain with them).
    pub(super) fn reload_forget_slots(&mut self, g: usize, count: usize) {
        if let Some(r) = &mut self.reload {
            r.queue.retain(|&(rg, rs)| rg != g || rs < count);
            if r.pending.is_some_and(|(pg, ps, _)| pg == g && ps >= count) {
                r.pending = None;
            }
            r.total = r.done + r.queue.len() as u32 + u32::from(r.pending.is_some());
        }
    }

    /// Ends the reload in progress with its final reply line.
    pub(super) fn finish_reload(&mut self, result: Result<Value, Value>) {
        if let Some(reload) = self.reload.take() {
            self.publish(match &result {
                Ok(_) => Lifecycle::ReloadFinished {
                    groups: reload
                        .groups
                        .iter()
                        .map(|&g| self.groups[g].name.clone())
                        .collect(),
                },
                Err(e) => Lifecycle::ReloadAborted {
                    reason: e["error"]["message"].as_str().unwrap_or("").to_string(),
                },
            });
            let line = match result {
                Ok(result) => ok(result),
                Err(e) => e,
            };
            notify(reload.events.as_ref(), line);
            self.after_reload();
        }
    }

    /// A reload ended (or stopped before it rolled): the HUP that arrived
    /// meanwhile, if one did, starts the next.
    pub(super) fn after_reload(&mut self) {
        if std::mem::take(&mut self.reload_queued) && self.stopping.is_none() {
            tracing::info!("reloading again for the HUP that arrived during the reload");
            if let Err(e) = self.start_reload(None, None) {
                let why = e["error"]["message"].as_str().unwrap_or("");
                tracing::warn!("the queued HUP did not reload: {why}");
            }
        }
    }

    /// `restart GROUP/SLOT`: replaces one worker, replacement ready first.
    pub(super) fn restart_slot(&mut self, g: usize, s: usize, events: Events) -> Result<(), Value> {
        let group = self.groups[g].name.clone();
        let Some(slot) = self.groups[g].slots.get(s) else {
            return Err(error(
                "not_found",
                format!(
                    "group {group} has slots 0 to {}",
                    self.groups[g].slots.len().saturating_sub(1)
                ),
            ));
        };
        if slot.replacement.is_some() {
            return Err(error(
                "busy",
                format!(
                    "{group}/{s} is being replaced already (a reload, restart or recycling); wait for it"
                ),
            ));
        }
        let old_pid = slot
            .current
            .and_then(|c| self.workers.get(&c))
            .map(|w| w.pid);
        let Some(serial) = self.start_replacement(g, s, Why::Restart) else {
            return Err(error(
                "failed",
                format!("{group}/{s}: cannot start a new worker process (see the master's log)"),
            ));
        };
        let new_pid = self.workers.get(&serial).map(|w| w.pid);
        tracing::info!(group = %group, slot = s, old_pid, new_pid, "restart: replacement started");
        notify(
            Some(&events),
            json!({"event": "started", "group": group, "slot": s, "old_pid": old_pid, "new_pid": new_pid}),
        );
        self.restart_events.insert(serial, events);
        Ok(())
    }

    /// A worker says it is past a limit of its own (`max_requests`).
    pub(super) fn on_recycle_request(&mut self, serial: u64, reason: &str) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        if w.recycle.is_some() || w.phase != super::Phase::Ready {
            return;
        }
        // Bounded: a worker's word, shown in `status` and logs.
        let reason: String = reason.chars().take(64).collect();
        tracing::info!(group = %w.origin.group, slot = w.slot, pid = w.pid, reason = %reason, "worker asks to be recycled");
        w.recycle = Some(format!("recycled: {reason}"));
    }

    /// Flags workers past `max_rss`, and starts a replacement for one
    /// flagged worker per group at a time (none while that group reloads).
    pub(super) fn recycle_tick(&mut self, now: Instant) {
        if self.stopping.is_some() || self.awaiting_startup_migrations() {
            return;
        }
        for w in self.workers.values_mut() {
            let cfg = &self.groups[w.group].cfg;
            let limit = cfg.max_rss;
            // A worker is judged after a stable run: one that boots above
            // the limit must not be replaced in a loop.
            let settled = w.ready_at.is_some_and(|t| now - t >= cfg.min_uptime);
            if limit > 0
                && settled
                && w.phase == super::Phase::Ready
                && w.recycle.is_none()
                && w.usage.rss > limit
            {
                tracing::info!(
                    group = %w.origin.group, slot = w.slot, pid = w.pid, rss = w.usage.rss, max_rss = limit,
                    "worker is past max_rss ({} MiB > {} MiB); replacing it", w.usage.rss >> 20, limit >> 20
                );
                w.recycle = Some("recycled: max_rss".into());
            }
        }
        for g in 0..self.groups.len() {
            let group = &self.groups[g];
            let reloading = self.reload.as_ref().is_some_and(|r| r.groups.contains(&g));
            if reloading || group.slots.iter().any(|s| s.replacement.is_some()) {
                continue;
            }
            let due = group.slots.iter().position(|slot| {
                slot.recycle_after.is_none_or(|t| t <= now)
                    && slot
                        .current
                        .and_then(|c| self.workers.get(&c))
                        .is_some_and(|w| w.recycle.is_some() && w.phase == super::Phase::Ready)
            });
            if let Some(s) = due {
                let retry = self
                    .start_replacement(g, s, Why::Recycle)
                    .is_none()
                    .then(|| now + RECYCLE_RETRY);
                self.groups[g].slots[s].recycle_after = retry;
            }
        }
    }
}
