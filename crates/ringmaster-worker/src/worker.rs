//! The [`Worker`] and [`Module`] traits: what a concrete worker
//! implementation provides, and the identity it runs under.

use std::sync::Arc;

use axum::Router;
use ringmaster_config::GroupConfig;

use crate::context::{AppContext, Init};
use crate::controller::Controller;
use crate::migrate::Migration;
use crate::views::Templates;

/// An error that stops a worker's boot. Its text is sent to the master,
/// which logs it and restarts the worker with backoff, so say what failed
/// and what to do.
pub type BootError = Box<dyn std::error::Error + Send + Sync>;

/// Who and where a worker is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerContext {
    /// The worker's group.
    pub group: Arc<str>,
    /// The worker's slot in its group (0-based).
    pub slot: usize,
    /// How many workers the slot started before this one.
    pub generation: u64,
    /// The worker's process id.
    pub pid: u32,
    /// The configuration of the worker's group.
    pub config: Arc<GroupConfig>,
}

impl WorkerContext {
    /// A context for tests and tools that run an app outside a cluster.
    pub fn standalone(group: &str, config: GroupConfig) -> Self {
        WorkerContext {
            group: group.into(),
            slot: 0,
            generation: 0,
            pid: std::process::id(),
            config: Arc::new(config),
        }
    }
}

/// A concrete worker implementation: the modules one group of workers
/// serves, and any worker-wide set-up.
///
/// The generic worker knows about processes, fds, signals and backends; an
/// implementation knows none of that. Groups select it by name
/// (`groups.NAME.worker`; a binary with one implementation, or one named
/// like the group, needs no such key).
///
/// ```
/// use ringmaster_worker::{Controller, Module, Worker};
///
/// struct Hello;
///
/// impl Module for Hello {
///     fn name(&self) -> &str {
///         "hello"
///     }
///     fn controllers(&self) -> Vec<Controller> {
///         vec![Controller::new("/").get("/", || async { "Hello, World!" })]
///     }
/// }
///
/// struct Web;
///
/// impl Worker for Web {
///     fn name(&self) -> &str {
///         "web"
///     }
///     fn modules(&self) -> Vec<Box<dyn Module>> {
///         vec![Box::new(Hello)]
///     }
/// }
/// ```
pub trait Worker: Send + Sync + 'static {
    /// The name groups use to select this implementation.
    fn name(&self) -> &str;

    /// The modules this worker serves; their controllers are mounted and
    /// the backends they declare are opened, and only those.
    fn modules(&self) -> Vec<Box<dyn Module>>;

    /// Worker-specific set-up after every module's controllers are mounted:
    /// more routes, or layers around the whole app (the common middleware
    /// wraps the result). The default changes nothing.
    fn configure(
        &self,
        router: Router<AppContext>,
        _ctx: &AppContext,
    ) -> Result<Router<AppContext>, BootError> {
        Ok(router)
    }
}

/// A named component of an app: its controllers, the backends they use,
/// its templates and migrations.
pub trait Module: Send + Sync + 'static {
    /// The module's name, shown by `routes` and in errors.
    fn name(&self) -> &str;

    /// The controllers to mount.
    fn controllers(&self) -> Vec<Controller>;

    /// Names of the backends (`[backends.NAME]`) the controllers use. A
    /// name without a section is the embedded SQLite file `NAME.db`.
    fn backends(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The module's templates (minijinja), embedded in the binary.
    fn templates(&self) -> Templates {
        Templates::none()
    }

    /// Schema migrations, run once by the master's `migrate` step before
    /// any worker starts, never by the workers themselves.
    fn migrations(&self) -> Vec<Migration> {
        Vec::new()
    }

    /// Runs once per worker after its backends are open and before the
    /// controllers are mounted: put shared state into the context here.
    /// It is synchronous: state that needs a query is best loaded lazily
    /// by the handlers (async `init` may come later).
    fn init(&self, _init: &mut Init) -> Result<(), BootError> {
        Ok(())
    }
}
