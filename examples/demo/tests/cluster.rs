//! Cluster tests: the real `ringmaster-demo` binary, real sockets, signals
//! and processes. Every test binds port 0 (the master prints the real
//! address) so tests run in parallel; the harness kills every process it
//! started when a test ends.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Lifecycle, Load, alive, get, get_timeout, health_pid, web_config};

/// Waits until a worker logged that a `/__test/sleep` request started.
fn wait_sleep_started(cluster: &support::ClusterProc) {
    cluster.wait_log(
        Duration::from_secs(10),
        "the slow request to start",
        |log| log.contains("test sleep started"),
    );
}

#[test]
fn serves_the_demo_routes() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    cluster.wait_workers(2);
    let r = get(cluster.addr(), "/plaintext").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"));
    let r = get(cluster.addr(), "/json").unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"message":"Hello, World!"}"#)
    );
    let pid = health_pid(cluster.addr()).unwrap();
    assert!(cluster.worker_pids().contains(&pid));
}

#[test]
fn a_killed_worker_is_replaced_within_a_second_while_the_other_serves() {
    for mode in ["reuseport", "shared"] {
        let cluster = support::start(
            &web_config(&format!("count = 2\nlisten_mode = \"{mode}\"")),
            &[],
        );
        let before = cluster.wait_workers(2);
        let load = Load::start(cluster.addr(), "/healthz");
        let victim = before[0];
        let survivor = before[1];
        let started = Instant::now();
        load.wait_answer_from(survivor, started);
        let killed_at = Instant::now();
        // SAFETY: kill a worker of this test's cluster.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        // A replacement with a new pid answers within one second.
        let deadline = killed_at + Duration::from_secs(1);
        let replacement = loop {
            let seen = load.pids_since(killed_at);
            if let Some(p) = seen.iter().find(|p| !before.contains(p)) {
                break *p;
            }
            assert!(
                Instant::now() < deadline,
                "[{mode}] no new worker answered within 1 s; saw {seen:?}\n{}",
                cluster.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        load.wait_answer_from(survivor, killed_at);
        load.wait_ok(11);
        let (ok, failed, pids) = load.finish();
        // The one request the victim may have accepted when it was killed is
        // lost with it (the client is sequential: at most one in flight);
        // every other request is served, by the survivor or the replacement.
        assert!(failed.len() <= 1, "[{mode}] failed requests: {failed:?}");
        assert!(ok > 10, "[{mode}] only {ok} requests");
        assert!(!alive(victim));
        assert!(cluster.worker_pids().contains(&replacement));
        // The other worker served throughout: before and after the kill.
        assert!(pids.iter().any(|(t, p)| *p == survivor && *t < killed_at));
        assert!(pids.iter().any(|(t, p)| *p == survivor && *t > killed_at));
    }
}

#[test]
fn a_worker_failing_at_boot_restarts_with_growing_delays() {
    let config = web_config(
        "count = 1\nrestart_backoff = \"100ms\"\nrestart_backoff_max = \"800ms\"\nmin_uptime = \"5s\"",
    );
    let mut cluster = support::start(&config, &[("RINGMASTER_DEMO_FAIL_BOOT", "1")]);
    let spawns: Vec<f64> = cluster
        .history()
        .wait_n(Duration::from_secs(10), "six spawns", 6, |e| {
            matches!(e, Lifecycle::WorkerSpawned { .. })
        })
        .iter()
        .map(|r| r.at_ms as f64 / 1000.0)
        .collect();
    let log = cluster.log();
    assert!(
        cluster.try_wait().is_none(),
        "the master must stay up\n{log}"
    );
    // The reason is logged.
    cluster.assert_logged("RINGMASTER_DEMO_FAIL_BOOT=1 is set");
    let expected_ms = [100.0, 200.0, 400.0, 800.0, 800.0];
    for (i, want) in expected_ms.iter().enumerate() {
        let gap_ms = (spawns[i + 1] - spawns[i]) * 1000.0;
        assert!(
            gap_ms >= *want,
            "restart {} came after {gap_ms:.1} ms, before its backoff of {want} ms\n{log}",
            i + 1
        );
    }
    // Delays are capped.
    cluster.assert_logged("restart_in_ms=800");
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_everything_exits_0() {
    let mut cluster = support::start(&web_config("count = 2\ndrain_timeout = \"10s\""), &[]);
    let workers = cluster.wait_workers(2);
    let addr = cluster.addr();
    let slow = std::thread::spawn(move || get(addr, "/__test/sleep?ms=1000"));
    wait_sleep_started(&cluster);
    cluster.signal(libc::SIGTERM);
    let r = slow.join().unwrap().expect("the slow request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "slept 1000 ms"));
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "master: {status}\n{}", cluster.log());
    let log = cluster.log();
    for pid in workers {
        assert!(
            log.lines().any(|l| l.contains("worker exited")
                && l.contains(&format!("pid={pid}"))
                && l.contains("exit code 0")),
            "worker {pid} did not exit 0\n{log}"
        );
    }
}

#[test]
fn sighup_under_load_replaces_every_worker_without_a_failed_request() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    let before = cluster.wait_workers(2);
    let started = Instant::now();
    // New connections per request, and keep-alive clients that reconnect
    // only when the server says `Connection: close`.
    let load = Load::start_n(cluster.addr(), "/plaintext", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let keepalive: Vec<_> = (0..2)
        .map(|_| {
            let (stop, addr) = (stop.clone(), cluster.addr());
            std::thread::spawn(move || {
                let mut client = support::KeepAlive::new(addr);
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.get("/plaintext") {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed, client.connections)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(10), "the reload to finish", |e| {
        matches!(e, Lifecycle::ReloadFinished { .. })
    });
    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}",
        failed.len()
    );
    assert!(ok > 100, "only {ok} requests in 5 s");
    for client in keepalive {
        let (ok, failed, connections) = client.join().unwrap();
        assert!(failed.is_empty(), "keep-alive client failed: {failed:?}");
        assert!(ok > 100, "only {ok} keep-alive requests");
        assert!(
            connections >= 2,
            "the drain must close keep-alive connections"
        );
    }
    let after = cluster.wait_workers(2);
    for pid in &before {
        assert!(
            !after.contains(pid),
            "worker {pid} was not replaced: {after:?}"
        );
        assert!(!alive(*pid));
    }
    // Each slot's replacement was ready before its old worker was drained.
    let log = cluster.log();
    for old in &before {
        let needle = format!(" pid={old} ");
        let drained = log
            .match_indices("draining worker group=web slot=")
            .map(|(i, _)| i)
            .find(|&i| log[i..].lines().next().unwrap_or("").contains(&needle))
            .unwrap_or_else(|| panic!("old worker {old} never drained\n{log}"));
        let line = log[drained..].lines().next().unwrap_or("");
        let slot = line
            .split("slot=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no slot in {line:?}"));
        // The slot's second "worker ready" line is its replacement's.
        let ready = log
            .match_indices(&format!("worker ready group=web slot={slot} pid="))
            .map(|(i, _)| i)
            .nth(1)
            .unwrap_or_else(|| panic!("no replacement ready for slot {slot}\n{log}"));
        assert!(
            ready < drained,
            "slot {slot} drained before its replacement was ready\n{log}"
        );
    }
}

#[test]
fn sigkill_of_the_master_leaves_no_worker_and_frees_the_port() {
    let mut cluster = support::start(&web_config("count = 2"), &[]);
    let workers = cluster.wait_workers(2);
    let addr = cluster.addr();
    // Wedge a worker first: it can no longer see its IPC socket close, so
    // only PR_SET_PDEATHSIG can stop it.
    let _ = get_timeout(addr, "/__test/wedge", Duration::from_millis(500));
    let master = cluster.pid();
    let ours = |(pid, master_env, _): &(u32, Option<u32>, String)| {
        *pid == master || *master_env == Some(master)
    };
    // The check below sees this cluster's listeners while it runs.
    assert!(
        listeners(addr.port()).iter().any(ours),
        "no listener of master {master} found on {addr}"
    );
    cluster.signal(libc::SIGKILL);
    cluster.wait_exit(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "orphaned workers remain: {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // No process of this cluster listens on the port any more (binding it
    // to check would race with other tests' outgoing connections, which
    // may take the port as their local one once it is free). Another
    // test's listener may get the same port once it is free: only a
    // holder started by this master counts.
    let ours: Vec<String> = listeners(addr.port())
        .into_iter()
        .filter(|h| ours(h))
        .map(|(pid, _, cmdline)| format!("{pid} {cmdline}"))
        .collect();
    assert!(ours.is_empty(), "still listening on {addr}: {ours:?}");
}

/// The processes holding a TCP socket that listens on `port` (IPv4 or
/// IPv6): pid, the master pid in its environment (a worker's
/// `RINGMASTER_MASTER_PID`), command line.
fn listeners(port: u16) -> Vec<(u32, Option<u32>, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN.
            let on_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if on_port
                && fields.get(3) == Some(&"0A")
                && let Some(inode) = fields.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut holders = Vec::new();
    if inodes.is_empty() {
        return holders;
    }
    for pid in ringmaster_testkit::pids() {
        let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        let fds = std::fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        let holds = fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| inodes.iter().any(|i| target.to_string_lossy() == *i));
        if !holds {
            continue;
        }
        let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
        let master_env = environ
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("RINGMASTER_MASTER_PID="))
            .and_then(|v| v.parse().ok());
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        holders.push((pid, master_env, cmdline));
    }
    holders
}

#[test]
fn a_port_in_use_fails_with_the_address_and_group_and_starts_no_worker() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cluster = support::spawn(&format!("[groups.web]\nlisten = \"{addr}\"\n"), &[]);
    let status = cluster.wait_exit(Duration::from_secs(10));
    let log = cluster.log();
    assert!(!status.success());
    assert!(log.contains(&addr.to_string()), "{log}");
    assert!(log.contains("group \"web\""), "{log}");
    assert!(!log.contains("worker spawned"), "{log}");
}

#[test]
fn a_wedged_worker_is_killed_and_replaced_within_heartbeat_timeout_plus_1s() {
    let config =
        web_config("count = 1\nheartbeat_interval = \"100ms\"\nheartbeat_timeout = \"1s\"");
    let cluster = support::start(&config, &[]);
    let before = cluster.wait_workers(1);
    let wedged_at = Instant::now();
    let _ = get_timeout(cluster.addr(), "/__test/wedge", Duration::from_millis(500));
    let deadline = wedged_at + Duration::from_secs(2);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "no replacement within 2 s\n{}",
            cluster.log()
        );
        if let Ok(r) = get_timeout(cluster.addr(), "/healthz", remaining) {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let pid = v["pid"].as_u64().unwrap() as u32;
            if !before.contains(&pid) {
                break;
            }
        }
    }
    assert!(!alive(before[0]));
    cluster.assert_logged("sent no heartbeat");
}

