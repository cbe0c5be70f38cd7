//! What `status` shows: the per-second samples behind it (each worker's
//! resident memory and CPU from `/proc`, each slot's requests and latency
//! from its registry row) and the [`ClusterStatus`] built from the worker
//! table on demand.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use ringmaster_proto::{
    BridgeState, BridgeStatus, ClusterStatus, ExitInfo, GroupState, GroupStatus, ReloadProgress,
    WorkerStatus,
};
use ringmaster_registry::{PerRow, quantile, series};
use tokio::time::Instant;

use super::{Phase, Slot, Supervisor, WorkerProc};

/// How often systemd's summary is looked at without a lifecycle event.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// How far back `requests_per_sec` and `p99_ms` look.
const WINDOW: Duration = Duration::from_secs(10);

/// A process's resident memory and CPU use, sampled every second.
#[derive(Debug, Default)]
pub(super) struct Usage {
    pub(super) rss: u64,
    /// CPU time (clock ticks) at the last sample, and when.
    ticks: Option<(Instant, u64)>,
    cpu_percent: f64,
}

impl Usage {
    fn sample(&mut self, pid: u32, now: Instant) {
        self.rss = rss_bytes(pid);
        let Some(ticks) = cpu_ticks(pid) else {
            return;
        };
        if let Some((at, before)) = self.ticks {
            let wall = (now - at).as_secs_f64();
            if wall > 0.0 {
                let secs = ticks.saturating_sub(before) as f64 / clock_ticks_per_sec();
                self.cpu_percent = 100.0 * secs / wall;
            }
        }
        self.ticks = Some((now, ticks));
    }
}

/// One slot's registry row over the last [`WINDOW`].
#[derive(Debug, Default)]
pub(super) struct Window {
    /// (when, requests served, latency bucket counts), oldest first.
    samples: VecDeque<(Instant, u64, Vec<u64>)>,
    in_flight: i64,
}

impl Window {
    fn push(&mut self, now: Instant, requests: u64, buckets: Vec<u64>, in_flight: i64) {
        self.samples.push_back((now, requests, buckets));
        while self
            .samples
            .front()
            .is_some_and(|(t, _, _)| now - *t > WINDOW + Duration::from_millis(500))
        {
            self.samples.pop_front();
        }
        self.in_flight = in_flight;
    }

    fn requests_total(&self) -> u64 {
        self.samples.back().map_or(0, |s| s.1)
    }

    /// Requests per second and p99 (ms) over the window.
    fn rates(&self, bounds: &[f64]) -> (f64, Option<f64>) {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return (0.0, None);
        };
        let secs = (last.0 - first.0).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, None);
        }
        let rps = last.1.saturating_sub(first.1) as f64 / secs;
        let delta: Vec<u64> = last
            .2
            .iter()
            .zip(first.2.iter().chain(std::iter::repeat(&0)))
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        let p99 = quantile(bounds, &delta, 0.99).map(|s| s * 1e3);
        (rps, p99)
    }
}

/// The registry's HTTP series, read once per sample for every row.
struct HttpRows {
    requests: Option<PerRow>,
    in_flight: Option<PerRow>,
    duration: Option<PerRow>,
}

impl HttpRows {
    fn row(&self, row: u32) -> (u64, Vec<u64>, i64) {
        let cells = |p: &Option<PerRow>| p.as_ref().and_then(|p| p.rows.get(row as usize)).cloned();
        let requests = cells(&self.requests)
            .and_then(|c| c.first().copied())
            .unwrap_or(0);
        let in_flight = cells(&self.in_flight)
            .and_then(|c| c.first().copied())
            .unwrap_or(0) as i64;
        (
            requests,
            cells(&self.duration).unwrap_or_default(),
            in_flight,
        )
    }
}

