//! The proptest version of the fuzz target `config` (`fuzz/`): random
//! bytes and near-valid configurations, with environment overrides.

use proptest::prelude::*;
use ringmaster_config::fuzzing::config;

/// A key of the configuration, known or misspelt, with its section.
fn key() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("groups.web", "count")),
        Just(("groups.web", "listen")),
        Just(("groups.web", "listen_mode")),
        Just(("groups.web", "threads")),
        Just(("groups.web", "drain_timeout")),
        Just(("groups.web", "heartbeat_interval")),
        Just(("groups.web", "heartbeat_timeout")),
        Just(("groups.web", "max_connections")),
        Just(("groups.web", "max_header_bytes")),
        Just(("groups.web", "max_requests")),
        Just(("groups.web", "max_rss")),
        Just(("groups.web", "keepalive_timeout")),
        Just(("groups.web", "header_read_timeout")),
        Just(("groups.web", "worker")),
        Just(("groups.web", "restart_backoff")),
        Just(("groups.web", "min_uptime")),
        Just(("groups.api", "count")),
        Just(("groups.api", "listen")),
        Just(("server", "log_file")),
        Just(("server", "pid_file")),
        Just(("server", "control_socket")),
        Just(("server", "log_format")),
        Just(("server", "dev")),
        Just(("backends.main", "url")),
        Just(("backends.main", "pool_size")),
        Just(("backends.main", "acquire_timeout")),
        Just(("groups.web", "cuont")),
        Just(("sever", "log_file")),
    ]
}

/// A value of any TOML type, often one a key might take.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,22}",
        "\"[0-9]{1,6}(ms|s|m|h|d|us)?\"",
        "\"[0-9.]{1,8}[a-z]{0,2}\"",
        "\"(127.0.0.1|0.0.0.0|\\[::1\\]|localhost|999.1.1.1):[0-9]{1,6}\"",
        "\"(sqlite|postgres|redis|mysql)://[a-z:@/.0-9]{0,20}\"",
        "\"[a-z_/.]{0,120}\"",
        Just("true".to_string()),
        Just("1.5".to_string()),
        Just("nan".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"shared\"".to_string()),
        Just("\"reuseport\"".to_string()),
    ]
}

/// A file of sections with keys and values, then overrides.
fn near_config() -> impl Strategy<Value = Vec<u8>> {
    let entries = prop::collection::vec((key(), value()), 0..12);
    let overrides = prop::collection::vec(
        (
            "(GROUPS__WEB__|GROUPS__API__|SERVER__|BACKENDS__MAIN__)[A-Z_]{2,20}",
            value(),
        ),
        0..3,
    );
    (entries, overrides).prop_map(|(entries, overrides)| {
        let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
        for ((section, key), value) in entries {
            let line = format!("{key} = {value}");
            match sections.iter_mut().find(|(s, _)| *s == section) {
                Some((_, lines)) => lines.push(line),
                None => sections.push((section, vec![line])),
            }
        }
        let mut text = String::new();
        for (section, lines) in sections {
            text.push_str(&format!("[{section}]\n{}\n", lines.join("\n")));
        }
        text.push('\0');
        for (k, v) in overrides {
            text.push_str(&format!("{k}={}\n", v.trim_matches('"')));
        }
        text.into_bytes()
    })
}

proptest! {
    #[test]
    fn random_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        config(&bytes);
    }

    #[test]
    fn near_configurations_are_accepted_whole_or_refused_by_name(input in near_config()) {
        config(&input);
    }
}
