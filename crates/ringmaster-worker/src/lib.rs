//! The worker side of ringmaster: what runs inside each worker process.
//!
//! A user writes **modules** (implementations of [`Module`]: routes and,
//! when needed, the backends they use, templates, migrations and an async
//! `init`) and puts them together in a **concrete worker**, a [`Worker`]
//! built by name (`Worker::new("web").module(Links)`). The generic worker runtime
//! in this crate does the rest: it takes the listener and the IPC socket the master handed
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
//! - `worker`: the [`Module`] trait, the [`Worker`] builder, [`WorkerIdentity`].
//! - `controller`: [`Controller`], the route table ([`RouteInfo`]).
//! - `context`: [`AppContext`], the handlers' state, [`Shared`] module
//!   state, and [`Init`].
//! - `backend`: typed backend names ([`SqlBackend`], [`RedisBackend`]),
//!   SQLite/PostgreSQL pools ([`Db`]) and Redis, opened and probed.
//! - `query`: [`Query`], one statement for SQLite and PostgreSQL.
//! - `builtin`: the [`Health`] and [`Metrics`] modules.
//! - `topic`: typed IPC names, [`Topic`] and [`RequestTopic`].
//! - `boot`: the ordered bootstrap ([`boot`]) and [`routes`].
//! - [`middleware`]: the common middleware.
//! - `error`: [`AppError`], JSON or HTML for the client.
//! - `views`: minijinja [`Views`] and module [`Templates`].
//! - `migrate`: per-module [`Migration`]s, run once by [`migrate`].
//! - `ipc`: [`Ipc`], the worker's end of the IPC pool (topics, requests).
//! - [`logpipe`]: writing log lines to the master without blocking.
//! - `registry`: [`Registry`] and its [`Counter`], [`Gauge`] and
//!   [`Histogram`] handles on the master's shared segment.
//! - `handoff`: reading what the master handed over (fds, environment).
//! - `runtime`: the process's life: boot, heartbeat and drain.
//! - `serve`: the accept loop and per-connection drain.
//! - `drain_hold`: [`DrainHold`], background work a drain waits for.
#![warn(missing_docs)]

mod backend;
mod boot;
mod builtin;
mod context;
mod controller;
mod drain_hold;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
mod ipc;
pub mod logpipe;
pub mod middleware;
mod migrate;
mod query;
mod registry;
mod runtime;
mod serve;
mod topic;
mod views;
mod worker;

#[doc(inline)]
#[cfg(feature = "redis")]
#[doc(inline)]
pub use backend::Redis;
#[doc(inline)]
pub use backend::{Backend, BackendError, Db, RedisBackend, SqlBackend, probe};
#[doc(inline)]
pub use boot::{Booted, boot, routes};
#[doc(inline)]
pub use builtin::{Health, Healthz, Metrics, STATUS_MAX_AGE, StatusCache, readiness};
#[doc(inline)]
pub use context::{AppContext, Init, Shared};
#[doc(inline)]
pub use controller::{Controller, RouteInfo};
#[doc(inline)]
pub use drain_hold::DrainHold;
#[doc(hidden)]
pub use error::__db_outcome;
#[doc(inline)]
pub use error::AppError;
/// Redis results as `AppError`s (503 when Redis is down).
#[cfg(feature = "redis")]
pub use error::redis_outcome;
#[doc(inline)]
pub use handoff::{Handoff, HandoffError, is_migrate_process, is_worker_process};
#[doc(inline)]
pub use ipc::{Delivery, Ipc, IpcError, RawSubscription, Subscription};
#[doc(inline)]
pub use migrate::{MigrateError, Migration, migrate};
#[doc(inline)]
pub use query::{Query, SqlRow, SqlValue};
#[cfg(feature = "redis")]
pub use redis;
#[doc(inline)]
pub use registry::{Counter, Gauge, Histogram, Registry};
#[doc(inline)]
pub use ringmaster_proto::handoff::{ENV_CONFIG, ENV_INSTANCE, ENV_LOG_PIPE, LOG_FD};
#[doc(inline)]
pub use ringmaster_proto::{
    BridgeState, BridgeStatus, ClusterStatus, ExitInfo, GroupState, GroupStatus, IpcStats,
    LogLevel, LogLine, LogLines, Origin, ReloadProgress, Target, WorkerInfo, WorkerStatus,
};
pub use ringmaster_registry::{DEFAULT_BUCKETS, Snapshot};
#[doc(inline)]
pub use runtime::run;
pub use sqlx;
#[doc(inline)]
pub use topic::{RequestError, RequestTopic, Topic};
#[doc(inline)]
pub use views::{Templates, Views};
#[doc(inline)]
pub use worker::{BootError, Module, Worker, WorkerIdentity};
