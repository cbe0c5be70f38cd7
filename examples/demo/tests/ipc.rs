//! Cluster tests of the IPC pool with the real demo binary: the links
//! cache invalidated on every worker (replacements too), a worker that
//! breaks its IPC socket, request/reply between groups and the master's
//! own services.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{
    alive, create_link, follow_until_each_answered, get, request, served_by, web_config,
};

/// Creates a link, has every worker in `pids` cache it, deletes it through
/// one of them, and checks that every worker answers 404 from then on: no
/// worker redirects in a request sent 100 ms or more after the delete.
fn delete_reaches_every_cache(web: SocketAddr, pids: &[u32]) {
    let code = create_link(web, "https://example.com/ipc");
    follow_until_each_answered(web, &code, pids, 302);
    let r = request(web, "DELETE", &format!("/links/{code}"), None).unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let deleted_at = Instant::now();
    let seen = follow_until_each_answered(web, &code, pids, 404);
    for (pid, answers) in &seen {
        for (sent, status) in answers {
            assert!(
                *status == 404 || sent.duration_since(deleted_at) < Duration::from_millis(100),
                "worker {pid} still redirected {} ms after the delete: {answers:?}",
                sent.duration_since(deleted_at).as_millis()
            );
        }
    }
}

#[test]
fn a_delete_empties_the_cache_of_every_one_of_four_workers() {
    let cluster = support::start(&web_config("count = 4"), &[]);
    let pids = cluster.wait_workers(4);
    delete_reaches_every_cache(cluster.addr(), &pids);
    // Twice: the subscriptions stay in place.
    delete_reaches_every_cache(cluster.addr(), &pids);
}

#[test]
fn a_replacement_worker_receives_what_is_published_after_it_is_ready() {
    let cluster = support::start(&web_config("count = 2"), &[]);
    let before = cluster.wait_workers(2);
    // SAFETY: kill a worker of this test's cluster.
    unsafe { libc::kill(before[0] as i32, libc::SIGKILL) };
    cluster.wait_replaced(before[0], 2);
    // Both ready, the replacement included.
    let after = cluster.wait_workers(2);
    delete_reaches_every_cache(cluster.addr(), &after);
}

#[test]
fn a_worker_that_breaks_its_ipc_is_restarted_and_the_others_keep_going() {
    let cluster = support::start(&web_config("count = 3"), &[]);
    cluster.wait_workers(3);
    for kind in ["garbage", "oversized"] {
        let mut events = cluster.events();
        let r = get(cluster.addr(), &format!("/__test/ipc-garbage?kind={kind}")).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let culprit = served_by(&r);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(culprit) {
            assert!(
                Instant::now() < deadline,
                "[{kind}] worker {culprit} is still alive\n{}",
                cluster.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let reason = events.wait_killed(Duration::from_secs(5), culprit);
        assert!(
            reason.starts_with("broke the IPC protocol"),
            "[{kind}] {reason}"
        );
        let pids = cluster.wait_replaced(culprit, 3);
        // Everyone, the replacement included, serves and receives messages.
        delete_reaches_every_cache(cluster.addr(), &pids);
    }
    assert!(alive(cluster.pid()), "the master survived");
}

#[test]
fn requests_to_a_group_get_a_reply_or_a_clear_timeout() {
    let cluster = support::start(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 1\n\
         [groups.api]\nlisten = \"127.0.0.1:0\"\ncount = 2\n",
        &[],
    );
    // Every worker ready (as `status` shows it).
    cluster.wait_workers(3);
    let web = cluster.addrs[0].1;

    // The master's services: status and workers.
    let r = get(web, "/cluster").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["status"]["master_pid"], cluster.pid());
    assert_eq!(v["status"]["groups"][1]["name"], "api");
    assert_eq!(v["status"]["groups"][1]["ready"], 2);
    let api_pids: Vec<u64> = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["group"] == "api")
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(api_pids.len(), 2, "{v}");

    // Requests reach api workers, round robin.
    let mut answered = Vec::new();
    for _ in 0..4 {
        let r = get(web, "/__test/ask?group=api&timeout_ms=2000").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let stats: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        answered.push(stats["pid"].as_u64().unwrap());
    }
    assert!(
        api_pids.iter().all(|p| answered.contains(p)),
        "both api workers answered: {answered:?} of {api_pids:?}"
    );

    // Nobody in `web` serves api.stats: a clear timeout, after the timeout.
    let started = Instant::now();
    let r = get(web, "/__test/ask?group=web&timeout_ms=300").unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no reply within 300 ms")
            && message.contains("no ready worker of group \"web\" serves this topic"),
        "{message}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let r = get(web, "/cluster").unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        v["status"]["ipc"]["failed_requests"].as_u64().unwrap() >= 1,
        "{v}"
    );
}

#[test]
fn a_worker_that_stops_reading_ipc_loses_messages_then_is_restarted() {
    let cluster = support::start(
        "[server]\nipc_queue = 16\nipc_stall_timeout = \"500ms\"\n\
         [groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n",
        &[],
    );
    let pids = cluster.wait_workers(2);
    let mut events = cluster.events();
    let r = get(cluster.addr(), "/__test/ipc-stall").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let stalled = served_by(&r);
    let other = *pids.iter().find(|p| **p != stalled).unwrap();
    // Flood until the stalled one is gone: its socket
    // buffer fills, then its queue of 16, then the master drops and counts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(stalled) {
        assert!(
            Instant::now() < deadline,
            "the stalled worker {stalled} was not restarted\n{}",
            cluster.log()
        );
        // Either worker may publish: the stalled one still serves HTTP and
        // writes to the master, it only stopped reading.
        let _ = get(cluster.addr(), "/__test/flood?n=2000");
    }
    let reason = events.wait_killed(Duration::from_secs(5), stalled);
    assert!(
        reason.starts_with("stalled: its IPC queue stayed full"),
        "{reason}"
    );
    // The warning before it, when the queue first filled.
    cluster.assert_logged("IPC queue is full");
    assert!(alive(other), "the other worker is untouched");
    let now = cluster.wait_workers(2);
    let r = get(cluster.addr(), "/cluster").unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["status"]["ipc"]["dropped"].as_u64().unwrap() > 0, "{v}");
    // The flood may still wait in the workers' queues, ahead of anything
    // published now: a first delete, once every worker has acted on it,
    // says they are through it (the master keeps each worker's queue in
    // order). Then the 100 ms bound holds.
    let code = create_link(cluster.addr(), "https://example.com/backlog");
    follow_until_each_answered(cluster.addr(), &code, &now, 302);
    let r = request(cluster.addr(), "DELETE", &format!("/links/{code}"), None).unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    follow_until_each_answered(cluster.addr(), &code, &now, 404);
    // The replacement and the other worker keep receiving.
    delete_reaches_every_cache(cluster.addr(), &now);
}
