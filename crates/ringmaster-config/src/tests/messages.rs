//! Errors of the TOML itself: unknown keys, bad durations, type and syntax
//! errors, each with its origin and location.

use super::*;

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
