//! The worker's end of the cluster-wide registry: [`Registry`], reached as
//! `ctx.registry()` or `init.registry()`, and its handles [`Counter`],
//! [`Gauge`] and [`Histogram`].
//!
//! A handle writes to this worker's row of the master's shared segment
//! with one relaxed atomic operation: no lock, no syscall, no message.
//! Creating a handle registers its series with the master over IPC, once
//! per name and labels per worker. Until the master's answer arrives (well
//! under a millisecond) the handle counts in private cells, each write
//! under the series' lock; the answer takes that lock, moves the private
//! counts into the shared row and points the handle there, so no count
//! made before it is lost or left behind. `value()` reads the cluster-wide
//! total: every worker's row plus the retired row of removed slots (until
//! the answer, this process's count alone).
//!
//! `init` may wait for the answers: [`Registry::attached`] for every handle
//! made so far, or `attached` on one handle ([`Counter::attached`],
//! [`Gauge::attached`], [`Histogram::attached`]). Each says whether the
//! series writes the segment (`false`: it counts in this process only, and
//! a warning said why). No count needs it; a module that reads a
//! cluster-wide value in `init` does:
//!
//! ```
//! use ringmaster_worker::{BootError, Controller, Counter, Init, Module};
//!
//! struct Jobs;
//! struct Done(Counter);
//!
//! impl Module for Jobs {
//!     fn routes(&self) -> Controller {
//!         Controller::new("/")
//!     }
//!     async fn init(&self, init: &mut Init) -> Result<(), BootError> {
//!         let done = init.registry().counter("jobs_done_total", "Jobs done.");
//!         let _failed = init.registry().counter("jobs_failed_total", "Jobs failed.");
//!         // Both registered: from here on `value()` is the cluster's total.
//!         if init.registry().attached().await {
//!             let _so_far = done.value();
//!         }
//!         init.insert(Done(done));
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Outside a cluster (app tests), or when the master had no row left for
//! this worker, the registry is a private segment: everything works, the
//! totals are this process's, and a handle is attached as it is made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringmaster_proto::MetricKind;
use ringmaster_registry::{DEFAULT_BUCKETS, Kind, Segment, Snapshot};
use tokio::sync::Notify;

use crate::ipc::Ipc;

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

    /// Waits until every handle made so far has its registration's
    /// answer: `true` if all of them write the segment, `false` if one
    /// counts in this process only (a warning said which and why).
    ///
    /// Handles made afterwards are not waited for. In a private registry
    /// every handle is attached as it is made.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let registry = ringmaster_worker::Registry::local().unwrap();
    /// let jobs = registry.counter("jobs_total", "Jobs done.");
    /// assert!(registry.attached().await);
    /// jobs.inc();
    /// assert_eq!(registry.snapshot().series.len(), 1);
    /// # });
    /// ```
    pub async fn attached(&self) -> bool {
        let series: Vec<Arc<Series>> = lock(&self.inner.series).values().cloned().collect();
        let mut all = true;
        for s in &series {
            all &= s.attached().await;
        }
        all
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
        let bounds = if kind == Kind::Histogram {
            buckets.to_vec()
        } else {
            Vec::new()
        };
        let series = Arc::new(Series::new(kind, bounds, self.inner.segment));
        map.insert(key.clone(), series.clone());
        drop(map);
        self.attach(series.clone(), key, help);
        series
    }

    /// Registers `series` (with the master, or in the private segment)
    /// and settles it: at this worker's row once it has an index, at its
    /// private cells for good if it gets none.
    fn attach(&self, series: Arc<Series>, key: Key, help: &str) {
        let (name, labels) = key;
        let row = self.inner.row;
        let segment = self.inner.segment;
        let Some(ipc) = self.inner.ipc.clone() else {
            match segment.register(&name, help, series.kind, &labels, &series.bounds) {
                Ok(index) => series.settle(Some((index, segment.cells(index, row)))),
                Err(e) => {
                    tracing::warn!(error = %e, "metric not registered; it counts in this process only");
                    series.settle(None);
                }
            }
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(metric = %name, "a metric created outside the runtime counts in this process only");
            series.settle(None);
            return;
        };
        let help = help.to_string();
        let kind = match series.kind {
            Kind::Counter => MetricKind::Counter,
            Kind::Gauge => MetricKind::Gauge,
            Kind::Histogram => MetricKind::Histogram,
        };
        runtime.spawn(async move {
            // Settles the series however this task ends: also if it is
            // dropped unfinished (the runtime shutting down), so that no
            // `attached` waits for good.
            let series = Unsettled(series);
            let buckets = series.0.bounds.clone();
            match ipc.register(&name, &help, kind, labels, buckets).await {
                Ok(index) => series.0.settle(Some((index, segment.cells(index, row)))),
                Err(e) => tracing::warn!(
                    metric = %name,
                    error = %e,
                    "the master refused a metric; it counts in this process only"
                ),
            }
        });
    }
}

