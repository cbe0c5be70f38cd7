//! Log output of every role, through `tracing`, filtered by `RINGMASTER_LOG`
//! (e.g. `info`, `debug`, `info,ringmaster_master=debug`), as text or JSON
//! lines (`server.log_format`):
//!
//! - a **worker** writes to the log pipe the master reads (fd 6) without
//!   ever waiting for the master: events are gathered in one buffer and
//!   written with non-blocking `write`s, at once for warnings and errors,
//!   else when 16 KiB are gathered or every 10 ms (so a busy worker makes
//!   one write per many lines). When the pipe stays full, events beyond a
//!   256 KiB buffer are dropped and counted, and a line "N log lines
//!   dropped" goes out once there is room again. A worker that aborts
//!   loses at most its last 10 ms of info and debug lines; its warnings
//!   and errors are already written;
//! - the **master** (`serve`) queues its events to its own log sink, the
//!   same stream as the workers' lines, without blocking;
//! - the **migrate** role writes to stderr, which the master reads into
//!   its log (tagged `migrate PID`), in the master's format;
//! - every other command (and a worker started by hand) writes to stderr.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use ringmaster_config::LogFormat;
use ringmaster_master::logs::{LogHub, Source};
use ringmaster_worker::logpipe::LogPipe;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The variable that sets the log filter.
pub(crate) const ENV_LOG: &str = "RINGMASTER_LOG";

/// Where a process's log lines go.
pub(crate) enum Output {
    /// The terminal (commands), or for the migrate role the pipe the
    /// master reads, in the master's format.
    Stderr,
    /// A worker: the log pipe if the master gave one, else stderr.
    Worker(LogFormat),
    /// The master: its log sink.
    Master(LogHub, LogFormat),
}

/// Installs the subscriber; a bad filter falls back to `info` with a warning.
pub(crate) fn init(output: Output) {
    let spec = std::env::var(ENV_LOG).unwrap_or_else(|_| "info".to_string());
    let (filter, bad) = match spec.parse::<Targets>() {
        Ok(f) => (f, None),
        Err(e) => ("info".parse().unwrap_or_default(), Some(e)),
    };
    // The NATS client logs every event and reconnect attempt; the bridge
    // logs each change of state once itself. `RINGMASTER_LOG=async_nats=debug`
    // shows the client's own lines.
    let filter = if spec.contains("async_nats") {
        filter
    } else {
        filter.with_target("async_nats", tracing_subscriber::filter::LevelFilter::OFF)
    };
    let pipe = std::env::var_os(ringmaster_worker::ENV_LOG_PIPE).is_some_and(|v| v == "1");
    let (format, writer) = match output {
        Output::Stderr => (stderr_format(), Writer::Stderr),
        Output::Worker(format) if pipe => {
            match ringmaster_worker::logpipe::install(format == LogFormat::Json) {
                Some(p) => (format, Writer::Pipe(p)),
                None => (format, Writer::Stderr),
            }
        }
        Output::Worker(format) => (format, Writer::Stderr),
        Output::Master(hub, format) => {
            let source = Arc::new(Source::master(std::process::id()));
            (format, Writer::Hub(hub, source))
        }
    };
    let ansi = matches!(writer, Writer::Stderr) && std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer))
            .try_init(),
        _ => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false),
            )
            .try_init(),
    };
    let _ = result;
    if let Some(e) = bad {
        tracing::warn!("{ENV_LOG}={spec:?} is not a valid filter ({e}); logging at info");
    }
}

/// The format of a process that writes to stderr: text, but for the
/// migrate role, whose lines the master tags into its log, the master's.
fn stderr_format() -> LogFormat {
    if !ringmaster_worker::is_migrate_process() {
        return LogFormat::Text;
    }
    std::env::var(ringmaster_worker::ENV_CONFIG)
        .ok()
        .and_then(|t| ringmaster_config::Config::from_toml_str(&t, "migrate").ok())
        .map(|c| c.server.log_format)
        .unwrap_or_default()
}

/// The `MakeWriter` of every role.
#[derive(Clone)]
enum Writer {
    Stderr,
    Pipe(Arc<LogPipe>),
    Hub(LogHub, Arc<Source>),
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Box<dyn Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.writer(true)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        // Warnings and errors are written at once.
        self.writer(*meta.level() <= tracing::Level::WARN)
    }
}

impl Writer {
    fn writer(&self, urgent: bool) -> Box<dyn Write + '_> {
        match self {
            Writer::Stderr => Box::new(std::io::stderr()),
            Writer::Pipe(pipe) => Box::new(Event {
                pipe,
                buf: Vec::new(),
                urgent,
            }),
            Writer::Hub(hub, source) => Box::new(hub.writer(source.clone())),
        }
    }
}

/// One event being formatted.
struct Event<'a> {
    pipe: &'a LogPipe,
    buf: Vec<u8>,
    urgent: bool,
}

impl Write for Event<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pipe.event(&self.buf, self.urgent);
        }
    }
}
