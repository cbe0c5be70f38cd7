//! The worker's end of the IPC pool: [`Ipc`], reached from handlers as
//! `ctx.ipc()` and from [`Module::init`](crate::Module::init) as
//! `init.ipc()`.
//!
//! # Layout
//! - this file: the handle, its queue to the master, and what the reader
//!   does with the master's messages (deliveries, requests to answer,
//!   replies);
//! - `topics`: publish, subscribe, [`Subscription`];
//! - `requests`: serve and request on request topics;
//! - `master`: the master's services (status, logs, workers, metric
//!   registrations);
//! - `error`: [`IpcError`].
//!
//! - **Topics**: [`Ipc::publish`] sends a serde value on a named topic to
//!   every subscribed worker of the cluster, of one group or of one slot
//!   ([`Target`](crate::Target)); [`Ipc::subscribe`] returns a [`Subscription`], a stream
//!   of [`Delivery`]s. Subscribe in `init` and a replacement worker
//!   subscribes again by itself, before it reports ready.
//! - **Requests**: [`Ipc::serve`] answers a request topic for the worker's
//!   group; [`Ipc::request`] asks one worker of a group (the master picks
//!   one, round robin) and waits for the reply up to a timeout.
//! - **The master's services**: [`Ipc::status`] and [`Ipc::workers`].
//!
//! Values are encoded with postcard; publisher and subscribers must agree
//! on the type of a topic. Delivery is at most once, in order per
//! publisher and topic; a subscriber that falls behind loses messages
//! (counted by [`Ipc::dropped`]) rather than slowing anyone down. The
//! protocol is in `docs/ipc.md`.
//!
//! An app booted outside a cluster (tests calling [`boot`](crate::boot))
//! has a detached `Ipc`: publications reach the worker's own subscribers,
//! requests and the master's services fail with [`IpcError::Detached`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringmaster_proto::{Answer, MAX_FRAME_LEN, MasterMsg, Origin, ReplyError, WorkerMsg};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

mod error;
mod master;
mod requests;
mod topics;

pub use error::IpcError;
pub use topics::{Delivery, RawSubscription, Subscription};

/// How many deliveries wait for one subscription.
const SUBSCRIPTION_QUEUE: usize = 1024;
/// How long the worker's IPC reader waits for room in a full subscription
/// before it marks it lagging; a lagging subscription's deliveries are
/// dropped without waiting until it has room again.
const LAG_WAIT: Duration = Duration::from_millis(100);
/// How long past its own timeout a request waits for the master's verdict.
const MASTER_GRACE: Duration = Duration::from_secs(1);
/// Room left in a frame for the message around a payload.
const ENVELOPE: usize = 256;

