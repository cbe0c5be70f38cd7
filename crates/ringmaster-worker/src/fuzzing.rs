//! Entry point for the fuzz target `http_head` in `fuzz/` and its proptest
//! version: bytes from a client, through the worker's own connection loop
//! (hyper with the group's limits, the checks before the app, the common
//! middleware) to a small app. Not a stable API.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use ringmaster_config::{Config, GroupConfig};

/// How long one input may take: the connection ends when the client's
/// side closes, so anything longer is a hang.
const BOUND: Duration = Duration::from_secs(10);

/// Sends `input` on one connection in writes of `step` bytes (the split
/// moves where a head is cut) and reads the answer. Panics on a broken
/// invariant: a panic in the loop, a connection that does not end once
/// the client has closed its side, or an answer that does not begin with
/// an HTTP/1.x status line with a valid code.
///
/// ```
/// let answer = ringmaster_worker::fuzzing::http_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5);
/// assert!(answer.starts_with(b"HTTP/1.1 200"));
/// ```
pub fn http_head(input: &[u8], step: usize) -> Vec<u8> {
    static SETUP: OnceLock<(tokio::runtime::Runtime, Router, GroupConfig)> = OnceLock::new();
    let (runtime, app, cfg) = SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let config =
            Config::from_toml_str("[groups.web]\n", "fuzz.toml").expect("a minimal config");
        let cfg = config.group("web").expect("the web group").clone();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|body: Bytes| async move { body }));
        let app = crate::middleware::common(app, &cfg);
        (runtime, app, cfg)
    });
    let out = runtime.block_on(async {
        tokio::time::timeout(
            BOUND,
            crate::serve::fuzz_connection(input, step, app.clone(), cfg),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("the connection did not end within {BOUND:?} of the client closing")
        })
    });
    if !out.is_empty() {
        let head = &out[..out.len().min(12)];
        let ok = (head.starts_with(b"HTTP/1.1 ") || head.starts_with(b"HTTP/1.0 "))
            && head.len() == 12
            && head[9..12].iter().all(u8::is_ascii_digit)
            && (b'1'..=b'5').contains(&head[9]);
        assert!(
            ok,
            "not a status line: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
    out
}
