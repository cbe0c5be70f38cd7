//! Unit tests for loading, overrides, validation and error messages.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A config file under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ringmaster-config-test-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp config");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn group<'a>(config: &'a Config, name: &str) -> &'a GroupConfig {
    config
        .group(name)
        .unwrap_or_else(|| panic!("group {name} in {config:?}"))
}

fn from_str_err(text: &str) -> ConfigError {
    Config::from_toml_str(text, "ringmaster.toml").expect_err(text)
}

const FULL: &str = r#"
[server]
control_socket = "/run/ringmaster/control.sock"
dev = true

[groups.web]
worker = "http"
count = 3
listen = "0.0.0.0:8080"
listen_mode = "shared"
backlog = 512
threads = 2
boot_timeout = "90s"
heartbeat_interval = "250ms"
heartbeat_timeout = "1.5s"
drain_timeout = "2m"
min_uptime = "1h"
restart_backoff = "0s"
restart_backoff_max = "15us"
request_timeout = "1500ms"
body_limit = 1048576

[groups.jobs]
count = 1
listen = "127.0.0.1:0"

[backends.main]
url = "postgres://app:s3cret@db.internal:5432/app"
pool_size = 16
connect_timeout = "2.5s"

[backends.cache]
url = "redis://:pw@127.0.0.1:6379/0"
"#;

