//! The accept loop, until the drain starts: connections from the listener
//! and those the master hands over, each served under a permit; at
//! `max_connections`, a client that arrives makes room by having the
//! connection that costs least to lose closed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixDatagram};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use super::room::EVICT_AGAIN;
use super::throttle::{FullThrottle, Throttle};
use super::{DrainRx, Server, drain_started, handover};

/// Where connections come from, and what the loop keeps between them.
pub(super) struct Accept {
    pub(super) listener: TcpListener,
    /// The master's hand-over socket; `None` without one, or once it failed.
    pub(super) adopt: Option<UnixDatagram>,
    /// A client accepted at the limit, waiting for the room its arrival made.
    pub(super) waiting: Option<TcpStream>,
    /// Completes when the drain starts.
    started: Pin<Box<dyn Future<Output = ()> + Send>>,
    errors: Throttle,
    full: FullThrottle,
}

/// How many places from the limit room starts being made ahead, and how
/// many connections may be closing for it at once: an eighth of
/// `max_connections`, at least one.
fn room_ahead(max: usize) -> usize {
    (max / 8).max(1)
}

/// Near the limit, a client that arrives (its permit taken) has room made
/// ahead for the next ones: under a flood the loop then seldom waits, with
/// clients queued behind it, for a closed connection's permit.
fn make_room_ahead(server: &Server) {
    let ahead = room_ahead(server.limits.max_connections);
    if server.permits.available_permits() < ahead {
        server.open.evict_ahead(ahead);
    }
}

/// What the loop does after a wait at the limit.
enum AtLimit {
    /// Serve the next connection with this permit.
    Permit(OwnedSemaphorePermit),
    /// Look at the permits again.
    Again,
    /// The drain started (or the permits are gone): stop accepting.
    Stop,
}

impl Accept {
    pub(super) fn new(listener: TcpListener, adopt: Option<UnixDatagram>, drain: DrainRx) -> Self {
        Accept {
            listener,
            adopt,
            waiting: None,
            started: Box::pin(drain_started(drain)),
            errors: Throttle::default(),
            full: FullThrottle::default(),
        }
    }

    /// Accepts and serves connections until the drain starts.
    pub(super) async fn run(&mut self, server: &mut Server) {
        loop {
            let permit = match server.permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => return,
                Err(TryAcquireError::NoPermits) => match self.at_limit(server).await {
                    AtLimit::Permit(p) => p,
                    AtLimit::Again => continue,
                    AtLimit::Stop => return,
                },
            };
            if !self.serve_next(server, permit).await {
                return;
            }
        }
    }

    /// Serves the next connection, accepted or handed over, with `permit`;
    /// false once the drain starts.
    async fn serve_next(&mut self, server: &mut Server, permit: OwnedSemaphorePermit) -> bool {
        tokio::select! {
            biased;
            () = &mut self.started => return false,
            accepted = self.listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    make_room_ahead(server);
                    server.serve_one(tcp, permit);
                }
                Err(e) => self.back_off(&e).await,
            },
            // A connection the master took from the queue of a slot of
            // this group that has no ready worker.
            adopted = handover::adopted(self.adopt.as_ref()), if self.adopt.is_some() => match adopted {
                Ok(tcp) => {
                    make_room_ahead(server);
                    server.serve_one(tcp, permit);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the master's hand-over socket failed; no more adopted connections");
                    self.adopt = None;
                }
            },
            Some(_) = server.connections.join_next(), if !server.connections.is_empty() => {}
        }
        true
    }

    /// At `max_connections`: waits for a permit, or for a client, who then
    /// makes room. A connection ending meanwhile is reaped.
    async fn at_limit(&mut self, server: &mut Server) -> AtLimit {
        tokio::select! {
            biased;
            () = &mut self.started => AtLimit::Stop,
            permit = server.permits.clone().acquire_owned() => match permit {
                Ok(p) => AtLimit::Permit(p),
                Err(_) => AtLimit::Stop,
            },
            accepted = self.listener.accept() => match accepted {
                Ok((tcp, _peer)) => self.make_room(server, tcp).await,
                Err(e) => {
                    self.back_off(&e).await;
                    AtLimit::Again
                }
            },
            Some(_) = server.connections.join_next(), if !server.connections.is_empty() => AtLimit::Again,
        }
    }

    /// A client that arrives at the limit makes room by closing the open
    /// connection that costs least to lose (the longest idle between
    /// requests, else the oldest head still incomplete), as nginx reuses
    /// keep-alive connections. A connection answering a request is never
    /// closed for it. `tcp` is served once its room is free.
    async fn make_room(&mut self, server: &mut Server, tcp: TcpStream) -> AtLimit {
        let made_room = server.open.evict_one();
        self.full.note(made_room, server.limits.max_connections);
        self.waiting = Some(tcp);
        // Every connection was answering a request, or the one chosen is
        // slow to close (it finishes a response): look again as they
        // finish, choosing another one each time.
        let mut again = tokio::time::interval(EVICT_AGAIN);
        again.reset();
        let permit = loop {
            tokio::select! {
                biased;
                () = &mut self.started => break None,
                permit = server.permits.clone().acquire_owned() => break permit.ok(),
                _ = again.tick() => {
                    server.open.evict_one();
                }
            }
        };
        let Some(permit) = permit else {
            return AtLimit::Stop;
        };
        if let Some(tcp) = self.waiting.take() {
            server.serve_one(tcp, permit);
        }
        AtLimit::Again
    }

    /// After an accept error (EMFILE and friends): back off instead of
    /// spinning, and say so at most once a second.
    async fn back_off(&mut self, e: &std::io::Error) {
        self.errors.note(e);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
