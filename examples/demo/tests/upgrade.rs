//! The in-place upgrade of the master itself (issue 13), with the real
//! binary: a second build swapped onto the disk, then USR2 or `upgrade`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{ClusterProc, Lifecycle, Load, NotifySocket, alive, exe_inode, get, scratch_dir};

/// The demo built again with another version string (`src/bin/next.rs`).
fn next_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringmaster-demo-next"))
}

/// Puts `from` at `to` the way a deploy does: a copy beside it, renamed
/// over it (the running binary's inode stays valid).
fn deploy(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Kills a new master (and so its workers, tied to it) when the test
/// ends, however it ends: the harness knows only the old one.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 != 0 {
            // SAFETY: a pid this test's cluster reported as its new master.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// The inodes of the listening TCP sockets process `pid` holds (from
/// /proc/net/tcp and the process's fds): the same kernel sockets keep
/// their inodes, a socket bound anew gets another.
fn listening_socket_inodes(pid: u32) -> Vec<u64> {
    let mut listening = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) == Some(&"0A")
                && let Some(ino) = f.get(9).and_then(|i| i.parse::<u64>().ok())
            {
                listening.insert(ino);
            }
        }
    }
    let mut held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .filter(|ino| listening.contains(ino))
        .collect();
    held.sort_unstable();
    held
}

fn app_in(dir: &Path) -> PathBuf {
    let exe = dir.join("app");
    std::fs::copy(support::demo_exe(), &exe).unwrap();
    exe
}

const CONFIG: &str = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\nlisten_mode = \"reuseport\"\n\
                      [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";

#[test]
fn usr2_under_load_replaces_the_master_and_every_worker_failing_no_request() {
    let dir = scratch_dir();
    let exe = app_in(&dir);
    // As under systemd: the new master must be announced (MAINPID=).
    let notify = NotifySocket::bind(&dir);
    let env = [
        ("NOTIFY_SOCKET", notify.path.as_str()),
        ("RINGMASTER_DEMO_TEST_ROUTES", "1"),
    ];
    let mut cluster = ClusterProc::start(&exe, dir.clone(), CONFIG, &env);
    let old_workers = cluster.wait_workers(3);
    notify.wait_line(0, "READY=1", Duration::from_secs(10));
    let old_pid = cluster.pid();
    let sockets = listening_socket_inodes(old_pid);
    assert_eq!(sockets.len(), 3, "web's two reuseport sockets and api's");
    let (web, api) = (cluster.addr_of("web"), cluster.addr_of("api"));
    for _ in 0..5 {
        assert_eq!(get(web, "/counter").unwrap().status, 200);
    }
    let plain = Load::start_n(web, "/plaintext", 2);
    let counted = Load::start(web, "/counter");
    let other = Load::start(api, "/healthz");
    plain.wait_ok(50);
    // The master's own counters (written by the master, not by workers).
    let lines_before = support::series_sum(&cluster, "ringmaster_log_lines_written_total");
    assert!(lines_before > 0);
    let started = Instant::now();

    deploy(next_exe(), &exe);
    let mut events = cluster.events();
    cluster.signal(libc::SIGUSR2);
    let new_pid = match events.wait(Duration::from_secs(60), "the upgrade", |e| {
        matches!(
            e,
            Lifecycle::UpgradeFinished { .. } | Lifecycle::UpgradeFailed { .. }
        )
    }) {
        Lifecycle::UpgradeFinished { pid, version } => {
            assert_eq!(version, "0.1.0-next");
            pid
        }
        other => panic!("{other}\n{}", cluster.log()),
    };
    let _new = KillOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    // The old master names the new one to systemd; then the new one says
    // it is ready, and the old one says nothing more.
    let announced = notify.wait_line(1, &format!("MAINPID={new_pid}"), Duration::from_secs(5));
    let ready = notify.wait_line(announced, "READY=1", Duration::from_secs(5));
    assert!(ready > announced);
    // The old master drains its workers and exits 0; the new one serves.
    let status = cluster.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "the old master: {status}");
    assert!(alive(new_pid), "the new master lives on");
    // The very same sockets, with their accept queues: none was bound
    // anew (a new one would hide behind SO_REUSEPORT while the old one's
    // queue died with the old master).
    assert_eq!(listening_socket_inodes(new_pid), sockets);
    // Ten seconds of load across it, none failed.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let hits_sent = counted.finish_without_failures();
    plain.finish_without_failures();
    other.finish_without_failures();

    let status = cluster.status();
    assert_eq!(status.master_pid, new_pid);
    assert_eq!(status.version, "0.1.0-next");
    let workers: Vec<u32> = status
        .groups
        .iter()
        .flat_map(|g| g.workers.iter().filter_map(|w| w.pid))
        .collect();
    assert_eq!(workers.len(), 3, "{status:#?}");
    let new_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&exe).unwrap().ino()
    };
    for pid in &workers {
        assert!(!old_workers.contains(pid), "worker {pid} was replaced");
        assert_eq!(
            exe_inode(*pid),
            new_inode,
            "worker {pid} runs the new binary"
        );
    }
    assert!(
        old_workers.iter().all(|p| !alive(*p)),
        "the old workers are gone"
    );
    // Every hit counted, before, during and after: the counter kept its
    // value across masters.
    let after: u64 = get(web, "/counter").unwrap().body.trim().parse().unwrap();
    assert_eq!(after, 5 + hits_sent + 1);
    let lines_after = support::series_sum(&cluster, "ringmaster_log_lines_written_total");
    assert!(
        lines_after >= lines_before,
        "the master's own counter went back: {lines_before} -> {lines_after}"
    );
    // The pid file and the control socket are the new master's.
    let pid_file = std::fs::read_to_string(dir.join("ringmaster.pid")).unwrap();
    assert_eq!(pid_file.trim(), new_pid.to_string());
    cluster.assert_logged("upgrade: the old master has drained and exited");
    // SAFETY: stop the new master this test started, gracefully.
    unsafe { libc::kill(new_pid as i32, libc::SIGTERM) };
    wait_gone(
        new_pid,
        Duration::from_secs(30),
        "the new master did not stop",
    );
}

