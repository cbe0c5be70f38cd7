//! The master's lifecycle events: what happened to which worker, reload,
//! migration or scale, as it happened, in one typed vocabulary.
//!
//! The master publishes each [`Lifecycle`] on a channel as it decides; the
//! control socket's `events` request streams them as JSON lines
//! ([`LifecycleRecord`], `docs/control.md`), `ringmaster events` prints them,
//! and the cluster tests wait on them instead of searching the log's text.
//! The log still says the same things in words, for people.
//!
//! Unlike the IPC messages these travel only as JSON (they are internally
//! tagged by `kind`), so a client built against an older list of kinds
//! reads a newer one as [`Lifecycle::Other`] instead of failing.

use serde::{Deserialize, Serialize};

/// One thing the master did or saw happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Lifecycle {
    /// A worker process was started for a slot.
    WorkerSpawned {
        /// Its group.
        group: String,
        /// Its slot in the group.
        slot: usize,
        /// Its process id.
        pid: u32,
        /// The how-many-th worker of this slot it is, from 0.
        generation: u64,
    },
    /// A worker process could not even be started (the binary is gone, a
    /// resource limit); the slot is retried with backoff.
    SpawnFailed {
        /// The group.
        group: String,
        /// The slot.
        slot: usize,
        /// Why, as the system said it.
        error: String,
    },
    /// A worker reported ready: it serves from now on.
    WorkerReady {
        /// Its group.
        group: String,
        /// Its slot.
        slot: usize,
        /// Its process id.
        pid: u32,
        /// Its generation (see [`Lifecycle::WorkerSpawned`]).
        generation: u64,
        /// Milliseconds from spawn to ready.
        boot_ms: f64,
    },
    /// A worker was told to drain: it finishes its requests and exits.
    WorkerDraining {
        /// Its group.
        group: String,
        /// Its slot.
        slot: usize,
        /// Its process id.
        pid: u32,
        /// Why (`reload`, `scale down`, `stop`, `recycled: max_rss`, ...).
        reason: String,
    },
    /// The master sent a worker SIGKILL.
    WorkerKilled {
        /// Its group.
        group: String,
        /// Its slot.
        slot: usize,
        /// Its process id.
        pid: u32,
        /// Why (`sent no heartbeat for 2000 ms`, `broke the IPC protocol`, ...).
        reason: String,
    },
    /// A worker process exited and was reaped.
    WorkerExited {
        /// Its group.
        group: String,
        /// Its slot.
        slot: usize,
        /// Its process id.
        pid: u32,
        /// How it ended (`exit code 1`, `killed by SIGKILL`).
        status: String,
        /// Why, as far as the master knows (its kill's reason, what it
        /// said when it failed, why it was drained, or `unexpected exit`).
        reason: String,
        /// Whether the master expected it (a drain, a stop).
        expected: bool,
        /// Early exits in a row of its slot, this one included (0 after a
        /// stable run or for an expected exit).
        strikes: u32,
        /// When the slot gets a new worker, if this exit starts one: in
        /// milliseconds (0 at once, more under backoff).
        restart_in_ms: Option<u64>,
    },
    /// A slot's workers keep exiting before a stable run.
    CrashLoop {
        /// The group.
        group: String,
        /// The slot.
        slot: usize,
        /// Early exits in a row.
        strikes: u32,
        /// The last one's reason.
        reason: String,
    },
    /// A migrate process started (`purpose`: `startup` or `reload`).
    MigrationStarted {
        /// Before the first workers (`startup`) or before a reload (`reload`).
        purpose: String,
    },
    /// The migrations passed.
    MigrationPassed {
        /// See [`Lifecycle::MigrationStarted`].
        purpose: String,
    },
    /// The migrations failed.
    MigrationFailed {
        /// See [`Lifecycle::MigrationStarted`].
        purpose: String,
        /// Why.
        error: String,
        /// When they are tried again, if they are (start-up migrations are
        /// retried with backoff; a reload's abort the reload).
        retry_in_ms: Option<u64>,
    },
    /// A rolling reload started.
    ReloadStarted {
        /// The groups it replaces.
        groups: Vec<String>,
    },
    /// A rolling reload replaced every worker it had to.
    ReloadFinished {
        /// The groups it replaced.
        groups: Vec<String>,
    },
    /// A rolling reload stopped before the end; the old workers serve on.
    ReloadAborted {
        /// Why (a replacement that failed to boot, a bad configuration).
        reason: String,
    },
    /// A group's worker count changed.
    Scaled {
        /// The group.
        group: String,
        /// The count before.
        from: usize,
        /// The count now.
        to: usize,
    },
    /// The master is stopping (a signal, `stop`); `graceful` drains first.
    Stopping {
        /// Whether workers drain (TERM, `stop`) or are killed (QUIT, a second TERM).
        graceful: bool,
    },
    /// An in-place upgrade started: the binary at `exe` passed its
    /// preflight and runs as a new master beside this one.
    UpgradeStarted {
        /// The new binary.
        exe: String,
        /// The new master's pid.
        pid: u32,
    },
    /// The new master is ready and serves; this one drains and exits.
    UpgradeFinished {
        /// The new master's pid.
        pid: u32,
        /// Its version.
        version: String,
    },
    /// The upgrade failed; this master serves on.
    UpgradeFailed {
        /// Why.
        reason: String,
    },
    /// A kind this build does not know (sent by a newer master).
    #[serde(other)]
    Other,
}

