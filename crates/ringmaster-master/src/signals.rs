//! The signals the master answers, after nginx, Unicorn and Kubernetes.
//!
//! | signal | action |
//! |---|---|
//! | TERM, INT | graceful stop (a second one: immediate) |
//! | QUIT | immediate stop |
//! | HUP | rolling reload, configuration re-read |
//! | TTIN, TTOU | one worker more or fewer in every group |
//! | USR1 | reopen `server.log_file` (logrotate); without one, a log line |
//! | CHLD | as PID 1 only: reap orphaned processes (`reaper`) |
//!
//! | USR2 | in-place upgrade to the binary on disk (`supervisor::upgrade`) |

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// A signal the master acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Term,
    Int,
    Quit,
    Hup,
    Ttin,
    Ttou,
    Usr1,
    Usr2,
    /// A child exited (listened to as PID 1 only).
    Child,
}

impl Signal {
    /// The signal's conventional name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Hup => "HUP",
            Signal::Ttin => "TTIN",
            Signal::Ttou => "TTOU",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Child => "CHLD",
        }
    }
}

/// The master's signal streams; installed once, before any worker starts.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    ttin: tokio::signal::unix::Signal,
    ttou: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    child: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers; SIGCHLD's too when `reap` (PID 1).
    pub(crate) fn new(reap: bool) -> io::Result<Self> {
        let child = if reap {
            Some(signal(SignalKind::child())?)
        } else {
            None
        };
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            child,
        })
    }

    /// The next signal. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Term,
            _ = self.int.recv() => Signal::Int,
            _ = self.quit.recv() => Signal::Quit,
            _ = self.hup.recv() => Signal::Hup,
            _ = self.ttin.recv() => Signal::Ttin,
            _ = self.ttou.recv() => Signal::Ttou,
            _ = self.usr1.recv() => Signal::Usr1,
            _ = self.usr2.recv() => Signal::Usr2,
            Some(()) = async {
                match &mut self.child {
                    Some(child) => child.recv().await,
                    None => std::future::pending().await,
                }
            } => Signal::Child,
        }
    }
}
