//! Restart policy: strikes and exponential backoff.
//!
//! A worker that exits without having been ready, or within `min_uptime` of
//! becoming ready, counts a strike; the restart delay doubles with every
//! strike from `restart_backoff` up to `restart_backoff_max`. A worker that
//! stays ready for `min_uptime` clears the strikes (a stable run), so the
//! next crash restarts at once. Uptime counts from `Ready`, not from the
//! spawn, so a boot that fails slowly (a timeout, a backend that is down)
//! still backs off. This is PM2's exponential backoff with Erlang/OTP's
//! restart intensity in spirit.

use std::time::Duration;

/// The backoff settings of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) min_uptime: Duration,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// Given the strikes so far and how long the exited worker had been
    /// ready (`None`: it never was), returns the new strike count and the
    /// delay before the next start.
    pub(crate) fn on_exit(&self, strikes: u32, ready_for: Option<Duration>) -> (u32, Duration) {
        if ready_for.is_some_and(|up| up >= self.min_uptime) {
            return (0, Duration::ZERO);
        }
        let strikes = strikes.saturating_add(1);
        (strikes, self.delay(strikes))
    }

    /// The delay after `strikes` strikes (0 strikes: no delay).
    pub(crate) fn delay(&self, strikes: u32) -> Duration {
        if strikes == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(strikes - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            min_uptime: Duration::from_secs(5),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(15),
        }
    }

    #[test]
    fn a_stable_run_restarts_at_once_and_clears_strikes() {
        assert_eq!(
            backoff().on_exit(7, Some(Duration::from_secs(6))),
            (0, Duration::ZERO)
        );
    }

    #[test]
    fn early_exits_double_the_delay_up_to_the_cap() {
        let b = backoff();
        let mut strikes = 0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            let (s, d) = b.on_exit(strikes, Some(Duration::from_millis(10)));
            strikes = s;
            delays.push(d.as_millis());
        }
        assert_eq!(
            delays,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000, 15000, 15000
            ]
        );
    }

    #[test]
    fn huge_strike_counts_do_not_overflow() {
        assert_eq!(backoff().delay(u32::MAX), Duration::from_secs(15));
    }
}
