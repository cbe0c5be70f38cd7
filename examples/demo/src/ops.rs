//! Module `ops`: `/cluster` (the master's view, asked over IPC) in every
//! group, and the switches ringmaster's own cluster tests use, read from
//! the environment the workers inherit from the master (`/healthz`,
//! `/readyz` and `/metrics` are the built-in `Health` and `Metrics`):
//! - `RINGMASTER_DEMO_TEST_ROUTES=1` mounts `/__test/sleep?ms=N` (a slow
//!   request), `/__test/wedge` (blocks every runtime thread, so the worker
//!   stops heartbeating), `/__test/panic`, `/__test/ipc-garbage?kind=`
//!   (`garbage` or `oversized`: the worker breaks its IPC socket),
//!   `/__test/ipc-stall` (the worker stops reading its IPC socket),
//!   `/__test/abort` (logs a line, then aborts the process),
//!   `/__test/log?n=&size=` (logs `n` lines of about `size` bytes),
//!   `/__test/flood?n=` (publishes `n` invalidations of made-up codes to
//!   every worker), `/__test/ask?group=&timeout_ms=` (asks `api.stats`
//!   of a group), `/__test/alloc?mb=N` (allocates and keeps N MiB, so
//!   the worker's resident memory grows) and `/__test/orphan?ms=N` (leaves
//!   a `sleep` process whose parent has exited: an orphan, re-parented to
//!   PID 1 or the nearest subreaper, that exits after N ms);
//! - `RINGMASTER_DEMO_FAIL_BOOT=1` makes every worker fail at boot;
//! - `RINGMASTER_DEMO_FAIL_BOOT_FILE=PATH` makes every worker fail at boot
//!   while that file exists (a test creates it to break the next boots);
//! - `RINGMASTER_DEMO_HANG_BOOT=1` makes every worker hang at boot;
//! - `RINGMASTER_DEMO_SLOW_BOOT_MS=N` makes every worker take N ms more to
//!   boot (a reload then lasts long enough to act during it).

use std::time::Duration;

use ringmaster::prelude::*;
use serde::Deserialize;

/// Mounts the test-only routes.
pub const ENV_TEST_ROUTES: &str = "RINGMASTER_DEMO_TEST_ROUTES";
/// Makes every worker fail at boot.
pub const ENV_FAIL_BOOT: &str = "RINGMASTER_DEMO_FAIL_BOOT";
/// Makes every worker fail at boot while the file it names exists.
pub const ENV_FAIL_BOOT_FILE: &str = "RINGMASTER_DEMO_FAIL_BOOT_FILE";
/// Adds that many milliseconds to every worker's boot.
pub const ENV_SLOW_BOOT_MS: &str = "RINGMASTER_DEMO_SLOW_BOOT_MS";
/// Makes every worker hang at boot (never report ready).
pub const ENV_HANG_BOOT: &str = "RINGMASTER_DEMO_HANG_BOOT";