#[test]
fn ttin_and_ttou_add_and_remove_a_worker() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    cluster.wait_workers(2);
    cluster.signal(libc::SIGTTIN);
    let three = cluster.wait_workers(3);
    // Signals of one kind coalesce: wait for each to take effect.
    let mut events = cluster.events();
    cluster.signal(libc::SIGTTOU);
    events.wait(Duration::from_secs(10), "scale to 2", |e| {
        matches!(e, Lifecycle::Scaled { from: 3, to: 2, .. })
    });
    cluster.signal(libc::SIGTTOU);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.worker_pids().len() != 1 {
        assert!(Instant::now() < deadline, "{}", cluster.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = cluster.worker_pids()[0];
    assert!(three.contains(&last));
    for _ in 0..20 {
        assert_eq!(get(cluster.addr(), "/plaintext").unwrap().status, 200);
    }
}

#[test]
fn sigquit_stops_at_once() {
    let mut cluster = support::start(&web_config("count = 2"), &[]);
    let workers = cluster.wait_workers(2);
    let addr = cluster.addr();
    let _slow = std::thread::spawn(move || get(addr, "/__test/sleep?ms=30000"));
    wait_sleep_started(&cluster);
    cluster.signal(libc::SIGQUIT);
    let status = cluster.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{}", cluster.log());
    assert!(workers.iter().all(|p| !alive(*p)));
}

#[test]
fn environment_overrides_the_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    // The file names a busy port; the environment moves the group to a free one.
    let cluster = support::start(
        &format!("[groups.web]\nlisten = \"{busy}\"\ncount = 1\n"),
        &[
            ("RINGMASTER__GROUPS__WEB__LISTEN", "127.0.0.1:0"),
            ("RINGMASTER__GROUPS__WEB__COUNT", "3"),
        ],
    );
    assert_ne!(cluster.addr(), busy);
    cluster.wait_workers(3);
}

