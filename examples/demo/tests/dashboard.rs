//! The live dashboard in a real browser: headless Chromium, driven over
//! WebDriver, opens the admin worker's page; the workers table follows a
//! `kill -9`, the requests/s chart fills under load. A screenshot is left
//! in the target directory (`target/tmp/dashboard.png`).

mod support;

use std::time::Duration;

use support::{Browser, Load, group, settled, wait_status};

const CONFIG: &str = "[groups.web]\nlisten = \"127.0.0.1:0\"\ncount = 2\n\
                      [admin]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn the_dashboard_shows_workers_restarts_and_traffic_as_they_happen() {
    let cluster = support::start(CONFIG, &[]);
    let s = wait_status(&cluster, "web and admin ready", |s| {
        settled(s, "web", 2) && settled(s, "admin", 1)
    });
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", cluster.addr_of("admin")));
    browser.wait_for(
        "the page to go live and tick",
        Duration::from_secs(15),
        "return document.getElementById('conn').textContent === 'live' \
         && Number(document.body.dataset.ticks) >= 2;",
    );
    let rows = browser.eval("return document.querySelectorAll('#workers tr.worker').length;");
    assert_eq!(rows, 3, "one row per worker: web/0, web/1, admin/0");
    let pids = browser.eval(
        "return [...document.querySelectorAll('#workers tr.worker')].map(r => r.dataset.pid);",
    );
    let victim = group(&s, "web")["workers"][0]["pid"].as_u64().unwrap();
    assert!(
        pids.as_array()
            .unwrap()
            .iter()
            .any(|p| p == &victim.to_string()),
        "{pids} shows web/0's pid {victim}"
    );
    let restarts = "return document.querySelector(\
        '#workers tr.worker[data-group=\"web\"][data-slot=\"0\"] td.restarts').textContent;";
    assert_eq!(browser.eval(restarts), "0");
    // SAFETY: kill a worker of this test's cluster.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let grown = restarts
        .replace("return ", "return Number(")
        .replace(";", ") >= 1;");
    browser.wait_for(
        "the restarts figure to grow within 3 s",
        Duration::from_secs(3),
        &grown,
    );
    // Under load, the requests/s chart has points above zero.
    let load = Load::start_n(cluster.addr_of("web"), "/plaintext", 2);
    load.wait_ok(100);
    browser.wait_for(
        "requests/s points on the chart",
        Duration::from_secs(10),
        "return Number(document.getElementById('chart-rps').getAttribute('data-nonzero-web')) >= 2;",
    );
    load.finish_without_failures();
    let log_lines = browser.eval("return document.getElementById('log').children.length;");
    assert!(log_lines.as_u64() > Some(0), "the log tail shows lines");
    let errors = browser.eval("return window.__errors || [];");
    assert_eq!(errors, serde_json::json!([]), "no script errors");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot);
    eprintln!("dashboard screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
