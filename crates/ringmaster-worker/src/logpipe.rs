//! The worker's log pipe: the write end of the pipe the master reads this
//! worker's `tracing` lines from (fd 6, when `RINGMASTER_LOG_PIPE=1`).
//!
//! Events are gathered in one buffer and written with non-blocking
//! `write`s: at once for warnings and errors, else when 16 KiB are
//! gathered or every 10 ms, so a busy worker makes one write per many
//! lines and never waits for the master. When the pipe stays full, events
//! beyond a 256 KiB buffer are dropped and counted, and a line "N log
//! lines dropped" goes out once there is room again. A worker that aborts
//! loses at most its last 10 ms of info and debug lines.
//!
//! The access log ([`access`]) is formatted here by hand and skips the
//! `tracing` machinery: it is one line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use ringmaster_proto::handoff::{ENV_LOG_PIPE, LOG_FD};

static PIPE: OnceLock<Arc<LogPipe>> = OnceLock::new();

/// Opens the log pipe if the master handed one over (once per process);
/// `json`: lines are JSON objects.
pub fn install(json: bool) -> Option<Arc<LogPipe>> {
    if !std::env::var_os(ENV_LOG_PIPE).is_some_and(|v| v == "1") {
        return None;
    }
    Some(
        PIPE.get_or_init(|| {
            let p = Arc::new(LogPipe::open(json));
            LogPipe::start_ticker(&p);
            p
        })
        .clone(),
    )
}

/// The installed pipe, if any.
pub fn installed() -> Option<&'static Arc<LogPipe>> {
    PIPE.get()
}

/// The worker's log pipe, written without blocking, through one buffer.
pub struct LogPipe {
    fd: i32,
    json: bool,
    buf: std::sync::Mutex<Vec<u8>>,
    /// Events dropped since the last note saying so.
    unreported: AtomicU64,
}

/// Gathered bytes that trigger a write.
const BATCH: usize = 16 * 1024;
/// Gathered bytes beyond which new events are dropped.
const CAP: usize = 256 * 1024;
/// How often gathered lines are written anyway.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);

impl LogPipe {
    fn open(json: bool) -> LogPipe {
        let fd = LOG_FD;
        // SAFETY: fcntl on the fd the master handed over (checked by the
        // env variable); O_NONBLOCK only affects this pipe's writes.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        LogPipe {
            fd,
            json,
            buf: std::sync::Mutex::new(Vec::with_capacity(CAP)),
            unreported: AtomicU64::new(0),
        }
    }

    /// Writes what is gathered every [`TICK`], from a thread of its own.
    fn start_ticker(pipe: &Arc<LogPipe>) {
        let weak = Arc::downgrade(pipe);
        let _ = std::thread::Builder::new()
            .name("ringmaster-log-flush".into())
            .spawn(move || {
                while let Some(pipe) = weak.upgrade() {
                    pipe.flush(&mut pipe.lock());
                    drop(pipe);
                    std::thread::sleep(TICK);
                }
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gathers one whole event, or drops it if the buffer is full; writes
    /// at once if `urgent` or enough is gathered.
    pub fn event(&self, bytes: &[u8], urgent: bool) {
        let mut buf = self.lock();
        if buf.len() + bytes.len() > CAP {
            self.flush(&mut buf);
            if buf.len() + bytes.len() > CAP {
                self.unreported.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let dropped = self.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("{dropped} log lines dropped: the master was not reading them\n");
            buf.extend_from_slice(note.as_bytes());
        }
        buf.extend_from_slice(bytes);
        if urgent || buf.len() >= BATCH {
            self.flush(&mut buf);
        }
    }

    /// Writes as much of `buf` as the pipe takes now; the rest (always
    /// starting at a line's first byte or in its middle, never lost) waits.
    fn flush(&self, buf: &mut Vec<u8>) {
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf[done..];
            // SAFETY: write from a live slice to our fd.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                done += n as usize;
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        buf.drain(..done);
    }
}

/// Writes one access log line (if the log pipe is installed and the
/// `access` target is enabled at info); returns whether it did, else the
/// caller logs through `tracing`.
pub(crate) fn access(method: &str, path: &str, status: u16, ms: f64, request_id: &str) -> bool {
    let Some(pipe) = installed() else {
        return false;
    };
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return true;
    }
    let mut line = String::with_capacity(160 + path.len());
    let ts = rfc3339(SystemTime::now());
    use std::fmt::Write;
    if pipe.json {
        let _ = write!(
            line,
            "{{\"timestamp\":\"{ts}\",\"level\":\"INFO\",\"fields\":{{\"message\":\"request\",\"method\":\"{method}\",\"path\":{},\"status\":{status},\"duration_ms\":{ms:.3},\"request_id\":{}}},\"target\":\"access\"}}",
            json_string(path),
            json_string(request_id)
        );
    } else {
        let _ = write!(
            line,
            "{ts}  INFO access: method={method} path={path} status={status} duration_ms={ms:.3} request_id={request_id}"
        );
    }
    line.push('\n');
    pipe.event(line.as_bytes(), false);
    true
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2026-11-28T00:12:26.695528Z`, as `tracing`'s text format shows time.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_795_825_946_695_528);
        assert_eq!(rfc3339(t), "2026-11-28T00:32:26.695528Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