#[test]
fn defaults_without_file() {
    let config = Config::load(None, env(&[("PATH", "/usr/bin")])).expect("defaults load");
    assert_eq!(config, Config::default());
    assert_eq!(
        config.server.control_socket,
        PathBuf::from("ringmaster.sock")
    );
    assert!(!config.server.dev);
    assert!(config.backends.is_empty());
    assert_eq!(config.groups.keys().collect::<Vec<_>>(), ["web"]);
    let web = group(&config, "web");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(web.count, cpus.min(1024));
    assert_eq!(web.worker, None);
    assert_eq!(web.listen, addr("127.0.0.1:3000"));
    assert_eq!(web.listen_mode, ListenMode::Reuseport);
    assert_eq!(web.backlog, 1024);
    assert_eq!(web.threads, None);
    assert_eq!(web.boot_timeout, Duration::from_secs(60));
    assert_eq!(web.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(web.heartbeat_timeout, Duration::from_secs(30));
    assert_eq!(web.drain_timeout, Duration::from_secs(30));
    assert_eq!(web.min_uptime, Duration::from_secs(5));
    assert_eq!(web.restart_backoff, Duration::from_millis(100));
    assert_eq!(web.restart_backoff_max, Duration::from_secs(15));
    assert_eq!(web.request_timeout, Duration::from_secs(30));
    assert_eq!(web.body_limit, 2_097_152);
    // An empty file also yields the default group (an empty `[groups]`
    // table is an error: it looks like groups were meant).
    let config = Config::from_toml_str("", "empty.toml").expect("empty file");
    assert_eq!(config, Config::default());
}

#[test]
fn full_file_round_trips() {
    let file = TempFile::new(FULL);
    let config = Config::load(Some(file.path()), env(&[])).expect("full file loads");
    assert_eq!(
        config.server.control_socket,
        PathBuf::from("/run/ringmaster/control.sock")
    );
    let web = group(&config, "web");
    assert_eq!(web.worker.as_deref(), Some("http"));
    assert_eq!(web.count, 3);
    assert_eq!(web.listen, addr("0.0.0.0:8080"));
    assert_eq!(web.listen_mode, ListenMode::Shared);
    assert_eq!(web.backlog, 512);
    assert_eq!(web.threads, Some(2));
    assert_eq!(web.boot_timeout, Duration::from_secs(90));
    assert_eq!(web.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(web.heartbeat_timeout, Duration::from_millis(1500));
    assert_eq!(web.drain_timeout, Duration::from_secs(120));
    assert_eq!(web.min_uptime, Duration::from_secs(3600));
    assert_eq!(web.restart_backoff, Duration::ZERO);
    assert_eq!(web.restart_backoff_max, Duration::from_micros(15));
    assert_eq!(web.request_timeout, Duration::from_millis(1500));
    assert_eq!(web.body_limit, 1_048_576);
    assert!(config.server.dev);
    let jobs = group(&config, "jobs");
    assert_eq!(jobs.count, 1);
    assert_eq!(jobs.listen, addr("127.0.0.1:0"));
    assert_eq!(jobs.boot_timeout, Duration::from_secs(60));
    assert_eq!(jobs.request_timeout, Duration::from_secs(30));
    assert_eq!(jobs.body_limit, 2_097_152);
    assert_eq!(
        config.backends.keys().collect::<Vec<_>>(),
        ["main", "cache"]
    );
    let main = config.backend("main");
    assert_eq!(main.url, "postgres://app:s3cret@db.internal:5432/app");
    assert_eq!(main.pool_size, 16);
    assert_eq!(main.connect_timeout, Duration::from_millis(2500));
    let cache = config.backend("cache");
    assert_eq!(cache.kind(), Ok(BackendKind::Redis));
    assert_eq!(cache.pool_size, 8);
    assert_eq!(cache.connect_timeout, Duration::from_secs(5));

    let text = config.to_toml_string().expect("serializes");
    assert!(text.contains("heartbeat_timeout = \"1500ms\""), "{text}");
    assert!(text.contains("listen_mode = \"shared\""), "{text}");
    assert!(text.contains("dev = true"), "{text}");
    assert!(text.contains("request_timeout = \"1500ms\""), "{text}");
    assert!(text.contains("body_limit = 1048576"), "{text}");
    assert!(text.contains("[backends.main]"), "{text}");
    // Workers need the real URL: serialization does not redact.
    assert!(text.contains("s3cret@db.internal"), "{text}");
    assert!(text.contains("connect_timeout = \"2500ms\""), "{text}");
    let back = Config::from_toml_str(&text, "worker-handoff").expect("reads back");
    assert_eq!(back, config);
    assert_eq!(back.backends.keys().collect::<Vec<_>>(), ["main", "cache"]);
    // Defaults round-trip too (None fields are omitted, then defaulted).
    let defaults = Config::default();
    let text = defaults.to_toml_string().expect("serializes");
    assert!(!text.contains("threads"), "{text}");
    assert_eq!(
        Config::from_toml_str(&text, "x").expect("reads back"),
        defaults
    );
}

#[test]
fn env_overrides_listen_count_duration_and_creates_groups() {
    let file = TempFile::new(FULL);
    let config = Config::load(
        Some(file.path()),
        env(&[
            ("RINGMASTER__GROUPS__WEB__LISTEN", "127.0.0.1:4000"),
            ("RINGMASTER__GROUPS__WEB__COUNT", "7"),
            ("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT", "45s"),
            ("RINGMASTER__GROUPS__ADMIN__LISTEN", "127.0.0.1:9000"),
            ("RINGMASTER__GROUPS__ADMIN__WORKER", "\"admin\""),
            ("RINGMASTER__SERVER__CONTROL_SOCKET", "/tmp/rm.sock"),
            ("UNRELATED", "x"),
        ]),
    )
    .expect("overrides apply");
    let web = group(&config, "web");
    assert_eq!(web.listen, addr("127.0.0.1:4000"));
    assert_eq!(web.count, 7);
    assert_eq!(web.drain_timeout, Duration::from_secs(45));
    assert_eq!(web.backlog, 512, "untouched file keys are kept");
    let admin = group(&config, "admin");
    assert_eq!(admin.listen, addr("127.0.0.1:9000"));
    assert_eq!(admin.worker.as_deref(), Some("admin"));
    assert_eq!(
        admin.count,
        GroupConfig::default().count,
        "other keys default"
    );
    assert_eq!(config.server.control_socket, PathBuf::from("/tmp/rm.sock"));
    assert_eq!(
        config.groups.keys().collect::<Vec<_>>(),
        ["web", "jobs", "admin"],
        "new groups are appended after the file's"
    );
}

#[test]
fn env_creates_group_without_file_instead_of_default_web() {
    let config = Config::load(
        None,
        env(&[("RINGMASTER__GROUPS__API__HEARTBEAT_TIMEOUT", "2m")]),
    )
    .expect("loads");
    assert_eq!(config.groups.keys().collect::<Vec<_>>(), ["api"]);
    assert_eq!(
        group(&config, "api").heartbeat_timeout,
        Duration::from_secs(120)
    );
}

#[test]
fn env_scalar_that_fits_only_as_string_is_kept_as_string() {
    let config = Config::load(None, env(&[("RINGMASTER__GROUPS__WEB__WORKER", "123")]))
        .expect("numeric worker name");
    assert_eq!(group(&config, "web").worker.as_deref(), Some("123"));
}

#[test]
fn unknown_key_in_file_names_file_line_and_expected_keys() {
    let file = TempFile::new("[groups.web]\ncount = 2\ncout = 3\n");
    let err = Config::load(Some(file.path()), env(&[])).expect_err("unknown key");
    let shown = err.to_string();
    assert_eq!(err.origin(), file.name());
    assert!(shown.starts_with(&file.name()), "{shown}");
    assert!(shown.contains("unknown field `cout`"), "{shown}");
    assert!(shown.contains("line 3"), "{shown}");
    assert!(
        shown.contains("`heartbeat_timeout`"),
        "lists expected keys: {shown}"
    );
    assert_eq!(err.key(), Some("groups.web.cout"));

    let err = from_str_err("colour = 1\n");
    assert_eq!(err.key(), Some("colour"));
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    assert!(err.to_string().contains("`groups`"), "{err}");
}

#[test]
fn unknown_key_via_env_names_the_variable() {
    let err = Config::load(None, env(&[("RINGMASTER__GROUPS__WEB__COUT", "3")]))
        .expect_err("unknown key");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__GROUPS__WEB__COUT"
    );
    assert_eq!(err.key(), Some("groups.web.cout"));
    let shown = err.to_string();
    assert!(
        shown.starts_with("environment variable RINGMASTER__GROUPS__WEB__COUT=\"3\": "),
        "{shown}"
    );
    assert!(shown.contains("unknown field `cout`"), "{shown}");

    let err = Config::load(None, env(&[("RINGMASTER__LOGGING", "debug")])).expect_err("top");
    assert!(err.to_string().contains("RINGMASTER__LOGGING"), "{err}");
}

#[test]
fn empty_env_segment_is_an_error() {
    let err = Config::load(None, env(&[("RINGMASTER__GROUPS____COUNT", "3")]))
        .expect_err("empty segment");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__GROUPS____COUNT"
    );
    assert!(err.message().contains("empty key segment"), "{err}");
}

