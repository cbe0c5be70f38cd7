//! Tagging: where a line comes from ([`Source`]) and how it is marked in
//! the log, a `group/slot PID gN | ` prefix in text or the source's fields
//! spliced into a JSON object, and the level found in it. The sink tags
//! each line it writes ([`fast_parts`] without a copy, else [`tag`]); the
//! hub tags the lines it keeps only when `logs` reads them.

use std::sync::Arc;

use ringmaster_config::LogFormat;
use ringmaster_proto::{LogLevel, LogStream};

/// Where a line comes from.
#[derive(Debug)]
pub struct Source {
    /// The group, or `master`, or `migrate`.
    pub group: Arc<str>,
    /// The slot (none for the master).
    pub slot: Option<usize>,
    /// The process id.
    pub pid: u32,
    /// The slot's generation.
    pub generation: u64,
    /// The stream: the master's own events, stdout or stderr.
    pub stream: LogStream,
    text_prefix: String,
    json_fields: String,
}

impl Source {
    /// A worker's stream.
    pub fn worker(group: &str, slot: usize, pid: u32, generation: u64, stream: LogStream) -> Self {
        Source {
            group: group.into(),
            slot: Some(slot),
            pid,
            generation,
            stream,
            text_prefix: format!("{group}/{slot} {pid} g{generation} | "),
            json_fields: format!(
                "\"group\":{},\"slot\":{slot},\"pid\":{pid},\"generation\":{generation}",
                json_string(group)
            ),
        }
    }

    /// A stream of the one-off migrate process: its lines are tagged
    /// `migrate PID | ` (group `migrate` in JSON), as the master's are.
    pub fn migrate(pid: u32, stream: LogStream) -> Self {
        Source {
            group: "migrate".into(),
            slot: None,
            pid,
            generation: 0,
            stream,
            text_prefix: format!("migrate {pid} | "),
            json_fields: format!("\"group\":\"migrate\",\"pid\":{pid}"),
        }
    }

    /// The master's own events.
    pub fn master(pid: u32) -> Self {
        Source {
            group: "master".into(),
            slot: None,
            pid,
            generation: 0,
            stream: LogStream::Log,
            text_prefix: format!("master {pid} | "),
            json_fields: format!("\"group\":\"master\",\"pid\":{pid}"),
        }
    }
}

/// The tagged line as slices of `raw` and `src`, when no copy is needed:
/// text (prefix, line) and JSON objects (fields spliced after `{`).
pub(super) fn fast_parts<'a>(
    raw: &'a [u8],
    src: &'a Source,
    format: LogFormat,
) -> Option<[&'a [u8]; 4]> {
    match format {
        // A carriage return could hide the prefix on a terminal: such a
        // line takes the slow path, which escapes it.
        LogFormat::Text if memchr::memchr(b'\r', raw).is_none() => {
            Some([src.text_prefix.as_bytes(), raw, b"", b""])
        }
        LogFormat::Text => None,
        LogFormat::Json => {
            let t = raw.trim_ascii_end();
            if t.len() < 2
                || t[0] != b'{'
                || t[t.len() - 1] != b'}'
                || std::str::from_utf8(t).is_err()
            {
                return None;
            }
            // The master's fields go last: with a duplicate key, the last
            // one wins in JSON parsers, so a worker cannot pose as another.
            let body = t[..t.len() - 1].trim_ascii_end();
            let sep: &[u8] = if body.len() == 1 { b"" } else { b"," };
            Some([body, sep, src.json_fields.as_bytes(), b"}"])
        }
    }
}

/// Tags a line with its source; finds its level.
pub(super) fn tag(text: &str, src: &Source, format: LogFormat) -> (String, Option<LogLevel>) {
    match format {
        LogFormat::Json => tag_json(text, src),
        LogFormat::Text => {
            let level = text
                .split_whitespace()
                .take(3)
                .find_map(LogLevel::from_word);
            let mut out = String::with_capacity(src.text_prefix.len() + text.len());
            out.push_str(&src.text_prefix);
            out.push_str(&text.replace('\r', "\\r"));
            (out, level)
        }
    }
}

/// [`tag`] for the JSON format: an object gets the source's fields; any
/// other line is wrapped in one.
fn tag_json(text: &str, src: &Source) -> (String, Option<LogLevel>) {
    let t = text.trim_end();
    if t.starts_with('{') && t.ends_with('}') {
        let level = t.find("\"level\":\"").and_then(|i| {
            let rest = &t[i + 9..];
            LogLevel::ALL
                .into_iter()
                .find(|l| rest.starts_with(l.as_str()))
        });
        let body = t[..t.len() - 1].trim_end();
        let sep = if body.len() == 1 { "" } else { "," };
        (format!("{body}{sep}{}}}", src.json_fields), level)
    } else {
        // Raw output (a panic, a print, a C library): wrapped.
        let level = if src.stream == LogStream::Stderr {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        let line = format!(
            "{{{},\"level\":\"{level}\",\"stream\":\"{}\",\"fields\":{{\"message\":{}}}}}",
            src.json_fields,
            src.stream.as_str(),
            json_string(t)
        );
        (line, Some(level))
    }
}

/// `s` as a JSON string literal (serde_json's escaping: a `&str` always
/// serializes).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_get_fields_and_raw_lines_are_wrapped() {
        let src = Source::worker("web", 1, 42, 3, LogStream::Log);
        let (t, level) = tag(
            r#"{"level":"INFO","fields":{"message":"hi"}}"#,
            &src,
            LogFormat::Json,
        );
        assert_eq!(
            t,
            r#"{"level":"INFO","fields":{"message":"hi"},"group":"web","slot":1,"pid":42,"generation":3}"#
        );
        assert_eq!(level, Some(LogLevel::Info));
        let err = Source::worker("web", 1, 42, 3, LogStream::Stderr);
        let (t, level) = tag("thread 'x' panicked at \"a\\b\"", &err, LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["fields"]["message"], "thread 'x' panicked at \"a\\b\"");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(level, Some(LogLevel::Warn));
        let (t, level) = tag(
            "2026-01-01T00:00:00Z  WARN something",
            &src,
            LogFormat::Text,
        );
        assert_eq!(t, "web/1 42 g3 | 2026-01-01T00:00:00Z  WARN something");
        assert_eq!(level, Some(LogLevel::Warn));
    }

    #[test]
    fn the_fast_path_writes_what_tag_gives() {
        let src = Source::worker("web", 2, 7, 1, LogStream::Log);
        for (raw, format) in [
            ("2026-01-01T00:00:00Z  INFO hello", LogFormat::Text),
            (
                r#"{"level":"INFO","fields":{"message":"x"}}"#,
                LogFormat::Json,
            ),
            ("{}", LogFormat::Json),
        ] {
            let fast: Vec<u8> = fast_parts(raw.as_bytes(), &src, format).unwrap().concat();
            assert_eq!(String::from_utf8(fast).unwrap(), tag(raw, &src, format).0);
        }
        assert!(fast_parts(b"not json", &src, LogFormat::Json).is_none());
    }
}
