//! Request topics: [`Ipc::serve`] answers a group's requests,
//! [`Ipc::request`] asks one worker of a group and waits for its reply.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ringmaster_proto::{Origin, ReplyError, WorkerMsg};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Handler, Ipc, IpcError, MASTER_GRACE, Response, encode, lock};
use crate::topic::{RequestError, RequestTopic};

impl Ipc {
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
        // The master answers at the deadline; waiting a little longer
        // covers a master that is busy, without hanging forever.
        let wait = timeout.saturating_add(MASTER_GRACE);
        match self.exchange(id, msg, rx, wait).await? {
            Some(Response::Reply(result)) => decode_reply(result, group, topic, timeout),
            Some(_) => Err(IpcError::Confused),
            // The master answers every request at its deadline; nothing
            // came a second later: the answer was lost on the way.
            None => Err(IpcError::Refused {
                group: group.to_string(),
                topic: topic.to_string(),
                reason: format!(
                    "no answer from the master within {} ms: it was lost (this worker's IPC queue in the master was full, or the reply was too large for a frame)",
                    wait.as_millis()
                ),
            }),
        }
    }
}

/// The reply to a request on `topic` to `group`, decoded as `Resp`, or
/// what went wrong, said for the caller.
fn decode_reply<Resp: DeserializeOwned>(
    result: Result<Vec<u8>, ReplyError>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Resp, IpcError> {
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
        Err(ReplyError::Timeout { server }) => Err(IpcError::Timeout {
            group: group.to_string(),
            topic: topic.to_string(),
            timeout,
            server,
        }),
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
