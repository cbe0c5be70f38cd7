//! The admin worker: a concrete worker shipped with ringmaster that the
//! master runs as group `admin` when `[admin] listen` is set. It reads the
//! registry segment in place and asks the master over IPC; the master
//! itself still serves no HTTP, so a dashboard bug can never take it down.
//!
//! Routes:
//! - `/metrics`: the whole registry in the Prometheus text format;
//! - `/status`: what `status --json` prints;
//! - `/healthz`: 200 while the master answers over IPC, else 503;
//! - `/readyz`: 200 when every group has its ready count and none is
//!   crash-looping, else 503 naming the groups that are short;
//! - `/`: the live dashboard (embedded HTML, CSS and script; no CDN), fed
//!   by Server-Sent Events at `/events`, one update a second; a draining
//!   admin worker ends its streams.
//!
//! With `admin.token`, every route but `/healthz` and `/readyz` asks for
//! `Authorization: Bearer TOKEN`; a browser opens `/?token=TOKEN` once and
//! keeps a cookie.
//!
//! # Layout
//! - this file: [`Admin`], its module and routes, the token check;
//! - `sampler`: the once-a-second sample behind the dashboard;
//! - `events`: the Server-Sent Events stream.
#![warn(missing_docs)]

mod events;
mod sampler;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Json, Router};
use ringmaster_worker::{AppContext, BootError, ClusterStatus, Controller, Init, Module, Worker};
use serde::Deserialize;
use serde_json::json;

pub use ringmaster_config::ADMIN_WORKER;

/// The name of the cookie a browser keeps the token in.
const COOKIE: &str = "ringmaster_admin";

/// The built-in admin worker. [`Cluster`](../ringmaster/struct.Cluster.html)
/// registers it; the configuration turns it on (`[admin] listen = ...`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Admin;

impl Worker for Admin {
    fn name(&self) -> &str {
        ADMIN_WORKER
    }

    fn modules(&self) -> Vec<Box<dyn Module>> {
        vec![Box::new(AdminModule)]
    }

    fn configure(
        &self,
        router: Router<AppContext>,
        ctx: &AppContext,
    ) -> Result<Router<AppContext>, BootError> {
        let token = ctx.config().admin.token.clone();
        Ok(router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let token = token.clone();
                async move { authorize(token.as_deref(), req, next).await }
            },
        )))
    }
}

/// The admin worker's one module.
struct AdminModule;

impl Module for AdminModule {
    fn name(&self) -> &str {
        "admin"
    }

    fn controllers(&self) -> Vec<Controller> {
        vec![
            Controller::new("/")
                .get("/", dashboard)
                .get("/assets/dashboard.js", script)
                .get("/assets/dashboard.css", style)
                .get("/favicon.ico", || async { StatusCode::NO_CONTENT })
                .get("/events", events::stream)
                .get("/metrics", metrics)
                .get("/status", status)
                .get("/healthz", healthz)
                .get("/readyz", readyz),
        ]
    }

    fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let feed = sampler::Feed::new();
        let run = sampler::run(
            feed.clone(),
            init.ipc().clone(),
            init.registry().clone(),
            init.draining(),
        );
        tokio::spawn(run);
        init.insert(feed);
        init.insert(StatusCache::default());
        Ok(())
    }
}

/// Routes anyone may ask (probes and load balancers send no token).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/favicon.ico")
}

/// Checks the token, when one is configured: a bearer header, the cookie,
/// or `?token=` on the dashboard (answered with the cookie and a redirect).
async fn authorize(token: Option<&str>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if is_open(req.uri().path()) || presented(req.headers()).is_some_and(|t| same(t, token)) {
        return next.run(req).await;
    }
    if req.uri().path() == "/"
        && let Ok(Query(q)) = Query::<TokenQuery>::try_from_uri(req.uri())
        && q.token.as_deref().is_some_and(|t| same(t, token))
    {
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        let mut res = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
        return res;
    }
    let mut res = (
        StatusCode::UNAUTHORIZED,
        "this admin worker wants admin.token: send Authorization: Bearer TOKEN, or open /?token=TOKEN in a browser",
    )
        .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ringmaster admin\""),
    );
    res
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The token a request carries: bearer header, else cookie.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

/// Compares in time that does not depend on where the strings differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The page and its assets, embedded at build time.
const INDEX_HTML: &str = include_str!("../assets/index.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

/// Nothing but this origin: no CDN, no inline code.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn dashboard() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

/// `GET /metrics`: every series of the cluster, the master's included.
async fn metrics(State(ctx): State<AppContext>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.registry().snapshot().to_prometheus(),
    )
        .into_response()
}

/// The last status the master gave, and when: `/status` and the probes
/// (open to anyone without a token) ask the master at most every
/// [`STATUS_MAX_AGE`], however often they are called.
#[derive(Default)]
struct StatusCache(std::sync::Mutex<Option<(std::time::Instant, ClusterStatus)>>);

impl StatusCache {
    fn get(&self) -> Option<(std::time::Instant, ClusterStatus)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn put(&self, status: ClusterStatus) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), status));
    }
}

/// How old a status `/status`, `/healthz` and `/readyz` may answer with.
const STATUS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

/// The master's status over IPC (at most [`STATUS_MAX_AGE`] old), or a
/// 503 saying why there is none.
async fn ask_status(ctx: &AppContext) -> Result<ClusterStatus, Response> {
    let cache = ctx.get::<StatusCache>();
    if let Some((at, status)) = cache.and_then(StatusCache::get)
        && at.elapsed() < STATUS_MAX_AGE
    {
        return Ok(status);
    }
    let status = ctx.ipc().status().await.map_err(|e| {
        let body =
            json!({"status": "unavailable", "error": format!("the master does not answer: {e}")});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    })?;
    if let Some(cache) = cache {
        cache.put(status.clone());
    }
    Ok(status)
}

/// `GET /status`: the same JSON as `status --json`.
async fn status(State(ctx): State<AppContext>) -> Response {
    match ask_status(&ctx).await {
        Ok(s) => Json(s).into_response(),
        Err(res) => res,
    }
}

/// `GET /healthz`: liveness, 200 while the master answers over IPC.
async fn healthz(State(ctx): State<AppContext>) -> Response {
    match ask_status(&ctx).await {
        Ok(s) => Json(json!({"status": "ok", "master_pid": s.master_pid})).into_response(),
        Err(res) => res,
    }
}

/// `GET /readyz`: readiness, 200 when every group has its desired ready
/// count and none is crash-looping (and the master is not stopping).
async fn readyz(State(ctx): State<AppContext>) -> Response {
    let s = match ask_status(&ctx).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let short: Vec<_> = s
        .unready_groups()
        .into_iter()
        .map(|g| {
            json!({
                "name": g.name, "ready": g.ready, "desired": g.count, "state": g.state,
                "last_exit": g.last_exit.as_ref().map(|e| format!("{} ({})", e.reason, e.status)),
            })
        })
        .collect();
    if s.state == "stopping" || s.state == "starting" || !short.is_empty() {
        let body = json!({"ready": false, "state": s.state, "groups": short});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"ready": true, "state": s.state})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; ringmaster_admin=xyz".parse().unwrap());
        assert_eq!(presented(&h), Some("xyz"));
        assert_eq!(presented(&HeaderMap::new()), None);
        assert!(same("secret-token", "secret-token"));
        assert!(!same("secret-token", "secret-tokeN"));
        assert!(!same("short", "longer"));
    }
}
