//! The IPC pool's routing: topics, requests between workers, the master's
//! own services, and backpressure.
//!
//! Every message arrives here on the supervisor's task, so routing needs no
//! lock. A publication is encoded once and the same bytes are queued for
//! each receiver. Each worker's queue is bounded (`server.ipc_queue`): a
//! message for a worker whose queue is full is dropped and counted, and a
//! worker whose queue stays full for `server.ipc_stall_timeout` is killed
//! and replaced (its watcher and writer are separate tasks, so a worker
//! that stops reading never blocks anyone else).
//!
//! Delivery is at most once; messages from one worker on one topic keep
//! their order (one socket, one supervisor, one queue per receiver).
//!
//! The bridge group (`[bridge]`) is a subscriber with two rules of its
//! own: what a bridge worker publishes (a message from another host) is
//! never delivered back to a bridge worker, and anything else reaches one
//! bridge worker only (the newest ready one, else the newest booting, else
//! the newest draining), so that a rolling reload of the bridge never
//! sends a message to NATS twice.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use ringmaster_proto::{
    Answer, IpcStats, LogLine, LogLines, MasterMsg, Origin, ReplyError, Service, Target,
    WorkerInfo, encode_frame,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::{Phase, Supervisor, WorkerProc};

/// The longest timeout a request may ask for; longer ones are cut to it.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// Topics one worker may subscribe to, and request topics it may serve:
/// a worker past this is broken (or hostile) and is replaced, so it cannot
/// grow the master's tables without bound.
const MAX_TOPICS: usize = 4096;
/// The longest topic (or group) name a worker may use, in bytes.
pub(super) const MAX_TOPIC_LEN: usize = 256;
/// Bytes of request payloads waiting for a server, at most.
const MAX_PARKED_BYTES: usize = 64 << 20;
/// Log lines in one answer to [`Service::Logs`], at most, and bytes of
/// each line (1000 x 512 bytes stays far below a frame).
const MAX_LOG_LINES: usize = 1000;
const MAX_LOG_LINE: usize = 512;

/// A request between workers that has not been answered yet.
#[derive(Debug)]
struct Pending {
    /// The worker that asked, and its own id for the request.
    requester: u64,
    their_id: u64,
    group: String,
    topic: String,
    deadline: Instant,
    /// The worker that has the request; `None` while no worker of the
    /// group serves the topic (then `payload` waits here for one).
    server: Option<u64>,
    payload: Vec<u8>,
}

/// The routing state of the IPC pool.
#[derive(Debug)]
pub(super) struct Router {
    /// Topic -> serials of the workers subscribed to it.
    subscribers: HashMap<String, Vec<u64>>,
    /// (group, topic) -> serials of the workers serving it, and where the
    /// round robin goes next.
    servers: HashMap<(String, String), (Vec<u64>, usize)>,
    pending: HashMap<u64, Pending>,
    /// Pending requests by deadline.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Pending requests per requesting worker (each may hold a quarter of
    /// `max_pending`, so one worker cannot starve the others).
    per_requester: HashMap<u64, usize>,
    /// Payload bytes of requests parked until a server is ready.
    parked_bytes: usize,
    next_id: u64,
    max_pending: usize,
    stall_timeout: Duration,
    stats: IpcStats,
}

impl Router {
    pub(super) fn new(max_pending: usize, stall_timeout: Duration) -> Self {
        Router {
            subscribers: HashMap::new(),
            servers: HashMap::new(),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            per_requester: HashMap::new(),
            parked_bytes: 0,
            next_id: 0,
            max_pending,
            stall_timeout,
            stats: IpcStats::default(),
        }
    }

    /// Applies new limits (after a reload of the configuration).
    pub(super) fn set_limits(&mut self, max_pending: usize, stall_timeout: Duration) {
        self.max_pending = max_pending;
        self.stall_timeout = stall_timeout;
    }

