//! The admin worker, run by the real binary: its probes, `/metrics`,
//! `/status`, the token, and its event stream ending when it drains.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{cli, get, group, settled, wait_status};

fn admin_config(web: &str, extra: &str) -> String {
    format!(
        "[groups.web]\nlisten = \"127.0.0.1:0\"\n{web}\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n"
    )
}

/// GET with a bearer token (or none), on a fresh connection.
fn get_with(addr: SocketAddr, path: &str, token: Option<&str>) -> support::Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    support::Response {
        status,
        headers,
        body: body.to_string(),
    }
}

#[test]
fn readyz_is_503_while_a_group_is_short_and_200_when_it_is_back() {
    let dir = support::scratch_dir();
    let switch = dir.join("fail-boot");
    let switch_env = switch.to_string_lossy().into_owned();
    let cluster = support::start(
        &admin_config(
            "count = 2\nrestart_backoff = \"50ms\"\nrestart_backoff_max = \"200ms\"\nmin_uptime = \"500ms\"",
            "",
        ),
        &[("RINGMASTER_DEMO_FAIL_BOOT_FILE", switch_env.as_str())],
    );
    let admin = cluster.addr_of("admin");
    let s = wait_status(&cluster, "web and admin ready", |s| {
        settled(s, "web", 2) && settled(s, "admin", 1)
    });
    let r = get(admin, "/readyz").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(admin, "/healthz").unwrap().status, 200);
    // A worker killed while its replacements cannot boot: short, then
    // crash-looping.
    std::fs::write(&switch, "").unwrap();
    let victim = group(&s, "web")["workers"][0]["pid"].as_u64().unwrap();
    // SAFETY: kill a worker of this test's cluster.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = get(admin, "/readyz").unwrap();
        if r.status == 503 && r.body.contains("crash-looping") {
            break r.body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz: {} {}\n{}",
            r.status,
            r.body,
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(
        v["groups"][0]["name"], "web",
        "names the group that is short: {v:#}"
    );
    assert_eq!(v["groups"][0]["ready"], 1, "{v:#}");
    assert!(
        v["groups"][0]["last_exit"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{v:#}"
    );
    // Liveness is about the master: still fine.
    assert_eq!(get(admin, "/healthz").unwrap().status, 200);
    std::fs::remove_file(&switch).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(admin, "/readyz").unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready again\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = support::status_json(&cluster);
    assert_eq!(group(&s, "web")["state"], "ok", "{s:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_and_status_come_from_the_admin_worker() {
    let cluster = support::start(&admin_config("count = 2", ""), &[]);
    wait_status(&cluster, "ready", |s| {
        settled(s, "web", 2) && settled(s, "admin", 1)
    });
    for _ in 0..5 {
        assert_eq!(
            get(cluster.addr_of("web"), "/plaintext").unwrap().status,
            200
        );
    }
    let admin = cluster.addr_of("admin");
    // The master refreshes its own series every second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(admin, "/metrics").unwrap();
        if r.body
            .contains("ringmaster_worker_ready{group=\"web\",slot=\"1\"} 1")
        {
            break r;
        }
        assert!(Instant::now() < deadline, "{}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.body.contains("http_requests_total{group=\"web\""),
        "{}",
        r.body
    );
    let r = get(admin, "/status").unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["master_pid"], cluster.pid());
    let names: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "admin"]);
    assert_eq!(group(&v, "admin")["worker"], "ringmaster-admin");
    // The dashboard and its assets are served from the binary, with a
    // policy that allows nothing from elsewhere.
    let r = get(admin, "/").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/assets/dashboard.js"));
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(get(admin, "/assets/dashboard.js").unwrap().status, 200);
}

#[test]
fn a_token_guards_everything_but_the_probes() {
    let token = "0123456789abcdef0123";
    let cluster = support::start(
        &admin_config("count = 1", &format!("token = \"{token}\"")),
        &[],
    );
    // Both groups: `/readyz` below is 200 only once every group is ready,
    // and under load `web` can settle after `admin`.
    wait_status(&cluster, "web and admin ready", |s| {
        settled(s, "admin", 1) && settled(s, "web", 1)
    });
    let admin = cluster.addr_of("admin");
    for path in ["/status", "/metrics", "/", "/events"] {
        let r = get_with(admin, path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("www-authenticate").is_some(), "{path}");
        assert_eq!(
            get_with(admin, path, Some("wrong-token-wrong-token")).status,
            401
        );
    }
    assert_eq!(get_with(admin, "/status", Some(token)).status, 200);
    assert_eq!(get_with(admin, "/healthz", None).status, 200);
    assert_eq!(get_with(admin, "/readyz", None).status, 200);
    // A browser opens /?token= once and keeps a cookie.
    let r = get_with(admin, &format!("/?token={token}"), None);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("HttpOnly"));
}

#[test]
fn an_admin_on_a_public_address_without_a_token_is_refused() {
    let config = "[groups.web]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"0.0.0.0:0\"\n";
    let mut cluster = support::spawn(config, &[]);
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(78), "{}", cluster.log());
    let log = cluster.log();
    assert!(
        log.contains("ringmaster.toml: admin.token: required when admin.listen"),
        "{log}"
    );
}

#[test]
fn a_draining_admin_worker_ends_its_event_streams() {
    let cluster = support::start(&admin_config("count = 1", ""), &[]);
    wait_status(&cluster, "ready", |s| settled(s, "admin", 1));
    let admin = cluster.addr_of("admin");
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    let mut saw = Vec::new();
    while saw.len() < 2 {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        if let Some(name) = line.trim().strip_prefix("event: ") {
            saw.push(name.to_string());
        }
    }
    assert_eq!(saw, ["snapshot", "tick"]);
    // A reload of the admin group drains the old worker: its open stream
    // ends at once, not at the drain timeout (5 s).
    let out = cli(&cluster, &["reload", "--group", "admin"]);
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    let ended = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => panic!("the stream did not end: {e}"),
        }
    };
    assert!(ended);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
