//! The master in a container and behind Kubernetes (issue 13), with the
//! real binary: as PID 1 of a pid namespace (`unshare`), and a graceful
//! stop that first fails readiness for `server.shutdown_delay`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    ClusterProc, Lifecycle, LifecycleRecord, Load, children_of, demo_exe, get, scratch_dir,
};

/// `unshare` and the namespace it made: killed on drop (the namespace's
/// PID 1 gets SIGKILL with it, `--kill-child`, and takes every process of
/// the namespace along).
struct Namespace {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- cluster output -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The state letter of `pid` in /proc (`S`, `R`, `Z`, ...).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The pids whose parent is `pid`, zombies included.
fn all_children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(end) = stat.rfind(')') else { continue };
        let ppid = stat[end + 2..].split_whitespace().nth(1);
        if ppid.and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn as_pid_1_the_master_reaps_orphans_and_term_drains_and_exits_0() {
    let dir = scratch_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("ringmaster.toml");
    std::fs::write(
        &config,
        format!("[groups.web]\nlisten = \"{addr}\"\ncount = 2\n"),
    )
    .unwrap();
    let log = dir.join("output.log");
    let out = std::fs::File::create(&log).unwrap();
    let spawned = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::fs::canonicalize(demo_exe()).unwrap())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env("RINGMASTER_DEMO_TEST_ROUTES", "1")
        .env("RINGMASTER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("run unshare (util-linux)");
    let mut ns = Namespace {
        child: spawned,
        log: log.clone(),
    };
    let unshare = ns.child.id();
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut master = 0;
    wait_until(
        "the master in the namespace",
        Duration::from_secs(10),
        || {
            if let Ok(Some(status)) = ns.child.try_wait() {
                panic!(
                    "unshare exited ({status}); it needs CAP_SYS_ADMIN (root):\n{}",
                    output()
                );
            }
            master = children_of(unshare).first().copied().unwrap_or(0);
            master != 0
        },
    );
    wait_until("two workers serving", Duration::from_secs(20), || {
        children_of(master).len() == 2 && get(addr, "/plaintext").is_ok_and(|r| r.status == 200)
    });
    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/cluster").expect("GET /cluster").body).unwrap();
    assert_eq!(
        status["status"]["master_pid"], 1,
        "the master is PID 1: {status}"
    );
    assert!(
        output().contains("the master is PID 1: it reaps orphaned processes"),
        "{}",
        output()
    );

    // A worker leaves an orphan; its parent becomes the master (PID 1).
    let r = get(addr, "/__test/orphan?ms=300").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let orphan = all_children_of(master)
        .into_iter()
        .find(|p| comm_of(*p) == "sleep");
    let orphan = orphan.unwrap_or_else(|| {
        panic!(
            "the orphan was re-parented to the master: its children are {:?}",
            all_children_of(master)
        )
    });
    // Once it exits, the master reaps it: no zombie stays behind.
    wait_until("the orphan reaped", Duration::from_secs(5), || {
        state_of(orphan).is_none()
    });
    let zombies: Vec<u32> = all_children_of(master)
        .into_iter()
        .filter(|p| state_of(*p) == Some('Z'))
        .collect();
    assert!(zombies.is_empty(), "zombies {zombies:?}");

    // TERM to PID 1: a graceful stop, exit 0.
    // SAFETY: a signal to the master this test started.
    unsafe { libc::kill(master as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = ns.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after TERM\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", output());
    assert!(
        output().contains("graceful stop: draining every worker"),
        "{}",
        output()
    );
}

#[test]
fn term_with_a_shutdown_delay_fails_readiness_at_once_serves_on_then_drains_without_failing() {
    let config = format!(
        "[server]\nshutdown_delay = \"2s\"\n{}",
        support::web_config("count = 2")
    );
    let mut cluster = support::start(&config, &[]);
    cluster.wait_workers(2);
    let addr = cluster.addr();
    assert_eq!(get(addr, "/readyz").unwrap().status, 200);
    let load = Load::start_n(addr, "/plaintext", 2);
    load.wait_ok(50);
    let mut events = cluster.events();
    let signalled = Instant::now();
    cluster.signal(libc::SIGTERM);
    // Probes see the stop at once (not after a cached answer expires).
    let failed_after = loop {
        let r = get(addr, "/readyz").expect("the workers still answer");
        if r.status == 503 {
            assert!(r.body.contains("stopping"), "{}", r.body);
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "/readyz still {} after 1 s",
            r.status
        );
    };
    assert!(
        failed_after < Duration::from_millis(100),
        "/readyz failed {failed_after:?} after TERM"
    );
    // The load balancer takes its time to stop sending; meanwhile every
    // request is served.
    let before = load.ok();
    std::thread::sleep(
        Duration::from_millis(1500) - signalled.elapsed().min(Duration::from_millis(1500)),
    );
    assert!(load.ok() > before + 20, "requests go on during the delay");
    load.finish_without_failures();
    // A slow request in flight when the drain starts is finished.
    let slow = std::thread::spawn(move || {
        support::get_timeout(addr, "/__test/sleep?ms=1000", Duration::from_secs(10))
    });
    let stopping: LifecycleRecord = events
        .wait_n(Duration::from_secs(5), "stopping", 1, |e| {
            matches!(e, Lifecycle::Stopping { graceful: true })
        })
        .remove(0);
    let draining = events
        .wait_n(Duration::from_secs(5), "the drain", 1, |e| {
            matches!(e, Lifecycle::WorkerDraining { .. })
        })
        .remove(0);
    let waited = draining.at_ms - stopping.at_ms;
    assert!(
        (1900..3000).contains(&waited),
        "the drain started {waited} ms after the stop"
    );
    let r = slow.join().unwrap().expect("the slow request is answered");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(cluster.wait_exit(Duration::from_secs(30)).success());
    cluster.assert_logged("server.shutdown_delay is over: draining every worker");
}

/// A cgroup of this test's own with a CPU quota of one CPU (v2 `cpu.max`
/// or v1 `cpu.cfs_quota_us`), removed on drop.
struct CpuQuota(std::path::PathBuf);

impl CpuQuota {
    fn one_cpu() -> CpuQuota {
        let name = format!("ringmaster-test-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(&name)
        } else {
            Path::new("/sys/fs/cgroup/cpu").join(&name)
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot create the cgroup {}: {e}; the test needs root and a writable cgroup tree",
                dir.display()
            )
        });
        let quota = CpuQuota(dir);
        if v2 {
            std::fs::write(quota.0.join("cpu.max"), "100000 100000").unwrap();
        } else {
            std::fs::write(quota.0.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(quota.0.join("cpu.cfs_quota_us"), "100000").unwrap();
        }
        quota
    }

    /// A launcher that moves itself into the cgroup, then execs the rest.
    fn launcher(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                self.0.display()
            ),
        ]
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Empty once its processes are gone, a moment after their kill.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_default_worker_count_is_the_cpus_the_cgroup_quota_allows_and_check_says_so() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "this machine has {cpus} CPU: a one-CPU quota would change nothing to see"
    );
    let quota = CpuQuota::one_cpu();
    let launcher = quota.launcher();
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    // No `count`: one worker per usable CPU.
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\n";
    let cluster =
        ClusterProc::spawn_via(&launcher, demo_exe(), scratch_dir(), config, &[]).wait_for_addrs(1);
    cluster.wait_workers(1);
    assert_eq!(cluster.status().group("web").unwrap().count, 1);
    let dir = cluster.dir().to_path_buf();
    let mut check = Command::new(launcher[0]);
    check
        .args(&launcher[1..])
        .arg(demo_exe())
        .args(["check", "--config"])
        .arg(dir.join("ringmaster.toml"))
        .current_dir(&dir);
    let out = support::output_within(check, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("usable CPUs: 1 (the cgroup's CPU quota is 1.00 CPUs, rounded down"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("group web: 1 worker on"), "{text}");
    drop(cluster);
}