    /// The earliest request deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The stall timeout, for a worker's deadline.
    pub(super) fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    fn insert(&mut self, id: u64, p: Pending) {
        self.deadlines.insert((p.deadline, id));
        *self.per_requester.entry(p.requester).or_default() += 1;
        self.parked_bytes += p.payload.len();
        self.pending.insert(id, p);
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        self.parked_bytes -= p.payload.len();
        if let Some(n) = self.per_requester.get_mut(&p.requester) {
            *n -= 1;
            if *n == 0 {
                self.per_requester.remove(&p.requester);
            }
        }
        Some(p)
    }
}

/// A message encoded once as a frame, ready to queue for any worker.
fn frame(msg: &MasterMsg) -> Option<Bytes> {
    let mut out = Vec::new();
    match encode_frame(msg, &mut out) {
        Ok(()) => Some(Bytes::from(out)),
        Err(e) => {
            // Only a reply or delivery larger than a frame gets here, and
            // the worker's own frame was within the limit: log, never panic.
            tracing::error!(error = %e, "cannot encode a message for a worker; dropped");
            None
        }
    }
}

impl Supervisor {
    /// Queues an encoded frame for one worker; a full queue drops it and
    /// counts. Returns whether it was queued.
    fn queue_frame(&mut self, serial: u64, bytes: Bytes) -> bool {
        let Some(w) = self.workers.get_mut(&serial) else {
            return false;
        };
        match w.frames.try_send(bytes) {
            Ok(()) => {
                self.router.stats.routed += 1;
                true
            }
            Err(TrySendError::Full(_)) => {
                self.router.stats.dropped += 1;
                w.ipc_dropped += 1;
                if w.queue_full_since.is_none() {
                    w.queue_full_since = Some(Instant::now());
                    tracing::warn!(
                        group = %w.origin.group, slot = w.slot, pid = w.pid,
                        "worker's IPC queue is full; dropping messages for it"
                    );
                }
                false
            }
            // Its writer is gone: the worker is exiting.
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Encodes `msg` and queues it for one worker.
    pub(super) fn send(&mut self, serial: u64, msg: &MasterMsg) -> bool {
        match frame(msg) {
            Some(bytes) => self.queue_frame(serial, bytes),
            None => false,
        }
    }

    pub(super) fn on_subscribe(&mut self, serial: u64, topic: String) {
        if self.declare_topic(serial, &topic, false) {
            self.router
                .subscribers
                .entry(topic)
                .or_default()
                .push(serial);
        }
    }

    pub(super) fn on_serve(&mut self, serial: u64, topic: String) {
        if !self.declare_topic(serial, &topic, true) {
            return;
        }
        let Some(w) = self.workers.get(&serial) else {
            return;
        };
        let ready = w.phase == Phase::Ready;
        let key = (w.origin.group.clone(), topic);
        self.router.servers.entry(key).or_default().0.push(serial);
        if ready {
            self.dispatch_parked();
        }
    }

    /// Records that worker `serial` subscribes to (or, with `serves`,
    /// serves) `topic`; whether it is new. A worker past the limits of
    /// name length or count is killed as broken.
    fn declare_topic(&mut self, serial: u64, topic: &str, serves: bool) -> bool {
        let Some(w) = self.workers.get_mut(&serial) else {
            return false;
        };
        let list = if serves { &mut w.serves } else { &mut w.topics };
        if list.iter().any(|t| t == topic) {
            return false;
        }
        let what = if serves { "serves" } else { "subscribed to" };
        let why = if topic.len() > MAX_TOPIC_LEN {
            format!("{what} a topic name longer than {MAX_TOPIC_LEN} bytes")
        } else if list.len() >= MAX_TOPICS {
            format!("{what} more than {MAX_TOPICS} topics")
        } else {
            list.push(topic.to_string());
            return true;
        };
        self.kill(serial, why);
        false
    }

    pub(super) fn on_publish(&mut self, serial: u64, to: Target, topic: String, payload: Vec<u8>) {
        self.router.stats.received += 1;
        let Some(from) = self.workers.get(&serial).map(|w| w.origin.clone()) else {
            return;
        };
        let Some(receivers) = self.router.subscribers.get(&topic) else {
            return;
        };
        let from_bridge = self
            .workers
            .get(&serial)
            .is_some_and(|w| self.groups[w.group].is_bridge());
        let mut bridge: Option<(u8, u64)> = None;
        let mut receivers: Vec<u64> = receivers
            .iter()
            .copied()
            .filter(|s| {
                let Some(w) = self.workers.get(s) else {
                    return false;
                };
                if !to.includes(&w.origin.group, w.origin.slot) {
                    return false;
                }
                if !self.groups[w.group].is_bridge() {
                    return true;
                }
                // A ready bridge worker before a booting one (it has its
                // NATS connection), before a draining one; then the newest
                // (serials grow).
                let class = match w.phase {
                    Phase::Ready => 2,
                    Phase::Booting => 1,
                    Phase::Draining => 0,
                };
                let rank = (class, *s);
                if !from_bridge && bridge.is_none_or(|b| rank > b) {
                    bridge = Some(rank);
                }
                false
            })
            .collect();
        if let Some((_, serial)) = bridge {
            receivers.push(serial);
        }
        if receivers.is_empty() {
            return;
        }
        let Some(bytes) = frame(&MasterMsg::Deliver {
            topic,
            from,
            payload,
        }) else {
            return;
        };
        for r in receivers {
            self.queue_frame(r, bytes.clone());
        }
    }

    pub(super) fn on_request(
        &mut self,
        serial: u64,
        id: u64,
        group: String,
        topic: String,
        timeout_ms: u64,
        payload: Vec<u8>,
    ) {
        self.router.stats.received += 1;
        if topic.len() > MAX_TOPIC_LEN || group.len() > MAX_TOPIC_LEN {
            self.kill(
                serial,
                format!(
                    "sent a request with a topic or group name longer than {MAX_TOPIC_LEN} bytes"
                ),
            );
            return;
        }
        let mine = self.router.per_requester.get(&serial).copied().unwrap_or(0);
        if self.router.pending.len() >= self.router.max_pending
            || mine >= (self.router.max_pending / 4).max(1)
            || self.router.parked_bytes + payload.len() > MAX_PARKED_BYTES
        {
            let limit = self.router.max_pending as u64;
            self.router.stats.failed_requests += 1;
            let result = Err(ReplyError::Overloaded { limit });
            self.send(serial, &MasterMsg::Reply { id, result });
            return;
        }
        let timeout = Duration::from_millis(timeout_ms).min(MAX_REQUEST_TIMEOUT);
        let mid = self.router.next_id;
        self.router.next_id += 1;
        let pending = Pending {
            requester: serial,
            their_id: id,
            group,
            topic,
            deadline: Instant::now() + timeout,
            server: None,
            payload,
        };
        self.router.insert(mid, pending);
        self.dispatch(mid);
    }

    /// Gives request `mid` to the next ready worker serving its topic, if
    /// there is one; otherwise it stays parked until one is or it expires.
    fn dispatch(&mut self, mid: u64) {
        let Some(p) = self.router.pending.get(&mid) else {
            return;
        };
        let key = (p.group.clone(), p.topic.clone());
        let Some((serials, next)) = self.router.servers.get_mut(&key) else {
            return;
        };
        let n = serials.len();
        let chosen = (0..n).map(|i| serials[(*next + i) % n]).find(|s| {
            self.workers
                .get(s)
                .is_some_and(|w| w.phase == Phase::Ready && w.killed_for.is_none())
        });
        let Some(server) = chosen else {
            return;
        };
        *next = (serials.iter().position(|s| *s == server).unwrap_or(0) + 1) % n.max(1);
        let Some(from) = self.workers.get(&p.requester).map(|w| w.origin.clone()) else {
            // The requester is gone: nobody wants the answer.
            self.router.remove(mid);
            return;
        };
        let Some(p) = self.router.pending.get_mut(&mid) else {
            return;
        };
        p.server = Some(server);
        let payload = std::mem::take(&mut p.payload);
        self.router.parked_bytes -= payload.len();
        let Some(p) = self.router.pending.get(&mid) else {
            return;
        };
        let msg = MasterMsg::Request {
            id: mid,
            from,
            topic: p.topic.clone(),
            payload,
        };
        if !self.send(server, &msg) {
            let origin = self.workers.get(&server).map(|w| w.origin.clone());
            if let (Some(p), Some(server)) = (self.router.remove(mid), origin) {
                self.fail(p, ReplyError::Dropped { server });
            }
        }
    }

    /// Dispatches every parked request that now has a ready server.
    pub(super) fn dispatch_parked(&mut self) {
        let parked: Vec<u64> = self
            .router
            .pending
            .iter()
            .filter(|(_, p)| p.server.is_none())
            .map(|(id, _)| *id)
            .collect();
        for mid in parked {
            self.dispatch(mid);
        }
    }

    /// Answers a pending request's requester with an error.
    fn fail(&mut self, p: Pending, error: ReplyError) {
        self.router.stats.failed_requests += 1;
        let msg = MasterMsg::Reply {
            id: p.their_id,
            result: Err(error),
        };
        self.send(p.requester, &msg);
    }

    pub(super) fn on_reply(&mut self, serial: u64, mid: u64, result: Result<Vec<u8>, String>) {
        self.router.stats.received += 1;
        // A reply from anyone but the worker that has the request (a late
        // one after a timeout, or a confused worker) is ignored.
        if self.router.pending.get(&mid).and_then(|p| p.server) != Some(serial) {
            return;
        }
        let Some(p) = self.router.remove(mid) else {
            return;
        };
        let result = match result {
            Ok(payload) => Ok(payload),
            Err(message) => {
                self.router.stats.failed_requests += 1;
                let Some(server) = self.workers.get(&serial).map(|w| w.origin.clone()) else {
                    return;
                };
                Err(ReplyError::Failed { server, message })
            }
        };
        self.send(
            p.requester,
            &MasterMsg::Reply {
                id: p.their_id,
                result,
            },
        );
    }

    pub(super) fn on_call(&mut self, serial: u64, id: u64, service: Service) {
        self.router.stats.received += 1;
        let answer = match service {
            Service::Status => Answer::Status(Box::new(self.status())),
            Service::Workers => Answer::Workers(self.worker_infos()),
            Service::Logs { after, max } => Answer::Logs(self.log_lines(after, max)),
            _ => return,
        };
        self.send(serial, &MasterMsg::Answer { id, answer });
    }

    /// Counts a message handled outside this module (a registration).
    pub(super) fn count_received(&mut self) {
        self.router.stats.received += 1;
    }

    /// The IPC counters now.
    pub(super) fn router_stats(&self) -> IpcStats {
        let mut stats = self.router.stats;
        stats.pending_requests = self.router.pending.len() as u64;
        stats
    }

    /// The answer to [`Service::Logs`]: at most 1000 lines a call, so an
    /// answer stays far below the frame limit.
    fn log_lines(&self, after: u64, max: u32) -> LogLines {
        let Some(hub) = &self.opts.logs else {
            return LogLines {
                lines: Vec::new(),
                next: after,
                skipped: 0,
            };
        };
        let max = (max as usize).min(MAX_LOG_LINES);
        let (lines, next, skipped) = hub.since(after, max);
        let lines = lines
            .into_iter()
            .map(|(seq, l)| {
                let mut text = l.text;
                if text.len() > MAX_LOG_LINE {
                    let mut cut = MAX_LOG_LINE;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                }
                LogLine {
                    seq,
                    group: l.group.to_string(),
                    slot: l.slot.map(|s| s as u32),
                    level: l.level,
                    text,
                }
            })
            .collect();
        LogLines {
            lines,
            next,
            skipped,
        }
    }

    /// The answer to [`Service::Workers`], by group, slot and generation.
    fn worker_infos(&self) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .workers
            .values()
            .map(|w| WorkerInfo {
                group: self.groups[w.group].name.clone(),
                slot: w.slot as u32,
                generation: w.generation,
                pid: w.pid,
                phase: w.phase.name().to_string(),
                uptime_ms: w.started.elapsed().as_millis() as u64,
            })
            .collect();
        out.sort_by(|a, b| (&a.group, a.slot, a.generation).cmp(&(&b.group, b.slot, b.generation)));
        out
    }

    /// Forgets a worker that exited: its subscriptions, the topics it
    /// served, requests it asked, and fails the requests it had.
    pub(super) fn ipc_forget(&mut self, w: &WorkerProc, serial: u64) {
        for topic in &w.topics {
            if let Some(list) = self.router.subscribers.get_mut(topic) {
                list.retain(|s| *s != serial);
                if list.is_empty() {
                    self.router.subscribers.remove(topic);
                }
            }
        }
        for topic in &w.serves {
            let key = (w.origin.group.clone(), topic.clone());
            if let Some((list, next)) = self.router.servers.get_mut(&key) {
                list.retain(|s| *s != serial);
                *next = 0;
                if list.is_empty() {
                    self.router.servers.remove(&key);
                }
            }
        }
        let affected: Vec<u64> = self
            .router
            .pending
            .iter()
            .filter(|(_, p)| p.requester == serial || p.server == Some(serial))
            .map(|(id, _)| *id)
            .collect();
        for mid in affected {
            let Some(p) = self.router.remove(mid) else {
                continue;
            };
            if p.requester != serial {
                self.fail(
                    p,
                    ReplyError::ServerExited {
                        server: w.origin.clone(),
                    },
                );
            }
        }
        if w.ipc_dropped > 0 {
            tracing::warn!(
                group = %w.origin.group, slot = w.slot, pid = w.pid, dropped = w.ipc_dropped,
                "{} IPC messages for this worker were dropped (its queue was full)", w.ipc_dropped
            );
        }
    }

    /// Expires requests past their deadline, and watches full queues:
    /// notes recovery, kills a worker whose queue stayed full too long.
    pub(super) fn ipc_tick(&mut self, now: Instant) {
        while let Some(&(at, mid)) = self.router.deadlines.first() {
            if at > now {
                break;
            }
            let Some(p) = self.router.remove(mid) else {
                // Never out of step with `pending`; if it were, do not spin.
                self.router.deadlines.pop_first();
                continue;
            };
            let server = p
                .server
                .and_then(|s| self.workers.get(&s))
                .map(|w| w.origin.clone());
            self.fail(p, ReplyError::Timeout { server });
        }
        let stall = self.router.stall_timeout;
        let mut stalled = Vec::new();
        for (&serial, w) in &mut self.workers {
            let Some(since) = w.queue_full_since else {
                continue;
            };
            if w.frames.capacity() > 0 {
                w.queue_full_since = None;
                tracing::warn!(
                    group = %w.origin.group, slot = w.slot, pid = w.pid, dropped = w.ipc_dropped,
                    "worker's IPC queue drains again; {} messages dropped so far", w.ipc_dropped
                );
            } else if now >= since + stall && w.killed_for.is_none() {
                stalled.push(serial);
            }
        }
        for serial in stalled {
            let why = format!(
                "stalled: its IPC queue stayed full for {} ms (server.ipc_stall_timeout)",
                stall.as_millis()
            );
            self.kill(serial, why);
        }
    }
}

/// The worker's identity as other workers see it.
pub(super) fn origin(group: &str, slot: usize, pid: u32) -> Origin {
    Origin {
        group: group.to_string(),
        slot: slot as u32,
        pid,
    }
}
