//! The ringmaster demo application: a concrete worker serving the
//! TechEmpower-style routes `/plaintext` and `/json`, plus `/healthz`.
//!
//! Two switches exist for ringmaster's own cluster tests, read from the
//! environment the workers inherit from the master:
//! - `RINGMASTER_DEMO_TEST_ROUTES=1` mounts `/__test/sleep?ms=N` (a slow
//!   request) and `/__test/wedge` (blocks every runtime thread, so the
//!   worker stops heartbeating);
//! - `RINGMASTER_DEMO_FAIL_BOOT=1` makes every worker fail at boot;
//! - `RINGMASTER_DEMO_HANG_BOOT=1` makes every worker hang at boot.

use std::time::Duration;

use ringmaster::axum::Json;
use ringmaster::axum::extract::Query;
use ringmaster::axum::http::header;
use ringmaster::axum::response::IntoResponse;
use ringmaster::prelude::*;
use serde::{Deserialize, Serialize};

/// Mounts the test-only routes.
pub const ENV_TEST_ROUTES: &str = "RINGMASTER_DEMO_TEST_ROUTES";
/// Makes every worker fail at boot.
pub const ENV_FAIL_BOOT: &str = "RINGMASTER_DEMO_FAIL_BOOT";
/// Makes every worker hang at boot (never report ready).
pub const ENV_HANG_BOOT: &str = "RINGMASTER_DEMO_HANG_BOOT";

/// The demo's concrete worker.
pub struct Demo;

impl Worker for Demo {
    fn name(&self) -> &str {
        "demo"
    }

    fn router(&self, ctx: &WorkerContext) -> Result<Router, BootError> {
        if std::env::var_os(ENV_FAIL_BOOT).is_some_and(|v| v == "1") {
            return Err(format!("{ENV_FAIL_BOOT}=1 is set: failing on purpose").into());
        }
        if std::env::var_os(ENV_HANG_BOOT).is_some_and(|v| v == "1") {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let test_routes = std::env::var_os(ENV_TEST_ROUTES).is_some_and(|v| v == "1");
        Ok(app(Health::of(ctx), test_routes))
    }
}

/// What `/healthz` reports: which worker answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the worker answers.
    pub status: String,
    /// The worker's group.
    pub group: String,
    /// The worker's slot.
    pub slot: usize,
    /// The slot's generation.
    pub generation: u64,
    /// The worker's pid.
    pub pid: u32,
}

impl Health {
    /// The health record of the worker described by `ctx`.
    pub fn of(ctx: &WorkerContext) -> Self {
        Health {
            status: "ok".into(),
            group: ctx.group.to_string(),
            slot: ctx.slot,
            generation: ctx.generation,
            pid: ctx.pid,
        }
    }
}

/// The benchmark routes alone: `/plaintext` and `/json`.
pub fn bench_routes() -> Router {
    Router::new()
        .route("/plaintext", get(plaintext))
        .route("/json", get(json))
}

/// The demo app: the benchmark routes, `/healthz`, and the test routes when
/// `test_routes` is set.
pub fn app(health: Health, test_routes: bool) -> Router {
    let mut router = bench_routes().route("/healthz", get(move || async move { Json(health) }));
    if test_routes {
        router = router
            .route("/__test/sleep", get(sleep))
            .route("/__test/wedge", get(wedge));
    }
    router
}

async fn plaintext() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], "Hello, World!")
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

async fn json() -> Json<Message> {
    Json(Message {
        message: "Hello, World!",
    })
}

#[derive(Deserialize)]
struct SleepParams {
    ms: u64,
}

async fn sleep(Query(p): Query<SleepParams>) -> String {
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    format!("slept {} ms", p.ms)
}

/// Blocks every thread of the worker's runtime for good: tasks injected from
/// outside the runtime land in its global queue, and each idle runtime
/// thread that picks one up blocks in it. Heartbeats stop with them.
async fn wedge() -> &'static str {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for _ in 0..64 {
            handle.spawn(async {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            });
        }
    });
    "wedging"
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmaster::axum::body::{Body, to_bytes};
    use ringmaster::axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn health() -> Health {
        Health {
            status: "ok".into(),
            group: "web".into(),
            slot: 1,
            generation: 2,
            pid: 3,
        }
    }

    async fn get(app: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let ctype = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn plaintext_says_hello() {
        let (status, ctype, body) = get(app(health(), false), "/plaintext").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some("text/plain"));
        assert_eq!(body, "Hello, World!");
    }

    #[tokio::test]
    async fn json_says_hello() {
        let (status, ctype, body) = get(app(health(), false), "/json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype.as_deref(), Some("application/json"));
        assert_eq!(body, r#"{"message":"Hello, World!"}"#);
    }

    #[tokio::test]
    async fn healthz_names_the_worker() {
        let (status, _, body) = get(app(health(), false), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_str::<Health>(&body).unwrap(), health());
    }

    #[tokio::test]
    async fn test_routes_exist_only_when_asked_for() {
        let (status, _, _) = get(app(health(), false), "/__test/sleep?ms=1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, body) = get(app(health(), true), "/__test/sleep?ms=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "slept 1 ms");
    }
}
