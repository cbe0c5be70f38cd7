//! A single-process axum server with the demo's handlers, on one
//! multi-threaded tokio runtime: the baseline `bench/http.sh` and
//! `bench/db.sh` measure the cluster against.
//!
//! Usage: `baseline ADDR [DB_URL] [--bare | --no-metrics | --tower-http]`
//!
//! - `DB_URL` (`sqlite://...` or `postgres://...`, already migrated with
//!   `ringmaster-demo migrate`): also serve `/db`, the same query through
//!   the same sqlx pool settings as a worker;
//! - `--bare`: without ringmaster's common middleware (request id, trace
//!   span, compression, error pages, panic catcher, timeout, body limit),
//!   which the baseline has by default so that both sides do the same work;
//! - `--no-metrics`: the common middleware without the built-in HTTP
//!   metrics (recorded by default in a registry of this process, as a
//!   worker records them in the cluster's), to measure what they cost;
//! - `--tower-http`: no ringmaster middleware, but the tower-http layers a
//!   user adds by hand to an axum app for the same features (a trace
//!   span, request ids set and propagated, gzip, a panic catcher, a
//!   timeout): what ringmaster's stack is compared with (`bench/run.sh`).
//!
//! Without `DB_URL`, `/counter` is an atomic counter of this process (the
//! single-process form of the demo's cluster-wide counter).

use std::sync::Arc;

use ringmaster::{Config, GroupConfig, WorkerIdentity};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bare = args.iter().any(|a| a == "--bare");
    let tower = args.iter().any(|a| a == "--tower-http");
    let no_metrics = args.iter().any(|a| a == "--no-metrics");
    let mut positional = args.iter().filter(|a| !a.starts_with("--"));
    let addr = positional
        .next()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:3100".into());
    let db_url = positional.next().cloned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = match db_url {
            // Boot the demo's `web` worker in this one process: the same
            // handlers, pool and query as the cluster's workers.
            Some(url) => {
                let toml =
                    format!("[groups.web]\nworker = \"web\"\n[backends.main]\nurl = \"{url}\"\n");
                let config = Config::from_toml_str(&toml, "baseline")?;
                let group = config.group("web").cloned().unwrap_or_default();
                let identity = WorkerIdentity::standalone("web", group);
                let booted = ringmaster::boot(&ringmaster_demo::web(), identity, Arc::new(config))
                    .await
                    .map_err(|e| e.to_string())?;
                if bare {
                    return Err("--bare is not available with DB_URL".into());
                }
                booted.app
            }
            None if bare => with_counter(ringmaster_demo::bench_routes()),
            None if tower => tower_http_stack(with_counter(ringmaster_demo::bench_routes())),
            None if no_metrics => ringmaster::middleware::common(
                with_counter(ringmaster_demo::bench_routes()),
                &GroupConfig::default(),
            ),
            None => {
                let registry = ringmaster::Registry::local()?;
                ringmaster::middleware::common_with_metrics(
                    with_counter(ringmaster_demo::bench_routes()),
                    &GroupConfig::default(),
                    Some(ringmaster::middleware::HttpMetrics::new(&registry, "web")),
                )
            }
        };
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("baseline listening on http://{}", listener.local_addr()?);
        let listener = ringmaster::axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        ringmaster::axum::serve(listener, app).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// `/counter`: one atomic add per request, the count as text.
fn with_counter(router: ringmaster::axum::Router) -> ringmaster::axum::Router {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    router.route(
        "/counter",
        ringmaster::axum::routing::get(|| async {
            (HITS.fetch_add(1, Ordering::Relaxed) + 1).to_string()
        }),
    )
}

/// The tower-http layers a user would put on an axum app by hand for what
/// ringmaster's common middleware does: request ids (set, then copied to
/// the response), a trace span per request, gzip when the client accepts
/// it, panics as 500s, and a request timeout.
fn tower_http_stack(router: ringmaster::axum::Router) -> ringmaster::axum::Router {
    use tower_http::ServiceBuilderExt;
    let layers = tower::ServiceBuilder::new()
        .set_x_request_id(tower_http::request_id::MakeRequestUuid)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .propagate_x_request_id()
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            ringmaster::axum::http::StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
        .layer(tower_http::compression::CompressionLayer::new());
    router.layer(layers)
}
