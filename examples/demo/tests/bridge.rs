//! Cluster tests of the bridge over NATS with the real demo binary: two
//! masters on one machine, each with its own port, one private
//! `nats-server` on a free port (the machine's shared one is never
//! stopped), and one SQLite file both masters use. A `DELETE /links/CODE`
//! on one master must empty the links cache of every worker of the other.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    ClusterProc, NatsServer, cli, create_link, follow_until_each_answered, get, request,
    status_json,
};

/// The demo with `count` web workers, an admin worker and a bridge of
/// `links.invalidate` through `nats`, on the SQLite file `db`.
fn config(nats: &NatsServer, db: &Path, count: usize, extra: &str) -> String {
    format!(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = {count}\n\
         [backends.main]\nurl = \"sqlite://{}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [bridge]\nurl = \"{}\"\ntopics = [\"links.invalidate\"]\n{extra}\n",
        db.display(),
        nats.url()
    )
}

/// A scratch SQLite file for two masters.
fn shared_db() -> std::path::PathBuf {
    support::scratch_dir().join("links.db")
}

/// Starts one master and waits for its `count` web workers, its admin
/// worker and its bridge worker to be ready.
fn host(nats: &NatsServer, db: &Path, count: usize, extra: &str) -> ClusterProc {
    let cluster = support::start(&config(nats, db, count, extra), &[]);
    cluster.wait_workers(count + 2);
    cluster
}