impl Lifecycle {
    /// The group the event is about, if it is about one.
    pub fn group(&self) -> Option<&str> {
        match self {
            Lifecycle::WorkerSpawned { group, .. }
            | Lifecycle::SpawnFailed { group, .. }
            | Lifecycle::WorkerReady { group, .. }
            | Lifecycle::WorkerDraining { group, .. }
            | Lifecycle::WorkerKilled { group, .. }
            | Lifecycle::WorkerExited { group, .. }
            | Lifecycle::CrashLoop { group, .. }
            | Lifecycle::Scaled { group, .. } => Some(group),
            _ => None,
        }
    }

    /// The worker process the event is about, if it is about one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Lifecycle::WorkerSpawned { pid, .. }
            | Lifecycle::WorkerReady { pid, .. }
            | Lifecycle::WorkerDraining { pid, .. }
            | Lifecycle::WorkerKilled { pid, .. }
            | Lifecycle::WorkerExited { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

impl std::fmt::Display for Lifecycle {
    /// One line for people: `worker ready web/0 pid 4242 (boot 11.3 ms)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(done) = self.fmt_worker(f) {
            return done;
        }
        match self {
            Lifecycle::CrashLoop {
                group,
                slot,
                strikes,
                reason,
            } => write!(
                f,
                "crash loop {group}/{slot}: {strikes} early exits in a row ({reason})"
            ),
            Lifecycle::MigrationStarted { purpose } => write!(f, "migrations started ({purpose})"),
            Lifecycle::MigrationPassed { purpose } => write!(f, "migrations passed ({purpose})"),
            Lifecycle::MigrationFailed {
                purpose,
                error,
                retry_in_ms,
            } => {
                write!(f, "migrations failed ({purpose}): {error}")?;
                match retry_in_ms {
                    Some(ms) => write!(f, "; retrying in {ms} ms"),
                    None => Ok(()),
                }
            }
            Lifecycle::ReloadStarted { groups } => {
                write!(f, "reload started: {}", groups.join(", "))
            }
            Lifecycle::ReloadFinished { groups } => {
                write!(f, "reload finished: {}", groups.join(", "))
            }
            Lifecycle::ReloadAborted { reason } => write!(f, "reload aborted: {reason}"),
            Lifecycle::Scaled { group, from, to } => {
                write!(f, "scaled {group} from {from} to {to}")
            }
            Lifecycle::Stopping { graceful: true } => write!(f, "stopping (draining)"),
            Lifecycle::Stopping { graceful: false } => write!(f, "stopping now"),
            Lifecycle::UpgradeStarted { exe, pid } => {
                write!(f, "upgrade started: new master pid {pid} ({exe})")
            }
            Lifecycle::UpgradeFinished { pid, version } => {
                write!(
                    f,
                    "upgrade finished: master pid {pid} (version {version}) serves; this one drains"
                )
            }
            Lifecycle::UpgradeFailed { reason } => write!(f, "upgrade failed: {reason}"),
            // `Other`; the worker kinds were told above.
            _ => write!(f, "(an event this build does not know)"),
        }
    }
}

