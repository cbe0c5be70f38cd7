//! Storage faults, each with the real binary: a full disk under the log,
//! and an SQLite file made read-only, replaced or removed under the
//! workers (issue 11). Split from `reliability.rs`.

mod support;

use std::time::Duration;

use support::{Lifecycle, group_pids, settled, wait_status};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a small tmpfs (a disk that fills up) needs root and util-linux's mount"
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_loses_only_counted_lines_and_leaves_no_torn_one() {
    let dir = support::scratch_dir();
    let logs = dir.join("logs");
    let _disk = Mount::tmpfs(&logs, "256k");
    let config = "[server]\nlog_file = \"logs/app.log\"\n[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let cluster = support::ClusterProc::start(
        support::demo_exe(),
        dir.clone(),
        config,
        &[("RINGMASTER_DEMO_TEST_ROUTES", "1")],
    );
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    // The disk fills up.
    let filler = logs.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f
            .write_all(&[b'x'; 4096])
            .and_then(|()| f.sync_data())
            .is_ok()
        {}
    }
    // A little room, so that a write stops in the middle of a line.
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len.saturating_sub(10_000))
        .unwrap();
    // Lines keep coming through an outage of several retries (one a second).
    for _ in 0..4 {
        let r = support::get(cluster.addr(), "/__test/log?n=5000&size=100").unwrap();
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(800));
    }
    // Room again: the master notices by itself (it retries every second).
    std::fs::remove_file(&filler).unwrap();
    let path = logs.join("app.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    // Each time writing works again a note says how many lines were lost
    // since it last worked (a write can succeed between failures while
    // the disk is nearly full: then there are several notes).
    // (And a note when the queue itself dropped lines, the sink being slow:
    // every dropped line is in some note.)
    // Only whole notes count: one cut by a failed write is trimmed at the
    // next reopen.
    const NOTE: &str = " log lines dropped";
    const ENDS: [&str; 2] = [
        " while the log could not be written",
        ": the log could not keep up (server.log_buffer is full)",
    ];
    let noted = || -> u64 {
        read()
            .lines()
            .filter(|l| l.contains(NOTE) && ENDS.iter().any(|e| l.ends_with(e)))
            .filter_map(|l| {
                l.split(NOTE)
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while noted() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no note\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The master publishes its counter every second, and a later note
    // may still come (several outages): wait until both agree.
    let counted = || support::series_sum(&cluster, "ringmaster_log_lines_dropped_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut n, mut c) = (noted(), counted());
    // (An early short outage, while the disk filled, may have its own small
    // note first: wait for the flood's.)
    while (n != c || n <= 1000) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (n, c) = (noted(), counted());
    }
    assert!(
        n > 1000,
        "the flood was mostly lost: {n} (counter {c}); notes: {:?}",
        read()
            .lines()
            .filter(|l| l.contains(NOTE) || l.contains("cannot"))
            .collect::<Vec<_>>()
    );
    assert_eq!(n, c, "the notes say what the counter says (within 10 s)");
    // Every line whole: nothing torn by the failed writes. Read once the
    // log is quiet: its buffer may be midway through a line while it flows.
    let mut text = read();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let again = read();
        if again == text {
            break;
        }
        text = again;
    }
    for line in text.split_inclusive('\n') {
        assert!(line.ends_with('\n'), "a torn last line: {line:?}");
        assert!(
            line.starts_with("master ")
                || line.starts_with("migrate ")
                || line.starts_with("web/0 "),
            "every line starts with its tag: {line:?}"
        );
    }
    drop(cluster);
}

fn remount(at: &std::path::Path, how: &str) {
    let ok = std::process::Command::new("mount")
        .args(["-o", &format!("remount,{how}")])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "remount {how} {}", at.display());
}

#[test]
fn a_read_only_sqlite_file_fails_the_boot_clearly_and_recovers_by_itself() {
    let dir = support::scratch_dir();
    let data = dir.join("data");
    let _disk = Mount::tmpfs(&data, "16m");
    // A kill within min_uptime is a strike: the replacement starts 1 s
    // later, which leaves the file closed long enough to remount.
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\nmin_uptime = \"1h\"\n\
                  restart_backoff = \"1s\"\nrestart_backoff_max = \"1s\"\n\
                  [backends.main]\nurl = \"sqlite://data/main.db\"\n";
    let cluster = support::ClusterProc::start(
        support::demo_exe(),
        dir.clone(),
        config,
        &[("RINGMASTER_DEMO_TEST_ROUTES", "1")],
    );
    let s = wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    support::create_link(cluster.addr(), "https://example.com/before");
    // The worker dies; while it is down the file system goes read-only
    // (root writes through file modes, not through a read-only mount).
    let pid = group_pids(&s, "web")[0];
    // SAFETY: kill a worker of this test's cluster.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_status(&cluster, "the worker gone", |s| {
        support::group(s, "web")["ready"] == 0
    });
    remount(&data, "ro");
    let s = wait_status(&cluster, "the replacement refused at boot", |s| {
        support::group(s, "web")["last_exit"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is read-only"))
    });
    let reason = support::group(&s, "web")["last_exit"]["reason"].to_string();
    assert!(reason.contains("sqlite://data/main.db"), "{reason}");
    // Writable again: a worker boots by itself (no HUP) and writes work.
    remount(&data, "rw");
    wait_status(&cluster, "ready again", |s| settled(s, "web", 1));
    support::create_link(cluster.addr(), "https://example.com/after");
    drop(cluster);
}

