//! Restart policy, in one place: strikes, exponential backoff, stable runs
//! and the crash-loop threshold. The supervisor asks [`RestartPolicy`] what
//! an exit means and only carries out the answer; the start-up migrations'
//! retries use the same [`Backoff`].
//!
//! A worker that exits without having been ready, or within `min_uptime` of
//! becoming ready, counts a strike; the restart delay doubles with every
//! strike from `restart_backoff` up to `restart_backoff_max`. A worker that
//! stays ready for `min_uptime` clears the strikes (a stable run), so the
//! next crash restarts at once. Uptime counts from `Ready`, not from the
//! spawn, so a boot that fails slowly (a timeout, a backend that is down)
//! still backs off. [`CRASH_LOOP_STRIKES`] strikes in a row make the slot
//! crash-looping (said once in the log, shown by `status`, unready for
//! `/readyz`) until a stable run. This is PM2's exponential backoff with
//! Erlang/OTP's restart intensity in spirit.

use std::time::Duration;

/// Strikes in a row from which a slot is crash-looping.
pub(crate) const CRASH_LOOP_STRIKES: u32 = 5;

/// An exponential backoff: `initial`, doubling per attempt, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// The delay before try `attempt + 1` after `attempt` failures (0: none).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The restart policy of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RestartPolicy {
    /// How long a worker must stay ready for a stable run.
    pub(crate) min_uptime: Duration,
    pub(crate) backoff: Backoff,
}

/// What an unexpected exit means for its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The slot's strikes now.
    pub(crate) strikes: u32,
    /// How long before the slot's next worker starts.
    pub(crate) delay: Duration,
    /// Whether this exit made the slot crash-looping (said once, at the
    /// threshold, not at every strike past it).
    pub(crate) crash_loop_begins: bool,
}

impl RestartPolicy {
    /// Whether a worker ready for `ready_for` (`None`: never) had a stable run.
    pub(crate) fn stable(&self, ready_for: Option<Duration>) -> bool {
        ready_for.is_some_and(|up| up >= self.min_uptime)
    }

    /// An unexpected exit (or a process that could not start: `ready_for`
    /// `None`) after `strikes` strikes.
    pub(crate) fn on_exit(&self, strikes: u32, ready_for: Option<Duration>) -> Verdict {
        if self.stable(ready_for) {
            return Verdict {
                strikes: 0,
                delay: Duration::ZERO,
                crash_loop_begins: false,
            };
        }
        let strikes = strikes.saturating_add(1);
        Verdict {
            strikes,
            delay: self.backoff.delay(strikes),
            crash_loop_begins: strikes == CRASH_LOOP_STRIKES,
        }
    }

    /// Whether a slot with `strikes` whose worker has been ready for
    /// `ready_for` is crash-looping (a stable run ends it before the next
    /// exit clears the strikes).
    pub(crate) fn crash_looping(&self, strikes: u32, ready_for: Option<Duration>) -> bool {
        strikes >= CRASH_LOOP_STRIKES && !self.stable(ready_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            min_uptime: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(15),
            },
        }
    }

    #[test]
    fn a_stable_run_restarts_at_once_and_clears_strikes() {
        let v = policy().on_exit(7, Some(Duration::from_secs(6)));
        assert_eq!((v.strikes, v.delay), (0, Duration::ZERO));
    }

    #[test]
    fn early_exits_double_the_delay_up_to_the_cap_and_a_crash_loop_begins_once() {
        let p = policy();
        let mut strikes = 0;
        let mut delays = Vec::new();
        let mut begins = Vec::new();
        for _ in 0..12 {
            let v = p.on_exit(strikes, Some(Duration::from_millis(10)));
            strikes = v.strikes;
            delays.push(v.delay.as_millis());
            if v.crash_loop_begins {
                begins.push(strikes);
            }
        }
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000, 15000, 15000
            ]
        );
        assert_eq!(begins, [CRASH_LOOP_STRIKES]);
        assert!(p.crash_looping(strikes, Some(Duration::from_secs(1))));
        assert!(!p.crash_looping(strikes, Some(Duration::from_secs(5))));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(policy().backoff.delay(u32::MAX), Duration::from_secs(15));
    }
}
