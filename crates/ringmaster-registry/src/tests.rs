use std::sync::atomic::Ordering;

use super::*;

fn seg(rows: u32) -> Segment {
    Segment::create(MIN_SIZE, rows).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn registration_is_idempotent_and_checks_kinds() {
    let s = seg(4);
    let a = s
        .register("hits_total", "help", Kind::Counter, &[], &[])
        .unwrap();
    assert_eq!(
        s.register("hits_total", "help", Kind::Counter, &[], &[])
            .unwrap(),
        a
    );
    let b = s
        .register(
            "hits_total",
            "help",
            Kind::Counter,
            &labels(&[("route", "/a")]),
            &[],
        )
        .unwrap();
    assert_ne!(a, b);
    // Label order does not make another series.
    let l1 = labels(&[("a", "1"), ("b", "2")]);
    let l2 = labels(&[("b", "2"), ("a", "1")]);
    let c = s.register("x", "help", Kind::Gauge, &l1, &[]).unwrap();
    assert_eq!(s.register("x", "help", Kind::Gauge, &l2, &[]).unwrap(), c);
    let err = s
        .register("hits_total", "help", Kind::Gauge, &[], &[])
        .unwrap_err();
    assert!(err.to_string().contains("one name has one kind"), "{err}");
    let many: Vec<(String, String)> = (0..17).map(|i| (format!("l{i}"), "v".into())).collect();
    let err = s
        .register("many", "help", Kind::Counter, &many, &[])
        .unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");
    for (name, l, b, kind, what) in [
        (
            "9lives",
            vec![],
            vec![],
            Kind::Counter,
            "not starting with a digit",
        ),
        (
            "ok",
            labels(&[("__x", "1")]),
            vec![],
            Kind::Counter,
            "label name",
        ),
        (
            "ok",
            labels(&[("a", "1"), ("a", "2")]),
            vec![],
            Kind::Counter,
            "twice",
        ),
        ("h", vec![], vec![], Kind::Histogram, "bucket bounds"),
        (
            "h",
            vec![],
            vec![2.0, 1.0],
            Kind::Histogram,
            "strictly increasing",
        ),
        (
            "h",
            labels(&[("le", "1")]),
            vec![1.0],
            Kind::Histogram,
            "`le`",
        ),
    ] {
        let err = s.register(name, "help", kind, &l, &b).unwrap_err();
        assert!(err.to_string().contains(what), "{name}: {err}");
    }
}

#[test]
fn a_full_segment_is_a_clear_error() {
    let s = seg(64);
    let mut last = None;
    for i in 0..100_000 {
        match s.register(
            "c",
            "help",
            Kind::Counter,
            &labels(&[("i", &i.to_string())]),
            &[],
        ) {
            Ok(_) => {}
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let err = last.expect("the segment fills up");
    assert!(err.to_string().contains("registry is full"), "{err}");
    assert!(err.to_string().contains("server.registry_size"), "{err}");
    // What is there still reads.
    assert!(s.snapshot().series.len() > 10);
}

#[test]
fn two_threads_on_their_own_rows_sum_exactly() {
    let s = std::sync::Arc::new(seg(2));
    let i = s
        .register("n_total", "help", Kind::Counter, &[], &[])
        .unwrap();
    let threads: Vec<_> = (0..2)
        .map(|row| {
            let s = s.clone();
            std::thread::spawn(move || {
                let cell = &s.cells(i, row)[0];
                for _ in 0..1_000_000 {
                    cell.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.sum(i), 2_000_000);
}

#[test]
fn folding_keeps_counters_and_drops_gauges() {
    let s = seg(4);
    let c = s
        .register("c_total", "help", Kind::Counter, &[], &[])
        .unwrap();
    let g = s.register("g", "help", Kind::Gauge, &[], &[]).unwrap();
    let h = s
        .register("h", "help", Kind::Histogram, &[], &[1.0, 2.0])
        .unwrap();
    for row in 0..4 {
        s.cells(c, row)[0].fetch_add(10, Ordering::Relaxed);
        s.cells(g, row)[0].store(3, Ordering::Relaxed);
        observe(s.cells(h, row), &[1.0, 2.0], 1.5);
    }
    assert_eq!(s.sum(c), 40);
    s.fold_row(3);
    s.fold_row(2);
    assert_eq!(s.sum(c), 40, "a counter never goes backwards");
    assert_eq!(s.sum(g) as i64, 6, "the removed rows' gauges are gone");
    s.clear_gauges(0);
    assert_eq!(s.sum(g) as i64, 3);
    let snap = s.snapshot();
    let Value::Histogram {
        buckets,
        count,
        sum,
    } = &snap.series[2].value
    else {
        panic!("a histogram")
    };
    assert_eq!(*count, 4);
    assert_eq!(*sum, 6.0);
    assert_eq!(buckets, &vec![(1.0, 0), (2.0, 4), (f64::INFINITY, 4)]);
}

#[test]
fn prometheus_text_parses_and_json_says_the_same() {
    let s = seg(2);
    let c = s
        .register(
            "http_requests_total",
            "help",
            Kind::Counter,
            // (prometheus-parse drops a line whose label value holds `}`,
            // which the format allows; promtool takes it.)
            &labels(&[("route", "/links"), ("method", "GET")]),
            &[],
        )
        .unwrap();
    let g = s
        .register("in_flight", "help", Kind::Gauge, &[], &[])
        .unwrap();
    let h = s
        .register(
            "latency_seconds",
            "help",
            Kind::Histogram,
            &[],
            &DEFAULT_BUCKETS,
        )
        .unwrap();
    s.cells(c, 0)[0].fetch_add(7, Ordering::Relaxed);
    s.cells(c, 1)[0].fetch_add(5, Ordering::Relaxed);
    s.cells(g, 1)[0].store((-2i64) as u64, Ordering::Relaxed);
    observe(s.cells(h, 0), &DEFAULT_BUCKETS, 0.003);
    observe(s.cells(h, 1), &DEFAULT_BUCKETS, 42.0);
    let text = s.snapshot().to_prometheus();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    // Every sample line parsed: the counter, the gauge, the histogram and
    // its _sum and _count (the parser folds the buckets into one sample).
    assert_eq!(scrape.samples.len(), 5, "{text}: {:?}", scrape.samples);
    let find = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|x| x.metric == name)
            .unwrap_or_else(|| panic!("{name} in {text}: {:?}", scrape.samples))
    };
    assert!(
        matches!(find("http_requests_total").value, prometheus_parse::Value::Counter(v) if v == 12.0),
        "{text}"
    );
    assert!(
        matches!(find("in_flight").value, prometheus_parse::Value::Gauge(v) if v == -2.0),
        "{text}"
    );
    match &find("latency_seconds").value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.len(), DEFAULT_BUCKETS.len() + 1, "{text}");
            assert_eq!(buckets.last().unwrap().count, 2.0);
            assert_eq!(buckets[2].count, 1.0, "0.003 <= 0.005: {text}");
        }
        other => panic!("{other:?}"),
    }
    if let Some(promtool) = std::env::var_os("RINGMASTER_PROMTOOL") {
        // The real validator, when there is one: RINGMASTER_PROMTOOL=promtool.
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_child();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {out:?}\n{text}");
    }
    let json = s.snapshot().to_json();
    assert_eq!(json["series"][0]["value"], 12);
    assert_eq!(json["series"][0]["labels"]["route"], "/links");
    assert_eq!(json["series"][2]["value"]["count"], 2);
}

#[test]
fn a_worker_maps_it_from_the_fd_and_sees_the_masters_series() {
    let s = seg(2);
    let i = s
        .register("c_total", "help", Kind::Counter, &[], &[])
        .unwrap();
    // Sealed: nobody can shrink it under the master.
    // SAFETY: ftruncate on our own fd.
    let shrink = unsafe { libc::ftruncate(s.fd().unwrap().as_raw_fd(), 4096) };
    assert!(shrink < 0, "the segment's size is sealed");
    let dup = s.fd().unwrap().try_clone_to_owned().unwrap();
    let w = Segment::open(dup, true).unwrap();
    assert_eq!(w.series_count(), 1);
    w.cells(i, 1)[0].fetch_add(3, Ordering::Relaxed);
    assert_eq!(s.sum(i), 3);
    assert_eq!(
        w.sum(i),
        3,
        "the worker's sum reads the layout from the table"
    );
    let h = s
        .register(
            "h_seconds",
            "help",
            Kind::Histogram,
            &labels(&[("a", "b")]),
            &[0.5, 1.0],
        )
        .unwrap();
    let w = Segment::open(s.fd().unwrap().try_clone_to_owned().unwrap(), true).unwrap();
    for (mine, theirs) in [(s.layout(h), w.layout(h)), (s.layout(i), w.layout(i))] {
        assert_eq!(
            (mine.cells, mine.offset, mine.stride),
            (theirs.cells, theirs.offset, theirs.stride)
        );
    }
    assert_eq!(w.layout(h).cells, 4, "two buckets, +Inf and the sum");
    assert!(matches!(
        w.register("x", "help", Kind::Counter, &[], &[]),
        Err(RegistryError::ReadOnly)
    ));
    // Another memfd is no registry.
    // SAFETY: a constant name, no flags.
    let raw = unsafe { libc::memfd_create(c"other".as_ptr(), 0) };
    // SAFETY: a fresh fd we own.
    let other = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate of our own fd.
    unsafe { libc::ftruncate(other.as_raw_fd(), MIN_SIZE as libc::off_t) };
    assert!(matches!(
        Segment::open(other, false),
        Err(RegistryError::BadHeader)
    ));
}

trait OutputChild {
    fn output_child(&mut self) -> std::process::Child;
}

impl OutputChild for std::process::Command {
    fn output_child(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool")
    }
}

#[test]
fn label_values_are_escaped() {
    let s = seg(1);
    s.register(
        "c_total",
        "help",
        Kind::Counter,
        &labels(&[("note", "a \"q\"\n\\")]),
        &[],
    )
    .unwrap();
    assert_eq!(
        s.snapshot().to_prometheus(),
        "# HELP c_total help\n# TYPE c_total counter\nc_total{note=\"a \\\"q\\\"\\n\\\\\"} 0\n"
    );
}

#[test]
fn absorb_copies_counters_and_histograms_once_then_only_what_was_added() {
    let old = Segment::create(MIN_SIZE, 4).unwrap();
    let hits = old
        .register("hits_total", "hits", Kind::Counter, &[], &[])
        .unwrap();
    let lat = old
        .register("lat_seconds", "latency", Kind::Histogram, &[], &[0.1, 1.0])
        .unwrap();
    let inflight = old
        .register("in_flight", "now", Kind::Gauge, &[], &[])
        .unwrap();
    old.cells(hits, 0)[0].fetch_add(5, Ordering::Relaxed);
    old.cells(hits, 2)[0].fetch_add(2, Ordering::Relaxed);
    old.cells(hits, old.retired_row())[0].fetch_add(10, Ordering::Relaxed);
    observe(old.cells(lat, 1), &[0.1, 1.0], 0.5);
    old.cells(inflight, 0)[0].store(3, Ordering::Relaxed);

    let new = Segment::create(MIN_SIZE, 2).unwrap();
    let (first, errors) = new.absorb(&old, &Totals::default());
    assert!(errors.is_empty(), "{errors:?}");
    let idx = |name: &str| {
        (0..new.series_count())
            .find(|i| new.desc(*i).name == name)
            .unwrap_or_else(|| panic!("{name} copied"))
    };
    assert_eq!(new.sum(idx("hits_total")), 17);
    assert!(
        (0..new.series_count()).all(|i| new.desc(i).name != "in_flight"),
        "gauges are not copied"
    );
    let cells = new.cells(idx("lat_seconds"), new.retired_row());
    assert_eq!(cells[1].load(Ordering::Relaxed), 1, "the 1.0 bucket");
    assert_eq!(f64::from_bits(cells[3].load(Ordering::Relaxed)), 0.5);

    // The old master's workers go on counting until they exit.
    old.cells(hits, 0)[0].fetch_add(4, Ordering::Relaxed);
    observe(old.cells(lat, 1), &[0.1, 1.0], 0.25);
    let (_, errors) = new.absorb(&old, &first);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(new.sum(idx("hits_total")), 21, "17 once, plus the 4 added");
    let cells = new.cells(idx("lat_seconds"), new.retired_row());
    assert_eq!(f64::from_bits(cells[3].load(Ordering::Relaxed)), 0.75);
}

#[test]
fn absorb_skips_a_series_registered_here_otherwise_and_copies_the_rest_once() {
    let old = Segment::create(MIN_SIZE, 2).unwrap();
    let a = old
        .register("a_total", "a", Kind::Counter, &[], &[])
        .unwrap();
    let lat = old
        .register("lat_seconds", "latency", Kind::Histogram, &[], &[0.1])
        .unwrap();
    old.cells(a, 0)[0].fetch_add(3, Ordering::Relaxed);
    observe(old.cells(lat, 0), &[0.1], 0.05);
    let new = Segment::create(MIN_SIZE, 2).unwrap();
    // The new release changed the histogram's buckets.
    new.register("lat_seconds", "latency", Kind::Histogram, &[], &[0.5, 1.0])
        .unwrap();
    let (first, errors) = new.absorb(&old, &Totals::default());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let ia = (0..new.series_count())
        .find(|i| new.desc(*i).name == "a_total")
        .unwrap();
    assert_eq!(new.sum(ia), 3);
    old.cells(a, 0)[0].fetch_add(1, Ordering::Relaxed);
    let _ = new.absorb(&old, &first);
    assert_eq!(new.sum(ia), 4, "copied once, then only the one added");
}
