//! Module `links`: a URL shortener. `POST /links` creates a short code,
//! `GET /l/{code}` redirects and counts the click, `DELETE /links/{code}`
//! removes it, `GET /` lists every link in an HTML page. Stored in the
//! `main` backend: SQLite by default, PostgreSQL when its URL says so.

use ringmaster::on_db;
use ringmaster::prelude::*;
use ringmaster::sqlx;
use serde::{Deserialize, Serialize};

use crate::random_u64;

/// The backend the module stores its links in.
pub const BACKEND: &str = "main";
/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
const CODE_LEN: usize = 7;
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The links module.
pub struct Links;

impl Module for Links {
    fn name(&self) -> &str {
        "links"
    }

    fn backends(&self) -> Vec<&'static str> {
        vec![BACKEND]
    }

    fn controllers(&self) -> Vec<Controller> {
        vec![
            Controller::new("/")
                .get("/", index)
                .get("/l/{code}", follow),
            Controller::new("/links")
                .post("/", create)
                .delete("/{code}", remove),
        ]
    }

    fn templates(&self) -> Templates {
        Templates::embedded(&[(
            "links/index.html",
            include_str!("../templates/links/index.html"),
        )])
        .dir(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))
    }

    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            BACKEND,
            1,
            "create links",
            "CREATE TABLE links (\
                code VARCHAR(16) PRIMARY KEY, \
                url TEXT NOT NULL, \
                clicks BIGINT NOT NULL DEFAULT 0)",
        )]
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
    let db = ctx.db(BACKEND)?;
    for _ in 0..5 {
        let code = new_code();
        let inserted = on_db!(db, |pool| {
            sqlx::query("INSERT INTO links (code, url) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&code)
                .bind(&body.url)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
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
    Path(code): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let db = ctx.db(BACKEND)?;
    let url: Option<(String,)> = on_db!(db, |pool| {
        sqlx::query_as("UPDATE links SET clicks = clicks + 1 WHERE code = $1 RETURNING url")
            .bind(&code)
            .fetch_optional(pool)
            .await
    })?;
    match url {
        Some((url,)) => Ok((
            StatusCode::FOUND,
            [(ringmaster::axum::http::header::LOCATION, url)],
        )),
        None => Err(AppError::not_found(format!("no link with code {code:?}"))),
    }
}

async fn remove(
    State(ctx): State<AppContext>,
    Path(code): Path<String>,
) -> Result<StatusCode, AppError> {
    let db = ctx.db(BACKEND)?;
    let deleted = on_db!(db, |pool| {
        sqlx::query("DELETE FROM links WHERE code = $1")
            .bind(&code)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    if deleted == 0 {
        return Err(AppError::not_found(format!("no link with code {code:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every link, most clicked first.
pub async fn all_links(ctx: &AppContext) -> Result<Vec<Link>, AppError> {
    let db = ctx.db(BACKEND)?;
    let rows: Vec<(String, String, i64)> = on_db!(db, |pool| {
        sqlx::query_as("SELECT code, url, clicks FROM links ORDER BY clicks DESC, code LIMIT 1000")
            .fetch_all(pool)
            .await
    })?;
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
