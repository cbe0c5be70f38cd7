//! Boot, serve, heartbeat and drain: the life of one worker process.
//!
//! Boot phases, each timed and reported in `Ready`: `connect_master` (take
//! the IPC socket and say `Hello`), then the app's phases from
//! [`boot`](crate::boot) (`load_config`, `connect_backends`, `build_app`,
//! `mount_controllers`, `configure`), then `listen` (take the inherited
//! listener). A failure is sent to the master as `Fatal`, then exit 1.
//!
//! Then the worker serves and heartbeats on the same runtime, so a wedged
//! runtime stops heartbeating and the master replaces it. It drains (stops
//! accepting, finishes in-flight requests, closes idle keep-alive
//! connections) on `Drain`, on SIGTERM/SIGINT, or when the master's end of
//! the IPC socket closes; the drain grace is enforced here, and the master
//! kills a worker that overruns it anyway.
//!
//! `master` holds the link with the master (hello, writer, reader, signals,
//! heartbeat); this file the life itself and what runs beside the serving.

mod master;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmaster_config::GroupConfig;
use ringmaster_proto::{BootPhase, BootStep, WorkerMsg};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::boot;
use crate::context::AppContext;
use crate::handoff::{self, Handoff};
use crate::ipc::{Ipc, Outgoing};
use crate::registry::Registry;
use crate::serve::{self, DrainRx};
use crate::{Worker, WorkerIdentity};
use master::{Master, connect_master, fatal, heartbeat};

/// Runs this process as a worker: picks the implementation its group
/// names among `workers`, boots, serves until told to drain, and returns
/// the process exit code (0 after a drain, 1 when boot failed).
pub fn run(workers: &[Worker]) -> ExitCode {
    let handoff = match Handoff::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ringmaster worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let span = tracing::info_span!(
        "worker",
        group = %handoff.group,
        slot = handoff.slot,
        pid = std::process::id()
    );
    let _entered = span.enter();
    let threads = handoff.group_config.threads.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / handoff.group_config.count.max(1)).max(1)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the worker's runtime");
            return ExitCode::FAILURE;
        }
    };
    let wanted = handoff.group_config.worker.clone().unwrap_or_default();
    let worker = workers.iter().find(|w| w.name() == wanted).cloned();
    let code = runtime.block_on(life(handoff, worker).in_current_span());
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Some(pipe) = crate::logpipe::installed() {
        pipe.finish(Duration::from_millis(500));
    }
    code
}

async fn life(handoff: Handoff, worker: Option<Worker>) -> ExitCode {
    let cfg = Arc::new(handoff.group_config.clone());
    let t = Instant::now();
    let Some(master) = connect_master(&handoff, &cfg).await else {
        return ExitCode::FAILURE;
    };
    let mut phases = vec![phase(BootStep::ConnectMaster, t)];
    let Master {
        outbox,
        ipc,
        drain,
        pid,
        trigger: _trigger,
    } = master;
    let booted = match boot_app(&handoff, &cfg, worker, ipc, pid, &drain).await {
        Ok(b) => b,
        Err(reason) => return fatal(outbox, reason).await,
    };
    phases.extend(booted.phases);
    let (app, ctx) = (booted.app, booted.ctx);

    let t = Instant::now();
    let listener = match handoff::take_listener() {
        Ok(l) => l,
        Err(e) => {
            let reason = format!("cannot use the listening socket from the master: {e}");
            return fatal(outbox, reason).await;
        }
    };
    phases.push(phase(BootStep::Listen, t));
    let adopt = take_adopt();

    if drain.borrow().is_some() {
        // Still serve: the loop stops at once, but first takes what is
        // queued on the socket (a scale-down may close it for good).
        tracing::info!("drained before serving; taking what is queued, then exiting");
    }
    report_ready(&ctx, &outbox, cfg.heartbeat_interval, phases).await;
    let serving = Serving {
        listener,
        adopt,
        app,
        ctx,
        drain,
    };
    serving.until_drained(&cfg, outbox).await;
    ExitCode::SUCCESS
}

