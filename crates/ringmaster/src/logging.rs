//! Log output of every role, through `tracing`, filtered by `RINGMASTER_LOG`
//! (e.g. `info`, `debug`, `info,ringmaster_master=debug`), as text or JSON
//! lines (`server.log_format`):
//!
//! - a **worker** writes each event with one non-blocking `write` on the
//!   log pipe the master reads (fd 6): it never waits for the master; an
//!   event that finds the pipe full is dropped and counted, and a line
//!   "N log lines dropped" goes out once there is room again. Nothing is
//!   buffered in the worker, so an abort loses no line already logged;
//! - the **master** (`serve`) queues its events to its own log sink, the
//!   same stream as the workers' lines, without blocking;
//! - every other command (and a worker started by hand) writes to stderr.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringmaster_config::LogFormat;
use ringmaster_master::logs::{LogHub, Source};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The variable that sets the log filter.
pub(crate) const ENV_LOG: &str = "RINGMASTER_LOG";

/// Where a process's log lines go.
pub(crate) enum Output {
    /// The terminal (commands, the migrate role).
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
    let pipe = std::env::var_os(ringmaster_worker::ENV_LOG_PIPE).is_some_and(|v| v == "1");
    let (format, writer) = match output {
        Output::Stderr => (LogFormat::Text, Writer::Stderr),
        Output::Worker(format) if pipe => (format, Writer::Pipe(Arc::new(Pipe::open()))),
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

/// The `MakeWriter` of every role.
#[derive(Clone)]
enum Writer {
    Stderr,
    Pipe(Arc<Pipe>),
    Hub(LogHub, Arc<Source>),
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Box<dyn Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Writer::Stderr => Box::new(std::io::stderr()),
            Writer::Pipe(pipe) => Box::new(Event {
                pipe,
                buf: Vec::new(),
            }),
            Writer::Hub(hub, source) => Box::new(hub.writer(source.clone())),
        }
    }
}

/// The worker's log pipe, written without blocking.
struct Pipe {
    fd: i32,
    /// Events dropped since the last note saying so.
    unreported: AtomicU64,
}

impl Pipe {
    fn open() -> Pipe {
        let fd = ringmaster_worker::LOG_FD;
        // SAFETY: fcntl on the fd the master handed over (checked by the
        // env variable); O_NONBLOCK only affects this pipe's writes.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        Pipe {
            fd,
            unreported: AtomicU64::new(0),
        }
    }

    /// Writes one whole event, or drops it. Events up to 4096 bytes
    /// (PIPE_BUF) are written whole or not at all; a longer one that finds
    /// the pipe partly full gets 10 ms for the rest.
    fn write_event(&self, bytes: &[u8]) {
        let dropped = self.unreported.load(Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("{dropped} log lines dropped: the master was not reading them\n");
            if self.write_all(note.as_bytes()) {
                self.unreported.fetch_sub(dropped, Ordering::Relaxed);
            }
        }
        if !self.write_all(bytes) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write_all(&self, mut bytes: &[u8]) -> bool {
        let mut first = true;
        while !bytes.is_empty() {
            // SAFETY: write from a live slice to our fd.
            let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
            if n > 0 {
                bytes = &bytes[n as usize..];
                first = false;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if !first => {
                    // The rest of a long line: wait a little for room.
                    let mut pfd = libc::pollfd {
                        fd: self.fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll on one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// One event being formatted.
struct Event<'a> {
    pipe: &'a Pipe,
    buf: Vec<u8>,
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
            self.pipe.write_event(&self.buf);
        }
    }
}
