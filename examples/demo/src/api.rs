//! Module `api`: a JSON-only view of the links, served by the `api` group
//! on its own port: `GET /api/links` and `GET /api/links/{code}`.

use ringmaster::on_db;
use ringmaster::prelude::*;
use ringmaster::sqlx;

use crate::links::{self, Link};

/// The api module.
pub struct Api;

impl Module for Api {
    fn name(&self) -> &str {
        "api"
    }

    fn backends(&self) -> Vec<&'static str> {
        vec![links::BACKEND]
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
