//! Module `api`: a JSON-only view of the links, served by the `api` group
//! on its own port: `GET /api/links` and `GET /api/links/{code}`. Its
//! workers also answer the IPC request topic [`STATS_TOPIC`] for any
//! worker of the cluster.

use ringmaster::on_db;
use ringmaster::prelude::*;
use ringmaster::sqlx;
use serde::{Deserialize, Serialize};

use crate::links::{self, Link};

/// The request topic `api` workers serve: the reply is [`ApiStats`].
pub const STATS_TOPIC: &str = "api.stats";

/// What an `api` worker answers on [`STATS_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    /// The answering worker's pid.
    pub pid: u32,
    /// Its slot.
    pub slot: usize,
    /// How many links are stored.
    pub links: i64,
}

/// The api module.
pub struct Api;

impl Module for Api {
    fn name(&self) -> &str {
        "api"
    }

    fn backends(&self) -> Vec<&'static str> {
        vec![links::BACKEND]
    }

    fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let db = init
            .db(links::BACKEND)
            .cloned()
            .ok_or("the api module needs the main backend")?;
        let (pid, slot) = (init.worker().pid, init.worker().slot);
        init.ipc().serve(STATS_TOPIC, move |(): (), _from| {
            let db = db.clone();
            async move {
                let (links,): (i64,) = on_db!(&db, |pool| {
                    sqlx::query_as("SELECT COUNT(*) FROM links")
                        .fetch_one(pool)
                        .await
                })
                .map_err(|e| format!("counting links failed: {e}"))?;
                Ok(ApiStats { pid, slot, links })
            }
        });
        Ok(())
    }

    fn controllers(&self) -> Vec<Controller> {
        vec![
            Controller::new("/api/links")
                .get("/", list)
                .get("/{code}", show),
        ]
    }
}

async fn list(State(ctx): State<AppContext>) -> Result<Json<Vec<Link>>, AppError> {
    Ok(Json(links::all_links(&ctx).await?))
}

async fn show(
    State(ctx): State<AppContext>,
    Path(code): Path<String>,
) -> Result<Json<Link>, AppError> {
    let db = ctx.db(links::BACKEND)?;
    let row: Option<(String, String, i64)> = on_db!(db, |pool| {
        sqlx::query_as("SELECT code, url, clicks FROM links WHERE code = $1")
            .bind(&code)
            .fetch_optional(pool)
            .await
    })?;
    let (code, url, clicks) =
        row.ok_or_else(|| AppError::not_found(format!("no link with code {code:?}")))?;
    Ok(Json(Link { code, url, clicks }))
}
