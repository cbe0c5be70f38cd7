//! Cluster tests of the demo's applications with the real binary: the
//! links flow end to end on SQLite and on PostgreSQL, two groups on two
//! ports, backends that are down or misconfigured, and the `routes` and
//! `check` commands.

mod support;

use std::process::Command;
use std::time::Duration;

use ringmaster_testkit::pg::TestDatabase;
use support::{ClusterProc, Lifecycle, alive, get, request};

/// Two groups, `web` and `api`, on free ports, with extra TOML appended.
fn two_groups(extra: &str) -> String {
    format!(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n\
         [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\n{extra}\n"
    )
}

/// Creates a link through `web`, follows it `clicks` times (fresh
/// connections, so both workers serve), reads it back through `api`,
/// deletes it, and checks that it is gone.
fn links_flow(cluster: &ClusterProc) {
    let (web, api) = (cluster.addrs[0].1, cluster.addrs[1].1);
    assert_eq!(cluster.addrs[0].0, "web");
    assert_eq!(cluster.addrs[1].0, "api");
    let code = support::create_link(web, "https://example.com/ringmaster");
    let mut served_by = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = request(web, "GET", &format!("/l/{code}"), None).unwrap();
        assert_eq!(
            (r.status, r.body.as_str()),
            (302, "https://example.com/ringmaster")
        );
        served_by.insert(support::health_pid(web).unwrap());
    }
    // Clicks that hit a worker's cache are counted in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let seen = loop {
        let r = get(api, &format!("/api/links/{code}")).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if seen["clicks"] == 10 || std::time::Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(
        seen["clicks"], 10,
        "every click counted, whichever worker served it"
    );
    let r = request(web, "DELETE", &format!("/links/{code}"), None).unwrap();
    assert_eq!(r.status, 204);
    // The other worker's cache drops the code when the delete's IPC message
    // arrives: within 100 ms (docs/ipc.md), usually well under 1 ms.
    let deleted_at = std::time::Instant::now();
    loop {
        let sent = std::time::Instant::now();
        let status = request(web, "GET", &format!("/l/{code}"), None)
            .unwrap()
            .status;
        if status == 404 {
            break;
        }
        assert!(
            sent.duration_since(deleted_at) < std::time::Duration::from_millis(100),
            "still redirected {:?} after the delete",
            sent.duration_since(deleted_at)
        );
    }
    assert_eq!(get(api, &format!("/api/links/{code}")).unwrap().status, 404);
    let r = request(
        web,
        "POST",
        "/links",
        Some(r#"{"url":"javascript:alert(1)"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(get(web, "/db").unwrap().status, 200);
}

#[test]
fn links_flow_on_the_embedded_sqlite() {
    let cluster = support::start(&two_groups(""), &[]);
    cluster.wait_workers(3);
    links_flow(&cluster);
    assert!(
        cluster.log().contains("url=sqlite://main.db"),
        "{}",
        cluster.log()
    );
}

#[test]
fn links_flow_on_postgresql() {
    let db = TestDatabase::create();
    let cluster = support::start(
        &two_groups(&format!("[backends.main]\nurl = \"{}\"\n", db.url)),
        &[],
    );
    cluster.wait_workers(3);
    links_flow(&cluster);
    assert!(
        cluster.log().contains(&format!("url={}", db.url)),
        "{}",
        cluster.log()
    );
}

#[test]
fn a_group_that_needs_only_sqlite_serves_while_postgresql_is_down() {
    let cluster = support::start(
        &two_groups("[backends.reports]\nurl = \"postgres://ringmaster@127.0.0.1:1/reports\"\n"),
        &[],
    );
    cluster.wait_workers(3);
    links_flow(&cluster);
    assert!(
        !cluster.log().contains("backend=reports"),
        "{}",
        cluster.log()
    );
}

#[test]
fn a_bad_backend_url_is_a_clear_error_while_the_master_keeps_running() {
    // The api group has no migrations: its workers open the backend at boot,
    // fail, say why, and are restarted with backoff.
    let mut cluster = support::start(
        "[groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 1\nrestart_backoff = \"50ms\"\n\
         [backends.main]\nurl = \"postgres://ringmaster:s3cret@127.0.0.1:1/nope\"\nconnect_timeout = \"1s\"\n",
        &[],
    );
    let exits = cluster
        .history()
        .wait_n(Duration::from_secs(15), "three failed boots", 3, |e| {
            matches!(
                e,
                Lifecycle::WorkerExited {
                    restart_in_ms: Some(_),
                    ..
                }
            )
        });
    let strikes: Vec<u32> = exits
        .iter()
        .map(|r| match &r.what {
            Lifecycle::WorkerExited { strikes, .. } => *strikes,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(strikes, [1, 2, 3], "each failed boot is a strike");
    cluster.assert_logged(
        "backend \"main\" (postgres://ringmaster:***@127.0.0.1:1/nope) is unreachable",
    );
    cluster.assert_logged("fix backends.main.url");
    cluster.assert_logged("strikes=3");
    let log = cluster.log();
    assert!(!log.contains("s3cret"), "the password leaked:\n{log}");
    assert!(
        cluster.try_wait().is_none(),
        "the master must keep running\n{log}"
    );
    assert!(alive(cluster.pid()));
}

#[test]
fn failing_migrations_hold_the_workers_back_and_are_retried() {
    let mut cluster = support::start(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n\
         [backends.main]\nurl = \"postgres://ringmaster:s3cret@127.0.0.1:1/nope\"\nconnect_timeout = \"500ms\"\n",
        &[],
    );
    let mut events = cluster.history();
    events.wait_n(Duration::from_secs(15), "two migration attempts", 2, |e| {
        matches!(
            e,
            Lifecycle::MigrationFailed {
                retry_in_ms: Some(_),
                ..
            }
        )
    });
    let seen = events.seen();
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Lifecycle::WorkerSpawned { .. })),
        "{seen:#?}"
    );
    cluster.assert_logged("postgres://ringmaster:***@127.0.0.1:1/nope");
    let log = cluster.log();
    assert!(!log.contains("s3cret"), "the password leaked:\n{log}");
    assert!(
        cluster.try_wait().is_none(),
        "the master must keep running\n{log}"
    );
}

#[test]
fn a_postgresql_port_that_refuses_says_connection_refused_at_once() {
    // A connect_timeout far above the wait: the cause must not wait for it
    // (it once came only after it, as "pool timed out").
    let cluster = support::start(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n\
         [backends.main]\nurl = \"postgres://ringmaster@127.0.0.1:1/nope\"\nconnect_timeout = \"60s\"\n",
        &[],
    );
    let failed = cluster
        .history()
        .wait(Duration::from_secs(10), "the migrations to fail", |e| {
            matches!(e, Lifecycle::MigrationFailed { .. })
        });
    let Lifecycle::MigrationFailed { error, .. } = failed else {
        unreachable!()
    };
    assert!(error.contains("Connection refused"), "{error}");
    assert!(!error.contains("pool timed out"), "{error}");
    assert!(
        error.contains("backend \"main\""),
        "the backend is named: {error}"
    );
}

/// The start-up migrations against a PostgreSQL that is down, retried
/// every second or two: the log once `attempts` have failed, cut after the
/// master's line about the last of them.
fn failed_migrations_log(attempts: usize) -> String {
    let cluster = support::start(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n\
         [backends.main]\nurl = \"postgres://ringmaster@127.0.0.1:1/nope\"\nconnect_timeout = \"300ms\"\n",
        &[],
    );
    let failed = "migrations failed; no worker starts";
    cluster.wait_log(
        Duration::from_secs(15),
        "failed migration attempts",
        |log| log.matches(failed).count() >= attempts,
    );
    let log = cluster.log();
    let end = log.rfind(failed).unwrap();
    let end = end + log[end..].find('\n').unwrap_or(log.len() - end);
    log[..end].to_string()
}

#[test]
fn a_failed_migration_is_one_line_saying_that_the_master_retries() {
    let log = failed_migrations_log(1);
    let line = log
        .lines()
        .find(|l| l.contains("migrations failed; no worker starts"))
        .unwrap();
    assert!(line.starts_with("master "), "{log}");
    assert!(
        !line.contains('\\') && !line.contains("  The master"),
        "a string continuation left in the message: {line:?}\n{log}"
    );
    assert!(
        line.contains("retries in") && line.contains("HUP retries now"),
        "{line}"
    );
    assert!(!log.contains("start again"), "the master retries:\n{log}");
}

#[test]
fn the_migrate_process_lines_are_tagged_and_its_error_said_once() {
    let log = failed_migrations_log(2);
    let cause = "backend \"main\" (postgres://ringmaster@127.0.0.1:1/nope) is unreachable";
    let causes: Vec<&str> = log.lines().filter(|l| l.contains(cause)).collect();
    assert_eq!(
        causes.len(),
        log.matches("migrations failed; no worker starts").count(),
        "the cause once per attempt, before the master's line:\n{log}"
    );
    for line in causes {
        let tag = line.split(" | ").next().unwrap_or("");
        let mut words = tag.split(' ');
        assert_eq!(words.next(), Some("migrate"), "untagged: {line:?}\n{log}");
        assert!(
            words.next().is_some_and(|pid| pid.parse::<u32>().is_ok()),
            "no pid in the tag: {line:?}"
        );
        assert!(line.contains(" ERROR "), "{line}");
    }
}

#[test]
fn routes_prints_every_groups_table() {
    let out = Command::new(support::demo_exe())
        .args(["routes", "--config"])
        .arg(write_config(&two_groups("")))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "web      GET     /l/{code}",
        "web      POST    /links",
        "web      GET     /db",
        "api      GET     /api/links/{code}",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn check_connects_to_every_configured_backend() {
    let db = TestDatabase::create();
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let good = two_groups(&format!(
        "[backends.main]\nurl = \"{}\"\n[backends.cache]\nurl = \"{redis}\"\n",
        db.url
    ));
    let out = Command::new(support::demo_exe())
        .args(["check", "--config"])
        .arg(write_config(&good))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "check failed; is Redis running (redis-server --daemonize yes) at {redis}?\n{text}"
    );
    assert!(
        text.contains("backend main:") && text.contains("backend cache:"),
        "{text}"
    );
    // The default worker count, and where it comes from.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(text.contains(&format!("usable CPUs: {cpus} (")), "{text}");

    let bad = two_groups(
        "[backends.cache]\nurl = \"redis://127.0.0.1:1\"\nconnect_timeout = \"500ms\"\n",
    );
    let out = Command::new(support::demo_exe())
        .args(["check", "--config"])
        .arg(write_config(&bad))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("backend cache: FAILED"), "{text}");
    assert!(
        text.contains("backend \"cache\" (redis://127.0.0.1:1) is unreachable"),
        "{text}"
    );
}

