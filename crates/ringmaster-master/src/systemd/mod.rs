//! The master's side of systemd: `sd_notify` messages (`READY=1`,
//! `STATUS=`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`) on the socket
//! `NOTIFY_SOCKET` names, and socket activation (`activation`: the
//! listening sockets systemd passes with `LISTEN_FDS`).
//!
//! The protocol is a few lines of text in one datagram, so it is written
//! here rather than taken from a crate. Without `NOTIFY_SOCKET` (not
//! under systemd, or `Type=simple`) every call is a no-op. A message that
//! cannot be sent is logged once and never stops the master: systemd is
//! its supervisor, not a dependency.
//!
//! The supervisor tells the [`Notifier`] what happens; the notifier
//! decides what systemd hears:
//! - `READY=1` once every group has its ready count, never before (the
//!   same test as `/readyz`), and again at the end of each reload;
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts (what
//!   `Type=notify-reload`, systemd 253 and later, requires; with
//!   `ExecReload=/bin/kill -HUP $MAINPID` it shows the reload in
//!   `systemctl status`);
//! - `STOPPING=1` when a stop starts;
//! - `STATUS=` whenever the one-line summary changes;
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, from the supervisor's own
//!   loop (its `tick`), so a wedged master stops sending it and systemd
//!   restarts the service.

pub(crate) mod activation;

use std::cell::{Cell, RefCell};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio::time::Instant;

/// The `sd_notify` client; one per master.
pub(crate) struct Notifier {
    /// The socket and where to send; `None` when not under systemd.
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when systemd watches this process.
    watchdog_every: Option<Duration>,
    next_watchdog: Cell<Option<Instant>>,
    /// `READY=1` was sent since the start or the last `RELOADING=1`.
    ready_sent: Cell<bool>,
    reloading: Cell<bool>,
    stopping: Cell<bool>,
    /// The last `STATUS=` sent.
    status: RefCell<String>,
    /// A send failed and was logged; later failures are not.
    failed: Cell<bool>,
    /// Say nothing: another process is the service now (an old master
    /// after an upgrade), or not yet (a new master before it is announced).
    silent: Cell<bool>,
}

impl Notifier {
    /// The notifier systemd's environment describes (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`); a bad value is logged and ignored.
    pub(crate) fn from_env(pid: u32) -> Notifier {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let socket = var("NOTIFY_SOCKET").and_then(|path| match open(&path) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!(
                    notify_socket = %path, error = %e,
                    "NOTIFY_SOCKET is set but cannot be used; systemd will not hear that the master is ready"
                );
                None
            }
        });
        let watchdog_every = var("WATCHDOG_USEC")
            .and_then(|usec| watchdog_interval(&usec, var("WATCHDOG_PID").as_deref(), pid));
        Notifier::new(socket, watchdog_every)
    }

    fn new(socket: Option<(UnixDatagram, SocketAddr)>, watchdog_every: Option<Duration>) -> Self {
        Notifier {
            watchdog_every: watchdog_every.filter(|_| socket.is_some()),
            socket,
            next_watchdog: Cell::new(None),
            ready_sent: Cell::new(false),
            reloading: Cell::new(false),
            stopping: Cell::new(false),
            status: RefCell::new(String::new()),
            failed: Cell::new(false),
            silent: Cell::new(false),
        }
    }

    /// Whether systemd listens (`NOTIFY_SOCKET` was usable).
    pub(crate) fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// The interval of `WATCHDOG=1`, when systemd asked for one.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        if self.silent.get() {
            return;
        }
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
            && !self.failed.replace(true)
        {
            tracing::warn!(
                error = %e, message = message.lines().next().unwrap_or(""),
                "cannot notify systemd (NOTIFY_SOCKET); later failures are not logged"
            );
        }
    }

    /// The cluster's summary changed (or may have): sends `READY=1` the
    /// first time every group is ready, and `STATUS=` when the text
    /// differs from the last one sent.
    pub(crate) fn update(&self, status: &str, all_ready: bool) {
        // Held (a new master not yet the main process): nothing is sent
        // and nothing counts as sent, so READY=1 follows the release.
        if !self.active() || self.silent.get() {
            return;
        }
        let ready_now =
            all_ready && !self.ready_sent.get() && !self.reloading.get() && !self.stopping.get();
        let changed = *self.status.borrow() != status;
        if !ready_now && !changed {
            return;
        }
        let mut message = String::new();
        if ready_now {
            self.ready_sent.set(true);
            message.push_str("READY=1\n");
        }
        if changed {
            status.clone_into(&mut self.status.borrow_mut());
            message.push_str("STATUS=");
            message.push_str(status);
            message.push('\n');
        }
        self.send(&message);
    }

    /// A reload started: `RELOADING=1` with the monotonic clock (once per
    /// reload, whatever number of events announce it). Only once the
    /// service is up: before `READY=1` systemd is still starting it.
    pub(crate) fn reloading(&self) {
        if self.silent.get()
            || self.stopping.get()
            || !self.ready_sent.get()
            || self.reloading.replace(true)
        {
            return;
        }
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\n",
            monotonic_usec()
        ));
    }

    /// A reload ended (finished or aborted; the old workers serve on
    /// either way): `READY=1`.
    pub(crate) fn reloaded(&self) {
        if self.stopping.get() || !self.reloading.replace(false) {
            return;
        }
        self.ready_sent.set(true);
        self.send("READY=1\n");
    }

    /// The master started to stop: `STOPPING=1`, once.
    pub(crate) fn stopping(&self) {
        if !self.silent.get() && !self.stopping.replace(true) {
            self.send("STOPPING=1\n");
        }
    }

    /// An upgrade's new master `pid` serves: it is the service's main
    /// process from now on (`MAINPID=`, which systemd takes from the main
    /// process even with `NotifyAccess=main`); this master says nothing
    /// more.
    pub(crate) fn hand_over(&self, pid: u32) {
        self.send(&format!(
            "MAINPID={pid}\nSTATUS=handed over to the new master {pid}; draining\n"
        ));
        self.silent.set(true);
    }

    /// Says nothing until [`Notifier::release`]: a new master of an
    /// upgrade is not the service's main process yet.
    pub(crate) fn hold(&self) {
        self.silent.set(true);
    }

    /// Ends [`Notifier::hold`]; the watchdog's keep-alive is due at once
    /// (the old master's last one may be almost an interval old).
    pub(crate) fn release(&self) {
        self.silent.set(false);
        self.next_watchdog.set(None);
    }

    /// When the next `WATCHDOG=1` is due, if systemd asked for them.
    pub(crate) fn next_watchdog(&self, now: Instant) -> Option<Instant> {
        let every = self.watchdog_every?;
        Some(
            self.next_watchdog
                .get()
                .unwrap_or(now + every)
                .min(now + every),
        )
    }

    /// Sends `WATCHDOG=1` when it is due. Called from the supervisor's
    /// loop: if the loop is stuck, systemd hears nothing and acts.
    pub(crate) fn watchdog(&self, now: Instant) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        let next = match self.next_watchdog.get() {
            Some(due) if now < due => return,
            // On time: keep the rate, so lateness does not add up.
            Some(due) if now < due + every => due + every,
            // First, or late by a whole interval (the loop was busy).
            _ => now + every,
        };
        self.next_watchdog.set(Some(next));
        self.send("WATCHDOG=1\n");
    }
}

