//! Backends: the embedded default, their checks, password redaction and
//! their environment overrides.

use super::*;

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
