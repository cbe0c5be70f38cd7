//! The state every handler can reach: `State(ctx): State<AppContext>`.
//!
//! It holds the worker's identity and configuration, the backends its
//! modules declared (opened and probed at boot), the views, the IPC pool
//! ([`Ipc`]), and typed values that modules put in at
//! [`Module::init`](crate::Module::init).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use ringmaster_config::Config;

use crate::backend::{Backends, Db, Redis};
use crate::error::AppError;
use crate::ipc::Ipc;
use crate::registry::Registry;
use crate::serve::DrainRx;
use crate::views::Views;
use crate::worker::WorkerContext;

/// The handlers' state: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppContext {
    inner: Arc<Inner>,
}

struct Inner {
    worker: WorkerContext,
    config: Arc<Config>,
    backends: Backends,
    ipc: Ipc,
    registry: Registry,
    views: Views,
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    drain: DrainRx,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("worker", &self.inner.worker)
            .field("backends", &self.inner.backends)
            .finish_non_exhaustive()
    }
}

impl AppContext {
    /// Who this worker is, and its group's configuration.
    pub fn worker(&self) -> &WorkerContext {
        &self.inner.worker
    }

    /// The whole cluster configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The SQL backend `name`. An error (500) if no module declared it.
    pub fn db(&self, name: &str) -> Result<&Db, AppError> {
        self.inner.backends.db(name)
    }

    /// The Redis backend `name` (a cheap clone of a multiplexed, reconnecting
    /// connection). An error (500) if no module declared it.
    pub fn redis(&self, name: &str) -> Result<Redis, AppError> {
        self.inner.backends.redis(name)
    }

    /// The templates of every module.
    pub fn views(&self) -> &Views {
        &self.inner.views
    }

    /// The IPC pool: topics, requests to other workers, the master's
    /// services.
    pub fn ipc(&self) -> &Ipc {
        &self.inner.ipc
    }

    /// The cluster-wide registry: counters, gauges, histograms.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Completes when this worker starts draining (a reload, a scale-down,
    /// a recycle, a stop). End long-lived responses with it (Server-Sent
    /// Events, long polls), so that they never hold up the drain:
    ///
    /// ```
    /// # use ringmaster_worker::AppContext;
    /// # async fn sse(ctx: AppContext) {
    /// let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    /// let draining = ctx.draining();
    /// tokio::pin!(draining);
    /// loop {
    ///     tokio::select! {
    ///         _ = ticks.tick() => { /* send an event */ }
    ///         () = &mut draining => break,
    ///     }
    /// }
    /// # }
    /// ```
    pub fn draining(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::serve::drain_started(self.inner.drain.clone())
    }

    /// Whether this worker is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.drain.borrow().is_some()
    }

    /// The SQLite files this worker opened.
    pub(crate) fn sqlite_files(&self) -> Vec<crate::backend::SqliteFile> {
        self.inner.backends.sqlite_files().to_vec()
    }

    /// Closes every backend pool (after a drain).
    pub(crate) async fn backends_close(&self) {
        self.inner.backends.close().await;
    }

    /// The value of type `T` a module's `init` put in, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref())
    }
}

/// What [`Module::init`](crate::Module::init) gets: the backends, the
/// configuration, and a place for typed shared state.
pub struct Init {
    pub(crate) worker: WorkerContext,
    pub(crate) config: Arc<Config>,
    pub(crate) backends: Backends,
    pub(crate) ipc: Ipc,
    pub(crate) registry: Registry,
    pub(crate) values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    drain: DrainRx,
}

impl Init {
    pub(crate) fn new(
        worker: WorkerContext,
        config: Arc<Config>,
        backends: Backends,
        ipc: Ipc,
        registry: Registry,
        drain: DrainRx,
    ) -> Self {
        Init {
            worker,
            config,
            backends,
            ipc,
            registry,
            values: HashMap::new(),
            drain,
        }
    }

    /// Completes when this worker starts draining: a task a module starts
    /// in `init` can end with it (see [`AppContext::draining`]).
    pub fn draining(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::serve::drain_started(self.drain.clone())
    }

    /// The cluster-wide registry: create the module's metrics here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The IPC pool: subscribe to topics and serve request topics here,
    /// so every worker (replacements too) does before it serves.
    pub fn ipc(&self) -> &Ipc {
        &self.ipc
    }

    /// Who this worker is.
    pub fn worker(&self) -> &WorkerContext {
        &self.worker
    }

    /// The whole cluster configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The SQL backend `name`, if a module declared it.
    pub fn db(&self, name: &str) -> Option<&Db> {
        self.backends.db(name).ok()
    }

    /// The Redis backend `name`, if a module declared it.
    pub fn redis(&self, name: &str) -> Option<Redis> {
        self.backends.redis(name).ok()
    }

    /// Makes `value` reachable from handlers through [`AppContext::get`].
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Box::new(value));
    }

    pub(crate) fn finish(self, views: Views) -> AppContext {
        AppContext {
            inner: Arc::new(Inner {
                worker: self.worker,
                config: self.config,
                backends: self.backends,
                ipc: self.ipc,
                registry: self.registry,
                views,
                values: self.values,
                drain: self.drain,
            }),
        }
    }
}
