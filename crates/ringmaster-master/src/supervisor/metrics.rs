//! The registry segment from the master's side: creating it, giving each
//! worker slot its row, registering series for workers, folding the rows
//! of removed slots, and the master's own series (per-worker figures it
//! observes, IPC counters), which it writes in the retired row.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringmaster_proto::{MasterMsg, MetricKind, WorkerMsg};
use ringmaster_registry::{Kind, Segment, series};
use tokio::time::Instant;

use super::{Phase, Supervisor, WorkerProc};

/// How often the master refreshes its own series.
const REFRESH: Duration = Duration::from_secs(1);

/// The registry and the master's bookkeeping of it.
#[derive(Debug)]
pub(super) struct Registry {
    pub(super) segment: Segment,
    /// (group, slot) -> row.
    rows: HashMap<(usize, usize), u32>,
    free: Vec<u32>,
    /// The master's own series, by name and labels.
    own: HashMap<(String, Vec<(String, String)>), u32>,
    /// The last value set of each of the master's own counters: a set
    /// adds the difference, so what the cell held before (an upgraded
    /// master's copy of the old one's counts) is kept.
    last_set: HashMap<u32, u64>,
    refreshed: Option<Instant>,
    /// Workers already warned about a refused registration.
    warned: std::collections::HashSet<u64>,
}

impl Registry {
    pub(super) fn new(segment: Segment) -> Self {
        let free = (0..segment.rows()).rev().collect();
        Registry {
            segment,
            rows: HashMap::new(),
            free,
            own: HashMap::new(),
            last_set: HashMap::new(),
            refreshed: None,
            warned: std::collections::HashSet::new(),
        }
    }

    /// The row of slot `s` of group `g`, if it has one.
    pub(super) fn row(&self, g: usize, s: usize) -> Option<u32> {
        self.rows.get(&(g, s)).copied()
    }

    /// The row of slot `s` of group `g`, given one if it has none yet;
    /// `None` when every row is taken (`server.registry_slots`).
    pub(super) fn row_for(&mut self, g: usize, s: usize) -> Option<u32> {
        if let Some(row) = self.rows.get(&(g, s)) {
            return Some(*row);
        }
        let row = self.free.pop()?;
        self.rows.insert((g, s), row);
        Some(row)
    }

    /// Sets (`add == false`) or adds to one of the master's own series.
    fn put(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, String)],
        v: u64,
        add: bool,
    ) {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let key = (name.to_string(), labels);
        let index = match self.own.get(&key) {
            Some(i) => *i,
            None => match self.segment.register(name, help, kind, &key.1, &[]) {
                Ok(i) => {
                    self.own.insert(key, i);
                    i
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a master metric cannot be recorded");
                    return;
                }
            },
        };
        if let Some(cell) = self
            .segment
            .cells(index, self.segment.retired_row())
            .first()
        {
            if add {
                cell.fetch_add(v, Ordering::Relaxed);
            } else if kind == Kind::Counter {
                let last = self.last_set.insert(index, v).unwrap_or(0);
                cell.fetch_add(v.saturating_sub(last), Ordering::Relaxed);
            } else {
                cell.store(v, Ordering::Relaxed);
            }
        }
    }
}

fn kind(k: MetricKind) -> Option<Kind> {
    match k {
        MetricKind::Counter => Some(Kind::Counter),
        MetricKind::Gauge => Some(Kind::Gauge),
        MetricKind::Histogram => Some(Kind::Histogram),
        _ => None,
    }
}