/// Settles its series at the private cells, when dropped, unless it was
/// settled already.
struct Unsettled(Arc<Series>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.settle(None);
    }
}

/// One series as this worker writes it.
///
/// # Moving the private counts without losing one
///
/// `target` is set once, by [`settle`](Self::settle), under `moving`.
/// Until then every write goes through [`write`](Self::write)'s slow path,
/// which takes `moving`, looks at `target` again and writes there, or in
/// `private` if it is still unset. So the writes to `private` and the
/// settling are ordered by the lock, and each write to `private` is one of:
///
/// - before the settling's critical section: its unlock synchronizes with
///   the settling's lock, so it happens before the settling's `swap`,
///   which (a read-modify-write, coherent with what happened before it)
///   reads it or a later value, and moves it;
/// - after it: it reads `target` set (the `set` happens before the unlock,
///   which happens before this lock) and writes the shared row instead.
///
/// The fast path writes the shared row only after its (acquire) load of
/// `target` saw the value `settle` stored after the move, so the move
/// happens before every write of the fast path: the moved counts are in
/// the row before any later operation, which keeps [`Gauge::set`] exact (a
/// `set` after the move is not followed by an old count landing on top).
/// After settling at the row, `private` is never written again and holds
/// zero; settled at `private` (no index), the handle writes it, lock-free,
/// for good. Plain relaxed atomics suffice inside: the lock and the
/// `OnceLock` carry the ordering.
///
/// The alternative without a lock (add to `private`, then re-check
/// `target` with `SeqCst` and move one's own count over, the settling
/// publishing `target` before its `swap`) keeps counters and histograms
/// exact, but not gauges: the settling's moved counts are in flight, out
/// of both cells, while a fast-path `set` may already have written the
/// row, and land on top of it (`add(3)` returns, then `set(7)` leaves 10).
/// The lock costs nothing once settled: it is only taken before.
struct Series {
    kind: Kind,
    bounds: Vec<f64>,
    /// Where the handle writes for good, once registered (or refused).
    target: OnceLock<Target>,
    /// The counts made before that, moved to the shared row by `settle`.
    private: Box<[AtomicU64]>,
    /// Taken by `settle` and by every write before `target` is set.
    moving: Mutex<()>,
    /// Woken once `target` is set.
    settled: Notify,
    segment: &'static Segment,
}

/// Where a settled series writes.
enum Target {
    /// This worker's row of series `index` in the segment.
    Shared {
        index: u32,
        cells: &'static [AtomicU64],
    },
    /// Its private cells: the series has no index (refused, or no runtime
    /// to ask in).
    Private,
}

impl Series {
    fn new(kind: Kind, bounds: Vec<f64>, segment: &'static Segment) -> Self {
        Series {
            private: (0..kind.cells(bounds.len()))
                .map(|_| AtomicU64::new(0))
                .collect(),
            kind,
            bounds,
            target: OnceLock::new(),
            moving: Mutex::new(()),
            settled: Notify::new(),
            segment,
        }
    }

