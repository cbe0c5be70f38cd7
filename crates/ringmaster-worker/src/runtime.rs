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

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmaster_proto::{
    BootPhase, Channel, MasterMsg, Origin, PROTOCOL_VERSION, Receiver, Sender, WorkerMsg,
};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::boot;
use crate::context::AppContext;
use crate::handoff::{self, Handoff};
use crate::ipc::{Ipc, Outgoing};
use crate::registry::Registry;
use crate::serve::{self, DrainRx};
use crate::{Worker, WorkerContext};

/// Capacity of the queue of messages to the master. Heartbeats that find
/// it full are skipped, never waited for; publishers wait for room.
const OUTBOX: usize = 1024;
/// The writer sends at most this many bytes of queued messages at once.
const WRITE_BATCH: usize = 64 * 1024;

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
    let mut phases = Vec::new();
    let t = Instant::now();
    let ipc = match handoff::take_ipc() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the IPC socket from the master");
            return ExitCode::FAILURE;
        }
    };
    let (mut tx, rx) = Channel::<WorkerMsg, MasterMsg>::new(ipc).split();
    let pid = std::process::id();
    if tx
        .send(&WorkerMsg::Hello {
            version: PROTOCOL_VERSION,
            pid,
        })
        .await
        .is_err()
    {
        tracing::error!("the master is gone before this worker said hello; exiting");
        return ExitCode::FAILURE;
    }
    // One writer task owns the socket's sending half; everyone else queues.
    let (outbox, outbox_rx) = mpsc::channel::<Outgoing>(OUTBOX);
    tokio::spawn(write_master(tx, outbox_rx).in_current_span());
    let ipc = Ipc::attached(
        outbox.clone(),
        Origin {
            group: handoff.group.clone(),
            slot: handoff.slot as u32,
            pid,
        },
    );
    let (drain_tx, drain_rx) = watch::channel(None);
    let drain_tx = Arc::new(drain_tx);
    let reader = read_master(rx, ipc.clone(), drain_tx.clone(), cfg.drain_timeout);
    tokio::spawn(reader.in_current_span());
    tokio::spawn(on_signals(drain_tx.clone(), cfg.drain_timeout).in_current_span());
    phases.push(phase("connect_master", t));

    let identity = WorkerContext {
        group: handoff.group.as_str().into(),
        slot: handoff.slot,
        generation: handoff.generation,
        pid,
        config: cfg.clone(),
    };
    let Some(worker) = worker else {
        let reason = format!(
            "this binary has no worker implementation named {:?}",
            cfg.worker.as_deref().unwrap_or("")
        );
        return fatal(outbox, reason).await;
    };
    let registry = match open_registry(&ipc) {
        Ok(r) => r,
        Err(reason) => return fatal(outbox, reason).await,
    };
    let config = Arc::new(handoff.config.clone());
    let booted = match boot::boot_with(
        &worker,
        identity,
        config,
        ipc,
        registry,
        drain_rx.clone(),
        true,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return fatal(outbox, e.to_string()).await,
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
    phases.push(phase("listen", t));
    let adopt = match handoff::take_adopt() {
        Some(Ok(sock)) => Some(sock),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot use the socket the master hands connections on");
            None
        }
        None => None,
    };

    if drain_rx.borrow().is_some() {
        // Still serve: the loop stops at once, but first takes what is
        // queued on the socket (a scale-down may close it for good).
        tracing::info!("drained before serving; taking what is queued, then exiting");
    }
    tokio::spawn(heartbeat(outbox.clone(), cfg.heartbeat_interval).in_current_span());
    if let Some(pipe) = crate::logpipe::installed() {
        let w = ctx.worker();
        let slot = w.slot.to_string();
        let counter = ctx.registry().counter_with(
            "ringmaster_worker_log_lines_dropped_total",
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

    tokio::spawn(watch_sqlite_files(ctx.clone(), outbox.clone()).in_current_span());
    let limit = request_limit(&cfg, outbox.clone());
    tokio::select! {
        () = serve::serve(
            listener,
            adopt,
            app,
            drain_rx.clone(),
            limit,
            serve::Limits::new(&cfg).fit_to_fd_limit(),
        ) => {
            // Every request is done: the pools can close cleanly.
            close_backends(&ctx).await;
            tracing::info!("drained; exiting");
        }
        () = drain_deadline(drain_rx) => {
            // Requests still hold connections: closing the pools would wait
            // for them; the master kills overrunning workers 1 s from now.
            tracing::warn!("drain grace period over with requests still in flight; exiting anyway");
        }
    }
    ExitCode::SUCCESS
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
    cfg: &ringmaster_config::GroupConfig,
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

fn phase(name: &str, started: Instant) -> BootPhase {
    BootPhase {
        name: name.to_string(),
        micros: started.elapsed().as_micros() as u64,
    }
}

/// Tells the master why this worker cannot boot, then gives the exit code.
async fn fatal(outbox: mpsc::Sender<Outgoing>, reason: String) -> ExitCode {
    tracing::error!(reason = %reason, "worker cannot boot");
    let _ = outbox
        .send(Outgoing::Msg(WorkerMsg::Fatal { reason }))
        .await;
    // Exit as soon as the reason is written: waiting for the writer to end
    // waited the whole second (the heartbeat task keeps the outbox open),
    // which slowed every restart of a worker that cannot boot.
    let (done, written) = tokio::sync::oneshot::channel();
    if outbox.send(Outgoing::Flushed(done)).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
    }
    ExitCode::FAILURE
}

/// Writes queued messages to the master, as many as are waiting in one
/// write.
async fn write_master(mut tx: Sender<WorkerMsg>, mut outbox: mpsc::Receiver<Outgoing>) {
    while let Some(first) = outbox.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Msg(msg) => {
                    if let Err(e) = tx.queue(&msg) {
                        tracing::error!(error = %e, "a message to the master cannot be sent; dropped");
                    }
                }
                Outgoing::Raw(bytes) => {
                    if tx.flush().await.is_err() || tx.write_frames(&bytes).await.is_err() {
                        return;
                    }
                }
                Outgoing::Flushed(done) => {
                    if tx.flush().await.is_err() {
                        return;
                    }
                    let _ = done.send(());
                }
            }
            if tx.queued() < WRITE_BATCH {
                next = outbox.try_recv().ok();
            }
        }
        if tx.flush().await.is_err() {
            return;
        }
    }
}