/// The pids of the web group's workers.
fn web_pids(cluster: &ClusterProc) -> Vec<u32> {
    let status = status_json(cluster);
    let web = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "web")
        .unwrap();
    web["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// The bridge part of `status --json`.
fn bridge(cluster: &ClusterProc) -> serde_json::Value {
    status_json(cluster)["bridge"].clone()
}

/// A counter of the bridge part of `status --json`.
fn count(cluster: &ClusterProc, key: &str) -> u64 {
    bridge(cluster)[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no bridge.{key} in the status"))
}

/// Waits until the bridge of each cluster is in `state`.
fn wait_state(clusters: &[&ClusterProc], state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for c in clusters {
        while bridge(c)["state"] != state {
            assert!(
                Instant::now() < deadline,
                "the bridge is not {state} within {timeout:?}: {}\n{}",
                bridge(c),
                c.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits until `f()` is true, for at most `timeout`.
fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The postcard encoding of a `String`, as a subscriber of
/// `links.invalidate` decodes it (a short one: length, then the bytes).
fn encoded(code: &str) -> Vec<u8> {
    assert!(code.len() < 128);
    let mut out = vec![code.len() as u8];
    out.extend_from_slice(code.as_bytes());
    out
}

/// Creates a link through `web`, has every worker of each `(address,
/// pids)` in `caches` cache it, deletes it through `web`, and checks that
/// every one of them answers 404 from then on: none redirects in a
/// request sent 100 ms or more after the delete.
fn delete_reaches(web: SocketAddr, caches: &[(SocketAddr, Vec<u32>)]) {
    let code = create_link(web, "https://example.com/bridged");
    for (addr, pids) in caches {
        follow_until_each_answered(*addr, &code, pids, 302);
    }
    let r = request(web, "DELETE", &format!("/links/{code}"), None).unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let deleted_at = Instant::now();
    for (addr, pids) in caches {
        let seen = follow_until_each_answered(*addr, &code, pids, 404);
        for (pid, answers) in &seen {
            for (sent, status) in answers {
                let after = sent.duration_since(deleted_at);
                assert!(
                    *status == 404 || after < Duration::from_millis(100),
                    "worker {pid} at {addr} still redirected {} ms after the delete: {answers:?}",
                    after.as_millis()
                );
            }
        }
    }
}

#[test]
fn a_delete_on_one_master_empties_the_cache_of_every_worker_of_the_other() {
    let nats = NatsServer::start();
    let db = shared_db();
    let a = host(&nats, &db, 2, "");
    let b = host(&nats, &db, 3, "");
    wait_state(&[&a, &b], "connected", Duration::from_secs(10));
    let (web_a, web_b) = (a.addr_of("web"), b.addr_of("web"));
    let caches = [(web_a, web_pids(&a)), (web_b, web_pids(&b))];
    delete_reaches(web_a, &caches);
    // And the other way, twice: the subscriptions stay.
    delete_reaches(web_b, &caches);
    delete_reaches(web_b, &caches);
    wait_until("every message sent arrives", Duration::from_secs(5), || {
        count(&a, "sent") == 1 && count(&b, "received") == 1
    });
    wait_until("every message sent arrives", Duration::from_secs(5), || {
        count(&b, "sent") == 2 && count(&a, "received") == 2
    });
    assert_eq!(count(&a, "dropped") + count(&b, "dropped"), 0);
    // `stats` shows the series by name, and `status` a line.
    let stats = String::from_utf8(cli(&a, &["stats"]).stdout).unwrap();
    assert!(
        stats.contains("ringmaster_bridge_messages_sent_total"),
        "{stats}"
    );
    let text = String::from_utf8(cli(&a, &["status"]).stdout).unwrap();
    assert!(text.contains("bridge connected"), "{text}");

    // The origin mark: a message carrying master A's own id is skipped by
    // A (whatever connection it came on), and delivered on B.
    let a_bridge = a.addr_of("bridge");
    let state: serde_json::Value = serde_json::from_str(&get(a_bridge, "/").unwrap().body).unwrap();
    let instance = state["instance"].as_str().unwrap().to_string();
    assert_eq!(instance.len(), 16, "{state}");
    let subject = "ringmaster.links.invalidate";
    nats.publish(
        subject,
        &[("Ringmaster-Origin", &instance)],
        &encoded("own"),
    );
    nats.publish(
        subject,
        &[("Ringmaster-Origin", "elsewhere")],
        &encoded("foreign"),
    );
    // One subscription delivers in order: once the second is counted,
    // the first was seen and skipped.
    wait_until("B gets both", Duration::from_secs(5), || {
        count(&b, "received") == 3
    });
    wait_until("A gets the foreign one", Duration::from_secs(5), || {
        count(&a, "received") == 3
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&a, "received"), 3, "A took its own message back");
}

#[test]
fn nats_down_for_3s_costs_only_the_remote_messages_and_the_bridge_comes_back() {
    let mut nats = NatsServer::start();
    let db = shared_db();
    let a = host(&nats, &db, 2, "");
    let b = host(&nats, &db, 2, "");
    wait_state(&[&a, &b], "connected", Duration::from_secs(10));
    let (web_a, web_b) = (a.addr_of("web"), b.addr_of("web"));
    let (pids_a, pids_b) = (web_pids(&a), web_pids(&b));

    nats.stop();
    let stopped = Instant::now();
    wait_state(&[&a, &b], "disconnected", Duration::from_secs(5));
    // Local delivery goes on; the message for B is dropped and counted.
    delete_reaches(web_a, &[(web_a, pids_a.clone())]);
    delete_reaches(web_b, &[(web_b, pids_b.clone())]);
    wait_until("the drops are counted", Duration::from_secs(5), || {
        count(&a, "dropped") >= 1 && count(&b, "dropped") >= 1
    });
    assert_eq!(count(&a, "sent") + count(&b, "sent"), 0);
    let metrics = get(a.addr_of("admin"), "/metrics").unwrap().body;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("ringmaster_bridge_messages_dropped_total{")
                && l.contains(r#"direction="out""#)
                && l.contains(r#"reason="disconnected""#)
        })
        .unwrap_or_else(|| panic!("no drop series in /metrics:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
    // A bridge that is not required does not make the host unready.
    let ready = get(a.addr_of("admin"), "/readyz").unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains(r#""disconnected""#), "{}", ready.body);

    std::thread::sleep(Duration::from_secs(3).saturating_sub(stopped.elapsed()));
    nats.resume();
    let resumed = Instant::now();
    // Bridged delivery works again within 2 s: a message sent to NATS
    // reaches both hosts.
    let mut probes = 0;
    let back = |c: &ClusterProc| count(c, "received") >= 1;
    while !(back(&a) && back(&b)) {
        assert!(
            resumed.elapsed() < Duration::from_secs(2),
            "bridged delivery did not come back within 2 s: A {}, B {}",
            bridge(&a),
            bridge(&b)
        );
        probes += 1;
        nats.publish(
            "ringmaster.links.invalidate",
            &[],
            &encoded(&format!("probe{probes}")),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_state(&[&a, &b], "connected", Duration::from_secs(1));
    delete_reaches(web_a, &[(web_a, pids_a), (web_b, pids_b)]);
    // Each change of state was logged once.
    for c in [&a, &b] {
        let log = c.log();
        assert_eq!(log.matches("bridge lost NATS").count(), 1, "{log}");
        assert_eq!(log.matches("bridge connected to NATS").count(), 2, "{log}");
    }
}

#[test]
fn a_required_bridge_keeps_the_host_unready_until_nats_is_up() {
    let mut nats = NatsServer::start();
    nats.stop();
    let db = shared_db();
    // NATS is down at start: the master and its workers start anyway.
    let a = host(&nats, &db, 2, "required = true");
    assert_eq!(bridge(&a)["state"], "disconnected");
    let admin = a.addr_of("admin");
    let r = get(admin, "/readyz").unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body
            .contains(r#""bridge":{"required":true,"state":"disconnected"}"#)
            || r.body
                .contains(r#""bridge":{"state":"disconnected","required":true}"#),
        "{}",
        r.body
    );
    // Local delivery works meanwhile.
    let web = a.addr_of("web");
    delete_reaches(web, &[(web, web_pids(&a))]);
    // The bridge's group is one worker: it is not scaled.
    let out = cli(&a, &["scale", "bridge", "2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the bridge group runs one worker"),
        "{out:?}"
    );

    nats.resume();
    wait_until("/readyz says 200", Duration::from_secs(5), || {
        get(admin, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert_eq!(bridge(&a)["state"], "connected");
}

/// Sends `DELETE /links/nothingN` (each publishes one invalidation) until
/// `stop` is set; returns how many were sent.
fn publish_until(web: SocketAddr, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let r = request(web, "DELETE", &format!("/links/nothing{n}"), None).unwrap();
        assert_eq!(r.status, 404, "{}", r.body);
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    n
}

#[test]
fn a_reload_of_either_bridge_never_carries_a_message_twice() {
    let nats = NatsServer::start();
    let db = shared_db();
    let a = host(&nats, &db, 1, "");
    let b = host(&nats, &db, 1, "");
    wait_state(&[&a, &b], "connected", Duration::from_secs(10));
    let web_a = a.addr_of("web");
    for (reloaded, name) in [(&a, "sender"), (&b, "receiver")] {
        let (sent0, received0) = (count(&a, "sent"), count(&b, "received"));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let published = std::thread::scope(|s| {
            let load = s.spawn(|| publish_until(web_a, &stop));
            std::thread::sleep(Duration::from_millis(200));
            let out = cli(reloaded, &["reload", "--group", "bridge"]);
            assert!(out.status.success(), "reload of the {name}: {out:?}");
            wait_state(&[reloaded], "connected", Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            load.join().unwrap()
        });
        assert!(published > 20, "only {published} publications");
        // Everything A sent arrives once: B counts what it delivered.
        wait_until(
            &format!("B gets what A sent (reload of the {name})"),
            Duration::from_secs(5),
            || count(&b, "received") - received0 >= count(&a, "sent") - sent0,
        );
        std::thread::sleep(Duration::from_millis(200));
        let sent = count(&a, "sent") - sent0;
        let received = count(&b, "received") - received0;
        assert!(
            sent <= published,
            "reload of the {name}: A sent {sent} of {published} publications"
        );
        assert_eq!(
            received, sent,
            "reload of the {name}: B delivered {received} of the {sent} A sent"
        );
    }
}
