//! Notes: one module with an SQLite table, a migration, async `init`,
//! state shared with the handlers, a cluster-wide counter and a template.
use ringmaster::prelude::*;

/// The SQLite file `notes.db` (or `[backends.notes]` in the config).
const NOTES: SqlBackend = SqlBackend::new("notes");

struct Notes;

/// Built once per worker, in `init`; handlers take it as `Shared<Stats>`.
struct Stats {
    views: ringmaster::Counter,
    started_with: i64,
}

impl Module for Notes {
    fn routes(&self) -> Controller {
        Controller::new("/").get("/", index).post("/notes", add)
    }
    fn backends(&self) -> Vec<Backend> {
        vec![NOTES.into()]
    }
    fn migrations(&self) -> Vec<Migration> {
        let sql = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)";
        vec![Migration::new(NOTES, 1, "create notes", sql)]
    }
    fn templates(&self) -> Templates {
        ringmaster::templates!["notes/index.html"] // templates/notes/index.html
    }
    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        let db = init.db(NOTES)?;
        let (count,): (i64,) = db.query("SELECT COUNT(*) FROM notes").fetch_one().await?;
        let views = init.registry().counter("notes_views_total", "Views of /.");
        init.insert(Stats {
            views,
            started_with: count,
        });
        Ok(())
    }
}

async fn index(
    State(ctx): State<AppContext>,
    stats: Shared<Stats>,
) -> Result<Html<String>, AppError> {
    stats.views.inc();
    let notes: Vec<(i64, String)> = ctx
        .db(NOTES)?
        .query("SELECT id, body FROM notes ORDER BY id")
        .fetch_all()
        .await?;
    let page = ringmaster::serde_json::json!({
        "notes": notes, "views": stats.views.value(), "started_with": stats.started_with,
    });
    ctx.views().render("notes/index.html", page)
}

async fn add(State(ctx): State<AppContext>, body: String) -> Result<StatusCode, AppError> {
    if body.trim().is_empty() {
        return Err(AppError::unprocessable("a note needs some text"));
    }
    ctx.db(NOTES)?
        .query("INSERT INTO notes (body) VALUES ($1)")
        .bind(body)
        .execute()
        .await?;
    Ok(StatusCode::CREATED)
}

fn web() -> Worker {
    Worker::new("web")
        .module(Notes)
        .module(Health)
        .module(Metrics)
}

fn main() -> std::process::ExitCode {
    Cluster::new().worker(web()).run()
}

#[cfg(test)]
mod tests;
