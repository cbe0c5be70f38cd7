//! The worker's end of the IPC pool: [`Ipc`], reached from handlers as
//! `ctx.ipc()` and from [`Module::init`](crate::Module::init) as
//! `init.ipc()`.
//!
//! - **Topics**: [`Ipc::publish`] sends a serde value on a named topic to
//!   every subscribed worker of the cluster, of one group or of one slot
//!   ([`Target`]); [`Ipc::subscribe`] returns a [`Subscription`], a stream
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
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ringmaster_proto::{
    Answer, ClusterStatus, LogLines, MAX_FRAME_LEN, MasterMsg, Origin, ReplyError, Service, Target,
    WorkerInfo, WorkerMsg,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::topic::{RequestError, RequestTopic, Topic};

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

/// An IPC operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The channel to the master is closed: the worker is stopping.
    #[error("the IPC channel to the master is closed (this worker is stopping)")]
    Closed,
    /// The app runs outside a cluster (an app test): there is no master.
    #[error("this app runs outside a ringmaster cluster: there is no master to {0}")]
    Detached(&'static str),
    /// The value could not be encoded.
    #[error("cannot encode the message for topic {topic:?}: {error}")]
    Encode {
        /// The topic.
        topic: String,
        /// The encoder's message.
        error: String,
    },
    /// The reply could not be decoded as the expected type.
    #[error(
        "cannot decode the reply on topic {topic:?} as {expected}: {error}; do both sides use the same type?"
    )]
    Decode {
        /// The topic.
        topic: String,
        /// The type the caller expected.
        expected: &'static str,
        /// The decoder's message.
        error: String,
    },
    /// The message is larger than an IPC frame may be.
    #[error("the message for topic {topic:?} is {len} bytes; IPC messages are limited to {max} bytes: send a key and keep the data in a backend", max = MAX_FRAME_LEN - ENVELOPE)]
    TooLarge {
        /// The topic.
        topic: String,
        /// The encoded size.
        len: usize,
    },
    /// No reply within the timeout.
    #[error("request on topic {topic:?} to group {group:?} got no reply within {} ms: {}",
        timeout.as_millis(),
        match server {
            Some(s) => format!("worker {s} had it and did not answer in time"),
            None => format!("no ready worker of group {group:?} serves this topic (see Ipc::serve)"),
        })]
    Timeout {
        /// The group asked.
        group: String,
        /// The request topic.
        topic: String,
        /// The timeout the request had.
        timeout: Duration,
        /// The worker that had the request, if one did.
        server: Option<Origin>,
    },
    /// The serving worker's handler returned an error.
    #[error("worker {server} failed the request on topic {topic:?}: {message}")]
    Failed {
        /// The request topic.
        topic: String,
        /// The worker that answered.
        server: Origin,
        /// The handler's error message.
        message: String,
    },
    /// The master did not answer a question to its own services in time.
    #[error("the master did not answer within {} ms (it is overloaded or stopping)", waited.as_millis())]
    MasterTimeout {
        /// How long this worker waited.
        waited: Duration,
    },
    /// The master answered with a message of the wrong kind: a master and
    /// worker from different builds, or a bug.
    #[error(
        "the master answered with an unexpected message; are the master and this worker from the same build?"
    )]
    Confused,
    /// The master refused or lost the request.
    #[error("request on topic {topic:?} to group {group:?} failed: {reason}")]
    Refused {
        /// The group asked.
        group: String,
        /// The request topic.
        topic: String,
        /// Why, for the operator.
        reason: String,
    },
}

