//! The application log's vocabulary: the levels a line can have and the
//! streams a process writes, shared by the master (which tags and filters
//! lines), the control socket's `logs` request and the command line.

use serde::{Deserialize, Serialize};

/// A log line's level, least severe first (so `>=` keeps a minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// As `tracing` writes it in a line: `INFO`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }

    /// The level a word of a log line names exactly (`INFO`), if any.
    pub fn from_word(word: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == word)
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    /// `info`, `INFO`, `Info`; the error says which words work.
    fn from_str(s: &str) -> Result<LogLevel, String> {
        LogLevel::from_word(&s.to_ascii_uppercase())
            .ok_or_else(|| format!("level {s:?}: use trace, debug, info, warn or error"))
    }
}

/// Which of a process's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// A process's own `tracing` events (a worker's log pipe, the
    /// master's events).
    Log,
    /// Standard output.
    Stdout,
    /// Standard error (a line without a level there is taken as a warning:
    /// a panic, a print of an error).
    Stderr,
}

impl LogStream {
    /// `log`, `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Log => "log",
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_read_in_any_case_order_by_severity_and_say_what_works() {
        assert_eq!("warn".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("ERROR".parse::<LogLevel>(), Ok(LogLevel::Error));
        assert!(LogLevel::Warn > LogLevel::Info);
        let e = "loud".parse::<LogLevel>().unwrap_err();
        assert!(e.contains("use trace, debug, info, warn or error"), "{e}");
        assert_eq!(LogLevel::from_word("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::from_word("info"), None, "a line's word is exact");
    }
}