/// What the worker's writer task sends to the master.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message, framed by the writer.
    Msg(WorkerMsg),
    /// Raw bytes, for tests of the master's handling of a broken worker.
    Raw(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

type RawDelivery = (Origin, Arc<[u8]>);

/// One subscription, as the reader sees it.
#[derive(Clone)]
struct Sub {
    tx: mpsc::Sender<RawDelivery>,
    lagging: Arc<std::sync::atomic::AtomicBool>,
}
type Handler = Arc<
    dyn Fn(Vec<u8>, Origin) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

/// What a pending request or call is waiting for.
enum Response {
    Reply(Result<Vec<u8>, ReplyError>),
    Answer(Answer),
    Registered(Result<u32, String>),
}

/// The worker's handle on the IPC pool; cheap to clone.
#[derive(Clone)]
pub struct Ipc {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when detached (no master).
    outbox: Option<mpsc::Sender<Outgoing>>,
    me: Origin,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    subscribers: Mutex<HashMap<String, Vec<Sub>>>,
    handlers: Mutex<HashMap<String, Handler>>,
    dropped: AtomicU64,
    /// Set by [`Ipc::stall_for_tests`]: the reader stops reading.
    stalled: std::sync::atomic::AtomicBool,
    /// Bumped by each [`MasterMsg::StatusChanged`]: a status cached
    /// under an older value is stale.
    status_epoch: AtomicU64,
}

impl std::fmt::Debug for Ipc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipc")
            .field("me", &self.inner.me)
            .field("attached", &self.inner.outbox.is_some())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, also when another thread panicked while holding it (the
/// maps stay consistent: every update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ipc {
    pub(crate) fn attached(outbox: mpsc::Sender<Outgoing>, me: Origin) -> Self {
        Self::new(Some(outbox), me)
    }

    /// An `Ipc` with no master: publications reach this worker's own
    /// subscribers, requests fail with [`IpcError::Detached`].
    pub fn detached(group: &str, slot: usize) -> Self {
        let me = Origin {
            group: group.to_string(),
            slot: slot as u32,
            pid: std::process::id(),
        };
        Self::new(None, me)
    }

    fn new(outbox: Option<mpsc::Sender<Outgoing>>, me: Origin) -> Self {
        Ipc {
            inner: Arc::new(Inner {
                outbox,
                me,
                next_id: AtomicU64::new(0),
                waiting: Mutex::new(HashMap::new()),
                subscribers: Mutex::new(HashMap::new()),
                handlers: Mutex::new(HashMap::new()),
                dropped: AtomicU64::new(0),
                stalled: std::sync::atomic::AtomicBool::new(false),
                status_epoch: AtomicU64::new(0),
            }),
        }
    }

    /// This worker, as the others see it.
    pub fn me(&self) -> &Origin {
        &self.inner.me
    }

    /// Deliveries this worker dropped because a subscription's queue was
    /// full (its reader fell behind).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Queues a subscription or a served topic for the master without
    /// waiting (`subscribe` and `serve` are not async); if the outbox is
    /// full, a task waits for room. That is bounded: each topic name sends
    /// this once per process (the first subscriber or server), and replies,
    /// the many, wait for room in their own task instead.
    fn push(&self, msg: WorkerMsg) {
        let Some(outbox) = &self.inner.outbox else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(Outgoing::Msg(msg))) =
            outbox.try_send(Outgoing::Msg(msg))
        {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let _ = outbox.send(Outgoing::Msg(msg)).await;
            });
        }
    }

    async fn send(&self, msg: WorkerMsg) -> Result<(), IpcError> {
        let outbox = self.inner.outbox.as_ref().ok_or(IpcError::Closed)?;
        outbox
            .send(Outgoing::Msg(msg))
            .await
            .map_err(|_| IpcError::Closed)
    }

    fn wait_slot(&self) -> (u64, oneshot::Receiver<Response>) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.waiting).insert(id, tx);
        (id, rx)
    }

    /// Sends `msg` and waits up to `limit` for the response to `id`
    /// (`None`: none came), forgetting `id` however this ends (also when
    /// the caller's future is dropped).
    async fn exchange(
        &self,
        id: u64,
        msg: WorkerMsg,
        rx: oneshot::Receiver<Response>,
        limit: Duration,
    ) -> Result<Option<Response>, IpcError> {
        struct Forget<'a>(&'a Ipc, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(&self.0.inner.waiting).remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        self.send(msg).await?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(response)) => Ok(Some(response)),
            Ok(Err(_)) => Err(IpcError::Closed),
            Err(_) => Ok(None),
        }
    }

    /// Handles a message from the master that belongs to the IPC pool;
    /// gives back any other. Waits only while a subscription is full (see
    /// [`LAG_WAIT`]).
    pub(crate) async fn on_master_msg(&self, msg: MasterMsg) -> Option<MasterMsg> {
        match msg {
            MasterMsg::Deliver {
                topic,
                from,
                payload,
            } => self.deliver(&topic, from, payload).await,
            MasterMsg::Request {
                id,
                from,
                topic,
                payload,
            } => self.answer(id, from, topic, payload),
            MasterMsg::Reply { id, result } => self.resolve(id, Response::Reply(result)),
            MasterMsg::Answer { id, answer } => self.resolve(id, Response::Answer(answer)),
            MasterMsg::Registered { id, result } => {
                self.resolve(id, Response::Registered(result));
            }
            MasterMsg::StatusChanged => {
                self.inner.status_epoch.fetch_add(1, Ordering::Relaxed);
            }
            other => return Some(other),
        }
        None
    }

    fn resolve(&self, id: u64, response: Response) {
        if let Some(tx) = lock(&self.inner.waiting).remove(&id) {
            let _ = tx.send(response);
        }
    }

    /// Hands a delivery to every subscription of `topic`. A full one is
    /// waited for up to [`LAG_WAIT`] (its reader is just behind); one that
    /// stays full is marked lagging and loses deliveries, counted, until
    /// it has room again, so a forgotten subscription never stalls the
    /// worker's IPC.
    async fn deliver(&self, topic: &str, from: Origin, payload: Vec<u8>) {
        let subs: Vec<Sub> = match lock(&self.inner.subscribers).get(topic) {
            Some(list) => list.clone(),
            None => return,
        };
        let payload: Arc<[u8]> = payload.into();
        let mut closed = false;
        for sub in &subs {
            let item = (from.clone(), payload.clone());
            match sub.tx.try_send(item) {
                Ok(()) => sub.lagging.store(false, Ordering::Relaxed),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    if !sub.lagging.load(Ordering::Relaxed) {
                        match tokio::time::timeout(LAG_WAIT, sub.tx.send(item)).await {
                            Ok(Ok(())) => continue,
                            Ok(Err(_)) => {
                                closed = true;
                                continue;
                            }
                            Err(_) => sub.lagging.store(true, Ordering::Relaxed),
                        }
                    }
                    if self.inner.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            topic,
                            "a subscription is not read: its deliveries are dropped (counted in Ipc::dropped)"
                        );
                    }
                }
                // The Subscription was dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed && let Some(list) = lock(&self.inner.subscribers).get_mut(topic) {
            list.retain(|s| !s.tx.is_closed());
        }
    }

    fn answer(&self, id: u64, from: Origin, topic: String, payload: Vec<u8>) {
        let handler = lock(&self.inner.handlers).get(&topic).cloned();
        let ipc = self.clone();
        tokio::spawn(async move {
            let result = match handler {
                Some(h) => h(payload, from).await,
                None => Err(format!("this worker does not serve topic {topic:?}")),
            };
            // Waits for room in the outbox: replies in flight are bounded
            // by the requests the master lets wait (server.ipc_max_pending).
            let _ = ipc.send(WorkerMsg::Reply { id, result }).await;
        });
    }

    /// Makes this worker stop reading its IPC socket after the next
    /// message, as a wedged worker would, while it keeps serving and
    /// heartbeating. Only for ringmaster's own tests of the master's
    /// backpressure.
    #[doc(hidden)]
    pub fn stall_for_tests(&self) {
        self.inner.stalled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_stalled_for_tests(&self) -> bool {
        self.inner.stalled.load(Ordering::Relaxed)
    }

    /// Writes raw bytes on the IPC socket, bypassing framing: the master
    /// must treat this worker as broken. Only for ringmaster's own tests.
    #[doc(hidden)]
    pub async fn send_raw_for_tests(&self, bytes: Vec<u8>) -> Result<(), IpcError> {
        let outbox = self.inner.outbox.as_ref().ok_or(IpcError::Closed)?;
        outbox
            .send(Outgoing::Raw(bytes))
            .await
            .map_err(|_| IpcError::Closed)
    }
}

