//! A single-process axum server serving the demo's `/plaintext` and `/json`
//! with the same handlers, on a multi-threaded tokio runtime: the baseline
//! that `bench/http.sh` measures the cluster against.
//!
//! Usage: `baseline ADDR` (e.g. `baseline 127.0.0.1:3100`).

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3100".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("baseline listening on http://{}", listener.local_addr()?);
        let listener = ringmaster::axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        ringmaster::axum::serve(listener, ringmaster_demo::bench_routes()).await
    })
}