impl Supervisor {
    /// Samples every worker's memory and CPU and every slot's registry
    /// row (once per second, from the registry tick).
    pub(super) fn sample_usage(&mut self, now: Instant) {
        for w in self.workers.values_mut() {
            w.usage.sample(w.pid, now);
        }
        let seg = &self.registry.segment;
        let http = HttpRows {
            requests: seg.per_row(series::HTTP_REQUESTS, |_| true),
            in_flight: seg.per_row(series::HTTP_IN_FLIGHT, |_| true),
            duration: seg.per_row(series::HTTP_DURATION, |_| true),
        };
        self.latency_bounds = http
            .duration
            .as_ref()
            .map(|d| d.bounds.clone())
            .unwrap_or_default();
        for (g, group) in self.groups.iter_mut().enumerate() {
            for (s, slot) in group.slots.iter_mut().enumerate() {
                if let Some(row) = self.registry.row(g, s) {
                    let (requests, buckets, in_flight) = http.row(row);
                    slot.window.push(now, requests, buckets, in_flight);
                }
            }
        }
    }

    /// Tells systemd what changed: `WATCHDOG=1` when due, and the
    /// summary (`STATUS=`, the first `READY=1`) after a lifecycle event,
    /// or a second after the last look (a crash loop ends with time).
    pub(super) fn service_tick(&mut self, now: Instant) {
        self.notifier.watchdog(now);
        if !self.notifier.active() {
            return;
        }
        let dirty = self.status_dirty.replace(false);
        if dirty
            || self
                .summarized_at
                .is_none_or(|at| now >= at + SUMMARY_EVERY)
        {
            self.summarized_at = Some(now);
            let (text, all_ready) = self.summary(now);
            self.notifier.update(&text, all_ready);
        }
    }

    /// The one-line summary systemd shows (`web 4/4 ready, api 1/1
    /// ready`, `reloading web 2/4; ...`), and whether every group is ready
    /// (the same test as `/readyz`).
    pub(super) fn summary(&self, now: Instant) -> (String, bool) {
        let mut all_ready = self.stopping.is_none() && !self.awaiting_startup_migrations();
        let mut groups = Vec::with_capacity(self.groups.len());
        for g in 0..self.groups.len() {
            let (count, ready, state) = self.group_state(g, now);
            all_ready &= state == GroupState::OK;
            let name = &self.groups[g].name;
            groups.push(match state {
                GroupState::CRASH_LOOPING => format!("{name} {ready}/{count} crash-looping"),
                _ => format!("{name} {ready}/{count} ready"),
            });
        }
        if let Some(b) = self.bridge_status() {
            all_ready &= !(b.required && b.state != BridgeState::CONNECTED);
            groups.push(format!("nats {}", b.state));
        }
        let groups = groups.join(", ");
        let text = if self.stopping.is_some() {
            match self.drain_at {
                Some(_) => format!(
                    "stopping: /readyz fails, draining after server.shutdown_delay; {groups}"
                ),
                None => format!("stopping: {} worker(s) left", self.workers.len()),
            }
        } else if let Some(r) = &self.reload {
            let names: Vec<&str> = r
                .groups
                .iter()
                .map(|g| self.groups[*g].name.as_str())
                .collect();
            format!(
                "reloading {} {}/{}; {groups}",
                names.join(","),
                r.done,
                r.total
            )
        } else if self.migrate_retry.is_some() {
            format!("starting: the migrations failed and are retried (see the log); {groups}")
        } else if self.migrating.is_some() {
            format!("running migrations; {groups}")
        } else {
            groups
        };
        (text, all_ready)
    }

    /// The cluster's status now.
    pub(super) fn status(&self) -> ClusterStatus {
        let now = Instant::now();
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.awaiting_startup_migrations() {
            "starting"
        } else if self.reload.is_some() || self.migrating.is_some() {
            "reloading"
        } else {
            "running"
        };
        ClusterStatus {
            master_pid: self.master_pid,
            version: self.opts.version.clone(),
            uptime_ms: millis(self.started.elapsed()),
            state: state.to_string(),
            reload: self.reload.as_ref().map(|r| ReloadProgress {
                groups: r
                    .groups
                    .iter()
                    .map(|g| self.groups[*g].name.clone())
                    .collect(),
                done: r.done,
                total: r.total,
            }),
            groups: (0..self.groups.len())
                .map(|g| self.group_status(g, now))
                .collect(),
            ipc: self.router_stats(),
            bridge: self.bridge_status(),
        }
    }