#[test]
fn env_cannot_descend_into_a_value() {
    let file = TempFile::new("[server]\ncontrol_socket = \"a.sock\"\n");
    let err = Config::load(
        Some(file.path()),
        env(&[("RINGMASTER__SERVER__CONTROL_SOCKET__PATH", "/x")]),
    )
    .expect_err("control_socket is a string");
    assert!(err.message().contains("`server.control_socket`"), "{err}");
}

#[test]
fn bad_duration_in_file_and_env() {
    let err = from_str_err("[groups.web]\ndrain_timeout = \"5x\"\n");
    let shown = err.to_string();
    assert!(
        shown.starts_with(
            "ringmaster.toml: groups.web.drain_timeout: invalid duration \"5x\": \
             expected a number followed by ms, s, m or h (e.g. \"30s\", \"250ms\")"
        ),
        "{shown}"
    );
    assert!(shown.contains("line 2"), "toml location kept: {shown}");

    let err = from_str_err("[groups.web]\ndrain_timeout = 30\n");
    assert!(err.message().contains("add a unit"), "{err}");

    let err = Config::load(
        None,
        env(&[("RINGMASTER__GROUPS__WEB__BOOT_TIMEOUT", "soon")]),
    )
    .expect_err("bad env duration");
    assert_eq!(err.key(), Some("groups.web.boot_timeout"));
    assert!(
        err.to_string().contains("invalid duration \"soon\""),
        "{err}"
    );
}

