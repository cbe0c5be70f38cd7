//! The master's lifecycle channel: the supervisor publishes a [`Lifecycle`]
//! event for each thing it does or sees (a worker spawned, ready, drained,
//! killed or exited; a reload, a migration, a scale, a stop), and the
//! control socket's `events` request streams them (`control`).
//!
//! The hub numbers the events and keeps the last [`KEPT`] so a client that
//! connects late (a test that waits for the first workers, an operator
//! after an incident) can ask for what it missed. Publishing never waits:
//! a follower that falls behind the broadcast channel is told how many
//! events it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ringmaster_proto::{Lifecycle, LifecycleRecord};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Events kept for late clients.
pub(crate) const KEPT: usize = 1024;
/// Events a follower may be behind before it skips some.
const FOLLOW_QUEUE: usize = 1024;

/// The publishing end, cloned into the control socket for subscribing.
#[derive(Clone)]
pub(crate) struct LifecycleHub {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    /// The kept events and the next number; publishing and subscribing
    /// take it so no event falls between a client's replay and its follow.
    kept: Mutex<Kept>,
    tx: broadcast::Sender<Arc<LifecycleRecord>>,
}

#[derive(Default)]
struct Kept {
    next_seq: u64,
    ring: VecDeque<Arc<LifecycleRecord>>,
}

impl LifecycleHub {
    /// A hub whose times count from `started` (the master's start).
    pub(crate) fn new(started: Instant) -> LifecycleHub {
        let (tx, _) = broadcast::channel(FOLLOW_QUEUE);
        LifecycleHub {
            inner: Arc::new(Inner {
                started,
                kept: Mutex::new(Kept::default()),
                tx,
            }),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `what`: numbered, kept, and sent to every follower.
    pub(crate) fn publish(&self, what: Lifecycle) {
        let at_ms = self.inner.started.elapsed().as_millis() as u64;
        let mut kept = self.kept();
        let record = Arc::new(LifecycleRecord::new(kept.next_seq, at_ms, what));
        kept.next_seq += 1;
        if kept.ring.len() == KEPT {
            kept.ring.pop_front();
        }
        kept.ring.push_back(record.clone());
        // No follower is not an error: nobody asked.
        let _ = self.inner.tx.send(record);
    }

    /// The last `last` kept events, and a receiver of every later one.
    pub(crate) fn subscribe(
        &self,
        last: usize,
    ) -> (
        Vec<Arc<LifecycleRecord>>,
        broadcast::Receiver<Arc<LifecycleRecord>>,
    ) {
        let kept = self.kept();
        let skip = kept.ring.len().saturating_sub(last);
        let replay = kept.ring.iter().skip(skip).cloned().collect();
        (replay, self.inner.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(to: usize) -> Lifecycle {
        Lifecycle::Scaled {
            group: "web".into(),
            from: 1,
            to,
        }
    }

    #[tokio::test]
    async fn a_late_client_gets_the_kept_tail_then_every_new_event_in_order() {
        let hub = LifecycleHub::new(Instant::now());
        for n in 0..KEPT + 5 {
            hub.publish(scaled(n));
        }
        let (replay, mut rx) = hub.subscribe(3);
        let seqs: Vec<u64> = replay.iter().map(|r| r.seq).collect();
        let end = (KEPT + 5) as u64;
        assert_eq!(seqs, vec![end - 3, end - 2, end - 1]);
        let (all, _) = hub.subscribe(usize::MAX);
        assert_eq!(all.len(), KEPT, "only the last KEPT are kept");
        hub.publish(scaled(7));
        let next = rx.recv().await.unwrap();
        assert_eq!(next.seq, end);
        assert_eq!(next.what, scaled(7));
    }
}
