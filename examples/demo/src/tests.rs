//! App-level tests: every controller through `tower::ServiceExt::oneshot`,
//! no socket, on a fresh SQLite file with the migrations applied.

use std::sync::Arc;

use ringmaster::axum::body::{Body, to_bytes};
use ringmaster::axum::http::{Request, StatusCode, header};
use ringmaster::prelude::*;
use ringmaster::{Config, boot};
use tower::ServiceExt;

use crate::links::Link;

/// The `web` worker with the test routes on, whatever the environment
/// says, and a route that answers 401 with its own header.
fn test_web() -> Worker {
    Worker::new("web")
        .module(crate::links::Links)
        .module(crate::hello::Hello)
        .module(Health)
        .module(crate::ops::Ops { test_routes: true })
        .configure(|router, _| {
            Ok(router.route(
                "/__test/auth",
                ringmaster::axum::routing::get(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Basic realm=\"demo\"")],
                        "log in first",
                    )
                }),
            ))
        })
}

/// A booted app of `worker` on a fresh SQLite database.
async fn app(worker: &Worker, group: &str) -> (ringmaster::axum::Router, std::path::PathBuf) {
    app_with(worker, group, "").await
}

/// Same, with extra keys for the group.
async fn app_with(
    worker: &Worker,
    group: &str,
    group_keys: &str,
) -> (ringmaster::axum::Router, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringmaster-demo-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "[groups.{group}]\nworker = \"{}\"\n{group_keys}\n[backends.main]\nurl = \"sqlite://{}/main.db\"\n",
        worker.name(),
        dir.display()
    );
    let config = Config::from_toml_str(&toml, "test").unwrap();
    let workers = [crate::web(), crate::api()];
    ringmaster::migrate(&workers, &config).await.unwrap();
    let identity = WorkerIdentity::standalone(group, config.group(group).unwrap().clone());
    let booted = boot(worker, identity, Arc::new(config)).await.unwrap();
    (booted.app, dir)
}

struct Reply {
    status: StatusCode,
    headers: ringmaster::axum::http::HeaderMap,
    body: String,
}

async fn call(app: &ringmaster::axum::Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_json(path: &str, json: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json.to_string()))
        .unwrap()
}

#[tokio::test]
async fn hello_routes() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(&app, get("/plaintext")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "Hello, World!")
    );
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/plain");
    let r = call(&app, get("/json")).await;
    assert_eq!(r.body, r#"{"message":"Hello, World!"}"#);
    let r = call(&app, get("/healthz")).await;
    let status: ringmaster::Healthz = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (status.status.as_str(), status.group.as_str()),
        ("ok", "web")
    );
    for _ in 0..20 {
        let r = call(&app, get("/db")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let w: crate::hello::World = serde_json::from_str(&r.body).unwrap();
        assert!((1..=10_000).contains(&w.id));
        assert!((1..=10_000).contains(&w.random_number));
    }
}

