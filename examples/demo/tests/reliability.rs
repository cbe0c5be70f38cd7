//! Reliability tests (issue 11): what the cluster promises under faults,
//! each with the real binary.

mod support;

use std::time::Duration;

use support::{Lifecycle, group_pids, settled, wait_status, web_config};

#[test]
fn a_paused_master_kills_no_healthy_worker() {
    let config =
        web_config("count = 2\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"1s\"");
    let cluster = support::start(&config, &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 2)),
        "web",
    );
    // As `docker pause`, a VM freeze or a debugger would: longer than the
    // heartbeat timeout.
    let mut events = cluster.events();
    cluster.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2500));
    cluster.signal(libc::SIGCONT);
    // Three heartbeat timeouts later, the same workers still serve.
    std::thread::sleep(Duration::from_secs(3));
    let after = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 2)),
        "web",
    );
    assert_eq!(after, before, "{}", cluster.log());
    let seen = events.gather(Duration::from_millis(100));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Lifecycle::WorkerKilled { .. })),
        "{seen:#?}"
    );
    // A worker that really goes silent is still killed.
    let _ = support::get_timeout(cluster.addr(), "/__test/wedge", Duration::from_millis(500));
    events.wait(Duration::from_secs(5), "the wedged worker killed", |e| {
        matches!(e, Lifecycle::WorkerKilled { reason, .. } if reason.contains("sent no heartbeat"))
    });
}

