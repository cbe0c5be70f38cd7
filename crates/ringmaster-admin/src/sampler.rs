//! The dashboard's data: once a second, the master's status (over IPC),
//! the registry (read in place) turned into per-group rates, and the new
//! log lines. The last five minutes are kept, so a dashboard opened now
//! draws its charts at once; every open dashboard gets the same tick.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ringmaster_registry::{Snapshot, Value, quantile, series};
use ringmaster_worker::{ClusterStatus, Ipc, LogLine, Registry};
use serde::Serialize;
use tokio::sync::broadcast;

/// One sample a second.
pub(crate) const EVERY: Duration = Duration::from_secs(1);
/// Five minutes of samples.
const HISTORY: usize = 300;
/// Log lines kept for a new dashboard, and asked of the master per tick.
const LOG_TAIL: usize = 500;

/// One second of the cluster, as the charts draw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) t: u64,
    /// Per group: requests/s, latency and 5xx/s over the last second.
    pub(crate) groups: BTreeMap<String, GroupPoint>,
    /// Resident memory per worker, by `group/slot`.
    pub(crate) rss: BTreeMap<String, u64>,
    /// Slots whose worker exited unexpectedly during the second.
    pub(crate) restarts: Vec<Restart>,
}

/// One group's second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GroupPoint {
    pub(crate) rps: f64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) errors_per_sec: f64,
}

/// A restart mark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Restart {
    pub(crate) group: String,
    pub(crate) slot: u32,
}

/// The registry's HTTP figures of one group, cumulative.
#[derive(Debug, Clone, Default, PartialEq)]
struct GroupTotals {
    requests: u64,
    errors: u64,
    /// Latency bucket counts (not cumulative), `+Inf` last.
    buckets: Vec<u64>,
}

/// What the sampler keeps: the history, the recent log lines and the
/// latest status, behind one lock the SSE handlers take briefly.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) history: VecDeque<Point>,
    pub(crate) logs: VecDeque<LogLine>,
    pub(crate) status: Option<ClusterStatus>,
}

/// The sampler's shared side: its state and the ticks it broadcasts (each
/// already serialized, so a hundred open dashboards cost one encoding).
#[derive(Clone)]
pub(crate) struct Feed {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) ticks: broadcast::Sender<Arc<str>>,
}

impl Feed {
    pub(crate) fn new() -> Self {
        Feed {
            state: Arc::new(Mutex::new(State::default())),
            ticks: broadcast::channel(16).0,
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `snapshot` event's data: history, status and log tail.
    pub(crate) fn snapshot_json(&self) -> String {
        let state = self.lock();
        serde_json::json!({
            "history": state.history,
            "status": state.status,
            "logs": state.logs,
        })
        .to_string()
    }
}

/// Samples until `stop` completes.
pub(crate) async fn run(feed: Feed, ipc: Ipc, registry: Registry, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        let status = ipc.status().await.ok();
        let logs = match ipc.logs(sampler.log_cursor, LOG_TAIL as u32).await {
            Ok(l) => {
                sampler.log_cursor = l.next;
                let mut lines = l.lines;
                if l.skipped > 0 && sampler.log_cursor > 0 {
                    lines.insert(0, skipped_line(l.skipped));
                }
                lines
            }
            Err(_) => Vec::new(),
        };
        let point = sampler.point(&registry.snapshot(), status.as_ref());
        let tick = serde_json::json!({"point": point, "status": status, "logs": logs}).to_string();
        {
            let mut state = feed.lock();
            state.history.push_back(point);
            while state.history.len() > HISTORY {
                state.history.pop_front();
            }
            state.logs.extend(logs);
            while state.logs.len() > LOG_TAIL {
                state.logs.pop_front();
            }
            state.status = status;
        }
        let _ = feed.ticks.send(tick.into());
    }
}

fn skipped_line(n: u64) -> LogLine {
    LogLine {
        seq: 0,
        group: "master".into(),
        slot: None,
        level: Some(ringmaster_worker::LogLevel::Warn),
        text: format!("[{n} lines skipped: more than the dashboard shows per second]"),
    }
}

/// What one sample needs of the previous one.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    last: Option<(Instant, HashMap<String, GroupTotals>)>,
    restarts: HashMap<(String, u32), u64>,
    bounds: Vec<f64>,
    log_cursor: u64,
}