/// Reads the master's messages: IPC traffic goes to `ipc`; a drain
/// request, or the master going away, starts a drain.
async fn read_master(
    mut rx: Receiver<MasterMsg>,
    ipc: Ipc,
    drain: Arc<watch::Sender<Option<Duration>>>,
    default_grace: Duration,
) {
    loop {
        match rx.recv().await {
            Ok(Some(MasterMsg::Drain { grace_ms })) => {
                start_drain(&drain, Duration::from_millis(grace_ms), "the master asked");
            }
            Ok(Some(msg)) => {
                if let Some(other) = ipc.on_master_msg(msg).await {
                    tracing::debug!(message = ?other, "unhandled master message");
                }
                if ipc.is_stalled_for_tests() {
                    tracing::warn!("IPC reader stalled on purpose (test switch)");
                    return std::future::pending().await;
                }
            }
            Ok(None) => {
                start_drain(&drain, default_grace, "the master is gone");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "IPC from the master failed");
                start_drain(&drain, default_grace, "IPC failed");
                return;
            }
        }
    }
}

async fn on_signals(drain: Arc<watch::Sender<Option<Duration>>>, grace: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install SIGTERM/SIGINT handlers in the worker");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => start_drain(&drain, grace, "SIGTERM"),
            _ = int.recv() => start_drain(&drain, grace, "SIGINT"),
        }
    }
}

fn start_drain(drain: &watch::Sender<Option<Duration>>, grace: Duration, why: &str) {
    drain.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        tracing::info!(grace_ms = grace.as_millis() as u64, why, "draining");
        *current = Some(grace);
        true
    });
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

/// Sends a heartbeat every interval, from the serving runtime.
async fn heartbeat(outbox: mpsc::Sender<Outgoing>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match outbox.try_send(Outgoing::Msg(WorkerMsg::Heartbeat)) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
