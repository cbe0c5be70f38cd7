//! The ringmaster demo application: two concrete workers.
//!
//! - `web` (modules `links`, `hello`, `health`, `live`): the URL shortener
//!   with its HTML page, the TechEmpower-style `/plaintext`, `/json`, `/db`,
//!   and a WebSocket echo (`/ws`) and an event stream (`/events`) that end
//!   cleanly on a drain;
//! - `api` (modules `api`, `health`): a JSON-only view of the links, on
//!   another port.
//!
//! Both store in the `main` backend: the embedded SQLite file `main.db`
//! unless `[backends.main]` says otherwise (e.g. a `postgres://` URL).
//!
//! # Layout
//! - `links`, `hello`, `api`, `health`, `live`, `visits` (opt-in, Redis): the modules.

pub mod api;
pub mod health;
pub mod hello;
pub mod links;
pub mod live;
pub mod visits;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use ringmaster::prelude::*;

/// The `web` worker: links, hello, health and live.
pub struct Web;

impl Worker for Web {
    fn name(&self) -> &str {
        "web"
    }

    fn modules(&self) -> Vec<Box<dyn Module>> {
        let mut modules: Vec<Box<dyn Module>> = vec![
            Box::new(links::Links),
            Box::new(hello::Hello),
            Box::new(health::Health::from_env()),
            Box::new(live::Live::from_env()),
        ];
        if health::switch(visits::ENV_REDIS) {
            modules.push(Box::new(visits::Visits));
        }
        modules
    }

    fn configure(
        &self,
        router: Router<AppContext>,
        ctx: &AppContext,
    ) -> Result<Router<AppContext>, BootError> {
        Ok(tag_responses(router, ctx))
    }
}

/// The `api` worker: the JSON API and health.
pub struct ApiWorker;

impl Worker for ApiWorker {
    fn name(&self) -> &str {
        "api"
    }

    fn modules(&self) -> Vec<Box<dyn Module>> {
        vec![Box::new(api::Api), Box::new(health::Health::from_env())]
    }

    fn configure(
        &self,
        router: Router<AppContext>,
        ctx: &AppContext,
    ) -> Result<Router<AppContext>, BootError> {
        Ok(tag_responses(router, ctx))
    }
}

/// The response header naming the worker that answered: `web/1 4242`
/// (group/slot pid), handy to see the cluster spread requests.
pub const WORKER_HEADER: &str = "x-ringmaster-worker";

/// Adds [`WORKER_HEADER`] to every response.
fn tag_responses(router: Router<AppContext>, ctx: &AppContext) -> Router<AppContext> {
    use ringmaster::axum::http::HeaderValue;
    use ringmaster::axum::response::Response;
    let w = ctx.worker();
    let value = format!("{}/{} {}", w.group, w.slot, w.pid);
    let value = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("unknown"));
    router.layer(ringmaster::axum::middleware::map_response(
        move |mut res: Response| {
            let value = value.clone();
            async move {
                res.headers_mut().insert(WORKER_HEADER, value);
                res
            }
        },
    ))
}

/// The benchmark routes alone (`/plaintext`, `/json`), for the
/// single-process baseline in `bench/`.
pub fn bench_routes() -> ringmaster::axum::Router {
    ringmaster::axum::Router::new()
        .route(
            "/plaintext",
            ringmaster::axum::routing::get(hello::plaintext),
        )
        .route("/json", ringmaster::axum::routing::get(hello::json))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        h.finish() | 1
    });
}

/// A fast per-thread pseudo-random number (xorshift64*, randomly seeded);
/// not for secrets.
pub fn random_u64() -> u64 {
    RNG.with(|rng| {
        let mut x = rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests;