/// Sends `raw` on a fresh connection and reads until the server closes it
/// (or 10 s pass): the status code of its first response, if any.
fn exchange_raw(addr: std::net::SocketAddr, raw: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Whether the server closes `s` within `within` (a read returns 0 or a
/// reset).
fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn request_heads_are_bounded_in_size_count_uri_and_host() {
    let cluster = support::start(&web_config("count = 1"), &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let addr = cluster.addr();
    let ok = exchange_raw(
        addr,
        b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(ok, Some(200));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /plaintext HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    assert_eq!(exchange_raw(addr, req.as_bytes()), Some(431), "150 headers");
    let big = "a".repeat(20_000);
    let req =
        format!("GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    assert_eq!(
        exchange_raw(addr, req.as_bytes()),
        Some(431),
        "a 20 KB head"
    );
    let long = "a".repeat(9_000);
    let req = format!("GET /plaintext?q={long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(exchange_raw(addr, req.as_bytes()), Some(414), "a 9 KB URI");
    let none = b"GET /plaintext HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange_raw(addr, none), Some(400), "HTTP/1.1 without Host");
    let two = b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange_raw(addr, two), Some(400), "two Hosts");
    let old = b"GET /plaintext HTTP/1.0\r\n\r\n";
    assert_eq!(exchange_raw(addr, old), Some(200), "HTTP/1.0 needs no Host");
}

#[test]
fn slow_heads_and_idle_connections_are_closed() {
    use std::io::Write;
    let config =
        web_config("count = 1\nheader_read_timeout = \"1s\"\nkeepalive_timeout = \"1500ms\"");
    let cluster = support::start(&config, &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let addr = cluster.addr();
    // Slowloris: a byte of the head every 200 ms is cut at 1 s.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    let head = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n";
    let cut = head.iter().position(|b| {
        std::thread::sleep(Duration::from_millis(200));
        slow.write_all(&[*b]).is_err()
    });
    let gone = cut.is_some() || closed_within(&mut slow, Duration::from_secs(3));
    assert!(gone, "a slow head is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A keep-alive connection that goes quiet after a response is closed.
    let mut ka = support::KeepAlive::new(addr);
    assert_eq!(ka.get("/plaintext").unwrap().status, 200);
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let quiet = std::time::Instant::now();
    assert!(
        closed_within(&mut raw, Duration::from_secs(5)),
        "an idle keep-alive connection is closed"
    );
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "not before the timeout: {waited:?}"
    );
    // A request in progress is not idle: a 3 s request on a 1.5 s
    // keep-alive timeout still answers.
    let r = support::get(addr, "/__test/sleep?ms=3000").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn past_max_connections_the_worker_stops_accepting_and_serves_on() {
    let config = web_config("count = 1\nmax_connections = 40\nheader_read_timeout = \"1s\"");
    let cluster = support::start(&config, &[]);
    let s = wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let pid = group_pids(&s, "web")[0];
    let addr = cluster.addr();
    // Its own sockets (listener, IPC, hand-over, the runtime's signal pair).
    let sockets = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    };
    let own = sockets();
    // 150 silent connections: 40 accepted, the rest wait in the queue.
    let idle: Vec<_> = (0..150)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // The worker fills up to the limit and never past it: from 35 on (an
    // eighth from the limit) each arrival closes a silent connection ahead
    // of the next ones, and at most one is accepted at the limit, waiting
    // for room.
    while sockets() < own + 35 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never reached its limit: {} sockets",
            sockets()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..30 {
        let n = sockets();
        assert!(
            n <= own + 41,
            "the worker holds {n} sockets ({own} its own), past max_connections = 40"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A real client is served at once: its arrival closes the oldest of
    // the silent connections (it waited for the header timeout before).
    let started = std::time::Instant::now();
    let r = support::get_timeout(addr, "/plaintext", Duration::from_secs(15)).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}\n{}",
        started.elapsed(),
        cluster.log()
    );
    drop(idle);
    assert!(
        !cluster.log().contains("accept failed"),
        "{}",
        cluster.log()
    );
}

#[test]
fn a_slot_that_cannot_boot_takes_no_new_connections() {
    // Two workers; the second one's replacements fail at boot (as they
    // would with a backend down): every new connection is still served.
    let dir = support::scratch_dir();
    let switch = dir.join("fail-boot");
    let switch_env = switch.to_string_lossy().into_owned();
    let cluster = support::start(
        &web_config("count = 2\nrestart_backoff = \"200ms\"\nrestart_backoff_max = \"2s\""),
        &[("RINGMASTER_DEMO_FAIL_BOOT_FILE", switch_env.as_str())],
    );
    let s = wait_status(&cluster, "ready", |s| settled(s, "web", 2));
    std::fs::write(&switch, "").unwrap();
    let victim = group_pids(&s, "web")[1];
    // SAFETY: kill a worker of this test's cluster.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait_status(&cluster, "slot 1 down", |s| {
        support::group(s, "web")["ready"] == 1
    });
    let mut slow = Vec::new();
    for i in 0..60 {
        let started = std::time::Instant::now();
        match support::get_timeout(cluster.addr(), "/plaintext", Duration::from_secs(3)) {
            Ok(r) if r.status == 200 => {}
            other => slow.push(format!("request {i}: {other:?}")),
        }
        if started.elapsed() > Duration::from_secs(1) {
            slow.push(format!("request {i} took {:?}", started.elapsed()));
        }
    }
    assert!(slow.is_empty(), "{slow:?}\n{}", cluster.log());
    // Fixed: the slot boots again and takes its share.
    std::fs::remove_file(&switch).unwrap();
    wait_status(&cluster, "both ready again", |s| settled(s, "web", 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_backend_outage_fails_only_what_needs_it_fast_and_recovers_by_itself() {
    let db = support::pg::TestDatabase::create();
    // The database's address, behind a forwarder the test can cut (the
    // machine's server itself is never stopped).
    let hostport = db
        .url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap();
    let target: std::net::SocketAddr = hostport
        .parse()
        .expect("the test database is at an IP:port");
    let mut proxy = support::Proxy::start(target);
    let url = db.url.replace(hostport, &proxy.addr.to_string());
    let config = format!(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n[backends.main]\nurl = \"{url}\"\n"
    );
    let cluster = support::start(&config, &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 2)),
        "web",
    );
    assert_eq!(support::get(cluster.addr(), "/db").unwrap().status, 200);
    proxy.cut();
    for i in 0..20 {
        let started = std::time::Instant::now();
        let r = support::get(cluster.addr(), "/db").unwrap();
        assert_eq!(r.status, 503, "request {i}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?} to fail",
            started.elapsed()
        );
        assert_eq!(
            support::get(cluster.addr(), "/plaintext").unwrap().status,
            200
        );
    }
    let downs = cluster
        .log()
        .matches("an SQL backend is unavailable")
        .count();
    assert!(
        (1..=2).contains(&downs),
        "one line per worker, not per request: {downs}"
    );
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while support::get(cluster.addr(), "/db").unwrap().status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        group_pids(&support::status_json(&cluster), "web"),
        before,
        "no restart"
    );
    cluster.wait_log(Duration::from_secs(5), "the recovery noted", |log| {
        log.contains("the SQL backend answers again")
    });
}

#[test]
fn commands_writing_to_a_closed_pipe_stop_quietly() {
    use std::process::{Command, Stdio};
    for cmd in ["routes", "check"] {
        let mut child = Command::new(support::demo_exe())
            .arg(cmd)
            .current_dir(support::scratch_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once, as `routes | head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(101), "{cmd} panicked: {stderr}");
        assert!(!stderr.contains("panicked"), "{cmd}: {stderr}");
    }
}

#[test]
fn unusable_log_pid_and_socket_paths_stop_the_start_with_exit_78() {
    let dir = support::scratch_dir();
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    std::fs::write(dir.join("a-file"), "").unwrap();
    let cases = [
        ("log_file = \"a-directory\"", "server.log_file: cannot open"),
        ("pid_file = \"a-file/master.pid\"", "server.pid_file:"),
        ("control_socket = \"a-file\"", "server.control_socket:"),
    ];
    for (setting, says) in cases {
        let config = format!("[server]\n{setting}\n[groups.web]\nlisten = \"127.0.0.1:0\"\n");
        std::fs::write(dir.join("ringmaster.toml"), &config).unwrap();
        let mut cmd = std::process::Command::new(support::demo_exe());
        cmd.args(["serve", "--config", "ringmaster.toml"])
            .current_dir(&dir);
        let out = support::output_within(cmd, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{setting}: {stderr}");
        assert!(stderr.contains(says), "{setting}: {stderr}");
    }
    // A pid file in a directory that does not exist yet: the directory is made.
    let config = "[server]\npid_file = \"run/here/master.pid\"\n[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let cluster = support::start(config, &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    assert!(cluster.dir().join("run/here/master.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hup_during_a_reload_reloads_again_when_it_ends() {
    let cluster = support::start(
        &web_config("count = 2"),
        &[("RINGMASTER_DEMO_SLOW_BOOT_MS", "400")],
    );
    wait_status(&cluster, "ready", |s| settled(s, "web", 2));
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(10), "the reload under way", |e| {
        matches!(e, Lifecycle::ReloadStarted { .. })
    });
    // A deploy while the reload runs: this HUP must not be lost.
    cluster.signal(libc::SIGHUP);
    events.wait_n(Duration::from_secs(20), "two reloads", 2, |e| {
        matches!(e, Lifecycle::ReloadFinished { .. })
    });
    cluster.assert_logged("this HUP reloads again");
    let s = wait_status(&cluster, "settled", |s| settled(s, "web", 2));
    for w in support::group(&s, "web")["workers"].as_array().unwrap() {
        assert_eq!(w["generation"], 2, "each slot replaced twice: {w}");
    }
}

/// A WebSocket client of `path` on `addr`, with a read timeout.
fn websocket(
    addr: std::net::SocketAddr,
    path: &str,
) -> tungstenite::WebSocket<std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), tcp)
        .unwrap_or_else(|e| panic!("WebSocket handshake on {path}: {e:?}"));
    ws
}

fn echoes(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, text: &str) {
    ws.send(tungstenite::Message::text(text)).unwrap();
    match ws.read().unwrap() {
        tungstenite::Message::Text(t) => assert_eq!(t.as_str(), text),
        other => panic!("expected the echo of {text:?}, got {other:?}"),
    }
}

/// An event-stream client: the raw bytes of `GET path` as they come.
struct EventStream {
    tcp: std::net::TcpStream,
    seen: String,
}

impl EventStream {
    fn open(addr: std::net::SocketAddr, path: &str) -> EventStream {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        EventStream {
            tcp,
            seen: String::new(),
        }
    }

    /// Reads until `done` holds for what was seen; false at end of stream.
    fn read_until(&mut self, done: impl Fn(&str) -> bool) -> bool {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            match self.tcp.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) => panic!("event stream: {e}; seen so far:\n{}", self.seen),
            }
        }
        true
    }
}

#[test]
fn a_reload_ends_open_websockets_and_event_streams_cleanly_and_fails_no_other_request() {
    // A long drain_timeout: a clean end is seen well before any cut.
    let config = web_config("count = 2\ndrain_timeout = \"20s\"");
    let cluster = support::start(&config, &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 2));
    let addr = cluster.addr();
    let mut sockets: Vec<_> = (0..4).map(|_| websocket(addr, "/ws")).collect();
    for (i, ws) in sockets.iter_mut().enumerate() {
        echoes(ws, &format!("hello {i}"));
    }
    let mut streams: Vec<_> = (0..2)
        .map(|_| EventStream::open(addr, "/events?every_ms=50"))
        .collect();
    for s in &mut streams {
        assert!(s.read_until(|seen| seen.matches("event: tick").count() >= 2));
        assert!(s.seen.starts_with("HTTP/1.1 200"), "{}", s.seen);
    }
    let load = support::Load::start_n(addr, "/plaintext", 2);
    load.wait_ok(20);
    let started = std::time::Instant::now();
    let out = support::cli(&cluster, &["reload"]);
    assert!(out.status.success(), "{out:?}\n{}", cluster.log());
    // Every WebSocket got a close frame saying why, not a cut connection.
    for ws in &mut sockets {
        let frame = loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(e) => panic!("no close frame before the end: {e}\n{}", cluster.log()),
            }
        };
        let frame = frame.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
        assert_eq!(frame.reason.as_str(), "draining");
    }
    // Every event stream got its last event, then its chunked end.
    for s in &mut streams {
        let ended =
            s.read_until(|seen| seen.contains("event: drain") && seen.ends_with("0\r\n\r\n"));
        assert!(ended, "the stream was cut before its end:\n{}", s.seen);
    }
    // The drain did not wait for the long drain_timeout: the connections
    // ended when their application saw the drain.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "{elapsed:?}\n{}",
        cluster.log()
    );
    load.finish_without_failures();
    // Reconnecting reaches a new worker.
    echoes(&mut websocket(addr, "/ws"), "again");
    // Both old workers drained and said so as they exited (their last
    // lines were lost with the log pipe's next flush before).
    cluster.wait_log(Duration::from_secs(5), "both old workers drained", |log| {
        log.matches("drained; exiting").count() == 2
    });
    let log = cluster.log();
    assert!(!log.contains("grace period over"), "{log}");
}

#[test]
fn an_upgraded_connection_holds_the_drain_until_drain_timeout_cuts_it() {
    let config = web_config("count = 1\ndrain_timeout = \"3s\"");
    let cluster = support::start(&config, &[("RINGMASTER_DEMO_TEST_ROUTES", "1")]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let mut ws = websocket(cluster.addr(), "/__test/ws-ignore-drain");
    echoes(&mut ws, "before");
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(10), "the old worker draining", |e| {
        matches!(e, Lifecycle::WorkerDraining { .. })
    });
    let drain_began = std::time::Instant::now();
    // The old worker is draining, yet this connection still works: the
    // drain waits for it (it was cut as soon as no request was in flight).
    std::thread::sleep(Duration::from_millis(1500));
    echoes(&mut ws, "while draining");
    // At drain_timeout it is cut, and the old worker exits.
    let cut = loop {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => break drain_began.elapsed(),
        }
    };
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    cluster.wait_log(Duration::from_secs(5), "the old worker gone", |log| {
        log.contains("grace period over")
    });
}

#[test]
fn a_client_that_closes_its_side_after_sending_still_gets_its_answer() {
    use std::io::{Read, Write};
    let cluster = support::start(&web_config("count = 1"), &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    // As `printf 'POST ...' | nc host port` does: send, then shut down the
    // write side, then read.
    let mut tcp = std::net::TcpStream::connect(cluster.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"url":"https://example.com/nc"}"#;
    write!(
        tcp,
        "POST /links HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
}
