//! ringmaster: an application-server cluster for Rust.
//!
//! You write one binary. [`Cluster::run`] makes it either the **master**
//! (`serve`: binds the listening sockets, starts, watches and restarts
//! worker processes, answers signals) or, when the master re-executes it, a
//! **worker** that serves your app. A concrete worker is an implementation
//! of [`Worker`]:
//!
//! ```no_run
//! use ringmaster::prelude::*;
//!
//! struct Hello;
//!
//! impl Module for Hello {
//!     fn routes(&self) -> Controller {
//!         Controller::new("/").get("/", || async { "Hello, World!" })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Cluster::new().worker(Worker::new("web").module(Hello)).run()
//! }
//! ```
//!
//! # Layout
//!
//! - [`Cluster`]: the builder and the command line (`cli`).
//! - [`prelude`]: what an application author imports.
//! - Re-exports: the worker framework ([`Worker`], [`Module`],
//!   [`Controller`], [`AppContext`], [`Shared`], [`AppError`], [`Db`],
//!   [`Query`], [`Migration`], [`Templates`], [`templates!`], [`Topic`],
//!   [`Health`], [`Metrics`], [`on_db!`]), [`Config`], and [`axum`],
//!   [`sqlx`], [`serde`] and [`serde_json`] themselves, so an application
//!   uses the versions ringmaster serves with.
#![warn(missing_docs)]

mod cli;
mod control;
mod logging;
mod stats;
mod status_table;

use std::process::ExitCode;

pub use axum;
#[doc(inline)]
pub use ringmaster_config::{Config, ConfigError, GroupConfig, ListenMode};
pub use ringmaster_worker::RedisBackend;
pub use ringmaster_worker::sqlx;
#[doc(inline)]
pub use ringmaster_worker::{
    AppContext, AppError, Backend, BootError, Booted, BridgeState, BridgeStatus, ClusterStatus,
    Controller, Counter, Db, Delivery, DrainHold, ExitInfo, Gauge, GroupState, GroupStatus, Health,
    Healthz, Histogram, Init, Ipc, IpcError, IpcStats, LogLine, LogLines, Metrics, Migration,
    Module, Origin, Query, Registry, ReloadProgress, RequestError, RequestTopic, RouteInfo, Shared,
    Snapshot, SqlBackend, SqlRow, SqlValue, Subscription, Target, Templates, Topic, Views, Worker,
    WorkerIdentity, WorkerInfo, WorkerStatus, boot, middleware, migrate, on_db, routes, templates,
};
#[cfg(feature = "redis")]
pub use ringmaster_worker::{Redis, redis, redis_outcome};
pub use serde;
pub use serde_json;

/// The README's Rust examples, compiled as doctests (the first app in
/// full; the fragments are marked `ignore`, and the second app is the
/// `examples/quickstart` crate).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// What an application author imports: `use ringmaster::prelude::*;`.
pub mod prelude {
    pub use crate::Cluster;
    pub use axum::extract::{Json, Path, Query, State};
    pub use axum::response::{Html, IntoResponse, Redirect};
    pub use axum::{Router, http::StatusCode};
    pub use ringmaster_worker::{
        AppContext, AppError, Backend, BootError, Controller, Db, Health, Init, Metrics, Migration,
        Module, RedisBackend, RequestTopic, Shared, SqlBackend, Target, Templates, Topic, Worker,
        WorkerIdentity,
    };
}

/// The application: its worker implementations and the entry point.
#[derive(Default)]
pub struct Cluster {
    workers: Vec<Worker>,
    version: Option<String>,
}

impl Cluster {
    /// An application with no worker implementation yet.
    pub fn new() -> Self {
        Cluster::default()
    }

    /// Registers a concrete worker; groups select it by [`Worker::name`]
    /// (`groups.NAME.worker`), or use it by default when it is the only one
    /// or is named like the group.
    ///
    /// ```
    /// # use ringmaster::prelude::*;
    /// let cluster = Cluster::new()
    ///     .worker(Worker::new("web").module(Health))
    ///     .worker(Worker::new("api").module(Metrics));
    /// ```
    pub fn worker(mut self, worker: Worker) -> Self {
        self.workers.push(worker);
        self
    }

    /// The application's version, shown by `status` and checked by an
    /// in-place upgrade (`upgrade`, USR2) to say which build serves;
    /// default: ringmaster's own version.
    ///
    /// ```
    /// # use ringmaster::prelude::*;
    /// let cluster = Cluster::new()
    ///     .version(env!("CARGO_PKG_VERSION"))
    ///     .worker(Worker::new("web").module(Health));
    /// ```
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Runs the binary: the worker or migrate role when a master started
    /// this process, otherwise the command line (`serve`, `check`,
    /// `routes`, `migrate`, `stats`, `status`, `reload`, `scale`,
    /// `restart`, `stop`, `logs`). Returns the exit code.
    pub fn run(mut self) -> ExitCode {
        // The built-in admin worker: groups run it only when `[admin]`
        // turns it on.
        self.workers.push(ringmaster_admin::worker());
        // The bridge worker, with the `nats` feature: only `[bridge]`
        // turns it on.
        #[cfg(feature = "nats")]
        self.workers.push(ringmaster_bridge::worker());
        if ringmaster_worker::is_worker_process() {
            let format = std::env::var(ringmaster_worker::ENV_CONFIG)
                .ok()
                .and_then(|t| Config::from_toml_str(&t, "worker").ok())
                .map(|c| c.server.log_format)
                .unwrap_or_default();
            logging::init(logging::Output::Worker(format));
            return ringmaster_worker::run(&self.workers);
        }
        if ringmaster_worker::is_migrate_process() {
            logging::init(logging::Output::Stderr);
            return cli::migrate_role(&self.workers);
        }
        let version = self
            .version
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        cli::main(&self.workers, &version)
    }
}
