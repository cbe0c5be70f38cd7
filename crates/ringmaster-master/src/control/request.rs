//! The control protocol's messages: requests as parsed from a line, the
//! reply lines, and what the connection task asks of the supervisor.
//!
//! One request per line, a JSON object: `{"v":1,"cmd":"status"}`. Replies
//! are JSON objects, one per line: zero or more events
//! (`{"event":"...",...}`), then one final line, `{"ok":true,"result":...}`
//! or `{"ok":false,"error":{"code":"...","message":"..."}}`. A follow of
//! the logs never ends. `docs/control.md` is the reference.

use std::time::Duration;

use ringmaster_proto::{ClusterStatus, LogLevel};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::logs::Line;

/// The protocol version a request must name in `"v"`.
pub(crate) const VERSION: u64 = ringmaster_proto::CONTROL_VERSION;

/// A request, after `"v"` was checked (the type is shared with the
/// clients, in `ringmaster-proto`).
pub(crate) type Request = ringmaster_proto::ControlRequest;

/// Parses one request line.
pub(crate) fn parse(line: &str) -> Result<Request, Value> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        error(
            "bad_request",
            format!("the request is not JSON ({e}); send one object per line, e.g. {{\"v\":1,\"cmd\":\"status\"}}"),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(error(
            "bad_request",
            "the request must be a JSON object, e.g. {\"v\":1,\"cmd\":\"status\"}".into(),
        ));
    };
    match map.remove("v") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(error(
                "bad_version",
                format!(
                    "this master speaks control protocol version {VERSION}, the request says \"v\": {v}"
                ),
            ));
        }
        None => {
            return Err(error(
                "bad_request",
                format!("the request has no \"v\"; add \"v\": {VERSION}"),
            ));
        }
    }
    if !map.contains_key("cmd") {
        return Err(error(
            "bad_request",
            "the request has no \"cmd\"; one of status, logs, events, reload, restart, scale, stop"
                .into(),
        ));
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| error("bad_request", e.to_string()))
}

/// A final error line.
pub(crate) fn error(code: &str, message: String) -> Value {
    json!({"ok": false, "error": {"code": code, "message": message}})
}

/// A final success line.
pub(crate) fn ok(result: Value) -> Value {
    json!({"ok": true, "result": result})
}

/// Whether a reply line is the last of its request.
pub(crate) fn is_final(line: &Value) -> bool {
    line.get("ok").is_some()
}

/// How a scale request changes a group's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleTo {
    Count(usize),
    Delta(i64),
}

/// Reply lines of a request the supervisor answers over time (reload,
/// restart, stop): events, then one final line. The supervisor never
/// waits for a slow client: a full queue loses events.
pub(crate) type Events = mpsc::Sender<Value>;

/// Room for reply lines the client has not read yet.
pub(crate) const EVENTS_QUEUE: usize = 1024;

/// What a control connection asks of the supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<ClusterStatus>),
    Reload {
        group: Option<String>,
        events: Events,
    },
    Restart {
        group: String,
        slot: usize,
        events: Events,
    },
    Scale {
        group: String,
        to: ScaleTo,
        reply: oneshot::Sender<Value>,
    },
    Stop {
        timeout: Option<Duration>,
        events: Events,
    },
    Upgrade {
        events: Events,
    },
}

/// The filters of a `logs` request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LogFilter {
    pub(crate) group: Option<String>,
    pub(crate) slot: Option<usize>,
    /// The lowest level kept.
    pub(crate) level: Option<LogLevel>,
}

impl LogFilter {
    pub(crate) fn new(
        group: Option<String>,
        slot: Option<usize>,
        level: Option<&str>,
    ) -> Result<LogFilter, Value> {
        let level = level
            .map(str::parse::<LogLevel>)
            .transpose()
            .map_err(|e| error("bad_request", e))?;
        Ok(LogFilter { group, slot, level })
    }

    /// Whether `line` passes (a line of unknown level always passes a
    /// level filter: it may be a panic).
    pub(crate) fn keeps(&self, line: &Line) -> bool {
        if self.group.as_deref().is_some_and(|g| g != &*line.group) {
            return false;
        }
        if self.slot.is_some() && self.slot != line.slot {
            return false;
        }
        match (self.level, line.level) {
            (Some(min), Some(l)) => l >= min,
            _ => true,
        }
    }
}

/// One log line as a reply event.
pub(crate) fn log_event(line: &Line) -> Value {
    json!({
        "event": "log",
        "group": &*line.group,
        "slot": line.slot,
        "level": line.level,
        "text": line.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_clear_errors() {
        assert_eq!(
            parse(r#"{"v":1,"cmd":"status"}"#).unwrap(),
            Request::Status {}
        );
        assert_eq!(
            parse(r#"{"v":1,"cmd":"scale","group":"web","delta":-2}"#).unwrap(),
            Request::Scale {
                group: "web".into(),
                count: None,
                delta: Some(-2)
            }
        );
        let msg = |line: &str| parse(line).unwrap_err()["error"]["message"].to_string();
        let code = |line: &str| parse(line).unwrap_err()["error"]["code"].to_string();
        assert!(msg("status").contains("not JSON"), "{}", msg("status"));
        assert!(msg("[1]").contains("JSON object"));
        assert!(msg(r#"{"cmd":"status"}"#).contains("no \\\"v\\\""));
        assert_eq!(code(r#"{"v":2,"cmd":"status"}"#), "\"bad_version\"");
        assert!(msg(r#"{"v":1,"cmd":"launch"}"#).contains("unknown variant"));
        assert!(msg(r#"{"v":1,"cmd":"restart","group":"web"}"#).contains("slot"));
        assert!(msg(r#"{"v":1,"cmd":"status","extra":1}"#).contains("extra"));
        assert!(msg(r#"{"v":1}"#).contains("no \\\"cmd\\\""));
    }

    #[test]
    fn log_filters() {
        let f = LogFilter::new(Some("web".into()), Some(1), Some("warn")).unwrap();
        let line = |level| Line {
            group: "web".into(),
            slot: Some(1),
            level,
            text: String::new(),
        };
        assert!(f.keeps(&line(Some(LogLevel::Error))));
        assert!(!f.keeps(&line(Some(LogLevel::Info))));
        assert!(f.keeps(&line(None)), "a panic has no level and is kept");
        assert!(LogFilter::new(None, None, Some("loud")).is_err());
    }
}