#[tokio::test]
async fn links_flow_create_follow_count_delete() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(
        &app,
        post_json("/links", r#"{"url":"https://example.com/x"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let link: Link = serde_json::from_str(&r.body).unwrap();
    assert_eq!(link.url, "https://example.com/x");
    for _ in 0..3 {
        let r = call(&app, get(&format!("/l/{}", link.code))).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(r.headers[header::LOCATION], "https://example.com/x");
    }
    // The first click misses the cache and is counted at once; the others
    // hit it and are counted in the background, within milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let page = loop {
        let page = call(
            &app,
            Request::get("/")
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK);
        if page.body.contains(">3<") || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert!(page.body.contains(&link.code), "{}", page.body);
    assert!(page.body.contains(">3<"), "clicks shown: {}", page.body);
    let r = call(
        &app,
        Request::delete(format!("/links/{}", link.code))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, get(&format!("/l/{}", link.code))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(err["error"]["status"], 404);
}

#[tokio::test]
async fn invalid_links_get_422_with_a_reason() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(&app, post_json("/links", r#"{"url":"ftp://example.com"}"#)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains("http"),
        "{}",
        r.body
    );
    let r = call(&app, post_json("/links", r#"{"nope":1}"#)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("json")
    );
}

#[tokio::test]
async fn the_page_escapes_html() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(
        &app,
        post_json("/links", r#"{"url":"https://e.com/<script>"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let page = call(&app, get("/")).await;
    assert!(page.body.contains("&lt;script&gt;"), "{}", page.body);
    assert!(!page.body.contains("<script>"));
}

#[tokio::test]
async fn errors_are_json_for_apis_and_html_for_browsers() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(&app, get("/nowhere")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("application/json")
    );
    let r = call(
        &app,
        Request::get("/nowhere")
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("text/html")
    );
    assert!(r.body.contains("<h1>404 Not Found</h1>"), "{}", r.body);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let r = call(&app, get("/plaintext")).await;
    let generated = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty());
    let r = call(&app, get("/plaintext")).await;
    assert_ne!(r.headers["x-request-id"].to_str().unwrap(), generated);
    let r = call(
        &app,
        Request::get("/plaintext")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let (app, _dir) = app(&crate::web(), "web").await;
    let big = format!(r#"{{"url":"https://e.com/{}"}}"#, "a".repeat(3 << 20));
    let r = call(&app, post_json("/links", &big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
}

#[tokio::test]
async fn responses_are_compressed_for_clients_that_ask() {
    let (app, _dir) = app(&crate::web(), "web").await;
    for i in 0..30 {
        let json = format!(r#"{{"url":"https://example.com/{i}/{}"}}"#, "x".repeat(100));
        call(&app, post_json("/links", &json)).await;
    }
    let r = call(
        &app,
        Request::get("/")
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers[header::CONTENT_ENCODING], "gzip");
}

#[tokio::test]
async fn api_serves_links_as_json_only() {
    let (web, dir) = app(&crate::web(), "web").await;
    let r = call(
        &web,
        post_json("/links", r#"{"url":"https://example.org"}"#),
    )
    .await;
    let link: Link = serde_json::from_str(&r.body).unwrap();
    // The api worker on the same database.
    let toml = format!(
        "[groups.api]\nworker = \"api\"\n[backends.main]\nurl = \"sqlite://{}/main.db\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&toml, "test").unwrap();
    let identity = WorkerIdentity::standalone("api", config.group("api").unwrap().clone());
    let api = boot(&crate::api(), identity, Arc::new(config))
        .await
        .unwrap()
        .app;
    let r = call(&api, get(&format!("/api/links/{}", link.code))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Link>(&r.body).unwrap(), link);
    let r = call(&api, get("/api/links")).await;
    assert_eq!(
        serde_json::from_str::<Vec<Link>>(&r.body).unwrap(),
        vec![link]
    );
    let r = call(&api, get("/links")).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the api group has no HTML pages"
    );
}

#[tokio::test]
async fn boot_runs_its_phases_in_order() {
    let dir = std::env::temp_dir().join(format!("ringmaster-demo-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "[groups.web]\nworker = \"web\"\n[backends.main]\nurl = \"sqlite://{}/main.db\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&toml, "test").unwrap();
    let identity = WorkerIdentity::standalone("web", config.group("web").unwrap().clone());
    let booted = boot(&crate::web(), identity, Arc::new(config))
        .await
        .unwrap();
    let names: Vec<&str> = booted.phases.iter().map(|p| p.step.name()).collect();
    assert_eq!(
        names,
        [
            "load_config",
            "connect_backends",
            "build_app",
            "mount_controllers",
            "configure"
        ]
    );
    let routes: Vec<String> = booted
        .routes
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.module))
        .collect();
    assert!(
        routes.contains(&"POST /links links".to_string()),
        "{routes:?}"
    );
    assert!(routes.contains(&"GET /db hello".to_string()), "{routes:?}");
}

#[tokio::test]
async fn a_panicking_handler_gives_500_and_the_app_keeps_serving() {
    let (app, _dir) = app(&test_web(), "web").await;
    let r = call(&app, get("/__test/panic")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("internal server error"));
    let r = call(&app, get("/plaintext")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_request_gets_503_at_request_timeout() {
    let (app, _dir) = app_with(&test_web(), "web", "request_timeout = \"100ms\"").await;
    let started = std::time::Instant::now();
    let r = call(&app, get("/__test/sleep?ms=5000")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.body.contains("request_timeout"), "{}", r.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let r = call(&app, get("/__test/sleep?ms=10")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn rendered_errors_keep_their_headers_and_message() {
    let (app, _dir) = app(&test_web(), "web").await;
    let r = call(&app, get("/__test/auth")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Basic realm=\"demo\"");
    let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(err["error"]["message"], "log in first");
    let r = call(
        &app,
        Request::get("/__test/auth")
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Basic realm=\"demo\"");
    assert!(r.body.contains("log in first"), "{}", r.body);
}

/// Records what each boot hook saw, in the order the hooks ran.
#[derive(Clone, Default)]
struct Trace(Arc<std::sync::Mutex<Vec<String>>>);

impl Trace {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
}

struct Probe(Trace);

impl Module for Probe {
    fn backends(&self) -> Vec<Backend> {
        vec![crate::links::MAIN.into()]
    }
    fn routes(&self) -> Controller {
        self.0.push("routes");
        Controller::new("/probe").get("/", || async { "probe" })
    }
    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        // Backends are open before any module's init runs, and init may
        // await them.
        let (one,): (i64,) = init
            .db(crate::links::MAIN)?
            .query("SELECT 1")
            .fetch_one()
            .await?;
        self.0.push(format!("init db_open={}", one == 1));
        Ok(())
    }
}

fn probe_worker(trace: &Trace) -> Worker {
    let t = trace.clone();
    Worker::new("web")
        .module(Probe(trace.clone()))
        .configure(move |router, ctx| {
            // configure comes last: the routes are mounted, the context is built.
            t.push(format!(
                "configure db={}",
                ctx.db(crate::links::MAIN).is_ok()
            ));
            Ok(router)
        })
}

#[tokio::test]
async fn boot_hooks_run_in_the_documented_order_with_backends_open() {
    let trace = Trace::default();
    let (app, _dir) = app(&probe_worker(&trace), "web").await;
    assert_eq!(
        *trace.0.lock().unwrap(),
        ["init db_open=true", "routes", "configure db=true"]
    );
    assert_eq!(call(&app, get("/probe")).await.body, "probe");
}

/// A module whose async `init` panics after an await, or asks for state
/// nobody provides.
struct Broken {
    panic: bool,
}

impl Module for Broken {
    fn routes(&self) -> Controller {
        Controller::new("/broken").get("/", |s: Shared<Trace>| async move {
            s.0.lock().unwrap().len().to_string()
        })
    }
    async fn init(&self, _init: &mut Init) -> Result<(), BootError> {
        tokio::task::yield_now().await;
        if self.panic {
            panic!("the broken module panics on purpose");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_in_an_async_init_fails_the_boot_with_its_message() {
    let dir = std::env::temp_dir().join(format!("ringmaster-demo-panic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml_str("[groups.web]\n", "test").unwrap();
    let identity = WorkerIdentity::standalone("web", config.group("web").unwrap().clone());
    let worker = Worker::new("web").module(Broken { panic: true });
    let err = boot(&worker, identity, Arc::new(config))
        .await
        .err()
        .expect("the boot fails");
    let err = err.to_string();
    assert!(err.contains("module broken's init panicked"), "{err}");
    assert!(err.contains("panics on purpose"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn state_no_module_provides_is_a_500_and_the_rest_serves() {
    let worker = Worker::new("web")
        .module(Broken { panic: false })
        .module(crate::hello::Hello);
    let (app, _dir) = app(&worker, "web").await;
    let r = call(&app, get("/broken")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(
        !r.body.contains("Trace"),
        "the client is not told the type: {}",
        r.body
    );
    assert_eq!(call(&app, get("/plaintext")).await.status, StatusCode::OK);
}
