//! Module `links`: a URL shortener. `POST /links` creates a short code,
//! `GET /l/{code}` redirects and counts the click, `DELETE /links/{code}`
//! removes it, `GET /` lists every link in an HTML page. Stored in the
//! `main` backend: SQLite by default, PostgreSQL when its URL says so.
//!
//! Each worker keeps a [`Cache`] of code -> URL, so a redirect it has seen
//! before needs no query: the click is counted in the background. A
//! delete, on whichever worker, publishes the code on [`INVALIDATE`] and
//! every worker drops it from its cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ringmaster::prelude::*;
use serde::{Deserialize, Serialize};

use crate::random_u64;

/// The backend the demo stores in.
pub const MAIN: SqlBackend = SqlBackend::new("main");
/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The topic on which deleted codes are published to every worker.
pub const INVALIDATE: Topic<String> = Topic::new("links.invalidate");
/// Entries a worker's cache holds at most; it starts over when full.
const CACHE_MAX: usize = 10_000;
const CODE_LEN: usize = 7;
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The links module.
pub struct Links;

impl Module for Links {
    fn backends(&self) -> Vec<Backend> {
        vec![MAIN.into()]
    }

    fn routes(&self) -> Controller {
        Controller::new("/")
            .get("/", index)
            .get("/l/{code}", follow)
            .nest(
                "/links",
                Controller::new("/")
                    .post("/", create)
                    .delete("/{code}", remove),
            )
    }

    fn templates(&self) -> Templates {
        ringmaster::templates!["links/index.html"]
    }

    async fn init(&self, init: &mut Init) -> Result<(), BootError> {
        init.insert(Cache::default());
        let cache = init.shared::<Cache>()?;
        // Subscribed at boot: a replacement worker subscribes again itself.
        let mut invalidations = init.ipc().subscribe(INVALIDATE);
        tokio::spawn(async move {
            while let Some(d) = invalidations.recv().await {
                cache.invalidate(&d.msg);
            }
        });
        Ok(())
    }

    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            MAIN,
            1,
            "create links",
            "CREATE TABLE links (\
                code VARCHAR(16) PRIMARY KEY, \
                url TEXT NOT NULL, \
                clicks BIGINT NOT NULL DEFAULT 0)",
        )]
    }
}

/// One worker's cache of code -> URL.
///
/// A lookup that misses reads the database; its answer is cached only if
/// no invalidation arrived meanwhile (`epoch`), so a delete racing with a
/// read can never leave a stale entry behind.
#[derive(Debug, Default)]
pub struct Cache {
    map: Mutex<HashMap<String, String>>,
    epoch: AtomicU64,
}

impl Cache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached URL of `code`.
    pub fn get(&self, code: &str) -> Option<String> {
        self.map().get(code).cloned()
    }

    /// Where invalidations are now; pass it to [`insert`](Self::insert).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches `code -> url` read at `epoch`, unless an invalidation came since.
    pub fn insert(&self, epoch: u64, code: String, url: String) {
        let mut map = self.map();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(code, url);
    }

    /// Drops `code`.
    pub fn invalidate(&self, code: &str) {
        let mut map = self.map();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.remove(code);
    }
}

/// `POST /links` body.
#[derive(Debug, Deserialize)]
pub struct NewLink {
    /// The URL to shorten.
    pub url: String,
}

/// A link as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The short code.
    pub code: String,
    /// The target URL.
    pub url: String,
    /// How often `/l/{code}` was followed.
    pub clicks: i64,
}

/// Checks that `url` is an absolute http(s) URL a browser can follow.
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} characters"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("url must start with http:// or https://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("url has no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("url contains whitespace or control characters".into());
    }
    Ok(())
}

