//! The flood test of the reliability suite (issue 11), in a binary of its
//! own: it measures a normal client's latency, which other tests running
//! beside it on a 2-core machine would measure instead.

mod support;

use std::time::Duration;

use support::{group_pids, settled, wait_status, web_config};

/// Keeps `n` connections to `addr` open that send nothing, or (with
/// `trickle`) an endless head a byte at a time, reconnecting those the
/// server closes, until `stop`.
fn flood(
    addr: std::net::SocketAddr,
    n: usize,
    trickle: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let open = |_| {
            let mut c = std::net::TcpStream::connect(addr).ok()?;
            c.set_nonblocking(true).ok()?;
            if trickle {
                let _ = c.write_all(b"GET /plaintext HTTP/1.1\r\nX-Slow: ");
            }
            Some(c)
        };
        let mut conns: Vec<_> = (0..n).filter_map(open).collect();
        let mut reconnects = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for c in conns.iter_mut() {
                let mut buf = [0u8; 512];
                let closed =
                    matches!(c.read(&mut buf), Ok(0)) || (trickle && c.write_all(b"a").is_err());
                if closed && let Some(fresh) = open(0) {
                    *c = fresh;
                    reconnects += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reconnects
    })
}

#[test]
fn floods_of_idle_slow_and_oversized_connections_leave_normal_clients_served_fast() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let config = web_config("count = 1\nmax_connections = 64");
    let cluster = support::start(&config, &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    let addr = cluster.addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Past the connection limit: silent connections and slowloris heads,
    // each reconnected as soon as it is closed, and heads over the size
    // limit sent in a loop.
    let idle = flood(addr, 150, false, stop.clone());
    let slow = flood(addr, 50, true, stop.clone());
    let oversized: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let head = format!(
                    "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(20_000)
                );
                let mut refused = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    use std::io::{Read, Write};
                    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.write_all(head.as_bytes());
                    let mut out = [0u8; 12];
                    if c.read_exact(&mut out).is_ok() && out.starts_with(b"HTTP/1.1 431") {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // A normal client, one request per connection.
    let mut millis = Vec::new();
    let mut failed = Vec::new();
    for i in 0..300 {
        let started = std::time::Instant::now();
        match support::get_timeout(addr, "/plaintext", Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => millis.push(started.elapsed().as_secs_f64() * 1000.0),
            other => failed.push(format!("request {i}: {other:?}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reconnects = idle.join().unwrap() + slow.join().unwrap();
    let refused: u64 = oversized.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(failed.is_empty(), "{failed:?}");
    // `summary` sorts the samples.
    let (p50, _, _, _) = support::summary(&mut millis);
    let p99 = millis[millis.len() * 99 / 100];
    eprintln!(
        "normal client: p50 {p50:.2} ms, p99 {p99:.2} ms; flood reconnects {reconnects}, 431s {refused}"
    );
    assert!(p99 < 100.0, "p99 {p99:.1} ms (p50 {p50:.1} ms)");
    assert!(reconnects > 0, "the flood never hit the limit");
    assert!(refused > 0, "no oversized head was refused");
    let after = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    assert_eq!(after, before, "the worker was replaced\n{}", cluster.log());
}
