//! This worker's link with the master: the IPC socket's `Hello`, the
//! writer task that owns its sending half (everyone else queues on the
//! outbox), the reader that hands IPC traffic to the pool and turns the
//! master's `Drain` (or its going away) into a drain, the signal handler,
//! the heartbeat, and the last word of a worker that cannot boot.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ringmaster_config::GroupConfig;
use ringmaster_proto::{
    Batch, Channel, MasterMsg, Origin, Outbound, PROTOCOL_VERSION, Receiver, Sender, WorkerMsg,
    write_batches,
};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::handoff::{self, Handoff};
use crate::ipc::{Ipc, Outgoing};
use crate::serve::DrainRx;

/// Capacity of the queue of messages to the master. Heartbeats that find
/// it full are skipped, never waited for; publishers wait for room.
const OUTBOX: usize = 1024;
/// The writer adds queued messages to one write while it holds fewer
/// bytes than this (so a write passes it by at most one message).
const WRITE_BATCH: usize = 64 * 1024;

/// This worker's end of the master, once it said `Hello`.
pub(super) struct Master {
    /// The queue to the task that writes to the master.
    pub(super) outbox: mpsc::Sender<Outgoing>,
    pub(super) ipc: Ipc,
    pub(super) drain: DrainRx,
    pub(super) pid: u32,
    /// The drain trigger, held as long as the worker lives (the reader
    /// and the signal handler hold it too).
    pub(super) trigger: Arc<watch::Sender<Option<Duration>>>,
}

/// Takes the IPC socket the master handed over and says `Hello` on it,
/// then starts the tasks that write to and read from the master and the
/// signal handler. `None` (after logging why) when the master cannot be
/// reached: there is no one to tell.
pub(super) async fn connect_master(handoff: &Handoff, cfg: &GroupConfig) -> Option<Master> {
    let ipc = match handoff::take_ipc() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the IPC socket from the master");
            return None;
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
        return None;
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
    Some(Master {
        outbox,
        ipc,
        drain: drain_rx,
        pid,
        trigger: drain_tx,
    })
}

/// Tells the master why this worker cannot boot, then gives the exit code.
pub(super) async fn fatal(outbox: mpsc::Sender<Outgoing>, reason: String) -> ExitCode {
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
/// write ([`write_batches`]), until every sender of the outbox is gone or
/// the socket fails. A failure is not logged here: it means the master is
/// gone, which the reader sees too and answers with a drain that says so.
async fn write_master(tx: Sender<WorkerMsg>, mut outbox: mpsc::Receiver<Outgoing>) {
    let _ = write_batches(&mut outbox, tx, WRITE_BATCH).await;
}

/// What each item of the outbox adds to the writer's batch: a message is
/// framed into it (one too large to frame is logged and dropped), raw
/// bytes go in as they are, a flush waits for the batch to be written.
impl Outbound for Outgoing {
    fn add_to(self, batch: &mut Batch) {
        match self {
            Outgoing::Msg(msg) => {
                if let Err(e) = batch.encode(&msg) {
                    tracing::error!(error = %e, "a message to the master cannot be sent; dropped");
                }
            }
            Outgoing::Raw(bytes) => batch.push_frames(&bytes),
            Outgoing::Flushed(done) => batch.when_written(done),
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

/// Sends a heartbeat every interval, from the serving runtime.
pub(super) async fn heartbeat(outbox: mpsc::Sender<Outgoing>, every: Duration) {
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