#[test]
fn type_error_in_file_reads_like_the_spec() {
    let err = from_str_err("[groups.web]\ncount = \"abc\"\n");
    let first_line = err.to_string().lines().next().map(str::to_owned);
    assert_eq!(
        first_line.as_deref(),
        Some("ringmaster.toml: groups.web.count: expected a positive integer, got \"abc\"")
    );
    let err = from_str_err("[groups.web]\nlisten = \"localhost\"\n");
    assert!(err.message().contains("127.0.0.1:3000"), "{err}");
    let err = from_str_err("[groups.web]\nlisten_mode = \"fork\"\n");
    assert!(err.message().contains("`reuseport`"), "{err}");
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = from_str_err("[groups.web]\ncount = \n");
    assert_eq!(err.origin(), "ringmaster.toml");
    assert!(err.to_string().contains("line 2, column"), "{err}");
}

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
fn group_order_is_preserved() {
    let text = "[groups.zeta]\nlisten = \"127.0.0.1:1\"\n\
                [groups.alpha]\nlisten = \"127.0.0.1:2\"\n\
                [groups.mid]\nlisten = \"127.0.0.1:3\"\n";
    let config = Config::from_toml_str(text, "x").expect("loads");
    let order = ["zeta", "alpha", "mid"];
    assert_eq!(config.groups.keys().collect::<Vec<_>>(), order);
    let file = TempFile::new(text);
    let loaded = Config::load(
        Some(file.path()),
        env(&[("RINGMASTER__GROUPS__ALPHA__COUNT", "2")]),
    )
    .expect("loads");
    assert_eq!(loaded.groups.keys().collect::<Vec<_>>(), order);
    let text = loaded.to_toml_string().expect("serializes");
    let back = Config::from_toml_str(&text, "x").expect("reads back");
    assert_eq!(back.groups.keys().collect::<Vec<_>>(), order);
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
fn missing_explicit_file() {
    let path = std::env::temp_dir().join(format!(
        "ringmaster-config-test-{}-missing.toml",
        std::process::id()
    ));
    let err = Config::load(Some(&path), env(&[])).expect_err("missing file");
    assert_eq!(err.origin(), path.display().to_string());
    assert!(
        err.message()
            .contains("not found; pass an existing path to --config"),
        "{err}"
    );
}

#[test]
fn listen_mode_display_and_exit_code() {
    assert_eq!(ListenMode::Shared.to_string(), "shared");
    assert_eq!(ListenMode::Reuseport.to_string(), "reuseport");
    assert_eq!(ListenMode::default(), ListenMode::Reuseport);
    assert_eq!(EXIT_CONFIG, 78);
    assert_eq!(ENV_PREFIX, "RINGMASTER__");
}

#[test]
fn server_dev_flag() {
    let config = Config::from_toml_str("[server]\ndev = true\n", "x").expect("dev");
    assert!(config.server.dev);
    let config =
        Config::load(None, env(&[("RINGMASTER__SERVER__DEV", "true")])).expect("dev via env");
    assert!(config.server.dev);
    let err = from_str_err("[server]\ndev = \"yes\"\n");
    assert_eq!(err.key(), Some("server.dev"));
    let err = Config::load(None, env(&[("RINGMASTER__SERVER__DEV", "yes")])).expect_err("yes");
    assert_eq!(err.origin(), "environment variable RINGMASTER__SERVER__DEV");
    assert_eq!(err.key(), Some("server.dev"));
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
fn default_backend_is_embedded_sqlite() {
    let config = Config::default();
    let blog = config.backend("blog");
    assert_eq!(blog, BackendConfig::new("sqlite://blog.db"));
    assert_eq!(blog.kind(), Ok(BackendKind::Sqlite));
    assert_eq!(blog.pool_size, 8);
    assert_eq!(blog.connect_timeout, Duration::from_secs(5));
    // A configured backend wins over the default; others still default.
    let config =
        Config::from_toml_str("[backends.blog]\nurl = \"postgres://h/blog\"\n", "x").expect("ok");
    assert_eq!(config.backend("blog").url, "postgres://h/blog");
    assert_eq!(config.backend("shop").url, "sqlite://shop.db");
    assert_eq!(config.groups.keys().collect::<Vec<_>>(), ["web"]);
}

#[test]
fn backend_validation_names_the_key_and_hides_the_password() {
    let cases = [
        ("url = \"\"", "backends.main.url", "got an empty string"),
        (
            "url = \"mysql://root:hunter2@db/app\"",
            "backends.main.url",
            "unsupported scheme \"mysql\" in \"mysql://root:***@db/app\"; \
             expected sqlite://, postgres:// or redis://",
        ),
        (
            "url = \"db.internal:5432\"",
            "backends.main.url",
            "expected sqlite://, postgres:// or redis://",
        ),
        (
            "url = \"sqlite://a.db\"\npool_size = 0",
            "backends.main.pool_size",
            "expected an integer from 1 to 1024, got 0",
        ),
        (
            "url = \"sqlite://a.db\"\npool_size = 1025",
            "backends.main.pool_size",
            "got 1025",
        ),
        (
            "url = \"sqlite://a.db\"\npool_size = \"8\"",
            "backends.main.pool_size",
            "expected a positive integer",
        ),
        (
            "url = \"sqlite://a.db\"\nconnect_timeout = \"0s\"",
            "backends.main.connect_timeout",
            "greater than zero",
        ),
        (
            "url = \"sqlite://a.db\"\nconnect_timeout = \"31d\"",
            "backends.main.connect_timeout",
            "invalid duration",
        ),
        (
            "url = \"sqlite://a.db\"\nconnect_timeout = \"745h\"",
            "backends.main.connect_timeout",
            "at most 30 days",
        ),
        (
            "url = \"sqlite://a.db\"\npool = 4",
            "backends.main.pool",
            "unknown field `pool`",
        ),
        ("pool_size = 4", "backends.main", "missing field `url`"),
    ];
    for (body, key, says) in cases {
        let err = from_str_err(&format!("[backends.main]\n{body}\n"));
        assert_eq!(err.origin(), "ringmaster.toml", "{body}");
        assert_eq!(err.key(), Some(key), "{body}: {err}");
        assert!(err.message().contains(says), "{body}: {err}");
        assert!(!err.to_string().contains("hunter2"), "{body}: {err}");
    }
    let config = Config::from_toml_str(
        "[backends.main]\nurl = \"sqlite://a.db\"\npool_size = 1024\nconnect_timeout = \"720h\"\n",
        "x",
    )
    .expect("upper bounds are allowed");
    assert_eq!(config.backend("main").pool_size, 1024);

    let err = from_str_err("[backends.Main]\nurl = \"sqlite://a.db\"\n");
    assert_eq!(err.key(), Some("backends.Main"));
    assert!(
        err.message().contains("invalid backend name \"Main\""),
        "{err}"
    );
    assert!(err.message().contains("RINGMASTER__BACKENDS__"), "{err}");
}

#[test]
fn passwords_are_redacted_even_in_toml_snippets() {
    // toml echoes the offending line; the password must not appear.
    let err = from_str_err("[backends.main]\nuri = \"postgres://u:hunter2@h/db\"\n");
    let shown = err.to_string();
    assert!(shown.contains("unknown field `uri`"), "{shown}");
    assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = from_str_err("[backends.main]\nurl = \"postgres://u:hunter2@h/db\n");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // A password-bearing value in the wrong key, via env.
    let err = Config::load(
        None,
        env(&[("RINGMASTER__GROUPS__WEB__LISTEN", "redis://:hunter2@h:6379")]),
    )
    .expect_err("not an address");
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://:***@h:6379"), "{shown}");
}

#[test]
fn env_overrides_backends() {
    // Only the url: a new backend with defaults for the rest, after the file's.
    let file = TempFile::new(FULL);
    let config = Config::load(
        Some(file.path()),
        env(&[
            (
                "RINGMASTER__BACKENDS__SESSIONS__URL",
                "rediss://:pw@cache:6380",
            ),
            ("RINGMASTER__BACKENDS__MAIN__POOL_SIZE", "32"),
            (
                "RINGMASTER__BACKENDS__MAIN__URL",
                "postgresql://app:new@db2/app",
            ),
        ]),
    )
    .expect("backend overrides apply");
    assert_eq!(
        config.backends.keys().collect::<Vec<_>>(),
        ["main", "cache", "sessions"]
    );
    let main = config.backend("main");
    assert_eq!(main.url, "postgresql://app:new@db2/app");
    assert_eq!(main.pool_size, 32);
    assert_eq!(
        main.connect_timeout,
        Duration::from_millis(2500),
        "file value kept"
    );
    let sessions = config.backend("sessions");
    assert_eq!(sessions, BackendConfig::new("rediss://:pw@cache:6380"));
    assert_eq!(sessions.kind(), Ok(BackendKind::Redis));

    // No file: the env alone creates the backend; groups still default.
    let config = Config::load(
        None,
        env(&[("RINGMASTER__BACKENDS__MAIN__URL", "postgres://u:pw@h/db")]),
    )
    .expect("env-only backend");
    assert_eq!(config.backend("main").kind(), Ok(BackendKind::Postgres));
    assert_eq!(config.groups.keys().collect::<Vec<_>>(), ["web"]);

    // A bad URL via env blames the variable, names the key, hides the password
    // both in the echoed value and in the message.
    let err = Config::load(
        None,
        env(&[(
            "RINGMASTER__BACKENDS__MAIN__URL",
            "mysql://root:hunter2@db/app",
        )]),
    )
    .expect_err("unsupported scheme");
    assert_eq!(
        err.to_string(),
        "environment variable RINGMASTER__BACKENDS__MAIN__URL=\"mysql://root:***@db/app\": \
         backends.main.url: unsupported scheme \"mysql\" in \"mysql://root:***@db/app\"; \
         expected sqlite://, postgres:// or redis://"
    );
    // Another key without a url: the missing url is reported against the variable.
    let err = Config::load(None, env(&[("RINGMASTER__BACKENDS__MAIN__POOL_SIZE", "4")]))
        .expect_err("url is required");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__BACKENDS__MAIN__POOL_SIZE"
    );
    assert!(err.message().contains("missing field `url`"), "{err}");
    // A range error on a file backend, raised by the env: the variable is blamed.
    let file = TempFile::new("[backends.main]\nurl = \"sqlite://a.db\"\n");
    let err = Config::load(
        Some(file.path()),
        env(&[("RINGMASTER__BACKENDS__MAIN__POOL_SIZE", "0")]),
    )
    .expect_err("pool_size 0");
    assert_eq!(
        err.to_string(),
        "environment variable RINGMASTER__BACKENDS__MAIN__POOL_SIZE=\"0\": \
         backends.main.pool_size: expected an integer from 1 to 1024, got 0"
    );
}

#[test]
fn defaults_round_trip_without_backends() {
    let text = Config::default().to_toml_string().expect("serializes");
    assert!(!text.contains("backends"), "{text}");
    assert!(text.contains("dev = false"), "{text}");
    assert!(text.contains("body_limit = 2097152"), "{text}");
    assert!(text.contains("request_timeout = \"30s\""), "{text}");
    let back = Config::from_toml_str(&text, "x").expect("reads back");
    assert_eq!(back, Config::default());
}

#[test]
fn admin_adds_its_group_which_the_toml_hands_over_as_admin_again() {
    let text = "[groups.web]\nlisten = \"127.0.0.1:3000\"\n[admin]\nlisten = \"127.0.0.1:9100\"\n";
    let config = Config::from_toml_str(text, "ringmaster.toml").expect("valid");
    let names: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    assert_eq!(names, ["web", ADMIN_GROUP]);
    let admin = group(&config, ADMIN_GROUP);
    assert_eq!(admin.worker.as_deref(), Some(ADMIN_WORKER));
    assert_eq!((admin.count, admin.listen), (1, addr("127.0.0.1:9100")));
    assert!(!admin.access_log);
    // The group is not written out: it comes back from [admin].
    let toml = config.to_toml_string().expect("serializes");
    assert!(!toml.contains("[groups.admin]"), "{toml}");
    assert_eq!(
        Config::from_toml_str(&toml, "x").expect("reads back"),
        config
    );
    // The binary's only worker stays the default for other groups.
    let mut config = config;
    config
        .resolve_workers(&["web".to_string(), ADMIN_WORKER.to_string()])
        .expect("resolves");
    assert_eq!(group(&config, "web").worker.as_deref(), Some("web"));
    // Off by default.
    assert!(Config::default().admin.is_off());
    assert!(Config::default().group(ADMIN_GROUP).is_none());
}

#[test]
fn admin_settings_are_checked() {
    let err = from_str_err("[admin]\nlisten = \"0.0.0.0:9100\"\n");
    assert_eq!(err.key(), Some("admin.token"));
    assert!(
        !err.message().contains("  "),
        "one space between words: {err}"
    );
    assert!(
        err.message()
            .contains("required when admin.listen (0.0.0.0:9100) is not a loopback address"),
        "{err}"
    );
    let err = from_str_err("[admin]\nlisten = \"0.0.0.0:9100\"\ntoken = \"short\"\n");
    assert!(err.message().contains("at least 16 characters"), "{err}");
    let ok = "[admin]\nlisten = \"0.0.0.0:9100\"\ntoken = \"0123456789abcdef\"\n";
    assert!(Config::from_toml_str(ok, "x").is_ok());
    let err = from_str_err("[groups.admin]\n[admin]\nlisten = \"127.0.0.1:9100\"\n");
    assert_eq!(err.key(), Some("groups.admin"));
    assert!(err.message().contains("rename this group"), "{err}");
    let err = from_str_err("[groups.web]\nworker = \"ringmaster-admin\"\n");
    assert!(err.message().contains("built-in admin worker"), "{err}");
    let err = from_str_err(
        "[groups.web]\nlisten = \"127.0.0.1:9100\"\n[admin]\nlisten = \"127.0.0.1:9100\"\n",
    );
    assert!(
        err.message().contains("both listen on 127.0.0.1:9100"),
        "{err}"
    );
    let err = from_str_err("[admin]\nlisten = \"nowhere\"\n");
    assert!(err.message().contains("expected a socket address"), "{err}");
    let err = from_str_err("[admin]\nport = 9100\n");
    assert!(err.message().contains("unknown field `port`"), "{err}");
    // From the environment too.
    let err = Config::load(None, env(&[("RINGMASTER__ADMIN__LISTEN", "0.0.0.0:9100")]))
        .expect_err("no token");
    assert_eq!(
        err.origin(),
        "environment variable RINGMASTER__ADMIN__LISTEN"
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
