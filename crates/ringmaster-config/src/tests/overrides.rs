//! Environment overrides: what they set and create, and their errors.

use super::*;

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
