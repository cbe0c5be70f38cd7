//! The control socket's requests, as one type for both ends: the master
//! parses them, the command line and the test harness build them.
//!
//! A request travels as one JSON line, `{"v":1,"cmd":"status"}`
//! ([`ControlRequest::to_line`]); `docs/control.md` documents each one and
//! the replies. Unknown keys are refused, so a typo is an error, not a
//! silent default.

use serde::{Deserialize, Serialize};

/// The control protocol's version, the `"v"` of every request.
pub const CONTROL_VERSION: u64 = 1;

/// One request to the master's control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
// Not `non_exhaustive`: the master matches every request, and a new one
// must not compile until it answers it.
pub enum ControlRequest {
    /// The cluster's status.
    Status {},
    /// Recent log lines, and with `follow` every new one.
    Logs {
        /// Keep sending new lines until the client hangs up.
        #[serde(default)]
        follow: bool,
        /// How many recent lines first (default 100).
        #[serde(default = "default_lines")]
        lines: usize,
        /// Only this group's lines (`master` for the master's own).
        group: Option<String>,
        /// Only this slot's lines.
        slot: Option<usize>,
        /// Only lines at this level or above (`trace` .. `error`); a
        /// string so that a bad one gets the master's own message.
        level: Option<String>,
    },
    /// The master's lifecycle events: the last `last` it kept, then every
    /// new one until the client goes away.
    Events {
        /// How many kept events first (default 0).
        #[serde(default)]
        last: usize,
    },
    /// A rolling reload of one group or all.
    Reload {
        /// Only this group (its settings only are re-read).
        group: Option<String>,
    },
    /// Replace one worker, replacement ready first.
    Restart {
        /// The worker's group.
        group: String,
        /// Its slot.
        slot: usize,
    },
    /// Set a group's worker count (`count`), or change it by `delta`.
    Scale {
        /// The group.
        group: String,
        /// The new count.
        count: Option<usize>,
        /// The change (+2, -1).
        delta: Option<i64>,
    },
    /// Graceful stop; workers get `timeout_ms` (default: their
    /// `drain_timeout`) to finish.
    Stop {
        /// The drain grace, in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// Replace the master itself with the binary now on disk (as USR2):
    /// a new master starts beside this one with its sockets, becomes
    /// ready, and this one drains and exits.
    Upgrade {},
}

fn default_lines() -> usize {
    100
}

impl ControlRequest {
    /// The request as the line a client sends: `{"v":1,"cmd":...}` and a
    /// newline.
    pub fn to_line(&self) -> String {
        let body = serde_json::to_string(self).unwrap_or_default();
        // `body` is an object (`{"cmd":...}`): the version goes first.
        format!("{{\"v\":{CONTROL_VERSION},{}\n", &body[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_versioned_line_that_reads_back() {
        let r = ControlRequest::Scale {
            group: "web".into(),
            count: None,
            delta: Some(-1),
        };
        let line = r.to_line();
        assert!(
            line.starts_with(r#"{"v":1,"cmd":"scale","group":"web""#),
            "{line}"
        );
        assert!(line.ends_with("}\n"));
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v.as_object_mut().unwrap().remove("v");
        assert_eq!(serde_json::from_value::<ControlRequest>(v).unwrap(), r);
        assert_eq!(
            ControlRequest::Status {}.to_line(),
            "{\"v\":1,\"cmd\":\"status\"}\n"
        );
    }
}
