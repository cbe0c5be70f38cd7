//! [`IpcError`]: what an IPC operation that failed says, and what to do.

use std::time::Duration;

use ringmaster_proto::{MAX_FRAME_LEN, Origin};

use super::ENVELOPE;

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