fn slot_labels(group: &str, slot: usize) -> [(&'static str, String); 2] {
    [("group", group.to_string()), ("slot", slot.to_string())]
}

impl Supervisor {
    /// Registers a series for a worker (`msg` is its `Register`) and
    /// tells it the index.
    pub(super) fn on_register(&mut self, serial: u64, msg: WorkerMsg) {
        let WorkerMsg::Register {
            id,
            name,
            help,
            kind: metric,
            labels,
            buckets,
        } = msg
        else {
            return;
        };
        self.count_received();
        // `ringmaster_` series are the master's (and the one each worker
        // keeps of its own log drops, and the bridge worker's own): a
        // worker may not forge them.
        let bridge = self
            .workers
            .get(&serial)
            .is_some_and(|w| self.groups[w.group].is_bridge());
        if name.starts_with(series::RESERVED_PREFIX)
            && name != series::WORKER_LOG_LINES_DROPPED
            && !(bridge && name.starts_with(series::BRIDGE_PREFIX))
        {
            let result = Err(format!(
                "metric {name:?}: names starting with `ringmaster_` are ringmaster's own; pick another prefix"
            ));
            self.send(serial, &MasterMsg::Registered { id, result });
            return;
        }
        let result = match kind(metric) {
            Some(k) => self
                .registry
                .segment
                .register(&name, &help, k, &labels, &buckets)
                .map_err(|e| e.to_string()),
            None => Err(format!("metric {name:?}: unknown kind")),
        };
        if let Err(e) = &result
            && self.registry.warned.insert(serial)
        {
            // Once per worker: a worker registering in a loop must not
            // flood the log.
            let w = self.workers.get(&serial);
            tracing::warn!(
                group = w.map(|w| w.origin.group.as_str()),
                slot = w.map(|w| w.slot),
                error = %e,
                "a worker's metric was refused"
            );
        }
        self.send(serial, &MasterMsg::Registered { id, result });
    }

    /// After a worker exited: its row's gauges are cleared (unless another
    /// process of the slot still uses the row, during a reload); a row of
    /// a removed slot is folded once more and freed.
    pub(super) fn registry_on_exit(&mut self, w: &WorkerProc) {
        let Some(row) = w.row else {
            return;
        };
        let shared = self.workers.values().any(|o| o.row == Some(row));
        if self.registry.rows.get(&(w.group, w.slot)) == Some(&row) {
            if !shared {
                self.registry.segment.clear_gauges(row);
            }
        } else if !shared {
            // The slot was removed while this worker drained: what it
            // counted since then joins the retired row too.
            self.registry.segment.fold_row(row);
            self.registry.free.push(row);
        }
    }

    /// Counts a restart of slot `s` of group `g` (an unexpected exit).
    pub(super) fn registry_count_restart(&mut self, g: usize, s: usize) {
        let group = self.groups[g].name.clone();
        self.registry.put(
            series::WORKER_RESTARTS,
            "Workers of this slot that exited unexpectedly and were restarted.",
            Kind::Counter,
            &slot_labels(&group, s),
            1,
            true,
        );
    }

    /// A slot was removed (scale down): its row folds into the retired
    /// row, so no counter goes backwards; the row is freed once no process
    /// uses it.
    pub(super) fn registry_on_slot_removed(&mut self, g: usize, s: usize) {
        let group = self.groups[g].name.clone();
        for (name, help) in [
            (series::WORKER_READY, READY_HELP),
            (series::WORKER_UPTIME, UPTIME_HELP),
            (series::WORKER_RSS, RSS_HELP),
        ] {
            self.registry
                .put(name, help, Kind::Gauge, &slot_labels(&group, s), 0, false);
        }
        let Some(row) = self.registry.rows.remove(&(g, s)) else {
            return;
        };
        self.registry.segment.fold_row(row);
        if !self.workers.values().any(|w| w.row == Some(row)) {
            self.registry.free.push(row);
        }
    }

    /// Refreshes the master's own series, at most once per [`REFRESH`]:
    /// per slot whether it is ready, its worker's uptime and RSS; the IPC
    /// counters.
    pub(super) fn registry_tick(&mut self, now: Instant) {
        if self.registry.refreshed.is_some_and(|t| now < t + REFRESH) {
            return;
        }
        self.registry.refreshed = Some(now);
        self.sample_usage(now);
        self.registry_put_slots();
        self.registry_put_ipc();
        self.registry_put_logs();
    }

    /// Per slot: whether its worker is ready, its uptime and its RSS.
    fn registry_put_slots(&mut self) {
        let mut per_slot = Vec::new();
        for group in &self.groups {
            for (s, slot) in group.slots.iter().enumerate() {
                let w = slot.current.and_then(|serial| self.workers.get(&serial));
                let ready = w.is_some_and(|w| w.phase == Phase::Ready);
                let uptime = w.map_or(0, |w| w.started.elapsed().as_secs());
                let rss = w.map_or(0, |w| w.usage.rss);
                per_slot.push((group.name.clone(), s, ready, uptime, rss));
            }
        }
        for (group, s, ready, uptime, rss) in per_slot {
            let labels = slot_labels(&group, s);
            for (name, help, v) in [
                (series::WORKER_READY, READY_HELP, u64::from(ready)),
                (series::WORKER_UPTIME, UPTIME_HELP, uptime),
                (series::WORKER_RSS, RSS_HELP, rss),
            ] {
                self.registry
                    .put(name, help, Kind::Gauge, &labels, v, false);
            }
        }
    }

    /// The router's counters of IPC messages and failed requests.
    fn registry_put_ipc(&mut self) {
        let stats = self.router_stats();
        for (name, help, v) in [
            (
                series::IPC_RECEIVED,
                "IPC messages the master received from workers and handled.",
                stats.received,
            ),
            (
                series::IPC_ROUTED,
                "IPC messages the master queued for workers.",
                stats.routed,
            ),
            (
                series::IPC_DROPPED,
                "IPC messages dropped because a worker's queue was full.",
                stats.dropped,
            ),
            (
                series::IPC_REQUESTS_FAILED,
                "Requests between workers that ended in an error: timeout, refusal or a failing handler.",
                stats.failed_requests,
            ),
        ] {
            self.registry.put(name, help, Kind::Counter, &[], v, false);
        }
    }

    /// The log's counters of lines written and dropped, if the master
    /// keeps the log.
    fn registry_put_logs(&mut self) {
        let Some(logs) = &self.opts.logs else {
            return;
        };
        let stats = logs.stats();
        for (name, help, v) in [
            (
                series::LOG_LINES_WRITTEN,
                "Log lines the master wrote to its sink.",
                stats.written.load(Ordering::Relaxed),
            ),
            (
                series::LOG_LINES_DROPPED,
                "Log lines dropped: the sink was too slow or could not be written.",
                stats.dropped.load(Ordering::Relaxed),
            ),
        ] {
            self.registry.put(name, help, Kind::Counter, &[], v, false);
        }
    }
}

const READY_HELP: &str = "1 when the worker of this slot is ready, else 0.";
const UPTIME_HELP: &str = "Seconds since the worker of this slot started.";
const RSS_HELP: &str = "Resident memory of the worker of this slot, in bytes.";
