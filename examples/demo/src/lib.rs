//! The ringmaster demo application: two concrete workers.
//!
//! - `web` (modules `links`, `hello`, `live`, the built-in `Health` and
//!   `Metrics`, and the demo's test switches): the URL shortener with its
//!   HTML page, the TechEmpower-style `/plaintext`, `/json`, `/db`, and a
//!   WebSocket echo (`/ws`) and an event stream (`/events`) that end
//!   cleanly on a drain;
//! - `api` (module `api`, `Health`, `Metrics`): a JSON-only view of the
//!   links, on another port.
//!
//! Both store in the `main` backend: the embedded SQLite file `main.db`
//! unless `[backends.main]` says otherwise (e.g. a `postgres://` URL).
//!
//! # Layout
//! - `links`, `hello`, `api`, `ops`, `live`, `visits` (opt-in, Redis): the modules.

pub mod api;
pub mod hello;
pub mod links;
pub mod live;
pub mod ops;
pub mod visits;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use ringmaster::prelude::*;

/// The `web` worker: links, hello, health, metrics and live (and visits
/// with `RINGMASTER_DEMO_REDIS=1`).
pub fn web() -> Worker {
    let web = Worker::new("web")
        .module(links::Links)
        .module(hello::Hello)
        .module(Health)
        .module(Metrics)
        .module(ops::Ops::from_env())
        .module(live::Live::from_env());
    let web = if ops::switch(visits::ENV_REDIS) {
        web.module(visits::Visits)
    } else {
        web
    };
    web.response_header(WORKER_HEADER, worker_tag)
}

/// The `api` worker: the JSON API, health and metrics.
pub fn api() -> Worker {
    Worker::new("api")
        .module(api::Api)
        .module(Health)
        .module(Metrics)
        .module(ops::Ops::from_env())
        .response_header(WORKER_HEADER, worker_tag)
}

/// The response header naming the worker that answered: `web/1 4242`
/// (group/slot pid), handy to see the cluster spread requests.
pub const WORKER_HEADER: &str = "x-ringmaster-worker";

/// The value of [`WORKER_HEADER`] (a set-up both workers share): the
/// framework's `response_header` sets it, a header insert per response.
fn worker_tag(ctx: &AppContext) -> String {
    let w = ctx.worker();
    format!("{}/{} {}", w.group, w.slot, w.pid)
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
