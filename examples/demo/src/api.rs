//! Module `api`: a JSON-only view of the links, served by the `api` group
//! on its own port: `GET /api/links` and `GET /api/links/{code}`. Its
//! workers also answer the IPC request topic [`STATS`] for any worker of
//! the cluster.

use ringmaster::prelude::*;
use serde::{Deserialize, Serialize};

use crate::links::{self, Link};

/// The request topic `api` workers serve.
pub const STATS: RequestTopic<(), ApiStats> = RequestTopic::new("api.stats");

/// What an `api` worker answers on [`STATS`].
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
    fn backends(&self) -> Vec<Backend> {
        vec![links::MAIN.into()]
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let db = init.db(links::MAIN)?.clone();
        let (pid, slot) = (init.worker().pid, init.worker().slot);
        init.ipc().serve(STATS, move |(), _from| {
            let db = db.clone();
            async move {
                let (links,): (i64,) = db
                    .query("SELECT COUNT(*) FROM links")
                    .fetch_one()
                    .await
                    .map_err(|e| format!("counting links failed: {e}"))?;
                Ok(ApiStats { pid, slot, links })
            }
        });
        Ok(())
    }

    fn routes(&self) -> Controller {
        Controller::new("/api/links")
            .get("/", list)
            .get("/{code}", show)
    }
}

async fn list(State(ctx): State<AppContext>) -> Result<Json<Vec<Link>>, AppError> {
    Ok(Json(links::all_links(&ctx).await?))
}

async fn show(
    State(ctx): State<AppContext>,
    Path(code): Path<String>,
) -> Result<Json<Link>, AppError> {
    let row: Option<(String, String, i64)> = ctx
        .db(links::MAIN)?
        .query("SELECT code, url, clicks FROM links WHERE code = $1")
        .bind(&code)
        .fetch_optional()
        .await?;
    let (code, url, clicks) =
        row.ok_or_else(|| AppError::not_found(format!("no link with code {code:?}")))?;
    Ok(Json(Link { code, url, clicks }))
}
