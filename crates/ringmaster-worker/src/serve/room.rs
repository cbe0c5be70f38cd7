//! Places under `max_connections`: each open connection holds a permit
//! ([`Place`]) and sits in the table of [`Open`] connections, from which a
//! client arriving at the limit has the one that costs least to lose
//! closed ([`Open::evict_one`]), as nginx reuses keep-alive connections;
//! near the limit, room is made ahead of the next client
//! ([`Open::evict_ahead`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::timeouts::{ConnState, NO_HEAD};

/// At the limit, how long a client that arrived waits for the room it made
/// before another connection is chosen to close.
pub(super) const EVICT_AGAIN: Duration = Duration::from_millis(20);

/// A connection's place under `max_connections`: its permit, its state,
/// and its entry in the table of open connections.
pub(super) struct Place {
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) state: Arc<ConnState>,
    pub(super) registered: Registered,
}

impl Place {
    pub(super) fn new(permit: OwnedSemaphorePermit, open: &Arc<Open>) -> Place {
        let state = Arc::new(ConnState::new());
        Place {
            permit,
            registered: open.register(state.clone()),
            state,
        }
    }
}

/// The open connections that may be closed to make room at the limit (not
/// the upgraded ones).
#[derive(Default)]
pub(super) struct Open {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// How many of them were asked to close and are still open.
    closing: AtomicUsize,
}

/// Takes a connection out of [`Open`] when it ends.
pub(super) struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let gone = self.open.lock().remove(&self.id);
        if gone.is_some_and(|c| c.evicted.load(Ordering::Relaxed)) {
            self.open.closing.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Open {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection as it is accepted (before its task runs, so that
    /// a client arriving right after can already close it for room).
    fn register(self: &Arc<Self>, state: Arc<ConnState>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, state);
        Registered {
            open: self.clone(),
            id,
        }
    }

    /// Asks the connection that costs least to lose to close: the longest
    /// idle between requests, else the one whose incomplete head started
    /// first; never one answering a request. False if there is none.
    pub(super) fn evict_one(&self) -> bool {
        self.evict(None)
    }

    /// Near the limit: asks a connection to close as [`Open::evict_one`]
    /// does, unless `pending` asked before are still open; false then.
    pub(super) fn evict_ahead(&self, pending: usize) -> bool {
        self.evict(Some(pending))
    }

    fn evict(&self, pending: Option<usize>) -> bool {
        let conns = self.lock();
        if pending.is_some_and(|p| self.closing.load(Ordering::Relaxed) >= p) {
            return false;
        }
        let best = conns
            .values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0 && !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| {
                let head = c.head_started.load(Ordering::Relaxed);
                let (tier, since) = if head == NO_HEAD {
                    (0, c.last_io.load(Ordering::Relaxed))
                } else {
                    (1, head)
                };
                (tier, since)
            });
        match best {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                self.closing.fetch_add(1, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ahead_is_made_for_at_most_pending_connections_at_once() {
        let open = Arc::new(Open::default());
        let states: Vec<_> = (0..3).map(|_| Arc::new(ConnState::new())).collect();
        let mut registered: Vec<_> = states.iter().map(|s| open.register(s.clone())).collect();
        assert!(open.evict_ahead(2));
        assert!(open.evict_ahead(2));
        assert!(!open.evict_ahead(2), "two are closing already");
        // At the limit there is no cap: the last idle one goes too.
        assert!(open.evict_one());
        assert!(!open.evict_one(), "none is left to close");
        // One that was asked to close ends: room may be made again.
        let first = states
            .iter()
            .position(|s| s.evicted.load(Ordering::Relaxed))
            .unwrap();
        drop(registered.remove(first));
        assert_eq!(open.closing.load(Ordering::Relaxed), 2);
        let fresh = Arc::new(ConnState::new());
        let _fresh = open.register(fresh.clone());
        assert!(!open.evict_ahead(2), "still two closing");
        assert!(open.evict_ahead(3));
        assert!(fresh.evicted.load(Ordering::Relaxed));
        drop(registered);
        assert_eq!(open.closing.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_connection_answering_a_request_is_never_closed_for_room() {
        let open = Arc::new(Open::default());
        let busy = Arc::new(ConnState::new());
        busy.busy.store(1, Ordering::Relaxed);
        let _r = open.register(busy.clone());
        assert!(!open.evict_ahead(4));
        assert!(!open.evict_one());
        assert!(!busy.evicted.load(Ordering::Relaxed));
    }
}
