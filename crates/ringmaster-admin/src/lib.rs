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
//! - this file: [`worker`], its module and routes, the token check;
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
use ringmaster_worker::{
    AppContext, BootError, Controller, Init, Metrics, Module, Shared, StatusCache, Worker,
};
use serde::Deserialize;
use serde_json::json;

pub use ringmaster_config::ADMIN_WORKER;

/// The name of the cookie a browser keeps the token in.
const COOKIE: &str = "ringmaster_admin";

/// The built-in admin worker, named [`ADMIN_WORKER`]:
/// [`Cluster`](../ringmaster/struct.Cluster.html) registers it; the
/// configuration turns it on (`[admin] listen = ...`).
pub fn worker() -> Worker {
    Worker::new(ADMIN_WORKER)
        .module(AdminModule)
        .module(Metrics)
        .configure(with_token)
}

/// Asks for `admin.token` on every route but the probes.
fn with_token(
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

/// The admin worker's own module (its `/metrics` is the built-in
/// [`Metrics`]).
struct AdminModule;

impl Module for AdminModule {
    fn name(&self) -> &str {
        "admin"
    }

    fn routes(&self) -> Controller {
        Controller::new("/")
            .get("/", dashboard)
            .get("/assets/dashboard.js", script)
            .get("/assets/dashboard.css", style)
            .get("/favicon.ico", || async { StatusCode::NO_CONTENT })
            .get("/events", events::stream)
            .get("/status", status)
            .get("/healthz", healthz)
            .get("/readyz", readyz)
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
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

/// `GET /status`: the same JSON as `status --json`.
async fn status(State(ctx): State<AppContext>, cache: Shared<StatusCache>) -> Response {
    match cache.status(&ctx).await {
        Ok(s) => Json(s).into_response(),
        Err(res) => res,
    }
}

/// `GET /healthz`: liveness, 200 while the master answers over IPC.
async fn healthz(State(ctx): State<AppContext>, cache: Shared<StatusCache>) -> Response {
    match cache.status(&ctx).await {
        Ok(s) => Json(json!({"status": "ok", "master_pid": s.master_pid})).into_response(),
        Err(res) => res,
    }
}

/// `GET /readyz`: readiness, as the built-in `Health` module answers it.
async fn readyz(State(ctx): State<AppContext>, cache: Shared<StatusCache>) -> Response {
    match cache.status(&ctx).await {
        Ok(s) => ringmaster_worker::readiness(&s),
        Err(res) => res,
    }
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