/// Encodes a topic message, refusing one that cannot fit in a frame.
fn encode<T: Serialize + ?Sized>(topic: &str, msg: &T) -> Result<Vec<u8>, IpcError> {
    let payload = postcard::to_stdvec(msg).map_err(|e| IpcError::Encode {
        topic: topic.to_string(),
        error: e.to_string(),
    })?;
    let len = payload.len() + topic.len();
    if len > MAX_FRAME_LEN - ENVELOPE {
        return Err(IpcError::TooLarge {
            topic: topic.to_string(),
            len,
        });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{RequestTopic, Topic};
    use ringmaster_proto::Target;

    #[tokio::test]
    async fn detached_publish_reaches_own_subscribers_only_when_targeted() {
        let ipc = Ipc::detached("web", 1);
        let mut sub = ipc.subscribe(Topic::<String>::new("t"));
        ipc.publish(
            Target::Group("api".into()),
            Topic::new("t"),
            &"not me".to_string(),
        )
        .await
        .unwrap();
        ipc.publish(
            Target::Slot {
                group: "web".into(),
                slot: 1,
            },
            Topic::new("t"),
            &"me".to_string(),
        )
        .await
        .unwrap();
        let d = sub.recv().await.unwrap();
        assert_eq!(d.msg, "me");
        assert_eq!(d.from.group, "web");
    }

    #[tokio::test]
    async fn detached_requests_say_there_is_no_master() {
        let ipc = Ipc::detached("web", 0);
        let err = ipc
            .request(
                "api",
                RequestTopic::<u8, String>::new("x"),
                &1u8,
                Duration::from_millis(10),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("outside a ringmaster cluster"),
            "{err}"
        );
        assert!(matches!(ipc.status().await, Err(IpcError::Detached(_))));
    }

    #[tokio::test]
    async fn undecodable_deliveries_are_skipped_and_counted() {
        let ipc = Ipc::detached("web", 0);
        let mut sub = ipc.subscribe(Topic::<bool>::new("n"));
        // Postcard encodes a bool as one byte, 0 or 1: 7 is no bool.
        ipc.publish_raw(Target::All, "n", &7u8).await.unwrap();
        ipc.publish(Target::All, Topic::new("n"), &true)
            .await
            .unwrap();
        assert!(sub.recv().await.unwrap().msg);
        assert_eq!(ipc.dropped(), 1);
    }

    #[tokio::test]
    async fn a_full_subscription_drops_and_counts() {
        let ipc = Ipc::detached("web", 0);
        let mut sub = ipc.subscribe(Topic::<u32>::new("n"));
        for i in 0..(SUBSCRIPTION_QUEUE as u32 + 10) {
            ipc.publish(Target::All, Topic::new("n"), &i).await.unwrap();
        }
        assert_eq!(ipc.dropped(), 10);
        assert_eq!(sub.recv().await.unwrap().msg, 0);
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_before_sending() {
        let ipc = Ipc::detached("web", 0);
        let big = vec![0u8; MAX_FRAME_LEN];
        let err = ipc
            .publish(Target::All, Topic::new("big"), &big)
            .await
            .unwrap_err();
        assert!(matches!(err, IpcError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("limited to"), "{err}");
    }
}