impl Lifecycle {
    /// The text of an event about one worker process; `None` for the others.
    fn fmt_worker(&self, f: &mut std::fmt::Formatter<'_>) -> Option<std::fmt::Result> {
        Some(match self {
            Lifecycle::WorkerSpawned {
                group,
                slot,
                pid,
                generation,
            } => write!(
                f,
                "worker spawned {group}/{slot} pid {pid} (generation {generation})"
            ),
            Lifecycle::SpawnFailed { group, slot, error } => {
                write!(f, "worker not started {group}/{slot}: {error}")
            }
            Lifecycle::WorkerReady {
                group,
                slot,
                pid,
                boot_ms,
                ..
            } => write!(
                f,
                "worker ready {group}/{slot} pid {pid} (boot {boot_ms:.1} ms)"
            ),
            Lifecycle::WorkerDraining {
                group,
                slot,
                pid,
                reason,
            } => write!(f, "worker draining {group}/{slot} pid {pid}: {reason}"),
            Lifecycle::WorkerKilled {
                group,
                slot,
                pid,
                reason,
            } => write!(f, "worker killed {group}/{slot} pid {pid}: {reason}"),
            Lifecycle::WorkerExited {
                group,
                slot,
                pid,
                status,
                reason,
                restart_in_ms,
                ..
            } => {
                let then = match restart_in_ms {
                    Some(0) => "; restarting".to_string(),
                    Some(ms) => format!("; restarting in {ms} ms"),
                    None => String::new(),
                };
                write!(
                    f,
                    "worker exited {group}/{slot} pid {pid} ({status}): {reason}{then}"
                )
            }
            _ => return None,
        })
    }
}

/// One event as the control socket sends it:
/// `{"event":"lifecycle","seq":7,"at_ms":1234,"kind":"worker_ready",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// Always `lifecycle` (what tells these lines from the stream's others).
    pub event: String,
    /// Its number, from 0 at the master's start, one more per event: a
    /// client sees whether it missed some.
    pub seq: u64,
    /// Milliseconds since the master started.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: Lifecycle,
}

impl LifecycleRecord {
    /// A record of `what`, numbered `seq`, at `at_ms`.
    pub fn new(seq: u64, at_ms: u64, what: Lifecycle) -> LifecycleRecord {
        LifecycleRecord {
            event: "lifecycle".into(),
            seq,
            at_ms,
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_flat_json_object_and_reads_back() {
        let r = LifecycleRecord::new(
            3,
            1200,
            Lifecycle::WorkerReady {
                group: "web".into(),
                slot: 1,
                pid: 42,
                generation: 2,
                boot_ms: 11.5,
            },
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""event":"lifecycle""#), "{json}");
        assert!(json.contains(r#""kind":"worker_ready""#), "{json}");
        assert!(json.contains(r#""group":"web""#), "{json}");
        let back: LifecycleRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.what.group(), Some("web"));
        assert_eq!(back.what.pid(), Some(42));
        assert_eq!(
            back.what.to_string(),
            "worker ready web/1 pid 42 (boot 11.5 ms)"
        );
    }

    #[test]
    fn an_unknown_kind_reads_as_other() {
        let line = r#"{"event":"lifecycle","seq":1,"at_ms":5,"kind":"warp_drive","speed":9}"#;
        let r: LifecycleRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.what, Lifecycle::Other);
    }
}
