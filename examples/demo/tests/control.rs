//! Control plane tests: the real binary's `status`, `scale`, `reload`,
//! `restart` and `stop` over its control socket, under load; recycling;
//! and what the socket does with other users, garbage and idle clients.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use support::{Load, cli, get, group, group_pids, settled, status_json, wait_status, web_config};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const TWO_GROUPS: &str = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n\
                          [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";

#[test]
fn status_shows_every_group_and_worker_with_live_figures() {
    let cluster = support::start(TWO_GROUPS, &[]);
    let s = wait_status(&cluster, "both groups ready", |s| {
        settled(s, "web", 2) && settled(s, "api", 1)
    });
    assert_eq!(s["state"], "running");
    assert_eq!(s["master_pid"], cluster.pid());
    let mut pids: Vec<u64> = group_pids(&s, "web");
    pids.extend(group_pids(&s, "api"));
    pids.sort_unstable();
    let mut children: Vec<u64> = cluster.worker_pids().iter().map(|p| *p as u64).collect();
    children.sort_unstable();
    assert_eq!(pids, children, "status names the master's children");
    let web = group(&s, "web");
    assert_eq!(
        (web["worker"].as_str(), web["state"].as_str()),
        (Some("web"), Some("ok"))
    );
    assert_eq!(web["listen"], cluster.addr_of("web").to_string());
    // Under load the registry's figures show per worker.
    let load = Load::start_n(cluster.addr_of("web"), "/plaintext", 2);
    load.wait_ok(200);
    let s = wait_status(&cluster, "request rates and p99 per worker", |s| {
        group(s, "web")["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| {
                w["requests_per_sec"].as_f64() > Some(0.0)
                    && w["p99_ms"].as_f64().is_some()
                    && w["rss_bytes"].as_u64() > Some(1 << 20)
                    && w["heartbeat_age_ms"].as_u64().is_some()
            })
    });
    load.finish_without_failures();
    let w = &group(&s, "web")["workers"][0];
    assert!(w["requests_total"].as_u64() > Some(0), "{w:#}");
    assert!(w["cpu_percent"].as_f64().is_some(), "{w:#}");
    // The table says the same.
    let out = cli(&cluster, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in ["GROUP", "READY", "2/2", "RESTARTS", "P99", "api"] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
}

#[test]
fn scale_up_and_down_under_load_fails_no_request() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    wait_status(&cluster, "2 ready workers", |s| settled(s, "web", 2));
    let load = Load::start_n(cluster.addr(), "/plaintext", 3);
    load.wait_ok(200);
    let out = cli(&cluster, &["scale", "web", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web: 2 -> 4"), "{}", text(&out));
    wait_status(&cluster, "4 ready workers", |s| settled(s, "web", 4));
    load.wait_ok(200);
    let out = cli(&cluster, &["scale", "web", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_status(&cluster, "1 ready worker", |s| settled(s, "web", 1));
    load.wait_ok(200);
    let out = cli(&cluster, &["scale", "web", "+1"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_status(&cluster, "2 ready workers", |s| settled(s, "web", 2));
    load.wait_ok(200);
    load.finish_without_failures();
    // Bad counts change nothing and say why.
    for (arg, says) in [
        ("0", "1 to 1024"),
        ("-5", "1 to 1024"),
        ("many", "expected a number"),
    ] {
        let out = cli(&cluster, &["scale", "web", arg]);
        assert!(!out.status.success(), "scale web {arg}: {}", text(&out));
        assert!(text(&out).contains(says), "scale web {arg}: {}", text(&out));
    }
    let out = cli(&cluster, &["scale", "nope", "2"]);
    assert!(
        text(&out).contains("no group named \"nope\""),
        "{}",
        text(&out)
    );
    assert!(settled(&status_json(&cluster), "web", 2));
}

#[test]
fn reload_of_one_group_replaces_its_workers_only_under_load() {
    let cluster = support::start(TWO_GROUPS, &[]);
    let before = wait_status(&cluster, "both groups ready", |s| {
        settled(s, "web", 2) && settled(s, "api", 1)
    });
    let (web_before, api_before) = (group_pids(&before, "web"), group_pids(&before, "api"));
    let load = Load::start_n(cluster.addr_of("web"), "/plaintext", 3);
    load.wait_ok(200);
    let out = cli(&cluster, &["reload", "--group", "web"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", cluster.log());
    for (slot, old) in web_before.iter().enumerate() {
        assert!(said.contains(&format!("web/{slot}: {old} -> ")), "{said}");
    }
    assert!(said.contains("reload done: 2 workers replaced"), "{said}");
    load.wait_ok(200);
    load.finish_without_failures();
    let after = wait_status(&cluster, "web settled again", |s| settled(s, "web", 2));
    let web_after = group_pids(&after, "web");
    assert!(
        web_after.iter().all(|p| !web_before.contains(p)),
        "every web worker is new: {web_before:?} -> {web_after:?}"
    );
    assert_eq!(group_pids(&after, "api"), api_before, "api is untouched");
    let exit = &group(&after, "web")["workers"][0]["last_exit"];
    assert_eq!(exit["reason"], "reload", "{exit:#}");
    assert_eq!(exit["code"], 0, "{exit:#}");
}

#[test]
fn a_reload_whose_workers_fail_to_boot_exits_non_zero_and_keeps_the_old_ones() {
    let dir = support::scratch_dir();
    let switch = dir.join("fail-boot");
    let switch_env = switch.to_string_lossy().into_owned();
    let cluster = support::start(
        &web_config("count = 2"),
        &[("RINGMASTER_DEMO_FAIL_BOOT_FILE", switch_env.as_str())],
    );
    let before = group_pids(
        &wait_status(&cluster, "2 ready", |s| settled(s, "web", 2)),
        "web",
    );
    std::fs::write(&switch, "").unwrap();
    let load = Load::start(cluster.addr(), "/plaintext");
    let out = cli(&cluster, &["reload", "--group", "web"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("reload stopped"), "{said}");
    assert!(said.contains("failed to boot"), "{said}");
    assert!(
        said.contains("exists: failing on purpose"),
        "names the cause: {said}"
    );
    load.wait_ok(100);
    let (_, failed, _) = load.finish();
    assert!(
        failed.is_empty(),
        "the old workers kept serving: {failed:?}"
    );
    let s = status_json(&cluster);
    assert_eq!(group_pids(&s, "web"), before, "the old workers are kept");
    assert_eq!(s["state"], "running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restart_replaces_one_worker_ready_first() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    let before = group_pids(
        &wait_status(&cluster, "2 ready", |s| settled(s, "web", 2)),
        "web",
    );
    let load = Load::start_n(cluster.addr(), "/plaintext", 2);
    load.wait_ok(100);
    let out = cli(&cluster, &["restart", "web/1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("web/1: {} -> ", before[1])),
        "{}",
        text(&out)
    );
    load.wait_ok(100);
    load.finish_without_failures();
    let after = group_pids(
        &wait_status(&cluster, "settled", |s| settled(s, "web", 2)),
        "web",
    );
    assert_eq!(after[0], before[0], "slot 0 untouched");
    assert_ne!(after[1], before[1], "slot 1 replaced");
    for (arg, says) in [
        ("web/7", "slots 0 to 1"),
        ("web", "GROUP/SLOT"),
        ("db/0", "no group"),
    ] {
        let out = cli(&cluster, &["restart", arg]);
        assert!(!out.status.success(), "restart {arg}: {}", text(&out));
        assert!(text(&out).contains(says), "restart {arg}: {}", text(&out));
    }
}

#[test]
fn stop_returns_once_the_master_has_exited() {
    let mut cluster = support::start(&web_config("count = 2"), &[]);
    wait_status(&cluster, "2 ready", |s| settled(s, "web", 2));
    let started = Instant::now();
    let out = cli(&cluster, &["stop", "--timeout", "5s"]);
    assert!(out.status.success(), "{}\n{}", text(&out), cluster.log());
    assert!(text(&out).contains("stopped"), "{}", text(&out));
    // Already gone: the command waited for it (what is left is for this
    // test, its parent, to reap).
    let status = cluster.wait_exit(Duration::from_millis(500));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nobody answers any more: the commands say where they looked.
    let out = cli(&cluster, &["status"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("ringmaster.sock") && said.contains("no master is running"),
        "{said}"
    );
}

#[test]
fn max_requests_recycles_a_worker_with_no_failed_request() {
    let config = web_config("count = 1\nmax_requests = 300\nmax_requests_jitter = 50");
    let cluster = support::start(&config, &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    let load = Load::start_n(cluster.addr(), "/plaintext", 2);
    let s = wait_status(&cluster, "the worker recycled", |s| {
        let pids = group_pids(s, "web");
        settled(s, "web", 1) && pids != before
    });
    load.wait_ok(100);
    load.finish_without_failures();
    let exit = &group(&s, "web")["workers"][0]["last_exit"];
    assert_eq!(exit["reason"], "recycled: max_requests", "{exit:#}");
    assert_eq!(exit["code"], 0, "it drained and exited 0: {exit:#}");
    assert_eq!(group(&s, "web")["workers"][0]["restarts"], 0, "not a crash");
}

#[test]
fn max_rss_recycles_a_worker_with_no_failed_request() {
    let cluster = support::start(
        &web_config("count = 1\nmax_rss = 134217728\nmin_uptime = \"300ms\""),
        &[],
    );
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    let load = Load::start(cluster.addr(), "/plaintext");
    load.wait_ok(50);
    let r = get(cluster.addr(), "/__test/alloc?mb=160").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let s = wait_status(&cluster, "the worker recycled", |s| {
        settled(s, "web", 1) && group_pids(s, "web") != before
    });
    load.wait_ok(50);
    load.finish_without_failures();
    let exit = &group(&s, "web")["workers"][0]["last_exit"];
    assert_eq!(exit["reason"], "recycled: max_rss", "{exit:#}");
    assert!(cluster.log().contains("past max_rss"), "{}", cluster.log());
}

/// Sends `line` on a fresh connection and reads one reply line.
fn ask_raw(path: &std::path::Path, line: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A writer thread: a client must be able to send a huge line while
    // the master already answers.
    let mut w = s.try_clone().unwrap();
    let bytes = line.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    let mut reply = String::new();
    BufReader::new(&mut s).read_line(&mut reply).unwrap();
    let _ = writer.join();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

#[test]
fn bad_requests_and_idle_clients_change_nothing_and_status_still_answers() {
    let cluster = support::start(&web_config("count = 1"), &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    let sock = cluster.dir().join("ringmaster.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is the owner's only");
    let cases: [(&[u8], &str); 6] = [
        (b"hello\n", "bad_request"),
        (b"{\"v\":1,\"cmd\":\"launch\"}\n", "bad_request"),
        (b"{\"v\":9,\"cmd\":\"status\"}\n", "bad_version"),
        (
            b"{\"v\":1,\"cmd\":\"scale\",\"group\":\"web\"}\n",
            "bad_request",
        ),
        (
            b"{\"v\":1,\"cmd\":\"stop\",\"timeout_ms\":\"soon\"}\n",
            "bad_request",
        ),
        (
            b"{\"v\":1,\"cmd\":\"scale\",\"group\":\"web\",\"delta\":9223372036854775807}\n",
            "bad_request",
        ),
    ];
    for (line, code) in cases {
        let reply = ask_raw(&sock, line);
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let mut huge = vec![b'x'; 1 << 20];
    huge.push(b'\n');
    let reply = ask_raw(&sock, &huge);
    assert_eq!(reply["error"]["code"], "line_too_long", "{reply}");
    // 100 connections that say nothing do not lock the operator out.
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let asked = Instant::now();
    let s = status_json(&cluster);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "status took {:?}",
        asked.elapsed()
    );
    assert_eq!(group_pids(&s, "web"), before, "nothing changed");
    // ...and are cut off once idle too long, each told why.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("\"idle\""), "{reply:?}");
    }
    // More connections than the limit: the idlest are closed, a new
    // client still gets through.
    let many: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    assert_eq!(status_json(&cluster)["state"], "running");
    let mut first = &many[0];
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = String::new();
    first.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("\"evicted\""), "{reply:?}");
    assert_eq!(group_pids(&status_json(&cluster), "web"), before);
}

#[test]
fn another_uid_is_refused_and_logged() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs a command as uid 65534 with setpriv, which needs root \
         (CI and the development machines run as root)"
    );
    let cluster = support::start(&web_config("count = 1"), &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let as_nobody = || {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(support::demo_exe())
            .args(["status", "--config"])
            .arg(cluster.config_path())
            .current_dir(cluster.dir())
            .output()
            .expect("setpriv (util-linux) runs the command as another user")
    };
    // The socket's mode keeps other users out...
    let out = as_nobody();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    // ...and so does the peer check, should the mode be loosened.
    let sock = cluster.dir().join("ringmaster.sock");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("uid 65534 may not control this master"),
        "{}",
        text(&out)
    );
    cluster.wait_log(Duration::from_secs(5), "the refusal logged", |log| {
        log.contains("refused a control connection from uid 65534")
    });
    // The owner still gets through.
    assert_eq!(status_json(&cluster)["state"], "running");
}

#[test]
fn the_socket_directory_is_created_private() {
    let config = "[server]\ncontrol_socket = \"run/ctl/master.sock\"\n\
                  [groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let cluster = support::start(config, &[]);
    wait_status(&cluster, "ready through the socket in run/ctl", |s| {
        settled(s, "web", 1)
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(cluster.dir().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("run/ctl"), 0o700);
    assert_eq!(mode("run/ctl/master.sock"), 0o600);
}

#[test]
fn a_stop_with_an_absurd_timeout_still_stops_cleanly() {
    let mut cluster = support::start(&web_config("count = 1"), &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    let reply = ask_raw(
        &cluster.dir().join("ringmaster.sock"),
        b"{\"v\":1,\"cmd\":\"stop\",\"timeout_ms\":18446744073709551615}\n",
    );
    assert_eq!(reply["event"], "stopping", "{reply}");
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", cluster.log());
}

/// `events` run against `cluster` with `args`: its stdout lines as they
/// come, until `enough` says so or 10 s pass; the command is then killed.
fn events_cli(
    cluster: &support::ClusterProc,
    args: &[&str],
    enough: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut child = std::process::Command::new(support::demo_exe())
        .arg("events")
        .args(args)
        .arg("--config")
        .arg(cluster.config_path())
        .current_dir(cluster.dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while !enough(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn events_prints_what_happened_and_follows_what_happens() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    wait_status(&cluster, "2 ready", |s| settled(s, "web", 2));
    // What the master kept: the boot of both workers, as text.
    let lines = events_cli(&cluster, &["--last", "100"], |l| {
        l.iter().filter(|l| l.contains("worker ready web/")).count() >= 2
    });
    let ready: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("worker ready"))
        .collect();
    assert_eq!(ready.len(), 2, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with('+')), "{lines:#?}");
    let spawned = lines
        .iter()
        .position(|l| l.contains("worker spawned web/0"));
    let ready = lines.iter().position(|l| l.contains("worker ready web/0"));
    assert!(spawned.is_some() && spawned < ready, "{lines:#?}");
    // Followed, as JSON: a scale done meanwhile arrives.
    let follower = {
        let config = cluster.config_path();
        let dir = cluster.dir().to_path_buf();
        std::thread::spawn(move || {
            let mut child = std::process::Command::new(support::demo_exe())
                .args(["events", "--json", "--config"])
                .arg(config)
                .current_dir(dir)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let line = lines.next().unwrap().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            line
        })
    };
    // The follower subscribes before the scale (its subscription is
    // confirmed to it, not to this test: scale until it has seen one).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut count = 2;
    while !follower.is_finished() {
        assert!(Instant::now() < deadline, "the follower saw nothing");
        count = if count == 2 { 3 } else { 2 };
        let out = cli(&cluster, &["scale", "web", &count.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
    let line: serde_json::Value = serde_json::from_str(&follower.join().unwrap()).unwrap();
    assert_eq!(line["event"], "lifecycle", "{line}");
    assert!(line["seq"].as_u64().is_some(), "{line}");
    assert!(line["kind"].is_string(), "{line}");
}
