//! The registry's unit tests: handles, the race-free attach, `attached()`.
use std::sync::Barrier;
use std::sync::atomic::AtomicBool;

use ringmaster_proto::{MasterMsg, Origin, WorkerMsg};

use super::*;
use crate::ipc::Outgoing;

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

/// A segment of one worker row, as the master's.
fn segment() -> &'static Segment {
    Box::leak(Box::new(Segment::create(1 << 20, 1).unwrap()))
}

const THREADS: u64 = 4;
const EACH: u64 = 1_000;
const ROUNDS: u64 = 200;

/// Runs `op` `EACH` times on each of `THREADS` threads, and settles
/// `series` at `row` while they do, after a share of the operations
/// that grows with `round` (none, for round 0).
fn hammer<H: Clone + Send + 'static>(
    series: &Series,
    handle: &H,
    (index, row): (u32, &'static [AtomicU64]),
    round: u64,
    op: fn(&H),
) {
    let done = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (handle, done, start) = (handle.clone(), done.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..EACH {
                    op(&handle);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    start.wait();
    let at = THREADS * EACH * (round % 10) / 10;
    while done.load(Ordering::Relaxed) < at {
        std::hint::spin_loop();
    }
    series.settle(Some((index, row)));
    for t in threads {
        t.join().unwrap();
    }
    assert!(series.attached_now(), "settled at the row");
    assert!(
        series
            .private
            .iter()
            .all(|p| p.load(Ordering::Relaxed) == 0),
        "round {round}: a count was left in the private cells"
    );
}

impl Series {
    fn attached_now(&self) -> bool {
        matches!(self.target.get(), Some(Target::Shared { .. }))
    }
}

fn zero(row: &[AtomicU64]) {
    for cell in row {
        cell.store(0, Ordering::Relaxed);
    }
}

#[test]
fn increments_racing_the_attach_all_land_in_the_shared_row() {
    let segment = segment();
    let index = segment
        .register("race_total", "Race.", Kind::Counter, &[], &[])
        .unwrap();
    let row = segment.cells(index, 0);
    for round in 0..ROUNDS {
        zero(row);
        let series = Arc::new(Series::new(Kind::Counter, Vec::new(), segment));
        let counter = Counter(series.clone());
        hammer(&series, &counter, (index, row), round, |c| {
            c.inc();
            c.add(2);
        });
        let want = THREADS * EACH * 3;
        assert_eq!(row[0].load(Ordering::Relaxed), want, "round {round}");
        assert_eq!(counter.value(), want, "round {round}");
    }
}

#[test]
fn gauge_moves_racing_the_attach_all_land_in_the_shared_row() {
    let segment = segment();
    let index = segment
        .register("race_depth", "Race.", Kind::Gauge, &[], &[])
        .unwrap();
    let row = segment.cells(index, 0);
    for round in 0..ROUNDS {
        zero(row);
        let series = Arc::new(Series::new(Kind::Gauge, Vec::new(), segment));
        let gauge = Gauge(series.clone());
        // Below zero first: the share wraps in the row and the private
        // cell alike.
        gauge.add(-5);
        hammer(&series, &gauge, (index, row), round, |g| {
            g.inc();
            g.add(4);
            g.dec();
            g.add(-1);
        });
        let want = (THREADS * EACH * 3) as i64 - 5;
        assert_eq!(row[0].load(Ordering::Relaxed) as i64, want, "round {round}");
        assert_eq!(gauge.value(), want, "round {round}");
    }
}

#[test]
fn a_gauge_set_after_counts_made_before_the_attach_wins() {
    let segment = segment();
    let index = segment
        .register("race_set", "Race.", Kind::Gauge, &[], &[])
        .unwrap();
    let row = segment.cells(index, 0);
    for round in 0..ROUNDS * 5 {
        zero(row);
        let series = Arc::new(Series::new(Kind::Gauge, Vec::new(), segment));
        let gauge = Gauge(series.clone());
        gauge.add(3);
        let start = Arc::new(Barrier::new(2));
        let setter = {
            let (gauge, start) = (gauge.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..round % 50 {
                    std::hint::spin_loop();
                }
                gauge.set(7);
            })
        };
        start.wait();
        series.settle(Some((index, row)));
        setter.join().unwrap();
        // The 3 was added before the set began: the set wins, whether
        // it landed before the move or after.
        assert_eq!(row[0].load(Ordering::Relaxed), 7, "round {round}");
        assert_eq!(series.private[0].load(Ordering::Relaxed), 0);
        assert_eq!(gauge.value(), 7);
    }
}

#[test]
fn observations_racing_the_attach_all_land_in_the_shared_row() {
    let segment = segment();
    let bounds = [1.0, 2.0, 4.0];
    let index = segment
        .register("race_seconds", "Race.", Kind::Histogram, &[], &bounds)
        .unwrap();
    let row = segment.cells(index, 0);
    for round in 0..ROUNDS {
        zero(row);
        let series = Arc::new(Series::new(Kind::Histogram, bounds.to_vec(), segment));
        let histogram = Histogram(series.clone());
        hammer(&series, &histogram, (index, row), round, |h| {
            // One in each bucket and one past the last; all these sums
            // are exact in an f64, in any order.
            for v in [0.5, 1.5, 3.0, 8.0] {
                h.observe(v);
            }
        });
        let n = THREADS * EACH;
        let cells: Vec<u64> = row.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(cells[..4], [n, n, n, n], "round {round}: buckets");
        assert_eq!(
            f64::from_bits(cells[4]),
            13.0 * n as f64,
            "round {round}: sum"
        );
    }
}

#[tokio::test]
async fn attached_waits_for_the_answer_and_says_where_the_series_writes() {
    let segment = segment();
    let index = segment
        .register("waited_total", "Waited.", Kind::Counter, &[], &[])
        .unwrap();
    let row = segment.cells(index, 0);
    let series = Arc::new(Series::new(Kind::Counter, Vec::new(), segment));
    let counter = Counter(series.clone());
    counter.inc();
    let waiting = tokio::spawn({
        let counter = counter.clone();
        async move { counter.attached().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    series.settle(Some((index, row)));
    assert!(waiting.await.unwrap());
    assert_eq!(row[0].load(Ordering::Relaxed), 1);
    assert!(counter.attached().await, "and at once afterwards");

    // Refused: the handle keeps counting in its private cell.
    let series = Arc::new(Series::new(Kind::Gauge, Vec::new(), segment));
    let gauge = Gauge(series.clone());
    let waiting = tokio::spawn({
        let gauge = gauge.clone();
        async move { gauge.attached().await }
    });
    tokio::task::yield_now().await;
    drop(Unsettled(series.clone()));
    assert!(!waiting.await.unwrap());
    gauge.set(4);
    assert_eq!(gauge.value(), 4);
    series.settle(Some((index, row)));
    assert!(!gauge.attached().await, "the first settling decides");
}

#[tokio::test]
async fn a_local_registry_is_attached_at_once_but_for_refused_names() {
    let r = Registry::local().unwrap();
    let c = r.counter("jobs_total", "Jobs done.");
    let h = r.histogram("job_seconds", "Job durations.", &[]);
    assert!(c.attached().await && h.attached().await);
    assert!(r.attached().await);
    let bad = r.gauge("9 bad", "Bad.");
    assert!(!bad.attached().await);
    assert!(!r.attached().await, "one counts in this process only");
}

/// The whole path: a registration over IPC, answered by a stand-in
/// for the master while threads count, and awaited.
#[test]
fn counts_made_before_the_masters_answer_reach_the_row() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let segment = segment();
    let (outbox, mut master) = tokio::sync::mpsc::channel(16);
    let me = Origin {
        group: "web".into(),
        slot: 0,
        pid: std::process::id(),
    };
    let ipc = Ipc::attached(outbox, me);
    let registry = Registry::new(segment, 0, Some(ipc.clone()));
    for round in 0..20u64 {
        let name = format!("ipc_race_{round}_total");
        let counter = {
            let _rt = rt.enter();
            registry.counter(&name, "Race.")
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (counter, stop, counted) = (counter.clone(), stop.clone(), counted.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        counter.inc();
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let attached = rt.block_on(async {
            let Some(Outgoing::Msg(WorkerMsg::Register {
                id,
                name,
                help,
                kind: MetricKind::Counter,
                labels,
                buckets,
            })) = master.recv().await
            else {
                panic!("not a counter's registration");
            };
            while counted.load(Ordering::Relaxed) < 100 * (round + 1) {
                tokio::task::yield_now().await;
            }
            let result = segment
                .register(&name, &help, Kind::Counter, &labels, &buckets)
                .map_err(|e| e.to_string());
            assert!(
                ipc.on_master_msg(MasterMsg::Registered { id, result })
                    .await
                    .is_none()
            );
            counter.attached().await
        });
        assert!(attached, "round {round}");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let total = counted.load(Ordering::Relaxed);
        assert_eq!(counter.value(), total, "round {round}");
        assert!(
            counter
                .0
                .private
                .iter()
                .all(|p| p.load(Ordering::Relaxed) == 0)
        );
    }
}
