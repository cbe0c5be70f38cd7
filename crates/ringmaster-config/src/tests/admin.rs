//! The `[admin]` table: the group it adds, its round trip, and its checks.

use super::*;

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
