//! Reliability tests (issue 11): what the cluster promises under faults,
//! each with the real binary.

mod support;

use std::time::Duration;

use support::{group_pids, settled, wait_status, web_config};

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
    assert!(
        !cluster.log().contains("killing worker"),
        "{}",
        cluster.log()
    );
    // A worker that really goes silent is still killed.
    let _ = support::get_timeout(cluster.addr(), "/__test/wedge", Duration::from_millis(500));
    cluster.wait_log(Duration::from_secs(5), "the wedged worker killed", |log| {
        log.contains("sent no heartbeat")
    });
}