    /// Runs `op` on the cells the handle writes now: the fast path is one
    /// acquire load, then `op`'s atomic operations.
    #[inline]
    fn write(&self, op: impl FnOnce(&[AtomicU64])) {
        match self.target.get() {
            Some(Target::Shared { cells, .. }) => op(cells),
            Some(Target::Private) => op(&self.private),
            None => self.write_unsettled(op),
        }
    }

    /// [`write`](Self::write) before the registration's answer: under the
    /// lock `settle` takes (see [`Series`]).
    #[cold]
    #[inline(never)]
    fn write_unsettled(&self, op: impl FnOnce(&[AtomicU64])) {
        let _moving = lock(&self.moving);
        match self.target.get() {
            Some(Target::Shared { cells, .. }) => op(cells),
            Some(Target::Private) | None => op(&self.private),
        }
    }

    /// Points the handle at `shared` (its index and this worker's row of
    /// cells), moving the private counts there, or at the private cells
    /// (`None`), for good; the first call decides. Wakes `attached`.
    fn settle(&self, shared: Option<(u32, &'static [AtomicU64])>) {
        let target = match shared {
            Some((index, cells)) if cells.len() == self.private.len() => {
                Target::Shared { index, cells }
            }
            Some(_) => {
                tracing::warn!(
                    "a metric's shape in the registry differs; it counts in this process only"
                );
                Target::Private
            }
            None => Target::Private,
        };
        let moving = lock(&self.moving);
        if self.target.get().is_some() {
            return;
        }
        if let Target::Shared { cells, .. } = target {
            self.move_private(cells);
        }
        let _ = self.target.set(target);
        drop(moving);
        self.settled.notify_waiters();
    }

    /// Moves what the private cells hold into `shared` (under `moving`).
    /// Adding, not storing, also for a gauge: a reload's replacement may
    /// share the row with the process it replaces.
    fn move_private(&self, shared: &[AtomicU64]) {
        let last = self.private.len() - 1;
        for (i, (p, s)) in self.private.iter().zip(shared).enumerate() {
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

    /// Waits for `settle`: whether the series writes the segment.
    async fn attached(&self) -> bool {
        loop {
            // Made before the look at `target`: a `notify_waiters` after
            // the look wakes it.
            let settled = self.settled.notified();
            if let Some(target) = self.target.get() {
                return matches!(target, Target::Shared { .. });
            }
            settled.await;
        }
    }

    /// The cluster-wide sum of a counter or gauge (this process's, until
    /// settled at the row).
    fn total(&self) -> u64 {
        let of = |target: Option<&Target>| match target {
            Some(Target::Shared { index, .. }) => self.segment.sum(*index),
            Some(Target::Private) | None => self.private[0].load(Ordering::Relaxed),
        };
        match self.target.get() {
            Some(target) => of(Some(target)),
            None => {
                let _moving = lock(&self.moving);
                of(self.target.get())
            }
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
        self.0.write(|cells| {
            cells[0].fetch_add(n, Ordering::Relaxed);
        });
    }

    /// The cluster-wide total.
    pub fn value(&self) -> u64 {
        self.0.total()
    }

    /// Waits for the registration's answer: `true` once the counter
    /// writes the segment (its [`value`](Self::value) is then the
    /// cluster's), `false` if it counts in this process only.
    pub async fn attached(&self) -> bool {
        self.0.attached().await
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
        self.0
            .write(|cells| cells[0].store(v as u64, Ordering::Relaxed));
    }

    /// Adds `n` (negative to subtract) to this worker's share.
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.write(|cells| {
            cells[0].fetch_add(n as u64, Ordering::Relaxed);
        });
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

    /// Waits for the registration's answer, as [`Counter::attached`].
    pub async fn attached(&self) -> bool {
        self.0.attached().await
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
        self.0
            .write(|cells| ringmaster_registry::observe(cells, &self.0.bounds, v));
    }

    /// Records a duration, in seconds.
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Waits for the registration's answer, as [`Counter::attached`].
    pub async fn attached(&self) -> bool {
        self.0.attached().await
    }
}

#[cfg(test)]
mod tests;
