//! Loading a file or nothing: defaults, a full file and its round trip,
//! group order, a missing file, the flags and constants.

use super::*;

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
fn defaults_round_trip_without_backends() {
    let text = Config::default().to_toml_string().expect("serializes");
    assert!(!text.contains("backends"), "{text}");
    assert!(text.contains("dev = false"), "{text}");
    assert!(text.contains("body_limit = 2097152"), "{text}");
    assert!(text.contains("request_timeout = \"30s\""), "{text}");
    let back = Config::from_toml_str(&text, "x").expect("reads back");
    assert_eq!(back, Config::default());
}