/// Boots the app of `worker`, the implementation the group names (`None`:
/// this binary has none of that name); the error is the reason for the
/// master.
async fn boot_app(
    handoff: &Handoff,
    cfg: &Arc<GroupConfig>,
    worker: Option<Worker>,
    ipc: Ipc,
    pid: u32,
    drain: &DrainRx,
) -> Result<boot::Booted, String> {
    let identity = WorkerIdentity {
        group: handoff.group.as_str().into(),
        slot: handoff.slot,
        generation: handoff.generation,
        pid,
        config: cfg.clone(),
    };
    let Some(worker) = worker else {
        return Err(format!(
            "this binary has no worker implementation named {:?}",
            cfg.worker.as_deref().unwrap_or("")
        ));
    };
    let registry = open_registry(&ipc)?;
    let config = Arc::new(handoff.config.clone());
    boot::boot_with(
        &worker,
        identity,
        config,
        ipc,
        registry,
        drain.clone(),
        true,
    )
    .await
    .map_err(|e| e.to_string())
}

/// The socket the master hands connections over on, if it gave one.
fn take_adopt() -> Option<tokio::net::UnixDatagram> {
    match handoff::take_adopt() {
        Some(Ok(sock)) => Some(sock),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot use the socket the master hands connections on");
            None
        }
        None => None,
    }
}

/// Starts the heartbeat and the count of dropped log lines, then tells the
/// master this worker is ready, with how long each boot phase took.
async fn report_ready(
    ctx: &AppContext,
    outbox: &mpsc::Sender<Outgoing>,
    heartbeat_interval: Duration,
    phases: Vec<BootPhase>,
) {
    tokio::spawn(heartbeat(outbox.clone(), heartbeat_interval).in_current_span());
    if let Some(pipe) = crate::logpipe::installed() {
        let w = ctx.worker();
        let slot = w.slot.to_string();
        let counter = ctx.registry().counter_with(
            ringmaster_registry::series::WORKER_LOG_LINES_DROPPED,
            "Log lines a worker dropped because the master was not reading its pipe.",
            &[("group", &w.group), ("slot", &slot)],
        );
        tokio::spawn(count_log_drops(pipe.clone(), counter));
    }
    // After the subscriptions `init` made: the master delivers to this
    // worker before it counts it ready.
    let _ = outbox
        .send(Outgoing::Msg(WorkerMsg::Ready { phases }))
        .await;
    tracing::debug!("worker serving");
}

/// What a booted worker serves.
struct Serving {
    listener: std::net::TcpListener,
    adopt: Option<tokio::net::UnixDatagram>,
    app: axum::Router,
    ctx: AppContext,
    drain: DrainRx,
}

impl Serving {
    /// Serves until the drain is done (then closes the backends) or its
    /// grace period is over.
    async fn until_drained(self, cfg: &GroupConfig, outbox: mpsc::Sender<Outgoing>) {
        let Serving {
            listener,
            adopt,
            app,
            ctx,
            drain,
        } = self;
        tokio::spawn(watch_sqlite_files(ctx.clone(), outbox.clone()).in_current_span());
        let limit = request_limit(cfg, outbox.clone());
        let serve_drain = drain.clone();
        tokio::select! {
            () = async {
                serve::serve(
                    listener,
                    adopt,
                    app,
                    serve_drain,
                    limit,
                    serve::Limits::new(cfg).fit_to_fd_limit(),
                )
                .await;
                // And what the modules hold the drain for.
                ctx.holds_released().await;
            } => {
                // Every request is done: the pools can close cleanly.
                close_backends(&ctx).await;
                tracing::info!("drained; exiting");
            }
            () = drain_deadline(drain) => {
                // Requests still hold connections: closing the pools would wait
                // for them; the master kills overrunning workers 1 s from now.
                tracing::warn!("drain grace period over with requests still in flight; exiting anyway");
            }
        }
    }
}

/// How often a worker looks whether its SQLite files are still the ones it
/// opened.
const SQLITE_CHECK: Duration = Duration::from_secs(2);

