//! Module `hello`: the TechEmpower-style routes `/plaintext`, `/json` and
//! `/db` (one row by random id from the 10,000-row `world` table), and
//! `/counter`: one cluster-wide counter, `demo_hits_total`, incremented by
//! whichever worker answers, which replies with the cluster's total.

use ringmaster::prelude::*;
use serde::Serialize;

use crate::random_u64;

/// The backend `/db` reads.
pub const BACKEND: SqlBackend = crate::links::MAIN;
/// Rows in `world`.
pub const WORLD_ROWS: u64 = 10_000;

/// The hello module.
pub struct Hello;

impl Module for Hello {
    fn backends(&self) -> Vec<Backend> {
        vec![BACKEND.into()]
    }

    fn routes(&self) -> Controller {
        Controller::new("/")
            .get("/plaintext", plaintext)
            .get("/json", json)
            .get("/db", db)
            .get("/counter", counter)
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let hits = init.registry().counter(
            "demo_hits_total",
            "Requests to /counter, in the whole cluster.",
        );
        init.insert(Hits(hits));
        Ok(())
    }

    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::per_database(
            BACKEND,
            1,
            "create and fill world",
            "CREATE TABLE world (id INTEGER PRIMARY KEY, randomnumber INTEGER NOT NULL);\
             WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000) \
             INSERT INTO world (id, randomnumber) SELECT x, abs(random()) % 10000 + 1 FROM n;",
            "CREATE TABLE world (id INTEGER PRIMARY KEY, randomnumber INTEGER NOT NULL);\
             INSERT INTO world (id, randomnumber) \
             SELECT x, floor(random() * 10000 + 1)::int FROM generate_series(1, 10000) AS x;",
        )]
    }
}

/// `GET /plaintext`.
pub async fn plaintext() -> impl IntoResponse {
    (
        [(ringmaster::axum::http::header::CONTENT_TYPE, "text/plain")],
        "Hello, World!",
    )
}

#[derive(Serialize)]
struct Message {
    message: &'static str,
}

/// `GET /json`.
pub async fn json() -> Json<impl Serialize> {
    Json(Message {
        message: "Hello, World!",
    })
}

/// A row of `world`, as TechEmpower names its fields.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct World {
    /// The row id.
    pub id: i32,
    /// Its number.
    #[serde(rename = "randomNumber")]
    pub random_number: i32,
}

/// `GET /db`.
pub async fn db(State(ctx): State<AppContext>) -> Result<Json<World>, AppError> {
    let id = (random_u64() % WORLD_ROWS + 1) as i32;
    let (id, random_number): (i32, i32) = ctx
        .db(BACKEND)?
        .query("SELECT id, randomnumber FROM world WHERE id = $1")
        .bind(id)
        .fetch_one()
        .await?;
    Ok(Json(World { id, random_number }))
}

/// The `demo_hits_total` counter, made once per worker at `init`.
struct Hits(ringmaster::Counter);

/// `GET /counter`: adds one to `demo_hits_total` and answers the cluster's
/// total (every worker's count, and the counts of workers that are gone).
async fn counter(hits: Shared<Hits>) -> String {
    hits.0.inc();
    hits.0.value().to_string()
}
