//! The worker's log pipe: the write end of the pipe the master reads this
//! worker's `tracing` lines from (fd 6, when `RINGMASTER_LOG_PIPE=1`).
//!
//! Events are gathered in one buffer and written with non-blocking
//! `write`s: at once for warnings and errors, else when 16 KiB are
//! gathered or every 10 ms, so a busy worker makes one write per many
//! lines and never waits for the master. When the pipe stays full, events
//! beyond a 256 KiB buffer are dropped and counted, and a line "N log
//! lines dropped" goes out once there is room again. A worker that exits
//! writes what is gathered first ([`LogPipe::finish`]); one that aborts
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
    if std::env::var_os(ENV_LOG_PIPE).is_none_or(|v| v != "1") {
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
    /// Events dropped since the start.
    dropped: AtomicU64,
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
            dropped: AtomicU64::new(0),
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

    /// Writes everything gathered, waiting up to `within` for room in the
    /// pipe: called once as the process exits, so that its last lines
    /// (`drained; exiting`) are not lost with the ticker's next 10 ms.
    pub fn finish(&self, within: std::time::Duration) {
        let until = std::time::Instant::now() + within;
        loop {
            let mut buf = self.lock();
            self.flush(&mut buf);
            if buf.is_empty() || std::time::Instant::now() >= until {
                return;
            }
            drop(buf);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Events this worker dropped since it started (the pipe stayed full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Gathers one whole event, or drops it if the buffer is full; writes
    /// at once if `urgent` or enough is gathered.
    pub fn event(&self, bytes: &[u8], urgent: bool) {
        let mut buf = self.lock();
        if buf.len() + bytes.len() > CAP {
            self.flush(&mut buf);
            if buf.len() + bytes.len() > CAP {
                self.unreported.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
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

thread_local! {
    /// This thread's line buffer and its cached `YYYY-MM-DDTHH:MM:SS`.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, u64, [u8; 19])> =
        const { std::cell::RefCell::new((Vec::new(), u64::MAX, [0; 19])) };
}

/// Writes one access log line (if the log pipe is installed and the
/// `access` target is enabled at info); returns whether it did, else the
/// caller logs through `tracing`. Formatted by hand: it runs per request.
pub(crate) fn access(method: &str, path: &str, status: u16, micros: u64, request_id: &str) -> bool {
    let Some(pipe) = installed() else {
        return false;
    };
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return true;
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SCRATCH.with_borrow_mut(|(line, cached_secs, stamp)| {
        line.clear();
        if *cached_secs != now.as_secs() {
            *cached_secs = now.as_secs();
            stamp.copy_from_slice(&rfc3339(now.as_secs()).as_bytes()[..19]);
        }
        let when = Stamp {
            seconds: stamp,
            micros: now.subsec_micros(),
        };
        let fields = AccessLine {
            method,
            path,
            status,
            micros,
            request_id,
        };
        if pipe.json {
            fields.json(line, &when);
        } else {
            fields.text(line, &when);
        }
        line.push(b'\n');
        pipe.event(line, false);
    });
    true
}

/// The time of an access log line: its cached `YYYY-MM-DDTHH:MM:SS`, and
/// the microseconds within that second.
struct Stamp<'a> {
    seconds: &'a [u8; 19],
    micros: u32,
}

impl Stamp<'_> {
    fn push(&self, line: &mut Vec<u8>) {
        line.extend_from_slice(&self.seconds[..]);
        line.push(b'.');
        push_padded(line, u64::from(self.micros), 6);
        line.push(b'Z');
    }
}

/// A duration in microseconds, written as milliseconds with 3 decimals.
fn push_ms(line: &mut Vec<u8>, micros: u64) {
    push_u64(line, micros / 1000);
    line.push(b'.');
    push_padded(line, micros % 1000, 3);
}

/// What an access log line says.
struct AccessLine<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    micros: u64,
    request_id: &'a str,
}

impl AccessLine<'_> {
    /// The line as `tracing`'s JSON format writes it.
    fn json(&self, line: &mut Vec<u8>, when: &Stamp<'_>) {
        line.extend_from_slice(b"{\"timestamp\":\"");
        when.push(line);
        line.extend_from_slice(
            b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":\"",
        );
        line.extend_from_slice(self.method.as_bytes());
        line.extend_from_slice(b"\",\"path\":");
        line.extend_from_slice(json_string(self.path).as_bytes());
        line.extend_from_slice(b",\"status\":");
        push_u64(line, u64::from(self.status));
        line.extend_from_slice(b",\"duration_ms\":");
        push_ms(line, self.micros);
        line.extend_from_slice(b",\"request_id\":");
        line.extend_from_slice(json_string(self.request_id).as_bytes());
        line.extend_from_slice(b"},\"target\":\"access\"}");
    }

    /// The line as `tracing`'s text format writes it.
    fn text(&self, line: &mut Vec<u8>, when: &Stamp<'_>) {
        when.push(line);
        line.extend_from_slice(b"  INFO access: method=");
        line.extend_from_slice(self.method.as_bytes());
        line.extend_from_slice(b" path=");
        line.extend_from_slice(self.path.as_bytes());
        line.extend_from_slice(b" status=");
        push_u64(line, u64::from(self.status));
        line.extend_from_slice(b" duration_ms=");
        push_ms(line, self.micros);
        line.extend_from_slice(b" request_id=");
        line.extend_from_slice(self.request_id.as_bytes());
    }
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = v;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `2026-11-28T00:12:26Z` for `secs` since the epoch (UTC).
fn rfc3339(secs: u64) -> String {
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(1_795_825_946), "2026-11-28T00:32:26Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn numbers_are_written_by_hand_right() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, u64::MAX);
        v.push(b' ');
        push_padded(&mut v, 42, 6);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "0 18446744073709551615 000042"
        );
    }
}
