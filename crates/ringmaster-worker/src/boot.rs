//! The bootstrap of a worker's app, in exactly this order (each phase timed):
//!
//! 1. `load_config`: the group's configuration and that of the backends its
//!    modules declare;
//! 2. `connect_backends`: open those, and only those, each with a connect
//!    timeout and a health probe;
//! 3. `build_app`: the views and the app with its fallback; the common
//!    middleware is prepared here and wraps the finished app;
//! 4. `mount_controllers`: each module's `init` (awaited, in the order the
//!    modules were added), then every module's routes (the route table
//!    `routes` prints);
//! 5. `configure`: the worker's own layers and set-up steps.
//!
//! The runtime then serves on the inherited listener and reports `Ready`.
//! [`boot`] is also what app tests call, without any process around it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::MethodRouter;
use ringmaster_config::Config;
use ringmaster_proto::{BootPhase, BootStep};

use crate::backend::{Backend, Backends};
use crate::context::{AppContext, Init};
use crate::controller::RouteInfo;
use crate::error::AppError;
use crate::ipc::Ipc;
use crate::middleware;
use crate::registry::Registry;
use crate::views::Views;
use crate::worker::{BootError, ErasedModule, Worker, WorkerIdentity};

/// A booted app: the router to serve, its context and how boot went.
#[non_exhaustive]
pub struct Booted {
    /// The app, with the common middleware, ready to serve.
    pub app: Router,
    /// The handlers' state.
    pub ctx: AppContext,
    /// The boot phases in the order they ran, with their durations.
    pub phases: Vec<BootPhase>,
    /// The route table.
    pub routes: Vec<RouteInfo>,
}

/// Times one phase.
struct Phases(Vec<BootPhase>, Instant);

impl Phases {
    fn new() -> Self {
        Phases(Vec::new(), Instant::now())
    }

    fn done(&mut self, step: BootStep) {
        let now = Instant::now();
        tracing::debug!(
            phase = step.name(),
            us = (now - self.1).as_micros() as u64,
            "boot phase done"
        );
        self.0.push(BootPhase {
            step,
            micros: (now - self.1).as_micros() as u64,
        });
        self.1 = now;
    }
}

/// Boots `worker`'s app for the worker described by `identity`, outside a
/// cluster: its [`Ipc`] is detached (see [`Ipc::detached`]) and its
/// [`Registry`] private ([`Registry::local`]).
pub async fn boot(
    worker: &Worker,
    identity: WorkerIdentity,
    config: Arc<Config>,
) -> Result<Booted, BootError> {
    let ipc = Ipc::detached(&identity.group, identity.slot);
    let registry = Registry::local().map_err(|e| format!("metrics registry: {e}"))?;
    // Outside a cluster nothing drains the app: its sender is dropped, so
    // `AppContext::draining` never completes.
    let (_, drain) = tokio::sync::watch::channel(None);
    boot_with(worker, identity, config, ipc, registry, drain, false).await
}

/// Boots with the IPC pool of a worker process (`in_cluster`: started by
/// a master).
pub(crate) async fn boot_with(
    worker: &Worker,
    identity: WorkerIdentity,
    config: Arc<Config>,
    ipc: Ipc,
    registry: Registry,
    drain: crate::serve::DrainRx,
    in_cluster: bool,
) -> Result<Booted, BootError> {
    let mut phases = Phases::new();

    // 1. The group's config is in `identity`; the backends' come from `config`.
    let modules = &worker.modules;
    let needed = guard("the modules' backends()", || {
        declared_backends(modules, &config)
    })?;
    phases.done(BootStep::LoadConfig);

    // 2. In a cluster an SQLite file must exist: the master's migrations
    // create it, and a new empty one would only answer "no such table".
    let backends = if in_cluster {
        Backends::open_existing(&needed, &config).await?
    } else {
        Backends::open(&needed, &config).await?
    };
    phases.done(BootStep::ConnectBackends);

    // 3.
    let views = build_views(modules, config.server.dev)?;
    let app: Router<AppContext> =
        Router::new().fallback(|| async { AppError::not_found("no route matches this path") });
    phases.done(BootStep::BuildApp);

    // 4.
    let mut init = Init::new(
        identity.clone(),
        config.clone(),
        backends,
        ipc,
        registry.clone(),
        drain,
    );
    init_modules(modules, &mut init).await?;
    let ctx = init.finish(views);
    let (app, routes) = guard("mounting the routes", || mount(app, modules))?;
    phases.done(BootStep::MountControllers);

    // 5.
    let app = guard("configure", || worker.run_steps(app, &ctx))?;
    phases.done(BootStep::Configure);

    let headers = guard("response_header", || response_headers(worker, &ctx))?;
    let app = serveable(app, &ctx, &registry, &identity, headers);
    Ok(Booted {
        app,
        ctx,
        phases: phases.0,
        routes,
    })
}