/// Notices an SQLite file this worker opened being replaced or removed.
/// Its connections keep the old file, so writes through them would be
/// acknowledged and lost: it closes that backend's pool (requests needing
/// it answer 503 from then on), says so once, and asks the master for a
/// replacement, which opens what the path holds now (or, for a removed
/// file, fails its boot saying so while this worker serves the rest).
async fn watch_sqlite_files(ctx: AppContext, outbox: mpsc::Sender<Outgoing>) {
    let files = ctx.sqlite_files();
    if files.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(SQLITE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for f in &files {
            let now = crate::backend::file_identity(&f.path);
            if now == f.identity {
                continue;
            }
            let what = if now.is_none() { "removed" } else { "replaced" };
            tracing::error!(
                backend = %f.backend,
                path = %f.path.display(),
                "the SQLite file of backend {} was {what} while this worker had it open: its \
                 pool is closed (requests that need it answer 503, none is written to the old \
                 file) and the master is asked for a replacement worker",
                f.backend,
            );
            let msg = WorkerMsg::Recycle {
                reason: format!("sqlite file {what}"),
            };
            let close = async {
                if let Ok(db) = ctx.db_named(&f.backend) {
                    db.close().await;
                }
            };
            // The close is polled first: the pool refuses new requests
            // before the master hears of it.
            let (_, _) = tokio::join!(close, outbox.send(Outgoing::Msg(msg)));
            return;
        }
    }
}

/// With `max_requests`, the counter that asks the master to recycle this
/// worker once it has served `max_requests` plus its own random share of
/// `max_requests_jitter`.
fn request_limit(
    cfg: &GroupConfig,
    outbox: mpsc::Sender<Outgoing>,
) -> Option<Arc<serve::RequestLimit>> {
    if cfg.max_requests == 0 {
        return None;
    }
    let jitter = match cfg.max_requests_jitter {
        0 => 0,
        j => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish() % j.saturating_add(1)
        }
    };
    let limit = cfg.max_requests.saturating_add(jitter);
    tracing::debug!(
        limit,
        "this worker asks to be recycled after {limit} requests"
    );
    Some(Arc::new(serve::RequestLimit::new(limit, move || {
        tracing::info!(
            limit,
            "served max_requests; asking the master for a replacement"
        );
        let msg = WorkerMsg::Recycle {
            reason: "max_requests".into(),
        };
        if outbox.try_send(Outgoing::Msg(msg)).is_err() {
            tracing::warn!("cannot ask for a replacement: the queue to the master is full");
        }
    })))
}

/// Maps the master's registry segment at this worker's row, or a private
/// one when the master had no row for it.
fn open_registry(ipc: &Ipc) -> Result<Registry, String> {
    match handoff::take_registry() {
        Some(Ok((fd, row))) => match ringmaster_registry::Segment::open(fd, true) {
            Ok(segment) => Ok(Registry::shared(segment, row, ipc.clone())),
            Err(e) => Err(format!("cannot map the master's metrics registry: {e}")),
        },
        Some(Err(e)) => Err(format!("cannot use the registry fd from the master: {e}")),
        None => {
            tracing::warn!(
                "the master gave this worker no registry row; its metrics stay in this process"
            );
            Registry::local().map_err(|e| format!("metrics registry: {e}"))
        }
    }
}

/// Closes the backends after a drain, bounded: a stuck pool must not keep
/// a drained worker alive.
async fn close_backends(ctx: &AppContext) {
    let close = ctx.backends_close();
    if tokio::time::timeout(Duration::from_secs(2), close)
        .await
        .is_err()
    {
        tracing::warn!("backends did not close within 2 s; exiting anyway");
    }
}

fn phase(step: BootStep, started: Instant) -> BootPhase {
    BootPhase {
        step,
        micros: started.elapsed().as_micros() as u64,
    }
}

/// Completes when the drain's grace period is over.
async fn drain_deadline(mut rx: DrainRx) {
    let grace = match rx.wait_for(Option::is_some).await {
        Ok(grace) => grace.unwrap_or_default(),
        Err(_) => return std::future::pending().await,
    };
    tokio::time::sleep(grace).await;
}

/// Copies the log pipe's drop count into the registry every second.
async fn count_log_drops(pipe: Arc<crate::logpipe::LogPipe>, counter: crate::Counter) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = pipe.dropped();
        if now > seen {
            counter.add(now - seen);
            seen = now;
        }
    }
}