impl Sampler {
    /// The point for now, from the registry and the master's status.
    pub(crate) fn point(&mut self, snap: &Snapshot, status: Option<&ClusterStatus>) -> Point {
        let now = Instant::now();
        let totals = self.group_totals(snap);
        let mut groups = BTreeMap::new();
        if let Some((at, before)) = &self.last {
            let secs = (now - *at).as_secs_f64().max(1e-3);
            for (name, t) in &totals {
                let b = before.get(name).cloned().unwrap_or_default();
                let delta: Vec<u64> = t
                    .buckets
                    .iter()
                    .zip(b.buckets.iter().chain(std::iter::repeat(&0)))
                    .map(|(x, y)| x.saturating_sub(*y))
                    .collect();
                let ms = |q| quantile(&self.bounds, &delta, q).map(|s| round(s * 1e3, 3));
                groups.insert(
                    name.clone(),
                    GroupPoint {
                        rps: round(t.requests.saturating_sub(b.requests) as f64 / secs, 1),
                        p50_ms: ms(0.5),
                        p99_ms: ms(0.99),
                        errors_per_sec: round(t.errors.saturating_sub(b.errors) as f64 / secs, 2),
                    },
                );
            }
        }
        self.last = Some((now, totals));
        let (rss, restarts) = match status {
            Some(s) => (rss_by_worker(s), self.new_restarts(s)),
            None => (BTreeMap::new(), Vec::new()),
        };
        Point {
            t: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            groups,
            rss,
            restarts,
        }
    }

    /// Requests, 5xx and latency buckets per group, from the built-in
    /// HTTP series.
    fn group_totals(&mut self, snap: &Snapshot) -> HashMap<String, GroupTotals> {
        let mut out: HashMap<String, GroupTotals> = HashMap::new();
        let label = |labels: &[(String, String)], k: &str| {
            labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        for s in &snap.series {
            let Some(group) = label(&s.labels, "group") else {
                continue;
            };
            match (s.name.as_str(), &s.value) {
                (series::HTTP_REQUESTS, Value::Counter(n)) => {
                    let t = out.entry(group).or_default();
                    t.requests += n;
                    if label(&s.labels, "status").is_some_and(|st| st.starts_with('5')) {
                        t.errors += n;
                    }
                }
                (series::HTTP_DURATION, Value::Histogram { buckets, .. }) => {
                    self.bounds = buckets
                        .iter()
                        .map(|(b, _)| *b)
                        .filter(|b| b.is_finite())
                        .collect();
                    let t = out.entry(group).or_default();
                    t.buckets.resize(buckets.len(), 0);
                    let mut below = 0;
                    for (i, (_, cumulative)) in buckets.iter().enumerate() {
                        t.buckets[i] += cumulative.saturating_sub(below);
                        below = *cumulative;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Slots whose restart count grew since the last status.
    fn new_restarts(&mut self, status: &ClusterStatus) -> Vec<Restart> {
        let mut out = Vec::new();
        for g in &status.groups {
            for w in &g.workers {
                let key = (g.name.clone(), w.slot);
                let before = self.restarts.insert(key, w.restarts);
                if before.is_some_and(|b| w.restarts > b) {
                    out.push(Restart {
                        group: g.name.clone(),
                        slot: w.slot,
                    });
                }
            }
        }
        out.dedup();
        out
    }
}

/// Resident memory by `group/slot`: the slot's serving worker (a reload's
/// replacement while it boots is not counted twice).
fn rss_by_worker(status: &ClusterStatus) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for g in &status.groups {
        for w in g.workers.iter().filter(|w| w.pid.is_some()) {
            let key = format!("{}/{}", g.name, w.slot);
            let serving = w.state == "ready";
            let entry = out.entry(key).or_insert(0);
            if serving || *entry == 0 {
                *entry = w.rss_bytes;
            }
        }
    }
    out
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster_registry::{Kind, Sample};

    fn counter(group: &str, status: &str, n: u64) -> Sample {
        Sample {
            name: series::HTTP_REQUESTS.into(),
            kind: Kind::Counter,
            labels: vec![
                ("group".into(), group.into()),
                ("status".into(), status.into()),
            ],
            help: String::new(),
            value: Value::Counter(n),
        }
    }

    fn latency(group: &str, cumulative: [u64; 3]) -> Sample {
        Sample {
            name: series::HTTP_DURATION.into(),
            kind: Kind::Histogram,
            labels: vec![("group".into(), group.into())],
            help: String::new(),
            value: Value::Histogram {
                buckets: vec![
                    (0.001, cumulative[0]),
                    (0.01, cumulative[1]),
                    (f64::INFINITY, cumulative[2]),
                ],
                count: cumulative[2],
                sum: 0.0,
            },
        }
    }

    #[test]
    fn points_are_per_group_rates_over_the_last_second() {
        let mut s = Sampler::default();
        let first = Snapshot {
            series: vec![counter("web", "200", 100), latency("web", [100, 100, 100])],
        };
        assert!(
            s.point(&first, None).groups.is_empty(),
            "no rate from one sample"
        );
        std::thread::sleep(Duration::from_millis(100));
        let second = Snapshot {
            series: vec![
                counter("web", "200", 150),
                counter("web", "503", 10),
                latency("web", [100, 160, 160]),
            ],
        };
        let p = s.point(&second, None);
        let web = &p.groups["web"];
        assert!(web.rps > 100.0, "60 requests in about 0.1 s: {}", web.rps);
        assert!(web.errors_per_sec > 0.0);
        let p50 = web.p50_ms.unwrap();
        assert!(
            p50 > 1.0 && p50 <= 10.0,
            "every new request in (1, 10] ms: {p50}"
        );
    }
}
