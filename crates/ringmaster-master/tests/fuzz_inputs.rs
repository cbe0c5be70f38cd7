//! The proptest version of the fuzz target `control_request` (`fuzz/`):
//! random bytes and near-valid requests through the control socket's line
//! reader and request parser.

use proptest::prelude::*;
use ringmaster_master::fuzzing::control_request;

/// A request line that is almost right: a known or unknown command, known
/// or unknown fields, values of every JSON type.
fn near_request() -> impl Strategy<Value = String> {
    let cmd = prop_oneof![
        Just("status"),
        Just("logs"),
        Just("reload"),
        Just("restart"),
        Just("scale"),
        Just("stop"),
        Just("nope"),
    ];
    let key = prop_oneof![
        Just("group"),
        Just("slot"),
        Just("count"),
        Just("delta"),
        Just("lines"),
        Just("follow"),
        Just("level"),
        Just("timeout_ms"),
        Just("cmd"),
        Just("v"),
        Just("x"),
    ];
    let value = prop_oneof![
        "-?[0-9]{1,25}",
        "\"[a-zA-Z0-9_/ ]{0,12}\"",
        Just("null".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("1e400".to_string()),
        Just("-9223372036854775808".to_string()),
    ];
    let v = prop_oneof![
        Just("1".to_string()),
        "[0-9]{1,3}",
        Just("\"1\"".to_string())
    ];
    (v, cmd, prop::collection::vec((key, value), 0..5)).prop_map(|(v, cmd, fields)| {
        let mut line = format!("{{\"v\":{v},\"cmd\":\"{cmd}\"");
        for (k, val) in fields {
            line.push_str(&format!(",\"{k}\":{val}"));
        }
        line.push('}');
        line
    })
}

proptest! {
    #[test]
    fn random_bytes_are_refused_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..9000),
        step in 1usize..5000,
    ) {
        control_request(&bytes, step);
    }

    #[test]
    fn near_requests_are_parsed_or_refused_cleanly(
        lines in prop::collection::vec(near_request(), 1..8),
        step in 1usize..300,
    ) {
        let text = lines.join("\n") + "\n";
        control_request(text.as_bytes(), step);
    }
}

#[test]
fn a_line_just_over_the_limit_is_refused() {
    let mut line = vec![b' '; 4097];
    line.push(b'\n');
    control_request(&line, 1000);
}
