//! The worker's end of the cluster-wide registry: [`Registry`], reached as
//! `ctx.registry()` or `init.registry()`, and its handles [`Counter`],
//! [`Gauge`] and [`Histogram`].
//!
//! A handle writes to this worker's row of the master's shared segment
//! with one relaxed atomic operation: no lock, no syscall, no message.
//! Creating a handle registers its series with the master over IPC, once
//! per name and labels per worker; until the master's answer arrives (well
//! under a millisecond) the handle counts in a private cell, then moves
//! those counts into the shared row. `value()` reads the cluster-wide
//! total: every worker's row plus the retired row of removed slots.
//!
//! Outside a cluster (app tests), or when the master had no row left for
//! this worker, the registry is a private segment: everything works, the
//! totals are this process's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringmaster_proto::MetricKind;
use ringmaster_registry::{DEFAULT_BUCKETS, Kind, Segment, Snapshot};

use crate::ipc::Ipc;

/// After a series is attached to the shared row, its private cells are
/// moved over again at these delays, for increments that raced the move.
const LATE_FLUSHES: [Duration; 2] = [Duration::from_millis(10), Duration::from_secs(1)];
/// Size of the private segment outside a cluster.
const LOCAL_SIZE: usize = 4 << 20;

type Key = (String, Vec<(String, String)>);

