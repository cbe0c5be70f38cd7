//! Places under `max_connections`: each open connection holds a permit
//! ([`Place`]) and sits in the table of [`Open`] connections, from which a
//! client arriving at the limit has the one that costs least to lose
//! closed ([`Open::evict_one`]), as nginx reuses keep-alive connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// Takes a connection out of [`Open`] when it ends.
pub(super) struct Registered {
    open: Arc<Open>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
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
        let conns = self.lock();
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
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}