/// The views of the modules' templates; with `server.dev`, a warning for
/// each module whose templates cannot be reloaded from disk.
fn build_views(modules: &[Arc<dyn ErasedModule>], dev: bool) -> Result<Views, BootError> {
    let templates: Vec<_> = guard("the modules' templates()", || {
        Ok(modules.iter().map(|m| m.templates()).collect())
    })?;
    if dev {
        for (module, t) in modules.iter().zip(&templates) {
            if t.has_embedded() && !t.has_dir() {
                tracing::warn!(
                    module = module.name(),
                    "server.dev is on but module {} names no template directory: its templates are served as embedded, edits show after a rebuild (declare them with ringmaster::templates!, or Templates::dir)",
                    module.name()
                );
            }
        }
    }
    Views::new(&templates, dev).map_err(|e| format!("a template does not compile: {e:#}").into())
}

/// Runs each module's `init`, awaited, in the order the modules were
/// added; the first failure or panic stops the boot.
async fn init_modules(modules: &[Arc<dyn ErasedModule>], init: &mut Init) -> Result<(), BootError> {
    for module in modules {
        let what = format!("module {}'s init", module.name());
        match catch_unwind(module.init(init)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(format!("module {} failed to initialize: {e}", module.name()).into());
            }
            Err(message) => return Err(format!("{what} panicked: {message}").into()),
        }
    }
    Ok(())
}

/// The finished app with its state and the common middleware, which
/// records the built-in metrics in `registry`.
fn serveable(
    app: Router<AppContext>,
    ctx: &AppContext,
    registry: &Registry,
    identity: &WorkerIdentity,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Router {
    let metrics = middleware::HttpMetrics::new(registry, &identity.group);
    middleware::stack(
        app.with_state(ctx.clone()),
        &identity.config,
        Some(metrics),
        headers,
    )
}

/// Headers a [`Worker::response_header`] may not name: set per response by
/// hyper (framing, the connection), by compression, or by `Essentials`
/// (the request id); the same value on every response would break them.
const RESERVED_HEADERS: [&str; 11] = [
    "connection",
    "content-encoding",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
    "content-range",
];

/// The worker's [`Worker::response_header`]s, their values made from `ctx`.
fn response_headers(
    worker: &Worker,
    ctx: &AppContext,
) -> Result<Vec<(HeaderName, HeaderValue)>, BootError> {
    worker
        .headers
        .iter()
        .map(|h| {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                format!(
                    "response_header {:?} is not a valid header name (a token: letters, digits and !#$%&'*+-.^_`|~)",
                    h.name
                )
            })?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(format!(
                    "response_header {name} is not one a worker may set on every response: the framework or hyper sets it per response (framing, connection, the request id)"
                )
                .into());
            }
            let text = (h.value)(ctx);
            let value = HeaderValue::from_str(&text).map_err(|_| {
                format!(
                    "response_header {}'s value {text:?} is not a valid header value (visible ASCII)",
                    h.name
                )
            })?;
            Ok((name, value))
        })
        .collect()
}

/// Runs user code of the boot; a panic becomes a boot error with its
/// message, which the master logs, instead of an exit with no reason.
fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, BootError>) -> Result<T, BootError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(format!("{what} panicked: {}", panic_message(&*payload)).into()),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

