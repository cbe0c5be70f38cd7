//! The quickstart app booted in-process on a fresh SQLite file, and the
//! check that the README shows exactly this app.

use std::sync::Arc;

use ringmaster::axum::body::{Body, to_bytes};
use ringmaster::axum::http::Request;
use ringmaster::prelude::*;
use ringmaster::{Config, boot};
use tower::ServiceExt;

async fn call(app: &ringmaster::axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn notes_are_stored_counted_and_rendered() {
    let dir = std::env::temp_dir().join(format!("ringmaster-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "[groups.web]\n[backends.notes]\nurl = \"sqlite://{}/notes.db\"\n",
        dir.display()
    );
    let config = Config::from_toml_str(&toml, "test").unwrap();
    ringmaster::migrate(&[super::web()], &config).await.unwrap();
    let identity = WorkerIdentity::standalone("web", config.group("web").unwrap().clone());
    let app = boot(&super::web(), identity, Arc::new(config))
        .await
        .unwrap()
        .app;

    let post = |body: &str| {
        Request::post("/notes")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    assert_eq!(call(&app, post("buy <milk>")).await.0, StatusCode::CREATED);
    assert_eq!(
        call(&app, post("  ")).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let get = || Request::get("/").body(Body::empty()).unwrap();
    let (status, page) = call(&app, get()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<h1>1 notes</h1>"), "{page}");
    assert!(page.contains("buy &lt;milk&gt;"), "escaped: {page}");
    assert!(page.contains("viewed 1 times"), "{page}");
    assert!(page.contains("started with 0 notes"), "{page}");
    let (_, page) = call(&app, get()).await;
    assert!(page.contains("viewed 2 times"), "{page}");
    // The built-in modules answer too.
    let (status, body) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("notes_views_total 2"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's second example is this crate's `main.rs` (up to its test
/// module), character for character.
#[test]
fn the_readme_shows_this_app() {
    let readme = include_str!("../../../README.md");
    let main = include_str!("main.rs");
    let app = &main[..main
        .find("#[cfg(test)]")
        .expect("main.rs has its test module")];
    let start = readme
        .find("<!-- quickstart: examples/quickstart/src/main.rs -->\n```rust,ignore\n")
        .expect("the README marks the quickstart example");
    let block = &readme[start..];
    let block = &block[block.find("```rust,ignore\n").unwrap() + 15..];
    let block = &block[..block.find("```").expect("the block ends")];
    assert_eq!(
        block.trim_end(),
        app.trim_end(),
        "README.md's quickstart example differs from examples/quickstart/src/main.rs: copy the file into the README"
    );
}
