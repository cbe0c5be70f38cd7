//! The state every handler can reach: `State(ctx): State<AppContext>`,
//! and the typed module state beside it: [`Shared<T>`].
//!
//! [`AppContext`] holds the worker's identity and configuration, the
//! backends its modules declared (opened and probed at boot), the views,
//! the IPC pool ([`Ipc`]), and the values modules put in at
//! [`Module::init`](crate::Module::init) through [`Init`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use ringmaster_config::Config;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::backend::{Backends, Db, SqlBackend};
#[cfg(feature = "redis")]
use crate::backend::{Redis, RedisBackend};
use crate::drain_hold::{DrainHold, Holds};
use crate::error::AppError;
use crate::ipc::Ipc;
use crate::registry::Registry;
use crate::serve::DrainRx;
use crate::views::Views;
use crate::worker::WorkerIdentity;

/// The handlers' state: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppContext {
    inner: Arc<Inner>,
}

struct Inner {
    worker: WorkerIdentity,
    config: Arc<Config>,
    backends: Backends,
    ipc: Ipc,
    registry: Registry,
    views: Views,
    values: Values,
    drain: DrainRx,
    holds: Arc<Holds>,
}

/// Module state by type.
type Values = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

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
    pub fn worker(&self) -> &WorkerIdentity {
        &self.inner.worker
    }

    /// The whole cluster configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The SQL backend `backend`. An error (500) if no module of this
    /// worker declared it.
    pub fn db(&self, backend: SqlBackend) -> Result<&Db, AppError> {
        self.inner.backends.db(backend.name())
    }

    #[cfg(feature = "redis")]
    /// The Redis backend `backend` (a cheap clone of a multiplexed,
    /// reconnecting connection). An error (500) if no module declared it.
    pub fn redis(&self, backend: RedisBackend) -> Result<Redis, AppError> {
        self.inner.backends.redis(backend.name())
    }

    /// The SQL backend named `name`, for the runtime's own checks.
    pub(crate) fn db_named(&self, name: &str) -> Result<&Db, AppError> {
        self.inner.backends.db(name)
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

    /// A hold on this worker's drain: the process does not exit while it
    /// lives (at most until the drain's grace period is over), so a task
    /// can finish what it started once [`draining`](Self::draining)
    /// completes. See [`DrainHold`].
    pub fn hold_drain(&self) -> DrainHold {
        self.inner.holds.hold()
    }

    /// Completes once no [`DrainHold`] of this worker is left.
    pub(crate) async fn holds_released(&self) {
        self.inner.holds.released().await;
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

    /// The value of type `T` a module's `init` put in ([`Init::insert`]);
    /// a 500 naming the type when no module did. Handlers usually take
    /// [`Shared<T>`] instead.
    pub fn shared<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, AppError> {
        lookup(&self.inner.values)
    }

    /// An app context of nothing (no backend, detached IPC), for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        let (_, drain) = tokio::sync::watch::channel(None);
        let config = Config::from_toml_str("", "test").expect("the empty config is valid");
        let identity =
            WorkerIdentity::standalone("test", ringmaster_config::GroupConfig::default());
        Init::new(
            identity,
            Arc::new(config),
            Backends::default(),
            Ipc::detached("test", 0),
            Registry::local().expect("a local registry"),
            drain,
        )
        .finish(Views::new(&[], false).expect("no templates"))
    }
}

fn lookup<T: Send + Sync + 'static>(values: &Values) -> Result<Arc<T>, AppError> {
    values
        .get(&TypeId::of::<T>())
        .cloned()
        .and_then(|v| v.downcast::<T>().ok())
        .ok_or_else(|| {
            AppError::internal(format!(
                "no module provides state of type {}: insert one with init.insert(..) in a module's init, and add that module to this worker",
                std::any::type_name::<T>()
            ))
        })
}

/// Module state of type `T`, as a handler argument: what a module's
/// `init` put in with [`Init::insert`]. A handler that asks for a type no
/// module of its worker provides answers 500, and the log names the type.
///
/// ```
/// use ringmaster_worker::{BootError, Controller, Init, Module, Shared};
///
/// struct Greeting(String);
///
/// async fn hello(greeting: Shared<Greeting>) -> String {
///     greeting.0.clone()
/// }
///
/// struct Hello;
///
/// impl Module for Hello {
///     fn routes(&self) -> Controller {
///         Controller::new("/").get("/", hello)
///     }
///     async fn init(&self, init: &mut Init) -> Result<(), BootError> {
///         init.insert(Greeting("hello".into()));
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// The shared value itself, to keep beyond the request (a task).
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send + Sync + 'static> FromRequestParts<AppContext> for Shared<T> {
    type Rejection = AppError;

    async fn from_request_parts(_: &mut Parts, ctx: &AppContext) -> Result<Self, AppError> {
        ctx.shared().map(Shared)
    }
}

/// What [`Module::init`](crate::Module::init) gets: the backends, the
/// configuration, and a place for typed shared state.
pub struct Init {
    pub(crate) worker: WorkerIdentity,
    pub(crate) config: Arc<Config>,
    pub(crate) backends: Backends,
    pub(crate) ipc: Ipc,
    pub(crate) registry: Registry,
    pub(crate) values: Values,
    drain: DrainRx,
    holds: Arc<Holds>,
}

impl Init {
    pub(crate) fn new(
        worker: WorkerIdentity,
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
            holds: Arc::default(),
        }
    }

    /// Completes when this worker starts draining: a task a module starts
    /// in `init` can end with it (see [`AppContext::draining`]).
    pub fn draining(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::serve::drain_started(self.drain.clone())
    }

    /// A hold on this worker's drain, for a task started here: the
    /// process does not exit while it lives (at most until the drain's
    /// grace period is over). See [`DrainHold`].
    ///
    /// ```
    /// # async fn init(init: &mut ringmaster_worker::Init) {
    /// let hold = init.hold_drain();
    /// let draining = init.draining();
    /// tokio::spawn(async move {
    ///     draining.await;
    ///     // ... hand over what is still buffered ...
    ///     drop(hold);
    /// });
    /// # }
    /// ```
    pub fn hold_drain(&self) -> DrainHold {
        self.holds.hold()
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
    pub fn worker(&self) -> &WorkerIdentity {
        &self.worker
    }

    /// The whole cluster configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The SQL backend `backend`: open already, to query in `init`. An
    /// error if no module of this worker declared it.
    pub fn db(&self, backend: SqlBackend) -> Result<&Db, AppError> {
        self.backends.db(backend.name())
    }

    #[cfg(feature = "redis")]
    /// The Redis backend `backend`. An error if no module declared it.
    pub fn redis(&self, backend: RedisBackend) -> Result<Redis, AppError> {
        self.backends.redis(backend.name())
    }

    /// Makes `value` reachable from handlers as [`Shared<T>`] (or
    /// [`AppContext::shared`]); one value per type, a second replaces the
    /// first.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// What a module (one that ran before) put in, for state built on
    /// another module's.
    pub fn shared<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, AppError> {
        lookup(&self.values)
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
                holds: self.holds,
            }),
        }
    }
}