    /// The bridge's state, from its worker's phase and its registry row,
    /// when `[bridge]` is on.
    fn bridge_status(&self) -> Option<BridgeStatus> {
        let cfg = &self.opts.config.bridge;
        let g = self.groups.iter().position(|g| g.is_bridge())?;
        let seg = &self.registry.segment;
        let total = |name: &str| -> u64 {
            seg.per_row(name, |_| true)
                .map_or(0, |p| p.rows.iter().filter_map(|r| r.first()).sum())
        };
        let ready = self.groups[g]
            .slots
            .first()
            .and_then(|slot| slot.current)
            .and_then(|c| self.workers.get(&c))
            .is_some_and(|w| w.phase == Phase::Ready);
        let connected = self.registry.row(g, 0).is_some_and(|row| {
            seg.per_row(series::BRIDGE_CONNECTED, |_| true)
                .and_then(|p| p.rows.get(row as usize).and_then(|r| r.first().copied()))
                .is_some_and(|v| v as i64 > 0)
        });
        let state = match (ready, connected) {
            (false, _) => BridgeState::DOWN,
            (true, true) => BridgeState::CONNECTED,
            (true, false) => BridgeState::DISCONNECTED,
        };
        Some(BridgeStatus {
            url: cfg.redacted_url(),
            topics: cfg.topics.clone(),
            state: state.to_owned(),
            required: cfg.required,
            sent: total(series::BRIDGE_SENT),
            received: total(series::BRIDGE_RECEIVED),
            dropped: total(series::BRIDGE_DROPPED),
        })
    }

    fn group_status(&self, g: usize, now: Instant) -> GroupStatus {
        let group = &self.groups[g];
        let mut workers: Vec<(&WorkerProc, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.group == g)
            .map(|(serial, w)| (w, *serial))
            .collect();
        workers.sort_by_key(|(w, serial)| (w.slot, *serial));
        let mut list = Vec::new();
        for (s, slot) in group.slots.iter().enumerate() {
            let mut any = false;
            for (w, serial) in workers.iter().filter(|(w, _)| w.slot == s) {
                let mut status = self.worker_status(w, slot, now);
                // The serving worker while its replacement boots.
                if status.reason.is_none() && slot.current == Some(*serial) {
                    let why = slot
                        .replacement
                        .and_then(|r| self.workers.get(&r)?.replaces);
                    status.reason = why.map(|why| why.name().to_string());
                }
                list.push(status);
                any = true;
            }
            if !any {
                list.push(waiting(s, slot, now));
            }
        }
        // Workers of removed slots, still draining.
        for (w, _) in workers.iter().filter(|(w, _)| w.slot >= group.slots.len()) {
            list.push(self.worker_status(w, &Slot::default(), now));
        }
        let (count, ready, state) = self.group_state(g, now);
        GroupStatus {
            name: group.name.clone(),
            worker: group.cfg.worker.clone().unwrap_or_default(),
            listen: group.listeners.addr().to_string(),
            listen_mode: group.listeners.mode().to_string(),
            count,
            ready,
            state: state.to_string(),
            last_exit: group.last_exit.clone(),
            workers: list,
        }
    }

    /// A group's desired count, its ready slots, and its state (`ok`,
    /// `degraded`, `crash-looping`).
    fn group_state(&self, g: usize, now: Instant) -> (u32, u32, &'static str) {
        let group = &self.groups[g];
        let ready = group
            .slots
            .iter()
            .filter(|slot| {
                slot.current
                    .and_then(|c| self.workers.get(&c))
                    .is_some_and(|w| w.phase == Phase::Ready)
            })
            .count() as u32;
        let policy = group.restart_policy();
        let crash_looping = group.slots.iter().any(|slot| {
            let ready_for = slot
                .current
                .and_then(|c| self.workers.get(&c))
                .and_then(|w| w.ready_at)
                .map(|t| now - t);
            policy.crash_looping(slot.strikes, ready_for)
        });
        let count = group.slots.len() as u32;
        let state = if crash_looping {
            GroupState::CRASH_LOOPING
        } else if ready < count {
            GroupState::DEGRADED
        } else {
            GroupState::OK
        };
        (count, ready, state)
    }

