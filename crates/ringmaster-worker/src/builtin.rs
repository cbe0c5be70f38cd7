//! Built-in modules an app adds in one line:
//!
//! - [`Health`]: `GET /healthz` (liveness: this worker answers, and who it
//!   is) and `GET /readyz` (readiness from the master's view: every group
//!   has its ready count, none is crash-looping, the master is not
//!   stopping);
//! - [`Metrics`]: `GET /metrics`, the whole cluster's registry in the
//!   Prometheus text format (any worker renders it: they all map the
//!   master's segment).
//!
//! ```
//! use ringmaster_worker::{Health, Metrics, Worker};
//! let web = Worker::new("web").module(Health).module(Metrics);
//! ```
//!
//! The admin worker serves the same readiness and metrics.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ringmaster_proto::ClusterStatus;
use serde::{Deserialize, Serialize};

use crate::context::{AppContext, Init, Shared};
use crate::controller::Controller;
use crate::worker::{BootError, Module};

/// How old a status `/readyz` may answer with: probes, however frequent,
/// ask the master at most this often per worker.
pub const STATUS_MAX_AGE: Duration = Duration::from_millis(250);

/// The built-in health module: `/healthz` and `/readyz`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Health;

impl Module for Health {
    fn name(&self) -> &str {
        "health"
    }

    fn routes(&self) -> Controller {
        Controller::new("/")
            .get("/healthz", healthz)
            .get("/readyz", readyz)
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        init.insert(StatusCache::default());
        Ok(())
    }
}

/// The built-in metrics module: `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Metrics;

impl Module for Metrics {
    fn name(&self) -> &str {
        "metrics"
    }

    fn routes(&self) -> Controller {
        Controller::new("/").get("/metrics", metrics)
    }
}

/// What `/healthz` answers: which worker it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Healthz {
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

/// `GET /healthz`: 200 while this worker answers. It asks nothing of the
/// master, so a liveness probe never fails because another process is slow.
async fn healthz(State(ctx): State<AppContext>) -> Json<Healthz> {
    let w = ctx.worker();
    Json(Healthz {
        status: "ok".into(),
        group: w.group.to_string(),
        slot: w.slot,
        generation: w.generation,
        pid: w.pid,
    })
}

/// `GET /readyz`.
async fn readyz(State(ctx): State<AppContext>, cache: Shared<StatusCache>) -> Response {
    match cache.status(&ctx).await {
        Ok(status) => readiness(&status),
        Err(res) => res,
    }
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(ctx): State<AppContext>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.registry().snapshot().to_prometheus(),
    )
        .into_response()
}

/// The readiness answer for `status`: 200 when every group has its
/// desired ready count and none is crash-looping (and the master is
/// neither starting nor stopping, and a required bridge is connected),
/// else 503 naming the groups that are short. Either way the body says
/// the bridge's state when there is one.
pub fn readiness(status: &ClusterStatus) -> Response {
    let short: Vec<_> = status
        .unready_groups()
        .into_iter()
        .map(|g| {
            serde_json::json!({
                "name": g.name, "ready": g.ready, "desired": g.count, "state": g.state,
                "last_exit": g.last_exit.as_ref().map(|e| format!("{} ({})", e.reason, e.status)),
            })
        })
        .collect();
    let bridge = status
        .bridge
        .as_ref()
        .map(|b| serde_json::json!({"state": b.state, "required": b.required}));
    if status.state == "stopping"
        || status.state == "starting"
        || !short.is_empty()
        || status.bridge_blocks_readiness()
    {
        let body = serde_json::json!({
            "ready": false, "state": status.state, "groups": short, "bridge": bridge,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(serde_json::json!({"ready": true, "state": status.state, "bridge": bridge}))
        .into_response()
}

/// The last status the master gave, and when: `/readyz` (and the admin
/// worker's `/status` and `/healthz`) ask the master at most every
/// [`STATUS_MAX_AGE`], however often they are called.
#[derive(Debug, Default)]
pub struct StatusCache(Mutex<Option<Cached>>);

/// A status the master gave: when, and under which
/// [`status_epoch`](crate::Ipc::status_epoch).
type Cached = (Instant, u64, ClusterStatus);

impl StatusCache {
    /// The master's status over IPC, at most [`STATUS_MAX_AGE`] old and
    /// never from before the master said it changed (a stop), or a 503
    /// saying why there is none (outside a cluster: no master).
    pub async fn status(&self, ctx: &AppContext) -> Result<ClusterStatus, Response> {
        let epoch = ctx.ipc().status_epoch();
        if let Some((at, cached_epoch, status)) = self.lock().clone()
            && at.elapsed() < STATUS_MAX_AGE
            && cached_epoch == epoch
        {
            return Ok(status);
        }
        let status = ctx.ipc().status().await.map_err(|e| {
            let body = serde_json::json!({"status": "unavailable", "error": format!("the master does not answer: {e}")});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        })?;
        *self.lock() = Some((Instant::now(), epoch, status.clone()));
        Ok(status)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