/// Opens a datagram socket for `NOTIFY_SOCKET`: a path, or `@name` for
/// an abstract socket.
fn open(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract (a vsock address is not supported)",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    // A full receive queue must not block the master's loop.
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// Half of `WATCHDOG_USEC`, when it is meant for `pid`; systemd asks for
/// a keep-alive at least once per interval, and half leaves room for a
/// busy moment.
fn watchdog_interval(usec: &str, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = for_pid
        && for_pid.parse::<u32>().ok() != Some(pid)
    {
        // Set for another process (a parent's wrapper): not ours to keep.
        return None;
    }
    match usec.parse::<u64>() {
        Ok(usec) if usec > 0 => Some(Duration::from_micros(usec / 2)),
        _ => {
            tracing::warn!(
                watchdog_usec = usec,
                "WATCHDOG_USEC is not a positive number of microseconds; no watchdog keep-alive is sent"
            );
            None
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd compares with its own.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Notifier, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!(
            "rm-notify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_nonblocking(true).unwrap();
        let socket = open(path.to_str().unwrap()).unwrap();
        let n = Notifier::new(Some(socket), Some(Duration::from_millis(100)));
        (n, rx)
    }

    fn received(rx: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(len) = rx.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        out
    }

    #[test]
    fn ready_is_sent_once_every_group_is_ready_and_status_only_when_it_changes() {
        let (n, rx) = pair();
        n.update("web 1/2 ready", false);
        n.update("web 1/2 ready", false);
        n.update("web 2/2 ready", true);
        n.update("web 2/2 ready", true);
        assert_eq!(
            received(&rx),
            ["STATUS=web 1/2 ready\n", "READY=1\nSTATUS=web 2/2 ready\n"]
        );
    }

    #[test]
    fn a_reload_is_reloading_then_ready_and_a_stop_is_stopping_once() {
        let (n, rx) = pair();
        n.update("ok", true);
        n.reloading();
        n.reloading();
        n.update("ok", true);
        n.reloaded();
        n.stopping();
        n.stopping();
        n.reloading();
        let got = received(&rx);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[1].starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{got:?}"
        );
        let usec: u64 = got[1]
            .trim_end()
            .rsplit('=')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(got[2], "READY=1\n");
        assert_eq!(got[3], "STOPPING=1\n");
    }

    #[test]
    fn a_held_notifier_sends_ready_once_released() {
        let (n, rx) = pair();
        n.hold();
        n.update("web 1/1 ready", true);
        n.stopping();
        assert!(received(&rx).is_empty());
        n.release();
        n.update("web 1/1 ready", true);
        assert_eq!(received(&rx), ["READY=1\nSTATUS=web 1/1 ready\n"]);
    }

    #[test]
    fn the_watchdog_is_sent_when_due_only() {
        let (n, rx) = pair();
        let t0 = Instant::now();
        n.watchdog(t0);
        n.watchdog(t0 + Duration::from_millis(50));
        n.watchdog(t0 + Duration::from_millis(100));
        assert_eq!(received(&rx), ["WATCHDOG=1\n", "WATCHDOG=1\n"]);
        assert_eq!(
            n.next_watchdog(t0 + Duration::from_millis(100)),
            Some(t0 + Duration::from_millis(200))
        );
    }

    #[test]
    fn watchdog_usec_for_another_pid_or_not_a_number_is_ignored() {
        assert_eq!(
            watchdog_interval("10000000", None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval("10000000", Some("7"), 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(watchdog_interval("10000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval("ten", None, 7), None);
        assert_eq!(watchdog_interval("0", None, 7), None);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::new(None, Some(Duration::from_secs(1)));
        assert!(!n.active());
        assert_eq!(n.watchdog_every(), None);
        n.update("x", true);
        n.stopping();
        assert!(open("relative/path").is_err());
    }
}