/// The registry handle; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    segment: &'static Segment,
    row: u32,
    /// `None`: the segment is private, series are registered in it here.
    ipc: Option<Ipc>,
    series: Mutex<HashMap<Key, Arc<Series>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("row", &self.inner.row)
            .field("shared", &self.inner.ipc.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// The master's segment, mapped from its fd; this worker writes `row`.
    pub(crate) fn shared(segment: Segment, row: u32, ipc: Ipc) -> Self {
        Self::new(Box::leak(Box::new(segment)), row, Some(ipc))
    }

    /// A registry of this process alone (tests, tools, or no row left).
    pub fn local() -> Result<Self, ringmaster_registry::RegistryError> {
        let segment = Segment::create(LOCAL_SIZE, 1)?;
        Ok(Self::new(Box::leak(Box::new(segment)), 0, None))
    }

    fn new(segment: &'static Segment, row: u32, ipc: Option<Ipc>) -> Self {
        Registry {
            inner: Arc::new(Inner {
                segment,
                row,
                ipc,
                series: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A counter named `name`, described by `help`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        Counter(self.series(name, help, Kind::Counter, &[], &[]))
    }

    /// A counter with labels (a small, fixed set of values per label).
    pub fn counter_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels, &[]))
    }

    /// A gauge (an integer that goes up and down).
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, &[], &[]))
    }

    /// A gauge with labels.
    pub fn gauge_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels, &[]))
    }

    /// A histogram with `buckets` (finite upper bounds, ascending; `+Inf`
    /// is implied), or [`DEFAULT_BUCKETS`] (latencies in seconds) if empty.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.histogram_with(name, help, &[], buckets)
    }

    /// A histogram with labels.
    pub fn histogram_with(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Histogram {
        let buckets = if buckets.is_empty() {
            &DEFAULT_BUCKETS[..]
        } else {
            buckets
        };
        Histogram(self.series(name, help, Kind::Histogram, labels, buckets))
    }

    /// Every series of the cluster (of this process, for a private
    /// registry), read at once: render it with
    /// [`Snapshot::to_prometheus`] or [`Snapshot::to_json`].
    pub fn snapshot(&self) -> Snapshot {
        self.inner.segment.snapshot()
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Arc<Series> {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let key = (name.to_string(), labels);
        let mut map = lock(&self.inner.series);
        if let Some(s) = map.get(&key) {
            return s.clone();
        }
        let series = Arc::new(Series {
            kind,
            bounds: if kind == Kind::Histogram {
                buckets.to_vec()
            } else {
                Vec::new()
            },
            shared: OnceLock::new(),
            pending: (0..kind.cells(buckets.len()))
                .map(|_| AtomicU64::new(0))
                .collect(),
            segment: self.inner.segment,
        });
        map.insert(key.clone(), series.clone());
        drop(map);
        self.attach(series.clone(), key, help);
        series
    }

    /// Registers `series` (with the master, or in the private segment)
    /// and points it at this worker's row once it has an index.
    fn attach(&self, series: Arc<Series>, key: Key, help: &str) {
        let (name, labels) = key;
        let row = self.inner.row;
        let segment = self.inner.segment;
        let Some(ipc) = self.inner.ipc.clone() else {
            match segment.register(&name, help, series.kind, &labels, &series.bounds) {
                Ok(index) => series.attach(index, segment.cells(index, row)),
                Err(e) => {
                    tracing::warn!(error = %e, "metric not registered; it counts in this process only")
                }
            }
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(metric = %name, "a metric created outside the runtime counts in this process only");
            return;
        };
        let help = help.to_string();
        let kind = match series.kind {
            Kind::Counter => MetricKind::Counter,
            Kind::Gauge => MetricKind::Gauge,
            Kind::Histogram => MetricKind::Histogram,
        };
        runtime.spawn(async move {
            let buckets = series.bounds.clone();
            match ipc.register(&name, &help, kind, labels, buckets).await {
                Ok(index) => {
                    series.attach(index, segment.cells(index, row));
                    for delay in LATE_FLUSHES {
                        tokio::time::sleep(delay).await;
                        series.flush();
                    }
                }
                Err(e) => tracing::warn!(
                    metric = %name,
                    error = %e,
                    "the master refused a metric; it counts in this process only"
                ),
            }
        });
    }
}

/// One series as this worker writes it.
struct Series {
    kind: Kind,
    bounds: Vec<f64>,
    /// The index and this worker's row of cells, once registered.
    shared: OnceLock<(u32, &'static [AtomicU64])>,
    /// Counts made before that, moved over by `flush`.
    pending: Box<[AtomicU64]>,
    segment: &'static Segment,
}

impl Series {
    #[inline]
    fn cells(&self) -> &[AtomicU64] {
        match self.shared.get() {
            Some((_, cells)) => cells,
            None => &self.pending,
        }
    }

    fn attach(&self, index: u32, cells: &'static [AtomicU64]) {
        if cells.len() != self.pending.len() {
            tracing::warn!(
                "a metric's shape in the registry differs; it counts in this process only"
            );
            return;
        }
        if self.shared.set((index, cells)).is_ok() {
            self.flush();
        }
    }

    /// Moves what the private cells hold into the shared row.
    fn flush(&self) {
        let Some((_, shared)) = self.shared.get() else {
            return;
        };
        let last = self.pending.len() - 1;
        for (i, (p, s)) in self.pending.iter().zip(shared.iter()).enumerate() {
            let v = p.swap(0, Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            if self.kind == Kind::Histogram && i == last {
                ringmaster_registry::add_f64(s, f64::from_bits(v));
            } else {
                s.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    /// The cluster-wide sum of a counter or gauge.
    fn total(&self) -> u64 {
        let own = self.pending[0].load(Ordering::Relaxed);
        match self.shared.get() {
            Some((index, _)) => self.segment.sum(*index).wrapping_add(own),
            None => own,
        }
    }
}

/// A counter handle: [`inc`](Self::inc), [`add`](Self::add),
/// [`value`](Self::value). Cheap to clone.
#[derive(Clone)]
pub struct Counter(Arc<Series>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.cells()[0].fetch_add(n, Ordering::Relaxed);
    }

    /// The cluster-wide total.
    pub fn value(&self) -> u64 {
        self.0.total()
    }
}

/// A gauge handle (an integer). Each worker sets or moves its own share;
/// [`value`](Self::value) is the sum over the cluster, and a worker's
/// share is cleared when it exits.
#[derive(Clone)]
pub struct Gauge(Arc<Series>);

impl Gauge {
    /// Sets this worker's share.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.cells()[0].store(v as u64, Ordering::Relaxed);
    }

    /// Adds `n` (negative to subtract) to this worker's share.
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.cells()[0].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }

    /// The sum of every worker's share.
    pub fn value(&self) -> i64 {
        self.0.total() as i64
    }
}

/// A histogram handle: [`observe`](Self::observe) a value, or a duration
/// in seconds.
#[derive(Clone)]
pub struct Histogram(Arc<Series>);

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        ringmaster_registry::observe(self.0.cells(), &self.0.bounds, v);
    }

    /// Records a duration, in seconds.
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_registry_counts_and_renders() {
        let r = Registry::local().unwrap();
        let c = r.counter("jobs_total", "Jobs done.");
        c.inc();
        c.add(4);
        assert_eq!(c.value(), 5);
        assert_eq!(
            r.counter("jobs_total", "Jobs done.").value(),
            5,
            "one series per name"
        );
        let g = r.gauge_with("queue_depth", "Jobs waiting.", &[("queue", "mail")]);
        g.set(7);
        g.dec();
        assert_eq!(g.value(), 6);
        let h = r.histogram("job_seconds", "Job durations.", &[]);
        h.observe_duration(Duration::from_millis(3));
        let text = r.snapshot().to_prometheus();
        assert!(text.contains("jobs_total 5"), "{text}");
        assert!(text.contains("queue_depth{queue=\"mail\"} 6"), "{text}");
        assert!(
            text.contains("job_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn an_invalid_name_counts_locally_and_says_why() {
        let r = Registry::local().unwrap();
        let c = r.counter("9 bad", "Bad.");
        c.inc();
        assert_eq!(c.value(), 1, "kept in the private cell");
        assert!(r.snapshot().series.is_empty());
    }
}