pin_project_lite::pin_project! {
    /// A future whose panic becomes `Err(message)`: an async `init` that
    /// panics fails the boot with its message.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

fn catch_unwind<F>(inner: F) -> CatchUnwind<F> {
    CatchUnwind { inner }
}

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => std::task::Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

/// Every backend the modules declare, once each, checked against the
/// configuration: a URL that does not parse, or of another kind than the
/// module declared, stops the boot naming the module.
fn declared_backends(
    modules: &[std::sync::Arc<dyn ErasedModule>],
    config: &Config,
) -> Result<Vec<String>, BootError> {
    let mut seen: Vec<(Backend, &str)> = Vec::new();
    for module in modules {
        for backend in module.backends() {
            let name = backend.name();
            if let Some((other, by)) = seen.iter().find(|(b, _)| b.name() == name) {
                if *other != backend {
                    return Err(format!(
                        "backend \"{name}\" is declared as {} by module {by} and as {} by module {}: one name, one kind",
                        other.kind_phrase(),
                        backend.kind_phrase(),
                        module.name()
                    )
                    .into());
                }
                continue;
            }
            let cfg = config.backend(name);
            let kind = cfg
                .kind()
                .map_err(|e| format!("backend \"{name}\" ({}): {e}", cfg.redacted_url()))?;
            if !backend.accepts(kind) {
                return Err(format!(
                    "module {} declares backend \"{name}\" as {}, but backends.{name}.url ({}) is {kind}: fix the URL or the declaration",
                    module.name(),
                    backend.kind_phrase(),
                    cfg.redacted_url(),
                )
                .into());
            }
            seen.push((backend, module.name()));
        }
    }
    Ok(seen.iter().map(|(b, _)| b.name().to_string()).collect())
}

/// The route table of `worker`, without booting it (no backend is opened).
pub fn routes(worker: &Worker) -> Vec<RouteInfo> {
    let mut out = Vec::new();
    for module in &worker.modules {
        for (method, path) in module.routes().paths() {
            out.push(RouteInfo {
                method,
                path,
                module: module.name().to_string(),
            });
        }
    }
    out
}

/// Mounts every module's controllers; two modules defining the same method
/// and path is a boot error, not a panic.
fn mount(
    mut app: Router<AppContext>,
    modules: &[std::sync::Arc<dyn ErasedModule>],
) -> Result<(Router<AppContext>, Vec<RouteInfo>), BootError> {
    let mut table: Vec<RouteInfo> = Vec::new();
    let mut by_path: Vec<(String, MethodRouter<AppContext>)> = Vec::new();
    for module in modules {
        for route in module.routes().routes {
            for method in &route.methods {
                if let Some(other) = table.iter().find(|r| {
                    r.path == route.path
                        && (r.method == *method || r.method == "*" || method == "*")
                }) {
                    return Err(format!(
                        "{method} {} is defined by module {} and by module {}",
                        route.path,
                        other.module,
                        module.name()
                    )
                    .into());
                }
            }
            for method in &route.methods {
                table.push(RouteInfo {
                    method: method.clone(),
                    path: route.path.clone(),
                    module: module.name().to_string(),
                });
            }
            match by_path.iter_mut().find(|(p, _)| *p == route.path) {
                Some((_, existing)) => {
                    let merged = std::mem::take(existing).merge(route.router);
                    *existing = merged;
                }
                None => by_path.push((route.path, route.router)),
            }
        }
    }
    for (path, router) in by_path {
        // axum panics on a malformed or conflicting path: `guard` (around
        // the whole mount) reports its message.
        app = app.route(&path, router);
    }
    Ok((app, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_are_made_at_boot_and_checked() {
        let ctx = AppContext::for_tests();
        let ok =
            Worker::new("w").response_header("x-served-by", |ctx| ctx.worker().group.to_string());
        let made = response_headers(&ok, &ctx).unwrap();
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].0, "x-served-by");
        assert_eq!(made[0].1, ctx.worker().group.as_ref() as &str);

        let bad_name = Worker::new("w").response_header("x bad", |_| "v".into());
        let e = response_headers(&bad_name, &ctx).unwrap_err().to_string();
        assert!(e.contains("\"x bad\" is not a valid header name"), "{e}");

        let reserved = Worker::new("w").response_header("Content-Length", |_| "1".into());
        let e = response_headers(&reserved, &ctx).unwrap_err().to_string();
        assert!(
            e.contains("content-length is not one a worker may set"),
            "{e}"
        );

        let bad_value = Worker::new("w").response_header("x-ok", |_| "line\nbreak".into());
        let e = response_headers(&bad_value, &ctx).unwrap_err().to_string();
        assert!(e.contains("x-ok's value \"line\\nbreak\""), "{e}");
    }
}
