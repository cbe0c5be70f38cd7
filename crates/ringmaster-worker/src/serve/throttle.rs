//! The accept loop's warnings, at most one line a second each: accept
//! errors ([`Throttle`]) and connections closed to make room at
//! `max_connections` ([`FullThrottle`]). Both come in bursts (EMFILE, a
//! flood of clients), and a line per event would flood the log.

use std::time::Duration;

use tokio::time::Instant;

/// At most one log line a second.
#[derive(Default)]
struct OncePerSecond(Option<Instant>);

impl OncePerSecond {
    /// Whether a line may go out now (then the next one waits a second).
    fn due(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// Accept errors, logged at most once a second with how many there were.
#[derive(Default)]
pub(super) struct Throttle {
    line: OncePerSecond,
    since: u64,
}

impl Throttle {
    pub(super) fn note(&mut self, e: &std::io::Error) {
        self.since += 1;
        if !self.line.due() {
            return;
        }
        tracing::warn!(
            error = %e,
            errors = self.since,
            "accept failed ({} times since the last such line); new connections wait in the queue",
            self.since
        );
        self.since = 0;
    }
}

/// At the limit, says at most once a second how often room was made and
/// how often there was none (every connection answering a request).
#[derive(Default)]
pub(super) struct FullThrottle {
    line: OncePerSecond,
    made: u64,
    none: u64,
}

impl FullThrottle {
    pub(super) fn note(&mut self, made_room: bool, max: usize) {
        if made_room {
            self.made += 1;
        } else {
            self.none += 1;
        }
        if !self.line.due() {
            return;
        }
        tracing::warn!(
            max_connections = max,
            closed_for_room = self.made,
            all_busy = self.none,
            "at max_connections: {} idle or incomplete connections closed to make room, {} \
             times every connection was answering a request (raise max_connections or add workers)",
            self.made,
            self.none
        );
        self.made = 0;
        self.none = 0;
    }
}