#[test]
fn a_replaced_sqlite_file_gets_a_worker_that_opens_it() {
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let cluster = support::start(config, &[]);
    let before = group_pids(
        &wait_status(&cluster, "ready", |s| settled(s, "web", 1)),
        "web",
    );
    support::create_link(cluster.addr(), "https://example.com/old");
    // A restore from a backup: the path now holds another file.
    let db = cluster.dir().join("main.db");
    std::fs::copy(&db, cluster.dir().join("main.db.new")).unwrap();
    std::fs::rename(cluster.dir().join("main.db.new"), &db).unwrap();
    let s = wait_status(&cluster, "a worker on the new file", |s| {
        settled(s, "web", 1) && group_pids(s, "web") != before
    });
    let exit = &support::group(&s, "web")["workers"][0]["last_exit"];
    assert_eq!(exit["reason"], "recycled: sqlite file replaced", "{exit:#}");
    assert!(
        cluster
            .log()
            .contains("was replaced while this worker had it open"),
        "{}",
        cluster.log()
    );
    let code = support::create_link(cluster.addr(), "https://example.com/new");
    let r = support::get(cluster.addr(), &format!("/l/{code}")).unwrap();
    assert_eq!(
        r.status, 302,
        "written to, and read from, the file at the path"
    );
}

#[test]
fn a_removed_sqlite_file_loses_no_acknowledged_write() {
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n";
    let cluster = support::start(config, &[]);
    wait_status(&cluster, "ready", |s| settled(s, "web", 1));
    support::create_link(cluster.addr(), "https://example.com/kept");
    let mut events = cluster.events();
    std::fs::remove_file(cluster.dir().join("main.db")).unwrap();
    // The worker notices within its check interval: from then on a write
    // is refused (503), never acknowledged into the unlinked file.
    cluster.wait_log(Duration::from_secs(5), "the removal noticed", |log| {
        log.contains("was removed while this worker had it open")
    });
    let body = r#"{"url":"https://example.com/lost"}"#;
    let r = support::request(cluster.addr(), "POST", "/links", Some(body)).unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    // Routes that need no database go on; the replacement refuses to
    // boot on a missing file, naming it and what to do.
    assert_eq!(
        support::get(cluster.addr(), "/plaintext").unwrap().status,
        200
    );
    events.wait(Duration::from_secs(5), "the replacement refused", |e| {
        matches!(e, Lifecycle::WorkerExited { reason, .. } if reason.contains("has no database file"))
    });
    // A HUP runs the migrations (a new, empty file) and replaces the worker.
    cluster.signal(libc::SIGHUP);
    let s = wait_status(&cluster, "a worker on the new file", |s| {
        settled(s, "web", 1)
            && support::group(s, "web")["workers"][0]["last_exit"]["reason"] == "reload"
    });
    drop(s);
    support::create_link(cluster.addr(), "https://example.com/new");
    drop(cluster);
}
