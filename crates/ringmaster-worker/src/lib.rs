//! The worker side of ringmaster: what runs inside each worker process.
//!
//! A user writes a **concrete worker**, an implementation of [`Worker`] that
//! builds the HTTP app of a group. The generic worker runtime in this crate
//! does the rest: it takes the listener and the IPC socket the master handed
//! over, checks that its parent is still the master, boots in a fixed order
//! (timing each phase), reports `Ready`, heartbeats from the runtime that
//! serves requests, and drains on the master's word, on SIGTERM or when the
//! master goes away.
//!
//! This crate never starts processes; the master (a separate crate that
//! does not depend on this one) does.
//!
//! # Layout
//!
//! - `worker`: the [`Worker`] trait and its [`WorkerContext`].
//! - `handoff`: reading what the master handed over (fds, environment).
//! - `runtime`: boot, heartbeat and drain.
//! - `serve`: the accept loop and per-connection drain.
#![warn(missing_docs)]

mod handoff;
mod runtime;
mod serve;
mod worker;

#[doc(inline)]
pub use handoff::{Handoff, HandoffError, is_worker_process};
#[doc(inline)]
pub use runtime::run;
#[doc(inline)]
pub use worker::{BootError, Worker, WorkerContext};
