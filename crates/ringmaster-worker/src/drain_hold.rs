//! Drain holds: background work a module started that a drain waits for,
//! as it waits for requests in flight ([`DrainHold`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// While it lives, a drain of this worker waits before the process exits
/// (at most until the drain's grace period is over, like a request in
/// flight). Take one with [`Init::hold_drain`](crate::Init::hold_drain)
/// or [`AppContext::hold_drain`](crate::AppContext::hold_drain) for work
/// that must finish what it started once
/// [`draining`](crate::Init::draining) completes: flushing a buffer,
/// handing over the messages already received.
#[must_use = "the drain waits only while the hold lives"]
#[derive(Debug)]
pub struct DrainHold(Arc<Holds>);

impl Drop for DrainHold {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The holds of one worker.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    count: AtomicUsize,
    idle: Notify,
}

impl Holds {
    /// A new hold.
    pub(crate) fn hold(self: &Arc<Self>) -> DrainHold {
        self.count.fetch_add(1, Ordering::AcqRel);
        DrainHold(self.clone())
    }

    /// Completes once no hold is left.
    pub(crate) async fn released(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_waits_for_every_hold() {
        let holds = Arc::new(Holds::default());
        holds.released().await;
        let (a, b) = (holds.hold(), holds.hold());
        let wait = tokio::spawn({
            let holds = holds.clone();
            async move { holds.released().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!wait.is_finished(), "one hold is left");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), wait)
            .await
            .expect("released once the last hold is dropped")
            .unwrap();
    }
}