/// Waits until process `pid` is gone; fails saying `what` after `timeout`.
fn wait_gone(pid: u32, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `upgrade` against `cluster`; its exit status and output.
fn upgrade_command(cluster: &ClusterProc) -> (bool, String) {
    let out = support::cli(cluster, &["upgrade"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_new_binary_that_exits_at_once_leaves_the_old_master_serving() {
    let dir = scratch_dir();
    let exe = app_in(&dir);
    let cluster = support::start_exe(dir.clone(), &exe, CONFIG);
    let workers = cluster.wait_workers(3);
    let broken = dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken build' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    deploy(&broken, &exe);
    let (ok, text) = upgrade_command(&cluster);
    assert!(!ok, "{text}");
    assert!(
        text.contains("preflight failed (exit code 3): broken build"),
        "{text}"
    );
    assert!(text.contains("the running master serves on"), "{text}");
    let status = cluster.status();
    assert_eq!(status.master_pid, cluster.pid());
    assert_eq!(cluster.wait_workers(3), workers, "nothing was replaced");
    assert_eq!(get(cluster.addr(), "/plaintext").unwrap().status, 200);
}

#[test]
fn a_stop_during_an_upgrade_ends_the_new_master_too() {
    let dir = scratch_dir();
    let exe = app_in(&dir);
    // Slow boots, so the stop comes while the new master's workers boot.
    let env = [("RINGMASTER_DEMO_SLOW_BOOT_MS", "1500")];
    let mut cluster = ClusterProc::start(&exe, dir.clone(), CONFIG, &env);
    cluster.wait_workers(3);
    deploy(next_exe(), &exe);
    let mut events = cluster.events();
    cluster.signal(libc::SIGUSR2);
    let started = events.wait(Duration::from_secs(10), "the new master started", |e| {
        matches!(e, Lifecycle::UpgradeStarted { .. })
    });
    let Lifecycle::UpgradeStarted { pid: new_pid, .. } = started else {
        unreachable!("the wait matched a start")
    };
    let _new = KillOnDrop(new_pid);
    cluster.signal(libc::SIGTERM);
    let failed = events.wait(Duration::from_secs(10), "the upgrade given up", |e| {
        matches!(e, Lifecycle::UpgradeFailed { .. })
    });
    assert!(
        failed.to_string().contains("the master is stopping"),
        "{failed}"
    );
    assert!(cluster.wait_exit(Duration::from_secs(30)).success());
    wait_gone(
        new_pid,
        Duration::from_secs(15),
        "the new master outlived the stop",
    );
}

#[test]
fn a_new_binary_whose_workers_cannot_boot_is_stopped_and_the_old_master_serves_on() {
    let dir = scratch_dir();
    let exe = app_in(&dir);
    let fail = dir.join("fail-boot");
    let cluster = ClusterProc::start(
        &exe,
        dir.clone(),
        CONFIG,
        &[
            ("RINGMASTER_DEMO_FAIL_BOOT_FILE", fail.to_str().unwrap()),
            ("RINGMASTER_DEMO_TEST_ROUTES", "1"),
        ],
    );
    let workers = cluster.wait_workers(3);
    let web = cluster.addr();
    let load = Load::start(web, "/plaintext");
    load.wait_ok(20);
    // The new build passes its preflight, but its workers fail at boot.
    deploy(next_exe(), &exe);
    std::fs::write(&fail, "").unwrap();
    let mut events = cluster.events();
    let (ok, text) = upgrade_command(&cluster);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the new master cannot start: group")
            && text.contains("exited before the group was ready"),
        "{text}"
    );
    let started = events.wait(Duration::from_secs(5), "the new master started", |e| {
        matches!(e, Lifecycle::UpgradeStarted { .. })
    });
    let Lifecycle::UpgradeStarted { pid: new_pid, .. } = started else {
        unreachable!("the wait matched a start")
    };
    let _new = KillOnDrop(new_pid);
    wait_gone(
        new_pid,
        Duration::from_secs(15),
        "the failed new master was not stopped",
    );
    load.finish_without_failures();
    assert_eq!(cluster.status().master_pid, cluster.pid());
    assert_eq!(cluster.wait_workers(3), workers);
    std::fs::remove_file(&fail).unwrap();
}
