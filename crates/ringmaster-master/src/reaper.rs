//! Reaping orphans when the master is PID 1 (a container's entry point,
//! `unshare --pid`): every process of the namespace whose parent dies is
//! re-parented to it, and a zombie nobody waits for stays in the process
//! table for good. With this, no `tini` or `dumb-init` is needed.
//!
//! The master's own children (workers, the migrate process) are waited
//! for by their watcher tasks (tokio's `Child`); they are registered here
//! with an [`Own`] guard from the moment they are spawned, and the reaper
//! never takes their exit status: it peeks with `WNOWAIT` and reaps only
//! processes it does not know.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The pids of the master's own children, waited for elsewhere.
static OWN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn own() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    OWN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks a child as the master's own while it lives: the reaper leaves
/// its exit status to the task that waits for it.
#[derive(Debug)]
pub(crate) struct Own(u32);

impl Own {
    /// Registers `pid`; call it right after the spawn, on the thread
    /// that runs the reaper (so no reap falls in between).
    pub(crate) fn new(pid: u32) -> Own {
        own().insert(pid);
        Own(pid)
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        own().remove(&self.0);
    }
}

/// Whether this master must reap orphans: it is PID 1 of its namespace.
pub(crate) fn needed() -> bool {
    std::process::id() == 1
}

/// Reaps every exited child that is not the master's own; returns how
/// many. Stops at the first exited child that is its own (its watcher
/// reaps it at once, and the next SIGCHLD, or the next second, looks
/// again).
pub(crate) fn reap_orphans() -> usize {
    let mut reaped = 0;
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is how waitid's
        // "nothing exited" (si_pid 0) is told from a real answer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only `info`; WNOWAIT leaves the child
        // waitable, so peeking takes nobody's exit status.
        let peeked = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if peeked != 0 {
            return reaped; // ECHILD: no child at all
        }
        // SAFETY: waitid succeeded, so info holds a SIGCHLD siginfo.
        let pid = unsafe { info.si_pid() };
        if pid <= 0 || own().contains(&(pid as u32)) {
            return reaped;
        }
        let mut status = 0;
        // SAFETY: waitpid on a child that has exited (seen above) and that
        // no watcher owns.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
            tracing::debug!(pid, status, "reaped an orphaned process");
        } else {
            return reaped;
        }
    }
}

// Tested with the real binary as PID 1 of a pid namespace
// (`examples/demo/tests/containers.rs`): reaping in a unit test would take
// the exit statuses of other tests' children in the same process.