    fn worker_status(&self, w: &WorkerProc, slot: &Slot, now: Instant) -> WorkerStatus {
        let (requests_per_sec, p99_ms) = slot.window.rates(&self.latency_bounds);
        WorkerStatus {
            slot: w.slot as u32,
            pid: Some(w.pid),
            state: w.phase.name().to_string(),
            generation: w.generation,
            uptime_ms: millis(w.started.elapsed()),
            restarts: slot.restarts,
            heartbeat_age_ms: (w.phase == Phase::Ready).then(|| millis(now - w.last_heartbeat)),
            rss_bytes: w.usage.rss,
            cpu_percent: (w.usage.cpu_percent * 10.0).round() / 10.0,
            in_flight: slot.window.in_flight,
            requests_total: slot.window.requests_total(),
            requests_per_sec: (requests_per_sec * 10.0).round() / 10.0,
            p99_ms: p99_ms.map(|v| (v * 1000.0).round() / 1000.0),
            reason: w.drain_reason.clone().or_else(|| w.recycle.clone()),
            restart_in_ms: None,
            last_exit: slot.last_exit.clone(),
        }
    }

    /// Records how a worker ended, in its slot (and its group, when it was
    /// unexpected).
    pub(super) fn record_exit(
        &mut self,
        w: &WorkerProc,
        status: std::process::ExitStatus,
        reason: &str,
        unexpected: bool,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let info = ExitInfo {
            pid: w.pid,
            status: crate::spawn::describe_exit(status),
            code: status.code(),
            signal: status.signal(),
            reason: reason.to_string(),
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, millis),
        };
        let group = &mut self.groups[w.group];
        if unexpected {
            group.last_exit = Some(info.clone());
        }
        if let Some(slot) = group.slots.get_mut(w.slot) {
            if unexpected {
                slot.restarts += 1;
            }
            slot.last_exit = Some(info);
        }
    }
}

/// A slot without a process: waiting for its restart.
fn waiting(s: usize, slot: &Slot, now: Instant) -> WorkerStatus {
    WorkerStatus {
        slot: s as u32,
        pid: None,
        state: "waiting".to_string(),
        generation: slot.next_generation,
        uptime_ms: 0,
        restarts: slot.restarts,
        heartbeat_age_ms: None,
        rss_bytes: 0,
        cpu_percent: 0.0,
        in_flight: slot.window.in_flight,
        requests_total: slot.window.requests_total(),
        requests_per_sec: 0.0,
        p99_ms: None,
        reason: slot.last_exit.as_ref().map(|e| e.reason.clone()),
        restart_in_ms: slot
            .restart_at
            .map(|at| millis(at.saturating_duration_since(now))),
        last_exit: slot.last_exit.clone(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A process's resident set size, from `/proc/PID/statm`; 0 if unknown.
pub(super) fn rss_bytes(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf with a constant name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.saturating_mul(u64::try_from(page).unwrap_or(4096))
}

/// User plus system CPU time of a process, in clock ticks, from
/// `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count the
    // fields after it. utime and stime are fields 14 and 15 (1-based),
    // that is the 12th and 13th after the name.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf with a constant name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rates_from_the_first_and_last_samples() {
        let mut w = Window::default();
        let t0 = Instant::now();
        let bounds = [0.001, 0.01];
        w.push(t0, 100, vec![10, 0, 0], 0);
        w.push(t0 + Duration::from_secs(2), 300, vec![10, 200, 0], 3);
        let (rps, p99) = w.rates(&bounds);
        assert!((rps - 100.0).abs() < 1e-9, "{rps}");
        let p99 = p99.unwrap();
        assert!(
            p99 > 1.0 && p99 <= 10.0,
            "p99 in the (1, 10] ms bucket: {p99}"
        );
        assert_eq!((w.requests_total(), w.in_flight), (300, 3));
        // Samples older than the window fall out.
        w.push(t0 + Duration::from_secs(20), 300, vec![10, 200, 0], 0);
        assert_eq!(w.samples.len(), 1);
        assert_eq!(w.rates(&bounds), (0.0, None));
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let pid = std::process::id();
        assert!(rss_bytes(pid) > 0);
        assert!(cpu_ticks(pid).is_some());
        assert_eq!(rss_bytes(u32::MAX), 0);
    }
}