pub(crate) fn switch(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// The ops module; `test_routes` mounts the test-only routes.
pub struct Ops {
    /// Mount `/__test/sleep`, `/__test/wedge`, `/__test/panic`, ...
    pub test_routes: bool,
}

impl Ops {
    /// The module with the test routes as `RINGMASTER_DEMO_TEST_ROUTES` says.
    pub fn from_env() -> Self {
        Ops {
            test_routes: switch(ENV_TEST_ROUTES),
        }
    }
}

impl Module for Ops {
    fn routes(&self) -> Controller {
        let mut c = Controller::new("/").get("/cluster", cluster);
        if self.test_routes {
            c = c
                .get("/__test/sleep", sleep)
                .get("/__test/wedge", wedge)
                .get("/__test/panic", panic)
                .get("/__test/ipc-garbage", ipc_garbage)
                .get("/__test/ipc-stall", ipc_stall)
                .get("/__test/abort", abort)
                .get("/__test/log", log_lines)
                .get("/__test/flood", flood)
                .get("/__test/ask", ask)
                .get("/__test/alloc", alloc)
                .get("/__test/orphan", orphan);
        }
        c
    }

    async fn init(&self, _init: &mut Init) -> Result<(), BootError> {
        if switch(ENV_FAIL_BOOT) {
            return Err(format!("{ENV_FAIL_BOOT}=1 is set: failing on purpose").into());
        }
        if let Some(path) = std::env::var_os(ENV_FAIL_BOOT_FILE)
            && std::path::Path::new(&path).exists()
        {
            let path = std::path::Path::new(&path).display().to_string();
            return Err(format!("{ENV_FAIL_BOOT_FILE}: {path} exists: failing on purpose").into());
        }
        if let Some(ms) = std::env::var(ENV_SLOW_BOOT_MS)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if switch(ENV_HANG_BOOT) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// `GET /cluster`: the master's view of the cluster, asked over IPC.
async fn cluster(State(ctx): State<AppContext>) -> Result<Json<serde_json::Value>, AppError> {
    let unavailable = |e: ringmaster::IpcError| AppError::unavailable(e.to_string());
    let status = ctx.ipc().status().await.map_err(unavailable)?;
    let workers = ctx.ipc().workers().await.map_err(unavailable)?;
    Ok(Json(
        serde_json::json!({ "status": status, "workers": workers }),
    ))
}

#[derive(Deserialize)]
struct GarbageParams {
    kind: String,
}

/// Breaks this worker's IPC socket on purpose; the master must restart it.
async fn ipc_garbage(
    State(ctx): State<AppContext>,
    Query(p): Query<GarbageParams>,
) -> Result<&'static str, AppError> {
    let bytes = match p.kind.as_str() {
        // A 4-byte frame holding no valid message.
        "garbage" => vec![0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        // A length prefix far above the 1 MiB limit.
        "oversized" => (64u32 << 20).to_be_bytes().to_vec(),
        other => {
            return Err(AppError::unprocessable(format!(
                "kind must be garbage or oversized, got {other:?}"
            )));
        }
    };
    ctx.ipc()
        .send_raw_for_tests(bytes)
        .await
        .map_err(|e| AppError::internal(e.to_string()))?;
    Ok("sent")
}

/// Logs a last line and aborts the whole process (no unwinding, no
/// destructors): the line must still reach the log.
async fn abort() -> &'static str {
    tracing::error!("the demo's /__test/abort route aborts the worker now");
    std::process::abort()
}

#[derive(Deserialize)]
struct LogParams {
    n: u64,
    #[serde(default)]
    size: usize,
}

/// Logs `n` numbered lines padded to about `size` bytes, as fast as it can.
async fn log_lines(Query(p): Query<LogParams>) -> String {
    let pad = "x".repeat(p.size);
    for i in 0..p.n {
        tracing::info!(i, pad = %pad, "test log line");
    }
    format!("logged {}", p.n)
}

/// Stops this worker's IPC reader; the master must restart it as stalled.
async fn ipc_stall(State(ctx): State<AppContext>) -> &'static str {
    ctx.ipc().stall_for_tests();
    "stalling"
}

#[derive(Deserialize)]
struct FloodParams {
    n: u32,
}

/// Publishes `n` invalidations of codes no link has.
async fn flood(
    State(ctx): State<AppContext>,
    Query(p): Query<FloodParams>,
) -> Result<String, AppError> {
    for i in 0..p.n {
        ctx.ipc()
            .publish(
                ringmaster::Target::All,
                crate::links::INVALIDATE,
                &format!("flood-{i}"),
            )
            .await
            .map_err(|e| AppError::internal(e.to_string()))?;
    }
    Ok(format!("published {}", p.n))
}

#[derive(Deserialize)]
struct AskParams {
    group: String,
    timeout_ms: u64,
}

/// Asks one worker of `group` for its `api.stats`.
async fn ask(
    State(ctx): State<AppContext>,
    Query(p): Query<AskParams>,
) -> Result<Json<crate::api::ApiStats>, (StatusCode, String)> {
    ctx.ipc()
        .request(
            &p.group,
            crate::api::STATS,
            &(),
            Duration::from_millis(p.timeout_ms),
        )
        .await
        .map(Json)
        .map_err(|e| (StatusCode::GATEWAY_TIMEOUT, e.to_string()))
}

#[derive(Deserialize)]
struct AllocParams {
    mb: usize,
}

/// Memory `/__test/alloc` keeps for the life of the worker.
static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Allocates `mb` MiB and keeps it, every page written (so it is
/// resident): the worker's RSS grows by about that much.
async fn alloc(Query(p): Query<AllocParams>) -> Result<String, AppError> {
    if p.mb > 4096 {
        return Err(AppError::unprocessable("mb: at most 4096"));
    }
    let block = vec![1u8; p.mb << 20];
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    held.push(block);
    let total: usize = held.iter().map(Vec::len).sum();
    Ok(format!("holding {} MiB", total >> 20))
}

#[derive(Deserialize)]
struct SleepParams {
    ms: u64,
}

async fn sleep(Query(p): Query<SleepParams>) -> String {
    // Tests wait for this line to know the request is in a worker.
    tracing::info!(ms = p.ms, "test sleep started");
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    format!("slept {} ms", p.ms)
}

/// Leaves an orphan: a shell starts `sleep` in the background and exits,
/// so the sleep's parent is gone; answers the orphan's pid as the shell
/// saw it.
async fn orphan(Query(p): Query<SleepParams>) -> Result<String, (StatusCode, String)> {
    let script = format!(
        "sleep {:.3} >/dev/null 2>&1 & echo $!",
        p.ms as f64 / 1000.0
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot run sh: {e}"),
            )
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn panic() -> &'static str {
    panic!("the demo's /__test/panic route panics on purpose")
}

/// Blocks every thread of the worker's runtime for good: tasks injected from
/// outside the runtime land in its global queue, and each idle runtime
/// thread that picks one up blocks in it. Heartbeats stop with them.
async fn wedge() -> &'static str {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        for _ in 0..64 {
            handle.spawn(async {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            });
        }
    });
    "wedging"
}
