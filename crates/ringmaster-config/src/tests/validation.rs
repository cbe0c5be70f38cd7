//! Range and cross-key checks of the server and groups, and the key each
//! error names.

use super::*;

#[test]
fn count_bounds() {
    let err = from_str_err("[groups.web]\ncount = 0\n");
    assert_eq!(err.key(), Some("groups.web.count"));
    assert_eq!(
        err.to_string(),
        "ringmaster.toml: groups.web.count: expected an integer from 1 to 1024, got 0"
    );
    assert!(
        from_str_err("[groups.web]\ncount = 1025\n")
            .message()
            .contains("got 1025")
    );
    assert!(
        from_str_err("[groups.web]\ncount = -1\n")
            .message()
            .contains("got -1")
    );
    Config::from_toml_str("[groups.web]\ncount = 1024\n", "x").expect("1024 is allowed");

    // The same check on an env value blames the variable, with its value.
    let err =
        Config::load(None, env(&[("RINGMASTER__GROUPS__WEB__COUNT", "0")])).expect_err("count 0");
    assert_eq!(
        err.to_string(),
        "environment variable RINGMASTER__GROUPS__WEB__COUNT=\"0\": \
         groups.web.count: expected an integer from 1 to 1024, got 0"
    );
}

#[test]
fn heartbeat_timeout_must_exceed_interval() {
    let err =
        from_str_err("[groups.web]\nheartbeat_interval = \"5s\"\nheartbeat_timeout = \"5s\"\n");
    assert_eq!(err.key(), Some("groups.web.heartbeat_timeout"));
    assert!(err.message().contains("heartbeat_interval (5s)"), "{err}");
    // Interval raised via env above the file's default timeout: the env var is blamed.
    let err = Config::load(
        None,
        env(&[("RINGMASTER__GROUPS__WEB__HEARTBEAT_INTERVAL", "1m")]),
    )
    .expect_err("interval > timeout");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__GROUPS__WEB__HEARTBEAT_INTERVAL"
    );
    assert_eq!(err.key(), Some("groups.web.heartbeat_timeout"));
}

#[test]
fn other_numeric_and_duration_checks() {
    let cases = [
        ("backlog = 0", "groups.web.backlog"),
        ("threads = 0", "groups.web.threads"),
        ("drain_timeout = \"0s\"", "groups.web.drain_timeout"),
        ("boot_timeout = \"0ms\"", "groups.web.boot_timeout"),
        ("worker = \" \"", "groups.web.worker"),
        (
            "restart_backoff = \"2s\"\nrestart_backoff_max = \"1s\"",
            "groups.web.restart_backoff_max",
        ),
        ("boot_timeout = \"3000000000h\"", "groups.web.boot_timeout"),
        ("drain_timeout = \"800h\"", "groups.web.drain_timeout"),
        (
            "heartbeat_interval = \"1ms\"",
            "groups.web.heartbeat_interval",
        ),
    ];
    for (body, key) in cases {
        let err = from_str_err(&format!("[groups.web]\n{body}\n"));
        assert_eq!(err.key(), Some(key), "{body}: {err}");
        assert_eq!(err.origin(), "ringmaster.toml");
    }
    let err = from_str_err("[server]\ncontrol_socket = \"\"\n");
    assert_eq!(err.key(), Some("server.control_socket"));
    for (body, key) in [
        ("ipc_queue = 0", "server.ipc_queue"),
        ("ipc_max_pending = 2000000", "server.ipc_max_pending"),
        ("ipc_stall_timeout = \"0s\"", "server.ipc_stall_timeout"),
        ("ipc_queue = \"many\"", "server.ipc_queue"),
        ("registry_size = 1000", "server.registry_size"),
        ("registry_slots = 0", "server.registry_slots"),
        ("pid_file = \"\"", "server.pid_file"),
        ("log_ring = 200000", "server.log_ring"),
        ("log_buffer = 10", "server.log_buffer"),
        ("log_file = \"\"", "server.log_file"),
    ] {
        let err = from_str_err(&format!("[server]\n{body}\n"));
        assert_eq!(err.key(), Some(key), "{body}: {err}");
    }
    let config =
        Config::from_toml_str("[server]\nipc_queue = 8\nipc_stall_timeout = \"2s\"\n", "x")
            .expect("IPC settings parse");
    assert_eq!(config.server.ipc_queue, 8);
    assert_eq!(config.server.ipc_stall_timeout, Duration::from_secs(2));
    let config = Config::from_toml_str("[groups.web]\nrestart_backoff = \"0s\"\n", "x")
        .expect("zero backoff is allowed");
    assert_eq!(group(&config, "web").restart_backoff, Duration::ZERO);
}

#[test]
fn duplicate_listen_addresses() {
    let err = from_str_err(
        "[groups.web]\nlisten = \"127.0.0.1:3000\"\n[groups.api]\nlisten = \"127.0.0.1:3000\"\n",
    );
    assert_eq!(err.key(), Some("groups.api.listen"));
    let shown = err.to_string();
    assert!(shown.contains("\"web\""), "{shown}");
    assert!(shown.contains("\"api\""), "{shown}");
    assert!(shown.contains("127.0.0.1:3000"), "{shown}");
    // Both groups defaulting to the same address collide as well.
    from_str_err("[groups.a]\n[groups.b]\n");
    // Port 0 means "pick a free port" and never collides.
    Config::from_toml_str(
        "[groups.a]\nlisten = \"127.0.0.1:0\"\n[groups.b]\nlisten = \"127.0.0.1:0\"\n",
        "x",
    )
    .expect("port 0 may repeat");
    // Made to collide by the environment: the variable is blamed.
    let file = TempFile::new(
        "[groups.a]\nlisten = \"127.0.0.1:0\"\n[groups.b]\nlisten = \"127.0.0.1:4001\"\n",
    );
    let err = Config::load(
        Some(file.path()),
        env(&[("RINGMASTER__GROUPS__A__LISTEN", "127.0.0.1:4001")]),
    )
    .expect_err("collision via env");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__GROUPS__A__LISTEN"
    );
}