#[test]
fn config_errors_exit_78_naming_file_and_key() {
    let mut cluster = support::spawn("[groups.web]\ncout = 2\n", &[]);
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", cluster.log());
    let log = cluster.log();
    assert!(log.contains("ringmaster.toml"), "{log}");
    assert!(log.contains("cout"), "{log}");

    let mut cluster = support::spawn(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\n",
        &[("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT", "soon")],
    );
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", cluster.log());
    assert!(
        cluster
            .log()
            .contains("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT"),
        "{}",
        cluster.log()
    );
}

/// Copies the demo binary into a fresh directory; returns (dir, path).
fn private_copy_of_the_binary() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = support::scratch_dir();
    let exe = dir.join("app");
    std::fs::copy(env!("CARGO_BIN_EXE_ringmaster-demo"), &exe).unwrap();
    (dir, exe)
}

/// Replaces `exe` the way a deploy does: write a new file, rename it over.
fn replace_binary(exe: &std::path::Path, contents: &[u8]) -> u64 {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = exe.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, exe).unwrap();
    std::fs::metadata(exe).unwrap().ino()
}

#[test]
fn sighup_rereads_the_config_and_runs_the_binary_now_on_disk() {
    let (dir, exe) = private_copy_of_the_binary();
    let cluster = support::start_exe(dir, &exe, &web_config("count = 2"));
    let before = cluster.wait_workers(2);
    let old_inode = support::exe_inode(before[0]);
    let new_inode = replace_binary(
        &exe,
        &std::fs::read(env!("CARGO_BIN_EXE_ringmaster-demo")).unwrap(),
    );
    assert_ne!(old_inode, new_inode);
    let addr = cluster.addr();
    std::fs::write(
        cluster.config_path(),
        format!("[groups.web]\nlisten = \"{addr}\"\ncount = 3\n"),
    )
    .unwrap();
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(10), "the reload to finish", |e| {
        matches!(e, Lifecycle::ReloadFinished { .. })
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let pids = cluster.worker_pids();
        if pids.len() == 3 && pids.iter().all(|p| !before.contains(p)) {
            break pids;
        }
        assert!(Instant::now() < deadline, "{pids:?}\n{}", cluster.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    for pid in after {
        assert_eq!(
            support::exe_inode(pid),
            new_inode,
            "worker {pid} runs the old binary"
        );
    }
    assert_eq!(get(addr, "/plaintext").unwrap().status, 200);
}

#[test]
fn a_broken_deploy_aborts_the_reload_and_keeps_the_running_workers() {
    let (dir, exe) = private_copy_of_the_binary();
    let cluster = support::start_exe(dir, &exe, &web_config("count = 2"));
    let before = cluster.wait_workers(2);
    replace_binary(&exe, b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n");
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(10), "the reload to abort", |e| {
        matches!(e, Lifecycle::ReloadAborted { .. })
    });
    cluster.assert_logged("broken build");
    assert_eq!(cluster.worker_pids(), before);
    for _ in 0..20 {
        let pid = health_pid(cluster.addr()).unwrap();
        assert!(before.contains(&pid));
    }
}

#[test]
fn an_invalid_config_on_sighup_keeps_everything_running() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    let before = cluster.wait_workers(2);
    std::fs::write(cluster.config_path(), "[groups.web]\ncount = \"many\"\n").unwrap();
    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    let aborted = events.wait(Duration::from_secs(10), "the reload to abort", |e| {
        matches!(e, Lifecycle::ReloadAborted { .. })
    });
    let Lifecycle::ReloadAborted { reason } = aborted else {
        unreachable!()
    };
    assert!(
        reason.starts_with("the configuration is invalid") && reason.contains("groups.web.count"),
        "{reason}"
    );
    cluster.assert_logged("groups.web.count");
    assert_eq!(cluster.worker_pids(), before);
    assert_eq!(get(cluster.addr(), "/plaintext").unwrap().status, 200);
}

#[test]
fn a_worker_that_never_gets_ready_is_killed_at_boot_timeout_and_retried() {
    let config = web_config("count = 1\nboot_timeout = \"300ms\"\nrestart_backoff = \"50ms\"");
    let cluster = support::start(&config, &[("RINGMASTER_DEMO_HANG_BOOT", "1")]);
    let mut events = cluster.history();
    events.wait_n(Duration::from_secs(10), "a third start", 3, |e| {
        matches!(e, Lifecycle::WorkerSpawned { .. })
    });
    let seen = events.seen();
    let kills = seen
        .iter()
        .filter(|e| matches!(e, Lifecycle::WorkerKilled { reason, .. } if reason.contains("boot_timeout")))
        .count();
    assert_eq!(kills, 2, "{seen:#?}");
    // A boot timeout is a strike: the second restart waits twice as long.
    let delays: Vec<Option<u64>> = seen
        .iter()
        .filter_map(|e| match e {
            Lifecycle::WorkerExited { restart_in_ms, .. } => Some(*restart_in_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [Some(50), Some(100)], "{seen:#?}");
    // The log says it too.
    cluster.assert_logged("strikes=2");
}

#[test]
fn a_request_longer_than_drain_timeout_does_not_hold_up_the_stop() {
    let mut cluster = support::start(&web_config("count = 1\ndrain_timeout = \"500ms\""), &[]);
    cluster.wait_workers(1);
    let addr = cluster.addr();
    let slow = std::thread::spawn(move || get(addr, "/__test/sleep?ms=20000"));
    wait_sleep_started(&cluster);
    let stopped_at = Instant::now();
    cluster.signal(libc::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{}", cluster.log());
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "{}",
        cluster.log()
    );
    assert!(
        cluster.log().contains("drain grace period over"),
        "{}",
        cluster.log()
    );
    // The abandoned request fails instead of hanging.
    assert!(slow.join().unwrap().is_err());
}

#[test]
fn ttou_under_load_fails_no_request() {
    let cluster = support::start(&web_config("count = 3"), &[]);
    cluster.wait_workers(3);
    let load = Load::start_n(cluster.addr(), "/plaintext", 4);
    load.wait_ok(200);
    let mut events = cluster.events();
    cluster.signal(libc::SIGTTOU);
    events.wait(Duration::from_secs(10), "the removed worker to exit", |e| {
        matches!(e, Lifecycle::WorkerExited { slot: 2, .. })
    });
    load.wait_ok(200);
    load.finish_without_failures();
    assert_eq!(cluster.worker_pids().len(), 2);
}
