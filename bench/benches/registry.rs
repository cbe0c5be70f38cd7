//! The registry's hot path: one `Counter::inc` on this worker's row.
//!
//! - `atomic_baseline`: a plain `AtomicU64::fetch_add(1, Relaxed)` on a
//!   local, the floor for any shared counter;
//! - `counter_inc`: `Counter::inc` through the handle (a `OnceLock` load,
//!   then the same `fetch_add` on the segment's cell);
//! - `counter_inc_contended`: the same while another thread increments the
//!   same counter flat out (two threads of one worker share its row);
//! - `counter_inc_other_row`: the same while another thread increments the
//!   same counter in another row, as another worker process would.
//!
//! `cargo bench -p ringmaster-bench --bench registry`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringmaster::Registry;
use ringmaster_registry::{Kind, Segment};

/// Runs `op` `iters` times while a second thread hammers `other`.
fn contended(iters: u64, op: impl Fn(), other: impl Fn() + Send + 'static) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            for _ in 0..64 {
                other();
            }
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    took
}

fn bench(c: &mut Criterion) {
    let plain = AtomicU64::new(0);
    c.bench_function("atomic_baseline", |b| {
        b.iter(|| plain.fetch_add(1, Ordering::Relaxed))
    });

    let registry = Registry::local().unwrap();
    let counter = registry.counter("bench_total", "Bench.");
    c.bench_function("counter_inc", |b| b.iter(|| counter.inc()));

    let other = counter.clone();
    c.bench_function("counter_inc_contended", |b| {
        b.iter_custom(|iters| {
            let other = other.clone();
            contended(iters, || counter.inc(), move || other.inc())
        })
    });

    // Two rows of one segment: what two worker processes do.
    let seg: &'static Segment = Box::leak(Box::new(Segment::create(1 << 20, 2).unwrap()));
    let i = seg
        .register("rows_total", "Bench.", Kind::Counter, &[], &[])
        .unwrap();
    let mine = &seg.cells(i, 0)[0];
    let theirs = &seg.cells(i, 1)[0];
    c.bench_function("counter_inc_other_row", |b| {
        b.iter_custom(|iters| {
            contended(
                iters,
                || {
                    mine.fetch_add(1, Ordering::Relaxed);
                },
                move || {
                    theirs.fetch_add(1, Ordering::Relaxed);
                },
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
