//! The [`Module`] trait (a named component of an app), the [`Worker`]
//! builder (a concrete worker implementation: the modules one group
//! serves), and [`WorkerIdentity`], the identity a worker runs under.
//!
//! Users implement [`Module`] on their own types and add them to a
//! [`Worker`] by value; the framework erases them behind `ErasedModule`, so
//! no user code names `Box<dyn ..>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use ringmaster_config::GroupConfig;

use crate::backend::Backend;
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
pub struct WorkerIdentity {
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

impl WorkerIdentity {
    /// An identity for tests and tools that run an app outside a cluster.
    pub fn standalone(group: &str, config: GroupConfig) -> Self {
        WorkerIdentity {
            group: group.into(),
            slot: 0,
            generation: 0,
            pid: std::process::id(),
            config: Arc::new(config),
        }
    }
}

/// A named component of an app: its routes and, when it needs them, the
/// backends they use, its migrations, templates and start-up work.
///
/// Only [`routes`](Module::routes) is required:
///
/// ```
/// use ringmaster_worker::{Controller, Module};
///
/// struct Hello;
///
/// impl Module for Hello {
///     fn routes(&self) -> Controller {
///         Controller::new("/").get("/", || async { "Hello, World!" })
///     }
/// }
/// ```
pub trait Module: Send + Sync + 'static {
    /// The routes to mount (one [`Controller`]; join several with
    /// [`Controller::nest`] and [`Controller::merge`]).
    fn routes(&self) -> Controller;

    /// The module's name, shown by `routes` and in errors. The default is
    /// the type's name in snake case (`LinkShortener` is
    /// `link_shortener`).
    fn name(&self) -> &str {
        default_name(std::any::type_name::<Self>())
    }

    /// The backends the routes use ([`SqlBackend`](crate::SqlBackend) and
    /// [`RedisBackend`](crate::RedisBackend) constants). A worker opens
    /// these, and only these, before any `init` runs. An SQL backend with
    /// no `[backends.NAME]` section is the embedded SQLite file `NAME.db`.
    fn backends(&self) -> Vec<Backend> {
        Vec::new()
    }

    /// The module's templates (minijinja), embedded in the binary; see
    /// [`templates!`](crate::templates).
    fn templates(&self) -> Templates {
        Templates::none()
    }

    /// Schema migrations, run once by the master's `migrate` step before
    /// any worker starts, never by the workers themselves.
    fn migrations(&self) -> Vec<Migration> {
        Vec::new()
    }

    /// Runs once per worker after its backends are open and before the
    /// routes are mounted: put shared state in with [`Init::insert`]
    /// (handlers take it as [`Shared<T>`](crate::Shared)), subscribe to
    /// topics, warm a cache. It may await (a query, a registration); the
    /// worker reports ready only once every module's `init` is done, and
    /// its `boot_timeout` bounds them all.
    ///
    /// ```
    /// use ringmaster_worker::{BootError, Controller, Init, Module};
    ///
    /// struct Greeting(String);
    /// struct Hello;
    ///
    /// impl Module for Hello {
    ///     fn routes(&self) -> Controller {
    ///         Controller::new("/")
    ///     }
    ///     async fn init(&self, init: &mut Init) -> Result<(), BootError> {
    ///         tokio::task::yield_now().await;
    ///         init.insert(Greeting("hello".into()));
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn init(&self, init: &mut Init) -> impl Future<Output = Result<(), BootError>> + Send {
        let _ = init;
        std::future::ready(Ok(()))
    }
}

/// `a::b::LinkShortener<T>` -> `link_shortener`, leaked once per type name
/// (a handful of modules per binary).
fn default_name(type_name: &'static str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<(&'static str, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, name)) = names.iter().find(|(t, _)| *t == type_name) {
        return name;
    }
    let base = type_name.split('<').next().unwrap_or(type_name);
    let base = base.rsplit("::").next().unwrap_or(base);
    let mut name = String::with_capacity(base.len() + 4);
    for (i, c) in base.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                name.push('_');
            }
            name.extend(c.to_lowercase());
        } else {
            name.push(c);
        }
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    names.push((type_name, name));
    name
}

/// A boxed future borrowing for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`Module`] behind a pointer: what the framework keeps of each.
pub(crate) trait ErasedModule: Send + Sync {
    fn name(&self) -> &str;
    fn routes(&self) -> Controller;
    fn backends(&self) -> Vec<Backend>;
    fn templates(&self) -> Templates;
    fn migrations(&self) -> Vec<Migration>;
    fn init<'a>(&'a self, init: &'a mut Init) -> BoxFuture<'a, Result<(), BootError>>;
}

impl<M: Module> ErasedModule for M {
    fn name(&self) -> &str {
        Module::name(self)
    }
    fn routes(&self) -> Controller {
        Module::routes(self)
    }
    fn backends(&self) -> Vec<Backend> {
        Module::backends(self)
    }
    fn templates(&self) -> Templates {
        Module::templates(self)
    }
    fn migrations(&self) -> Vec<Migration> {
        Module::migrations(self)
    }
    fn init<'a>(&'a self, init: &'a mut Init) -> BoxFuture<'a, Result<(), BootError>> {
        Box::pin(Module::init(self, init))
    }
}

/// A header every response of a worker carries, its value made at boot.
pub(crate) struct ResponseHeader {
    pub(crate) name: &'static str,
    pub(crate) value: Box<dyn Fn(&AppContext) -> String + Send + Sync>,
}

/// A step of a worker's own set-up, after the modules' routes are mounted.
type Configure =
    dyn Fn(Router<AppContext>, &AppContext) -> Result<Router<AppContext>, BootError> + Send + Sync;

