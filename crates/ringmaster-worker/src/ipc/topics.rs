//! Topics: [`Ipc::publish`], [`Ipc::subscribe`], and the
//! [`Subscription`] stream of [`Delivery`]s.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use ringmaster_proto::{Origin, Target, WorkerMsg};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{Ipc, IpcError, RawDelivery, SUBSCRIPTION_QUEUE, Sub, encode, lock};
use crate::topic::Topic;

/// A message published on a topic, as one subscriber receives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery<T> {
    /// The worker that published it.
    pub from: Origin,
    /// The message.
    pub msg: T,
}

impl Ipc {
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
    pub(super) async fn publish_raw<T: Serialize + ?Sized>(
        &self,
        to: Target,
        topic: &str,
        msg: &T,
    ) -> Result<(), IpcError> {
        let payload = encode(topic, msg)?;
        self.publish_encoded(to, topic, payload).await
    }

    /// Receives what is published on `topic` from now on. Call it in
    /// [`Module::init`](crate::Module::init) so that every worker,
    /// replacements included, subscribes before it serves. Dropping the
    /// [`Subscription`] stops its deliveries.
    pub fn subscribe<T: DeserializeOwned>(&self, topic: Topic<T>) -> Subscription<T> {
        let topic = topic.name();
        Subscription {
            rx: self.subscribe_channel(topic),
            topic: topic.into(),
            ipc: self.clone(),
            _msg: PhantomData,
        }
    }

    /// Receives what is published on the topic named `topic`, as the
    /// encoded bytes: for a bridge or a tool that forwards messages
    /// without knowing their type. Like [`subscribe`](Self::subscribe)
    /// otherwise.
    pub fn subscribe_bytes(&self, topic: &str) -> RawSubscription {
        RawSubscription {
            rx: self.subscribe_channel(topic),
            topic: topic.into(),
        }
    }

    /// [`publish`](Self::publish) of a message already encoded (as
    /// postcard, the way [`publish`](Self::publish) encodes it) on the
    /// topic named `topic`: what a bridge injects from elsewhere.
    pub async fn publish_bytes(
        &self,
        to: Target,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<(), IpcError> {
        if payload.len() + topic.len() > super::MAX_FRAME_LEN - super::ENVELOPE {
            return Err(IpcError::TooLarge {
                topic: topic.to_string(),
                len: payload.len() + topic.len(),
            });
        }
        self.publish_encoded(to, topic, payload).await
    }

    /// Sends a payload whose size is checked to the master, or, with no
    /// master (a test's IPC), delivers it here if `to` names this worker.
    async fn publish_encoded(
        &self,
        to: Target,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<(), IpcError> {
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

    /// Adds a subscriber to `topic`, telling the master on the first.
    fn subscribe_channel(&self, topic: &str) -> mpsc::Receiver<RawDelivery> {
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
        rx
    }
}

/// The messages published on one topic, still encoded: see
/// [`Ipc::subscribe_bytes`].
#[derive(Debug)]
pub struct RawSubscription {
    rx: mpsc::Receiver<RawDelivery>,
    topic: Arc<str>,
}

impl RawSubscription {
    /// The next message and its publisher; `None` once the worker's IPC
    /// has stopped.
    pub async fn recv(&mut self) -> Option<Delivery<Arc<[u8]>>> {
        let (from, msg) = self.rx.recv().await?;
        Some(Delivery { from, msg })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
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