#[test]
fn check_counts_workers_in_words_and_lists_the_implicit_sqlite_backends() {
    let config = write_config(&two_groups(""));
    let dir = config.parent().unwrap().canonicalize().unwrap();
    let out = Command::new(support::demo_exe())
        .args(["check", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("group web: 2 workers on 127.0.0.1:0"),
        "{text}"
    );
    assert!(
        text.contains("group api: 1 worker on 127.0.0.1:0"),
        "{text}"
    );
    // `main` has no [backends.main]: the embedded SQLite file main.db,
    // named once though both groups' modules use it.
    let implicit = format!(
        "backend main: sqlite://main.db (implicit: no [backends.main]; file {})",
        dir.join("main.db").display()
    );
    assert_eq!(text.matches(&implicit).count(), 1, "{text}");
    assert!(
        !dir.join("main.db").exists(),
        "check must not create the database file"
    );
}

fn write_config(text: &str) -> std::path::PathBuf {
    let path = support::scratch_dir().join("ringmaster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn hup_while_migrations_fail_retries_them_with_the_fixed_config() {
    let bad = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n\
               [backends.main]\nurl = \"postgres://ringmaster@127.0.0.1:1/nope\"\nconnect_timeout = \"300ms\"\n";
    let cluster = support::start(bad, &[]);
    let mut events = cluster.history();
    events.wait(Duration::from_secs(10), "a failed migration", |e| {
        matches!(e, Lifecycle::MigrationFailed { .. })
    });
    // Scaling while no worker may run is refused, not queued behind them.
    cluster.signal(libc::SIGTTIN);
    cluster.wait_log(Duration::from_secs(10), "TTIN refused", |log| {
        log.contains("scaling is ignored")
    });
    // The operator fixes the backend (the embedded SQLite) and sends HUP.
    let addr = cluster.addr();
    std::fs::write(
        cluster.config_path(),
        format!("[groups.web]\nlisten = \"{addr}\"\ncount = 2\n"),
    )
    .unwrap();
    cluster.signal(libc::SIGHUP);
    let workers = cluster.wait_workers(2);
    std::thread::sleep(Duration::from_millis(1500)); // past the next scheduled retry
    assert_eq!(
        cluster.worker_pids(),
        workers,
        "no slot got a second worker\n{}",
        cluster.log()
    );
    let seen = events.gather(Duration::from_millis(100));
    let spawns = seen
        .iter()
        .filter(|e| matches!(e, Lifecycle::WorkerSpawned { .. }))
        .count();
    assert_eq!(spawns, 2, "{seen:#?}");
    assert_eq!(get(addr, "/plaintext").unwrap().status, 200);
}

#[test]
fn postgresql_over_tls_when_the_url_asks_for_it() {
    let db = TestDatabase::create();
    let cluster = support::start(
        &two_groups(&format!(
            "[backends.main]\nurl = \"{}?sslmode=require\"\n",
            db.url
        )),
        &[],
    );
    cluster.wait_workers(3);
    links_flow(&cluster);
    assert!(
        db.ssl_sessions() > 0,
        "no encrypted session to {}; is ssl on in postgresql.conf?",
        db.name
    );
}