/// A message published on a topic, as one subscriber receives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<T> {
    /// The worker that published it.
    pub from: Origin,
    /// The message.
    pub msg: T,
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

    /// Publishes `msg` on `topic` to the subscribed workers in `to`, this
    /// worker included when it is in `to` and subscribed. Waits only for
    /// room in this worker's queue to the master.
    ///
    /// ```no_run
    /// # async fn f(ctx: ringmaster_worker::AppContext) -> Result<(), ringmaster_worker::IpcError> {
    /// use ringmaster_worker::{Target, Topic};
    /// const INVALIDATE: Topic<String> = Topic::new("links.invalidate");
    /// ctx.ipc().publish(Target::All, INVALIDATE, &"abc123".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish<T: Serialize>(
        &self,
        to: Target,
        topic: Topic<T>,
        msg: &T,
    ) -> Result<(), IpcError> {
        self.publish_raw(to, topic.name(), msg).await
    }

    /// [`publish`](Self::publish) on a topic known by name only.
    async fn publish_raw<T: Serialize + ?Sized>(
        &self,
        to: Target,
        topic: &str,
        msg: &T,
    ) -> Result<(), IpcError> {
        let payload = encode(topic, msg)?;
        if self.inner.outbox.is_none() {
            if to.includes(&self.inner.me.group, self.inner.me.slot) {
                self.deliver(topic, self.inner.me.clone(), payload).await;
            }
            return Ok(());
        }
        self.send(WorkerMsg::Publish {
            to,
            topic: topic.to_string(),
            payload,
        })
        .await
    }

    /// Receives what is published on `topic` from now on. Call it in
    /// [`Module::init`](crate::Module::init) so that every worker,
    /// replacements included, subscribes before it serves. Dropping the
    /// [`Subscription`] stops its deliveries.
    pub fn subscribe<T: DeserializeOwned>(&self, topic: Topic<T>) -> Subscription<T> {
        let topic = topic.name();
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        let first = {
            let mut subs = lock(&self.inner.subscribers);
            let list = subs.entry(topic.to_string()).or_default();
            list.push(Sub {
                tx,
                lagging: Arc::default(),
            });
            list.len() == 1
        };
        if first {
            self.push(WorkerMsg::Subscribe {
                topic: topic.to_string(),
            });
        }
        Subscription {
            rx,
            topic: topic.into(),
            ipc: self.clone(),
            _msg: PhantomData,
        }
    }

    /// Answers requests on `topic` sent to this worker's group: each runs
    /// `handler` on its own task. Its `Err` reaches the caller as
    /// [`RequestError::Handler`], typed. A later call for the same topic
    /// replaces the handler.
    pub fn serve<Req, Resp, E, F, Fut>(&self, topic: RequestTopic<Req, Resp, E>, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
        F: Fn(Req, Origin) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let topic = topic.name();
        let handler = Arc::new(handler);
        let name: Arc<str> = topic.into();
        let boxed: Handler = Arc::new(move |payload: Vec<u8>, from: Origin| {
            let handler = handler.clone();
            let name = name.clone();
            Box::pin(async move {
                let req: Req = postcard::from_bytes(&payload).map_err(|e| {
                    format!(
                        "cannot decode the request on topic {name:?} as {}: {e}",
                        std::any::type_name::<Req>()
                    )
                })?;
                // The handler's own error travels in the reply, typed.
                let resp: Result<Resp, E> = handler(req, from).await;
                postcard::to_stdvec(&resp).map_err(|e| format!("cannot encode the reply: {e}"))
            })
        });
        let first = lock(&self.inner.handlers)
            .insert(topic.to_string(), boxed)
            .is_none();
        if first {
            self.push(WorkerMsg::Serve {
                topic: topic.to_string(),
            });
        }
    }

    /// Asks one ready worker of `group` that serves `topic`, and waits for
    /// its reply up to `timeout`.
    ///
    /// ```no_run
    /// # async fn f(ctx: ringmaster_worker::AppContext) -> Result<(), ringmaster_worker::RequestError<String>> {
    /// use ringmaster_worker::RequestTopic;
    /// const STATS: RequestTopic<(), u64> = RequestTopic::new("api.stats");
    /// let links: u64 = ctx.ipc().request("api", STATS, &(), std::time::Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request<Req, Resp, E>(
        &self,
        group: &str,
        topic: RequestTopic<Req, Resp, E>,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        match self
            .request_raw::<Req, Result<Resp, E>>(group, topic.name(), req, timeout)
            .await?
        {
            Ok(resp) => Ok(resp),
            Err(e) => Err(RequestError::Handler(e)),
        }
    }

    /// [`request`](Self::request) by topic name; the reply decodes as `Resp`.
    async fn request_raw<Req, Resp>(
        &self,
        group: &str,
        topic: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, IpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        if self.inner.outbox.is_none() {
            return Err(IpcError::Detached("send requests to"));
        }
        let payload = encode(topic, req)?;
        let (id, rx) = self.wait_slot();
        let msg = WorkerMsg::Request {
            id,
            group: group.to_string(),
            topic: topic.to_string(),
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            payload,
        };
        let timeout_error = |server| IpcError::Timeout {
            group: group.to_string(),
            topic: topic.to_string(),
            timeout,
            server,
        };
        // The master answers at the deadline; waiting a little longer
        // covers a master that is busy, without hanging forever.
        let result = match self
            .exchange(id, msg, rx, timeout.saturating_add(MASTER_GRACE))
            .await?
        {
            Some(Response::Reply(result)) => result,
            Some(_) => return Err(IpcError::Confused),
            // The master answers every request at its deadline; nothing
            // came a second later: the answer was lost on the way.
            None => {
                return Err(IpcError::Refused {
                    group: group.to_string(),
                    topic: topic.to_string(),
                    reason: format!(
                        "no answer from the master within {} ms: it was lost (this worker's IPC queue in the master was full, or the reply was too large for a frame)",
                        timeout.saturating_add(MASTER_GRACE).as_millis()
                    ),
                });
            }
        };
        let refused = |reason: String| IpcError::Refused {
            group: group.to_string(),
            topic: topic.to_string(),
            reason,
        };
        match result {
            Ok(bytes) => postcard::from_bytes(&bytes).map_err(|e| IpcError::Decode {
                topic: topic.to_string(),
                expected: std::any::type_name::<Resp>(),
                error: e.to_string(),
            }),
            Err(ReplyError::Timeout { server }) => Err(timeout_error(server)),
            Err(ReplyError::Failed { server, message }) => Err(IpcError::Failed {
                topic: topic.to_string(),
                server,
                message,
            }),
            Err(ReplyError::ServerExited { server }) => {
                Err(refused(format!("worker {server} exited before it replied")))
            }
            Err(ReplyError::Dropped { server }) => Err(refused(format!(
                "worker {server}'s IPC queue is full (it is stalled or flooded)"
            ))),
            Err(ReplyError::Overloaded { limit }) => Err(refused(format!(
                "{limit} requests are already pending in the master (server.ipc_max_pending)"
            ))),
            Err(other) => Err(refused(format!("{other:?}"))),
        }
    }

    /// The cluster's status, from the master.
    pub async fn status(&self) -> Result<ClusterStatus, IpcError> {
        match self.call(Service::Status).await? {
            Answer::Status(status) => Ok(status),
            _ => Err(IpcError::Confused),
        }
    }

    /// Lines of the master's log after sequence number `after` (0: from
    /// the oldest it keeps), at most `max` (and at most 1000), from the
    /// master's ring of recent lines (`server.log_ring`).
    pub async fn logs(&self, after: u64, max: u32) -> Result<LogLines, IpcError> {
        match self.call(Service::Logs { after, max }).await? {
            Answer::Logs(lines) => Ok(lines),
            _ => Err(IpcError::Confused),
        }
    }

    /// Every worker process of the cluster, from the master.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, IpcError> {
        match self.call(Service::Workers).await? {
            Answer::Workers(list) => Ok(list),
            _ => Err(IpcError::Confused),
        }
    }

    async fn call(&self, service: Service) -> Result<Answer, IpcError> {
        if self.inner.outbox.is_none() {
            return Err(IpcError::Detached("ask"));
        }
        let (id, rx) = self.wait_slot();
        let limit = MASTER_GRACE * 5;
        match self
            .exchange(id, WorkerMsg::Call { id, service }, rx, limit)
            .await?
        {
            Some(Response::Answer(answer)) => Ok(answer),
            Some(_) => Err(IpcError::Confused),
            None => Err(IpcError::MasterTimeout { waited: limit }),
        }
    }

    /// Registers a series with the master; its index in the segment.
    pub(crate) async fn register(
        &self,
        name: &str,
        help: &str,
        kind: ringmaster_proto::MetricKind,
        labels: Vec<(String, String)>,
        buckets: Vec<f64>,
    ) -> Result<u32, String> {
        if self.inner.outbox.is_none() {
            return Err(IpcError::Detached("register metrics with").to_string());
        }
        let (id, rx) = self.wait_slot();
        let msg = WorkerMsg::Register {
            id,
            name: name.to_string(),
            help: help.to_string(),
            kind,
            labels,
            buckets,
        };
        let limit = MASTER_GRACE * 5;
        match self.exchange(id, msg, rx, limit).await {
            Ok(Some(Response::Registered(result))) => result,
            Ok(Some(_)) => Err(IpcError::Confused.to_string()),
            Ok(None) => Err(IpcError::MasterTimeout { waited: limit }.to_string()),
            Err(e) => Err(e.to_string()),
        }
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

/// The messages published on one topic, decoded as `T`: use
/// [`recv`](Self::recv), or it as a `Stream`.
///
/// A message that does not decode as `T` is skipped and logged (with its
/// publisher), never returned half-read.
pub struct Subscription<T> {
    rx: mpsc::Receiver<RawDelivery>,
    topic: Arc<str>,
    ipc: Ipc,
    _msg: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next message; `None` once the worker's IPC has stopped.
    pub async fn recv(&mut self) -> Option<Delivery<T>> {
        std::future::poll_fn(|cx| self.poll_next_delivery(cx)).await
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn poll_next_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery<T>>> {
        loop {
            let Some((from, payload)) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            match postcard::from_bytes(&payload) {
                Ok(msg) => return Poll::Ready(Some(Delivery { from, msg })),
                Err(e) => {
                    self.ipc.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic = %self.topic,
                        from = %from,
                        error = %e,
                        "a message on this topic does not decode as {}; skipped",
                        std::any::type_name::<T>()
                    );
                }
            }
        }
    }
}

impl<T: DeserializeOwned> futures_core::Stream for Subscription<T> {
    type Item = Delivery<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is `Unpin`.
        self.get_mut().poll_next_delivery(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
