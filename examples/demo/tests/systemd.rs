//! The master under systemd (issue 13), with the real binary: what a
//! `Type=notify` service's `NOTIFY_SOCKET` hears (readiness, status,
//! reload, stop, watchdog), the environment workers get, and socket
//! activation through Debian's `systemd-socket-activate`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{ClusterProc, Lifecycle, NotifySocket, demo_exe, get, scratch_dir};

fn status_line(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("STATUS="))
}

const TWO_GROUPS: &str = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n\
                          [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";

#[test]
fn notify_socket_hears_ready_after_every_group_then_reload_stop_and_the_watchdog() {
    let dir = scratch_dir();
    let notify = NotifySocket::bind(&dir);
    let env = [
        ("NOTIFY_SOCKET", notify.path.as_str()),
        ("WATCHDOG_USEC", "1000000"),
        ("LISTEN_FDNAMES", "leaked"),
        ("RINGMASTER_DEMO_SLOW_BOOT_MS", "300"),
        ("RINGMASTER_DEMO_TEST_ROUTES", "1"),
    ];
    let mut cluster = ClusterProc::start(demo_exe(), dir, TWO_GROUPS, &env);
    let ready = notify.wait_line(0, "READY=1", Duration::from_secs(20));
    let got = notify.messages();
    // READY=1 comes with the summary of a cluster whose groups are all
    // ready, and no earlier message says READY.
    assert_eq!(
        status_line(&got[ready].1),
        Some("web 2/2 ready, api 1/1 ready"),
        "{got:#?}"
    );
    assert!(
        got[..ready].iter().all(|(_, m)| !m.contains("READY=1")),
        "{got:#?}"
    );
    assert!(
        got[..ready]
            .iter()
            .filter_map(|(_, m)| status_line(m))
            .any(|s| s.contains("0/2") || s.contains("1/2") || s.contains("0/1")),
        "while the workers boot, the status says they are short: {got:#?}"
    );
    let status = cluster.status();
    assert!(status.unready_groups().is_empty(), "{status:#?}");

    // Workers never see the service manager's variables.
    for pid in cluster.wait_workers(3) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for var in environ.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            for name in [
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
                "LISTEN_FDS",
                "LISTEN_PID",
                "LISTEN_FDNAMES",
            ] {
                assert!(
                    !var.starts_with(&format!("{name}=")),
                    "worker {pid} has {var}"
                );
            }
        }
    }

    // The watchdog: at least twice per WATCHDOG_USEC, never a gap of one.
    let window_start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let beats: Vec<Instant> = notify
        .messages()
        .into_iter()
        .filter(|(at, m)| *at >= window_start && m == "WATCHDOG=1\n")
        .map(|(at, _)| at)
        .collect();
    assert!(beats.len() >= 5, "{} keep-alives in 3 s", beats.len());
    let longest = beats.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(longest < Duration::from_secs(1), "a gap of {longest:?}");

    // A reload: RELOADING=1 (with the monotonic clock), then READY=1 once
    // it has finished.
    let mut events = cluster.events();
    let before = notify.messages().len();
    cluster.signal(libc::SIGHUP);
    let reloading = notify.wait_line(before, "RELOADING=1", Duration::from_secs(5));
    let got = notify.messages();
    assert!(
        got[reloading].1.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "{:?}",
        got[reloading]
    );
    events.wait(Duration::from_secs(30), "the reload finished", |e| {
        matches!(e, Lifecycle::ReloadFinished { .. })
    });
    let ready_again = notify.wait_line(reloading, "READY=1", Duration::from_secs(5));
    assert!(ready_again > reloading);
    let during: Vec<String> = notify.messages()[reloading..ready_again]
        .iter()
        .filter_map(|(_, m)| status_line(m).map(str::to_owned))
        .collect();
    assert!(
        during.iter().any(|s| s.starts_with("reloading web,api ")),
        "{during:#?}"
    );

    // A HUP that is refused (the file is broken) is still a reload that
    // ends: RELOADING=1, then READY=1 (Type=notify-reload waits for both).
    let config = cluster.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[groups.web\n").unwrap();
    let before = notify.messages().len();
    cluster.signal(libc::SIGHUP);
    let reloading = notify.wait_line(before, "RELOADING=1", Duration::from_secs(5));
    notify.wait_line(reloading, "READY=1", Duration::from_secs(5));
    cluster.assert_logged("HUP ignored");
    std::fs::write(&config, good).unwrap();

    // A stop: STOPPING=1.
    let before = notify.messages().len();
    cluster.signal(libc::SIGTERM);
    notify.wait_line(before, "STOPPING=1", Duration::from_secs(5));
    assert!(cluster.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn ready_is_never_sent_while_a_group_is_short() {
    let dir = scratch_dir();
    let notify = NotifySocket::bind(&dir);
    let env = [
        ("NOTIFY_SOCKET", notify.path.as_str()),
        ("RINGMASTER_DEMO_HANG_BOOT", "1"),
    ];
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\nboot_timeout = \"60s\"\n";
    let cluster = ClusterProc::start(demo_exe(), dir, config, &env);
    let first = notify.wait_line(0, "STATUS=web 0/1 ready", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let got = notify.messages();
    assert!(
        got.iter().all(|(_, m)| !m.contains("READY=1")),
        "{got:#?}\n{}",
        cluster.log()
    );
    assert_eq!(
        got.len(),
        first + 1,
        "nothing changed, nothing more sent: {got:#?}"
    );
}

/// Free TCP ports on 127.0.0.1 (bound, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `systemd-socket-activate`, which Debian's systemd package ships; the
/// test fails saying how to get it when it is missing.
fn socket_activate() -> &'static str {
    const PATH: &str = "/usr/bin/systemd-socket-activate";
    assert!(
        Path::new(PATH).exists(),
        "{PATH} is missing: install Debian's systemd package (`apt-get install systemd`); .ci/run does"
    );
    PATH
}

/// The TCP ports `pid` listens on, as `ss` shows them.
fn listening_ports(pid: u32) -> Vec<u16> {
    let out = std::process::Command::new("ss")
        .args(["-Hltnp"])
        .output()
        .expect("run ss (Debian's iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| {
            let local = l.split_whitespace().nth(3)?;
            local.rsplit(':').next()?.parse().ok()
        })
        .collect()
}

/// Connects to `addr` once `systemd-socket-activate` listens there.
fn connect_when_listening(
    cluster: &ClusterProc,
    addr: std::net::SocketAddr,
) -> std::net::TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the demo under `systemd-socket-activate` listening on `ports`
/// with the given fd names, triggers it with a first connection (which
/// must be served once the workers are up), and waits for `groups`.
fn activated(
    ports: &[u16],
    names: &str,
    config: &str,
    groups: usize,
) -> (ClusterProc, std::thread::JoinHandle<std::io::Result<u16>>) {
    let mut launcher = vec![socket_activate().to_string()];
    for port in ports {
        launcher.push(format!("--listen=127.0.0.1:{port}"));
    }
    launcher.push(format!("--fdname={names}"));
    for var in ["RINGMASTER_LOG", "RINGMASTER_DEMO_TEST_ROUTES"] {
        launcher.push(format!("--setenv={var}"));
    }
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let env = [("RINGMASTER_DEMO_TEST_ROUTES", "1")];
    let cluster = ClusterProc::spawn_via(&launcher, demo_exe(), scratch_dir(), config, &env);
    let web: std::net::SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    // systemd-socket-activate starts the master on the first connection,
    // like systemd does: that connection waits in the socket's queue.
    drop(connect_when_listening(&cluster, web));
    let first = std::thread::spawn(move || {
        support::get_timeout(web, "/plaintext", Duration::from_secs(20)).map(|r| r.status)
    });
    (cluster.wait_for_addrs(groups), first)
}

#[test]
fn with_sockets_from_systemd_the_master_binds_nothing_serves_and_reloads() {
    let ports = free_ports(3);
    // `web` is matched by its fd name (its configured address is another
    // one); `api` by its address (its fd has another name); the third
    // socket is for no group.
    let config = format!(
        "[groups.web]\nlisten = \"127.0.0.1:1\"\ncount = 2\nlisten_mode = \"reuseport\"\n\
         [groups.api]\nlisten = \"127.0.0.1:{}\"\ncount = 1\n",
        ports[1]
    );
    let (cluster, first) = activated(&ports, "web:spare:extra", &config, 2);
    assert_eq!(first.join().unwrap().unwrap(), 200, "{}", cluster.log());
    cluster.wait_workers(3);
    let status = cluster.status();
    let web = status.group("web").unwrap();
    assert_eq!(web.listen, format!("127.0.0.1:{}", ports[0]));
    assert_eq!(web.listen_mode, "shared", "one inherited socket: shared");
    assert_eq!(
        status.group("api").unwrap().listen,
        format!("127.0.0.1:{}", ports[1])
    );
    cluster.assert_logged("systemd passed one socket: the group's workers share it");
    cluster.assert_logged("systemd passed a socket no group uses");
    let mut ports = ports[..2].to_vec();
    ports.sort_unstable();
    let mut bound = listening_ports(cluster.pid());
    bound.sort_unstable();
    bound.dedup();
    assert_eq!(
        bound, ports,
        "the master listens on the inherited sockets only"
    );

    let mut events = cluster.events();
    cluster.signal(libc::SIGHUP);
    events.wait(Duration::from_secs(30), "the reload finished", |e| {
        matches!(e, Lifecycle::ReloadFinished { .. })
    });
    for port in &ports {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let path = "/healthz";
        let r = get(addr, path).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let mut bound = listening_ports(cluster.pid());
    bound.sort_unstable();
    bound.dedup();
    assert_eq!(bound, ports, "a reload binds nothing either");
}

#[test]
fn a_group_systemd_passed_no_socket_for_is_a_boot_error_naming_it() {
    let ports = free_ports(1);
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n\
                  [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let mut launcher = vec![
        socket_activate().to_string(),
        format!("--listen=127.0.0.1:{}", ports[0]),
        "--fdname=web".to_string(),
    ];
    launcher.push("--setenv=RINGMASTER_LOG".into());
    let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
    let mut cluster = ClusterProc::spawn_via(&launcher, demo_exe(), scratch_dir(), config, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let _trigger = connect_when_listening(&cluster, addr);
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", cluster.log());
    let log = cluster.log();
    assert!(log.contains("for group \"api\""), "{log}");
    assert!(log.contains("FileDescriptorName=api"), "{log}");
}
