//! What happens to a worker after it is spawned: its messages (hello,
//! ready, heartbeats, IPC), its exit and what the restart policy makes of
//! it, and the master's two actions on it, kill and drain. Each step
//! publishes its lifecycle event.

use std::time::Duration;

use ringmaster_proto::{BootPhase, Lifecycle, MasterMsg, PROTOCOL_VERSION, WorkerMsg};
use tokio::time::Instant;

use super::{Phase, Supervisor, WorkerProc};
use crate::spawn::{WorkerCommand, WorkerEvent, describe_exit};

impl Supervisor {
    pub(super) fn on_event(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Message { serial, msg } => self.on_message(serial, msg),
            WorkerEvent::IpcError { serial, error } => {
                self.kill(serial, format!("broke the IPC protocol ({error})"));
            }
            WorkerEvent::Exited { serial, status } => self.on_exit(serial, status),
        }
    }

    pub(super) fn on_message(&mut self, serial: u64, msg: WorkerMsg) {
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
            WorkerMsg::Ready { phases } => self.on_ready_msg(serial, &phases),
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
    /// `Ready`: the worker serves from now on (unless the master already
    /// killed it; a `Ready` that crossed the kill changes nothing).
    fn on_ready_msg(&mut self, serial: u64, phases: &[BootPhase]) {
        let Some(w) = self.workers.get_mut(&serial) else {
            return;
        };
        let group = &self.groups[w.group].name;
        if w.phase != Phase::Booting || w.killed_for.is_some() {
            return;
        }
        w.phase = Phase::Ready;
        w.overdue_since = None;
        w.ready_at = Some(Instant::now());
        w.last_heartbeat = Instant::now();
        let boot_ms = w.started.elapsed().as_secs_f64() * 1e3;
        let phases: Vec<String> = phases
            .iter()
            .map(|p| format!("{}={:.1}ms", p.step.name(), p.micros as f64 / 1e3))
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

    pub(super) fn on_exit(&mut self, serial: u64, status: std::process::ExitStatus) {
        let Some(g) = self.workers.get(&serial).map(|w| w.group) else {
            return;
        };
        self.on_exit_of(serial, status);
        // Its slot may have lost its serving worker, or got one back.
        self.update_steering(g);
    }

    pub(super) fn on_exit_of(&mut self, serial: u64, status: std::process::ExitStatus) {
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
        self.restart_after(&w, status, &how, uptime, ready_for);
    }

    /// The slot's serving worker exited unexpectedly: the restart policy's
    /// verdict, carried out (a restart now or after its backoff, the
    /// crash-loop error once), unless a replacement is booting to take over.
    fn restart_after(
        &mut self,
        w: &WorkerProc,
        status: std::process::ExitStatus,
        how: &str,
        uptime: Duration,
        ready_for: Option<Duration>,
    ) {
        let reason = w.exit_reason("unexpected exit");
        self.record_exit(w, status, reason, true);
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
        self.publish_exit(w, how, reason, false, strikes, restart_in);
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
    pub(super) fn kill(&mut self, serial: u64, why: String) {
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
    pub(super) fn publish_exit(
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
    pub(super) fn drain(&mut self, serial: u64, why: &str) {
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
