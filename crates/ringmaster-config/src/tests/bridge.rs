//! The `[bridge]` table: the group it adds, its round trip, its subjects
//! and its checks.

use super::*;

const ON: &str =
    "[groups.web]\n[bridge]\nurl = \"nats://127.0.0.1:4222\"\ntopics = [\"links.invalidate\"]\n";

#[test]
fn bridge_adds_its_group_which_the_toml_hands_over_as_bridge_again() {
    let config = Config::from_toml_str(ON, "ringmaster.toml").expect("valid");
    let names: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    assert_eq!(names, ["web", BRIDGE_GROUP]);
    let bridge = group(&config, BRIDGE_GROUP);
    assert_eq!(bridge.worker.as_deref(), Some(BRIDGE_WORKER));
    assert_eq!((bridge.count, bridge.listen), (1, addr("127.0.0.1:0")));
    let toml = config.to_toml_string().expect("serializes");
    assert!(!toml.contains("[groups.bridge]"), "{toml}");
    assert_eq!(
        Config::from_toml_str(&toml, "x").expect("reads back"),
        config
    );
    assert!(config.bridge.bridges("links.invalidate"));
    assert!(!config.bridge.bridges("links.other"));
    // The binary's own worker stays the default of the other groups.
    let mut resolved = config.clone();
    resolved
        .resolve_workers(&["web".to_string(), BRIDGE_WORKER.to_string()])
        .expect("resolves");
    assert_eq!(group(&resolved, "web").worker.as_deref(), Some("web"));
    // A binary built without the bridge says which feature to turn on.
    let err = config
        .clone()
        .resolve_workers(&["web".to_string()])
        .expect_err("no bridge worker");
    assert!(err.contains("\"nats\" feature"), "{err}");
    assert!(Config::default().bridge.is_off());
    assert!(Config::default().group(BRIDGE_GROUP).is_none());
}

#[test]
fn subjects_take_the_prefix() {
    let mut b = Config::from_toml_str(ON, "x").expect("valid").bridge;
    assert_eq!(b.subject("a.b"), "ringmaster.a.b");
    b.subject_prefix = String::new();
    assert_eq!(b.subject("a.b"), "a.b");
    b.url = Some("nats://u:secret@h1:4222, tls://h2:4222".into());
    assert_eq!(b.redacted_url(), "nats://u:***@h1:4222,tls://h2:4222");
}

#[test]
fn bridge_settings_are_checked() {
    let cases: &[(&str, &str, &str)] = &[
        ("[bridge]\ntopics = [\"a\"]\n", "bridge.url", "required"),
        (
            "[bridge]\nurl = \"http://h:4222\"\ntopics = [\"a\"]\n",
            "bridge.url",
            "expected nats://HOST:PORT",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\n",
            "bridge.topics",
            "got none",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a.*\"]\n",
            "bridge.topics",
            "cannot be a NATS subject",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a..b\"]\n",
            "bridge.topics",
            "cannot be a NATS subject",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\", \"a\"]\n",
            "bridge.topics",
            "listed twice",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\nsubject_prefix = \"my app\"\n",
            "bridge.subject_prefix",
            "without spaces",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\nuser = \"u\"\n",
            "bridge.password",
            "required with bridge.user",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\ntoken = \"t\"\ncredentials = \"x.creds\"\n",
            "bridge.token",
            "one way to log in",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\ntls_cert = \"c.pem\"\n",
            "bridge.tls_key",
            "needs both",
        ),
        (
            "[groups.bridge]\n[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\n",
            "groups.bridge",
            "rename this group",
        ),
        (
            "[groups.web]\nworker = \"ringmaster-bridge\"\n",
            "groups.web.worker",
            "built-in bridge worker",
        ),
        (
            "[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\nretries = 3\n",
            "",
            "unknown field `retries`",
        ),
    ];
    for (text, key, message) in cases {
        let err = from_str_err(text);
        if !key.is_empty() {
            assert_eq!(err.key(), Some(*key), "{text}: {err}");
        }
        assert!(err.message().contains(message), "{text}: {err}");
    }
    // A password never shows in an error.
    let err = from_str_err("[bridge]\nurl = \"http://u:hunter2@h:4222\"\ntopics = [\"a\"]\n");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Every login on its own is fine.
    for login in [
        "user = \"u\"\npassword = \"p\"\n",
        "token = \"t\"\n",
        "credentials = \"app.creds\"\n",
    ] {
        let text = format!("[bridge]\nurl = \"nats://h:4222\"\ntopics = [\"a\"]\n{login}");
        Config::from_toml_str(&text, "x").unwrap_or_else(|e| panic!("{login}: {e}"));
    }
}