/// A concrete worker implementation: a name groups select it by, the
/// modules it serves, and any set-up of its own around them.
///
/// The generic worker knows about processes, fds, signals and backends; a
/// `Worker` knows none of that. Groups select it by name
/// (`groups.NAME.worker`; a binary with one worker, or one named like the
/// group, needs no such key). Cheap to clone: the modules are shared.
///
/// ```
/// use ringmaster_worker::{Controller, Module, Worker};
///
/// struct Hello;
///
/// impl Module for Hello {
///     fn routes(&self) -> Controller {
///         Controller::new("/").get("/", || async { "Hello, World!" })
///     }
/// }
///
/// let web = Worker::new("web").module(Hello);
/// assert_eq!(web.name(), "web");
/// ```
#[derive(Clone)]
#[must_use]
pub struct Worker {
    name: Arc<str>,
    pub(crate) modules: Vec<Arc<dyn ErasedModule>>,
    steps: Vec<Arc<Configure>>,
    pub(crate) headers: Vec<Arc<ResponseHeader>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker named `name`, with no module yet.
    pub fn new(name: &str) -> Self {
        Worker {
            name: name.into(),
            modules: Vec::new(),
            steps: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a module: its routes are mounted and the backends it declares
    /// are opened. Modules are built once, in every role of the binary (the
    /// master's too), so keep their constructors cheap: work belongs in
    /// [`Module::init`], which runs in the workers only.
    pub fn module(mut self, module: impl Module) -> Self {
        self.modules.push(Arc::new(module));
        self
    }

    /// Wraps the whole app (every module's routes) in a tower layer; the
    /// common middleware wraps the result. Layers and
    /// [`configure`](Self::configure) steps apply in the order added, each
    /// around what came before.
    ///
    /// ```
    /// use ringmaster_worker::Worker;
    /// use tower_http::limit::RequestBodyLimitLayer;
    ///
    /// let web = Worker::new("web").layer(RequestBodyLimitLayer::new(1 << 16));
    /// ```
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Response:
            axum::response::IntoResponse + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Error:
            Into<std::convert::Infallible> + 'static,
        <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
    {
        self.configure(move |router, _| Ok(router.layer(layer.clone())))
    }

    /// Worker-specific set-up with the booted context at hand: more routes,
    /// or layers built from the worker's identity or configuration. A plain
    /// `fn` can serve several workers:
    ///
    /// ```
    /// use ringmaster_worker::{AppContext, BootError, Worker};
    /// use axum::Router;
    ///
    /// fn extra(router: Router<AppContext>, ctx: &AppContext) -> Result<Router<AppContext>, BootError> {
    ///     let group = ctx.worker().group.to_string();
    ///     Ok(router.route("/whoami", axum::routing::get(move || async move { group })))
    /// }
    ///
    /// let web = Worker::new("web").configure(extra);
    /// let api = Worker::new("api").configure(extra);
    /// ```
    pub fn configure<F>(mut self, step: F) -> Self
    where
        F: Fn(Router<AppContext>, &AppContext) -> Result<Router<AppContext>, BootError>
            + Send
            + Sync
            + 'static,
    {
        self.steps.push(Arc::new(step));
        self
    }

    /// Adds header `name` to every response (a handler's own value for it
    /// wins), its value made once at boot from the worker's context: its
    /// identity, its configuration. The common middleware sets it, which
    /// costs a header insert per response, where a
    /// [`layer`](Self::layer) such as axum's `map_response` costs a boxed
    /// service and a boxed future per request.
    ///
    /// ```
    /// use ringmaster_worker::Worker;
    ///
    /// let web = Worker::new("web").response_header("x-served-by", |ctx| {
    ///     let w = ctx.worker();
    ///     format!("{}/{} {}", w.group, w.slot, w.pid)
    /// });
    /// ```
    ///
    /// A name or a value that is not a valid header fails the boot with
    /// both in the message, as does a header set per response by the
    /// framework or hyper (`content-length`, `transfer-encoding`,
    /// `connection`, `x-request-id` and the like).
    pub fn response_header<F>(mut self, name: &'static str, value: F) -> Self
    where
        F: Fn(&AppContext) -> String + Send + Sync + 'static,
    {
        self.headers.push(Arc::new(ResponseHeader {
            name,
            value: Box::new(value),
        }));
        self
    }

    /// The name groups use to select this worker.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of its modules, in the order they were added.
    pub fn module_names(&self) -> Vec<&str> {
        self.modules.iter().map(|m| m.name()).collect()
    }

    /// Every backend its modules declare, in the order declared (a name
    /// declared by two modules appears twice).
    pub fn backends(&self) -> Vec<Backend> {
        self.modules.iter().flat_map(|m| m.backends()).collect()
    }

    /// Runs the set-up steps in order.
    pub(crate) fn run_steps(
        &self,
        mut router: Router<AppContext>,
        ctx: &AppContext,
    ) -> Result<Router<AppContext>, BootError> {
        for step in &self.steps {
            router = step(router, ctx)?;
        }
        Ok(router)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct LinkShortener;
    impl Module for LinkShortener {
        fn routes(&self) -> Controller {
            Controller::new("/")
        }
    }

    struct Named;
    impl Module for Named {
        fn routes(&self) -> Controller {
            Controller::new("/")
        }
        fn name(&self) -> &str {
            "custom"
        }
    }

    #[test]
    fn module_names_default_from_the_type() {
        let w = Worker::new("web").module(LinkShortener).module(Named);
        assert_eq!(w.module_names(), ["link_shortener", "custom"]);
        assert_eq!(default_name("a::b::Api"), "api");
        assert_eq!(default_name("a::Gen<b::C>"), "gen");
    }
}