#[test]
fn invalid_group_name() {
    let err = from_str_err("[groups.Web]\n");
    assert_eq!(err.key(), Some("groups.Web"));
    assert!(err.message().contains("lowercase letters, digits"), "{err}");
    let err = from_str_err("[groups.\"my app\"]\n");
    assert!(err.message().contains("\"my app\""), "{err}");
}

#[test]
fn request_timeout_and_body_limit_checks() {
    let cases = [
        (
            "request_timeout = \"0s\"",
            "groups.web.request_timeout",
            "greater than zero",
        ),
        (
            "request_timeout = \"721h\"",
            "groups.web.request_timeout",
            "at most 30 days",
        ),
        (
            "request_timeout = 30",
            "groups.web.request_timeout",
            "add a unit",
        ),
        ("body_limit = 0", "groups.web.body_limit", "got 0"),
        ("body_limit = -1", "groups.web.body_limit", "got -1"),
        (
            "body_limit = \"2MiB\"",
            "groups.web.body_limit",
            "expected a positive integer",
        ),
        (
            "body_limit = 1.5",
            "groups.web.body_limit",
            "expected a positive integer",
        ),
    ];
    for (body, key, says) in cases {
        let err = from_str_err(&format!("[groups.web]\n{body}\n"));
        assert_eq!(err.key(), Some(key), "{body}: {err}");
        assert!(err.message().contains(says), "{body}: {err}");
    }
    let config = Config::from_toml_str(
        "[groups.web]\nrequest_timeout = \"720h\"\nbody_limit = 1\n",
        "x",
    )
    .expect("30 days and 1 byte are allowed");
    assert_eq!(group(&config, "web").body_limit, 1);
    let config = Config::load(
        None,
        env(&[
            ("RINGMASTER__GROUPS__WEB__BODY_LIMIT", "65536"),
            ("RINGMASTER__GROUPS__WEB__REQUEST_TIMEOUT", "5s"),
        ]),
    )
    .expect("env");
    assert_eq!(group(&config, "web").body_limit, 65536);
    assert_eq!(
        group(&config, "web").request_timeout,
        Duration::from_secs(5)
    );
    let err = Config::load(
        None,
        env(&[("RINGMASTER__GROUPS__WEB__BODY_LIMIT", "2MiB")]),
    )
    .expect_err("unit suffix");
    assert_eq!(
        err.to_string(),
        "environment variable RINGMASTER__GROUPS__WEB__BODY_LIMIT=\"2MiB\": \
         groups.web.body_limit: expected a positive integer, got \"2MiB\""
    );
}

#[test]
fn recycling_settings_are_checked() {
    let config = Config::from_toml_str(
        "[groups.web]\nmax_requests = 1000\nmax_requests_jitter = 50\nmax_rss = 536870912\n",
        "x",
    )
    .expect("valid");
    let web = group(&config, "web");
    assert_eq!(
        (web.max_requests, web.max_requests_jitter, web.max_rss),
        (1000, 50, 512 << 20)
    );
    assert_eq!(
        Config::default().groups["web"].max_requests,
        0,
        "off by default"
    );
    let err = from_str_err("[groups.web]\nmax_requests_jitter = 50\n");
    assert_eq!(err.key(), Some("groups.web.max_requests_jitter"));
    assert!(err.message().contains("without max_requests"), "{err}");
    let err = from_str_err("[groups.web]\nmax_rss = 1000\n");
    assert!(err.message().contains("at least 16777216 bytes"), "{err}");
    let err = from_str_err("[groups.web]\nmax_rss = \"512MB\"\n");
    assert!(
        err.message().contains("expected a positive integer"),
        "{err}"
    );
}

#[test]
fn findings_of_the_hardening_review_are_refused_with_their_keys() {
    let err = from_str_err("[groups.web]\ncount = 1\ncount = 2\n");
    assert!(err.message().contains("duplicate key `count`"), "{err}");
    let err = from_str_err("[groups]\n");
    assert_eq!(err.key(), Some("groups"));
    assert!(err.message().contains("defines no group"), "{err}");
    let err = from_str_err("[groups.web]\nthreads = 100000\n");
    assert_eq!(err.key(), Some("groups.web.threads"));
    assert!(err.message().contains("from 1 to 1024"), "{err}");
    let long = "s".repeat(120);
    let err = from_str_err(&format!("[server]\ncontrol_socket = \"{long}\"\n"));
    assert_eq!(err.key(), Some("server.control_socket"));
    assert!(err.message().contains("at most 107 bytes"), "{err}");
    let err = from_str_err("[backends.main]\nurl = \"postgres://u@h:notaport/db\"\n");
    assert_eq!(err.key(), Some("backends.main.url"));
    assert!(err.message().contains("\"notaport\""), "{err}");
    let err = from_str_err("[groups.web]\nmax_connections = 0\n");
    assert!(err.message().contains("from 1 to 1000000"), "{err}");
    let err = from_str_err("[groups.web]\nheader_read_timeout = \"0s\"\n");
    assert_eq!(err.key(), Some("groups.web.header_read_timeout"));
    let err = from_str_err("[backends.main]\nurl = \"sqlite://a.db\"\nacquire_timeout = \"0s\"\n");
    assert_eq!(err.key(), Some("backends.main.acquire_timeout"));
}