fn new_code() -> String {
    let mut n = random_u64();
    (0..CODE_LEN)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

async fn create(
    State(ctx): State<AppContext>,
    Json(body): Json<NewLink>,
) -> Result<(StatusCode, Json<Link>), AppError> {
    validate_url(&body.url).map_err(AppError::unprocessable)?;
    let db = ctx.db(MAIN)?;
    for _ in 0..5 {
        let code = new_code();
        let inserted = db
            .query("INSERT INTO links (code, url) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(code.clone())
            .bind(body.url.clone())
            .execute()
            .await?;
        if inserted == 1 {
            let link = Link {
                code,
                url: body.url,
                clicks: 0,
            };
            return Ok((StatusCode::CREATED, Json(link)));
        }
    }
    Err(AppError::internal("no free short code after 5 tries"))
}

async fn follow(
    State(ctx): State<AppContext>,
    cache: Shared<Cache>,
    Path(code): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let db = ctx.db(MAIN)?;
    let redirect = |url| {
        (
            StatusCode::FOUND,
            [(ringmaster::axum::http::header::LOCATION, url)],
        )
    };
    if let Some(url) = cache.get(&code) {
        // Counted in the background: the redirect does not wait for it.
        let db = db.clone();
        tokio::spawn(async move {
            let counted = db
                .query("UPDATE links SET clicks = clicks + 1 WHERE code = $1")
                .bind(code.clone())
                .execute()
                .await;
            if let Err(e) = counted {
                tracing::warn!(code, error = %e, "a click was not counted");
            }
        });
        return Ok(redirect(url));
    }
    let epoch = cache.epoch();
    let url: Option<(String,)> = db
        .query("UPDATE links SET clicks = clicks + 1 WHERE code = $1 RETURNING url")
        .bind(code.clone())
        .fetch_optional()
        .await?;
    match url {
        Some((url,)) => {
            cache.insert(epoch, code, url.clone());
            Ok(redirect(url))
        }
        None => Err(AppError::not_found(format!("no link with code {code:?}"))),
    }
}

async fn remove(
    State(ctx): State<AppContext>,
    cache: Shared<Cache>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    let deleted = ctx
        .db(MAIN)?
        .query("DELETE FROM links WHERE code = $1")
        .bind(code.clone())
        .execute()
        .await?;
    // Every worker drops the code, this one at once: a worker that missed
    // the message (its queue was full) would still redirect to a deleted
    // link until it restarts, so a failure to publish is an error here.
    cache.invalidate(&code);
    ctx.ipc()
        .publish(Target::All, INVALIDATE, &code)
        .await
        .map_err(|e| {
            AppError::internal(format!(
                "the link is deleted but other workers may still redirect to it: {e}"
            ))
        })?;
    if deleted == 0 {
        return Err(AppError::not_found(format!("no link with code {code:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every link, most clicked first.
pub async fn all_links(ctx: &AppContext) -> Result<Vec<Link>, AppError> {
    let rows: Vec<(String, String, i64)> = ctx
        .db(MAIN)?
        .query("SELECT code, url, clicks FROM links ORDER BY clicks DESC, code LIMIT 1000")
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|(code, url, clicks)| Link { code, url, clicks })
        .collect())
}

async fn index(State(ctx): State<AppContext>) -> Result<Html<String>, AppError> {
    let links = all_links(&ctx).await?;
    let w = ctx.worker();
    ctx.views().render(
        "links/index.html",
        serde_json::json!({
            "links": links,
            "group": &*w.group,
            "slot": w.slot,
            "pid": w.pid,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_with_a_reason() {
        assert!(validate_url("https://example.com/a?b#c").is_ok());
        assert!(validate_url("http://localhost:8080").is_ok());
        assert!(
            validate_url("ftp://example.com")
                .unwrap_err()
                .contains("http")
        );
        assert!(validate_url("https://").unwrap_err().contains("host"));
        assert!(
            validate_url("https://a b")
                .unwrap_err()
                .contains("whitespace")
        );
        let long = format!("https://e.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn codes_use_the_alphabet() {
        let code = new_code();
        assert_eq!(code.len(), CODE_LEN);
        assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(new_code(), new_code());
    }
}
