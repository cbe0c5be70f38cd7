//! The bridge worker: a concrete worker shipped with ringmaster that the
//! master runs as group `bridge` when `[bridge] url` is set. It carries
//! the IPC topics named in `bridge.topics` between hosts over NATS, so a
//! publication to every worker (`Target::All`) on one host reaches the
//! subscribed workers of every host. The master never talks to NATS: it
//! routes the bridged topics to this worker like to any subscriber, and
//! this worker publishes what arrives from NATS like any worker.
//!
//! - **Out**: each local publication on a bridged topic is published on
//!   the subject `SUBJECT_PREFIX.TOPIC`, its bytes unchanged, with a
//!   header [`ORIGIN_HEADER`] naming this master (a random id it draws at
//!   start, `RINGMASTER_INSTANCE`).
//! - **In**: each host's bridge subscribes in a queue group of its own
//!   master's id, so that during a reload of the bridge, when two bridge
//!   processes run for a moment, NATS still hands each message to one of
//!   them; a message carrying this master's own id is skipped (the origin
//!   mark, on top of NATS's `no_echo`); the rest is published to
//!   `Target::All` here.
//! - **Faults**: while NATS is unreachable (at start or later), local
//!   delivery goes on, outgoing messages are dropped and counted, and the
//!   client reconnects with a backoff capped at 1 s; each change of state
//!   is logged once. The counters are the `ringmaster_bridge_*` series of
//!   the registry; `status` and `/readyz` show the state.
//!
//! `GET /` on the bridge's own address (`bridge.listen`) answers its state
//! as JSON.
//!
//! # Layout
//! - this file: [`worker`], its module and its route;
//! - `link`: the NATS connection, the forwarding tasks and the counters.
#![warn(missing_docs)]

mod link;

use axum::Json;
use axum::response::{IntoResponse, Response};
use ringmaster_worker::{BootError, Controller, Init, Module, Shared, Worker};

pub use link::ORIGIN_HEADER;
pub use ringmaster_config::BRIDGE_WORKER;

/// The built-in bridge worker, named [`BRIDGE_WORKER`]:
/// [`Cluster`](../ringmaster/struct.Cluster.html) registers it when
/// ringmaster is built with its `nats` feature; the configuration turns
/// it on (`[bridge] url = ...`).
pub fn worker() -> Worker {
    Worker::new(BRIDGE_WORKER).module(BridgeModule)
}

/// The bridge worker's module.
struct BridgeModule;

impl Module for BridgeModule {
    fn name(&self) -> &str {
        "bridge"
    }

    fn routes(&self) -> Controller {
        Controller::new("/").get("/", state)
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let cfg = init.config().bridge.clone();
        if !cfg.is_on() {
            return Err("the bridge worker runs only with [bridge] url set".into());
        }
        let link = link::Link::start(cfg, init).await?;
        init.insert(link);
        Ok(())
    }
}

/// `GET /`: the bridge's state and counters.
async fn state(link: Shared<link::Link>) -> Response {
    Json(link.report()).into_response()
}
