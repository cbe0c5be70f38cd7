//! The messages, one enum per direction, and the types they carry.
//!
//! Both enums are encoded with postcard: the variant is a varint index, so
//! new variants are only ever appended. The worker's first message is
//! [`WorkerMsg::Hello`] carrying [`PROTOCOL_VERSION`]; a master that speaks
//! another version stops that worker. `docs/ipc.md` is the byte-level
//! catalogue.
//!
//! Topic payloads are opaque bytes to the master: the Rust worker API
//! encodes them with postcard, a worker in another language may use any
//! encoding its peers agree on.

use serde::{Deserialize, Serialize};

use crate::status::{ClusterStatus, LogLines};

/// Version of the message catalogue. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 6;

/// A message from a worker to its master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerMsg {
    /// First message of every worker, sent as soon as its runtime starts.
    Hello {
        /// The worker's [`PROTOCOL_VERSION`].
        version: u16,
        /// The worker's process id, as the worker sees it.
        pid: u32,
    },
    /// The worker serves on its listener; the timings of its boot phases.
    Ready {
        /// Each boot phase in the order it ran, with its duration.
        phases: Vec<BootPhase>,
    },
    /// The worker's runtime is alive; sent every heartbeat interval.
    Heartbeat,
    /// The worker cannot go on; it exits right after this message.
    Fatal {
        /// What failed and what to do about it, for the operator.
        reason: String,
    },
    /// Deliver messages published on `topic` to this worker from now on.
    /// Idempotent; a replacement worker subscribes again at its boot.
    Subscribe {
        /// The topic name.
        topic: String,
    },
    /// This worker answers requests on `topic` sent to its group.
    Serve {
        /// The request topic name.
        topic: String,
    },
    /// Publish `payload` on `topic` to the subscribed workers in `to`.
    Publish {
        /// Which workers may receive it.
        to: Target,
        /// The topic name.
        topic: String,
        /// The message, opaque to the master.
        payload: Vec<u8>,
    },
    /// Ask one worker of `group` serving `topic`; the master answers with
    /// [`MasterMsg::Reply`] carrying the same `id`, within `timeout_ms`.
    Request {
        /// Chosen by the worker, unique among its own pending requests.
        id: u64,
        /// The group whose workers serve the topic.
        group: String,
        /// The request topic name.
        topic: String,
        /// How long the worker waits for the reply, in milliseconds.
        timeout_ms: u64,
        /// The request, opaque to the master.
        payload: Vec<u8>,
    },
    /// The answer to a [`MasterMsg::Request`] this worker was given.
    Reply {
        /// The `id` of that [`MasterMsg::Request`].
        id: u64,
        /// The answer, or why the worker could not give one.
        result: Result<Vec<u8>, String>,
    },
    /// Ask the master itself; it answers with [`MasterMsg::Answer`].
    Call {
        /// Chosen by the worker, unique among its own pending requests.
        id: u64,
        /// What to ask.
        service: Service,
    },
    /// Register a series in the shared registry; the master answers with
    /// [`MasterMsg::Registered`]. The same name and labels always get the
    /// same index.
    Register {
        /// Chosen by the worker, unique among its own pending requests.
        id: u64,
        /// The metric name.
        name: String,
        /// Its one-line description.
        help: String,
        /// Its kind.
        kind: MetricKind,
        /// Its label names and values.
        labels: Vec<(String, String)>,
        /// A histogram's finite bucket bounds, ascending; empty otherwise.
        buckets: Vec<f64>,
    },
    /// This worker is past a recycling limit of its own (`max_requests`):
    /// the master starts its replacement, then drains it. Sent once.
    Recycle {
        /// Which limit, e.g. `max_requests`.
        reason: String,
    },
}

/// The kind of a registered metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted per bucket, with their sum.
    Histogram,
}

/// Which workers a publication may reach (each only if subscribed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Target {
    /// Every worker of every group, the publisher included.
    All,
    /// Every worker of the named group.
    Group(String),
    /// The worker serving one slot of one group.
    Slot {
        /// The group name.
        group: String,
        /// The slot number (0-based).
        slot: u32,
    },
}

impl Target {
    /// Whether a worker of `group` serving `slot` is among the receivers.
    pub fn includes(&self, group: &str, slot: u32) -> bool {
        match self {
            Target::All => true,
            Target::Group(g) => g == group,
            Target::Slot { group: g, slot: s } => g == group && *s == slot,
        }
    }
}

/// The worker a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Its group.
    pub group: String,
    /// Its slot.
    pub slot: u32,
    /// Its process id.
    pub pid: u32,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (pid {})", self.group, self.slot, self.pid)
    }
}

/// A question to the master's own services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Service {
    /// The cluster's status: groups and IPC counters ([`Answer::Status`]).
    Status,
    /// Every worker process ([`Answer::Workers`]).
    Workers,
    /// Lines of the master's log after sequence number `after`, at most
    /// `max` of them ([`Answer::Logs`]).
    Logs {
        /// The last sequence number already seen (0: none).
        after: u64,
        /// The most lines wanted.
        max: u32,
    },
}

/// The master's answer to a [`WorkerMsg::Call`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Answer {
    /// Answer to [`Service::Status`] (boxed: a status is far larger than
    /// the other answers, and it is asked for a few times a second at most).
    Status(Box<ClusterStatus>),
    /// Answer to [`Service::Workers`].
    Workers(Vec<WorkerInfo>),
    /// Answer to [`Service::Logs`].
    Logs(LogLines),
}

/// Counters of the IPC pool since the master started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcStats {
    /// Messages the master received from workers and handled.
    pub received: u64,
    /// Messages queued for workers (each delivery counts once).
    pub routed: u64,
    /// Messages dropped because a worker's queue was full.
    pub dropped: u64,
    /// Requests awaiting a reply now.
    pub pending_requests: u64,
    /// Requests answered with a timeout or another error by the master.
    pub failed_requests: u64,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its group.
    pub group: String,
    /// Its slot.
    pub slot: u32,
    /// How many workers the slot started before it.
    pub generation: u64,
    /// Its process id.
    pub pid: u32,
    /// `booting`, `ready` or `draining`.
    pub phase: String,
    /// Milliseconds since it was started.
    pub uptime_ms: u64,
}

/// Why the master answered a request with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplyError {
    /// No reply within the request's timeout. `server` is the worker the
    /// request went to, `None` when no worker of the group served the
    /// topic during the whole timeout.
    Timeout {
        /// The worker that had the request, if any.
        server: Option<Origin>,
    },
    /// The worker that had the request exited before replying.
    ServerExited {
        /// That worker.
        server: Origin,
    },
    /// The serving worker answered with an error.
    Failed {
        /// That worker.
        server: Origin,
        /// Its message.
        message: String,
    },
    /// Too many requests are pending in the master (`server.ipc_max_pending`).
    Overloaded {
        /// The limit.
        limit: u64,
    },
    /// The serving worker's queue was full; the request was dropped.
    Dropped {
        /// That worker.
        server: Origin,
    },
}

/// One phase of a worker's boot and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPhase {
    /// Which phase.
    pub step: BootStep,
    /// Duration of the phase in microseconds.
    pub micros: u64,
}

/// The phases of a worker's boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BootStep {
    /// Connecting to the master and saying hello.
    ConnectMaster,
    /// Reading the configuration the master handed over.
    LoadConfig,
    /// Opening every backend the modules need.
    ConnectBackends,
    /// Building the HTTP app and its middleware (modules' `init` included).
    BuildApp,
    /// Mounting every module's routes.
    MountControllers,
    /// The implementation's `configure`.
    Configure,
    /// Taking the listener and starting to serve.
    Listen,
}

impl BootStep {
    /// As the master's log shows it: `connect_backends`.
    pub fn name(self) -> &'static str {
        match self {
            BootStep::ConnectMaster => "connect_master",
            BootStep::LoadConfig => "load_config",
            BootStep::ConnectBackends => "connect_backends",
            BootStep::BuildApp => "build_app",
            BootStep::MountControllers => "mount_controllers",
            BootStep::Configure => "configure",
            BootStep::Listen => "listen",
        }
    }
}

/// A message from the master to one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MasterMsg {
    /// Stop accepting, finish in-flight requests within `grace_ms`, exit 0.
    Drain {
        /// The grace period in milliseconds; after it the worker exits anyway.
        grace_ms: u64,
    },
    /// A message published on a topic this worker subscribed to.
    Deliver {
        /// The topic name.
        topic: String,
        /// The publisher.
        from: Origin,
        /// The message as published.
        payload: Vec<u8>,
    },
    /// A request on a topic this worker serves; answer with
    /// [`WorkerMsg::Reply`] and the same `id`.
    Request {
        /// Chosen by the master.
        id: u64,
        /// The requesting worker.
        from: Origin,
        /// The request topic name.
        topic: String,
        /// The request as sent.
        payload: Vec<u8>,
    },
    /// The outcome of this worker's [`WorkerMsg::Request`] with `id`.
    Reply {
        /// The worker's own request id.
        id: u64,
        /// The serving worker's answer, or why there is none.
        result: Result<Vec<u8>, ReplyError>,
    },
    /// The master's answer to this worker's [`WorkerMsg::Call`] with `id`.
    Answer {
        /// The worker's own call id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// The outcome of this worker's [`WorkerMsg::Register`] with `id`: the
    /// series' index in the registry segment, or why it was refused.
    Registered {
        /// The worker's own id.
        id: u64,
        /// The index, or the reason.
        result: Result<u32, String>,
    },
    /// The cluster's status changed in a way a readiness probe must see
    /// at once (the master is stopping): a status the worker keeps (the
    /// `/readyz` cache) is stale.
    StatusChanged,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_frame;

    fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).unwrap();
        out
    }

    /// The byte examples in `docs/ipc.md`, exactly.
    #[test]
    fn documented_examples_are_exact() {
        assert_eq!(
            frame(&WorkerMsg::Hello {
                version: 3,
                pid: 300
            }),
            [0, 0, 0, 4, 0x00, 0x03, 0xac, 0x02]
        );
        assert_eq!(frame(&WorkerMsg::Heartbeat), [0, 0, 0, 1, 0x02]);
        assert_eq!(
            frame(&WorkerMsg::Subscribe { topic: "ab".into() }),
            [0, 0, 0, 4, 0x04, 0x02, b'a', b'b']
        );
        assert_eq!(
            frame(&WorkerMsg::Publish {
                to: Target::Slot {
                    group: "w".into(),
                    slot: 1
                },
                topic: "t".into(),
                payload: vec![0x07],
            }),
            [
                0, 0, 0, 9, 0x06, 0x02, 0x01, b'w', 0x01, 0x01, b't', 0x01, 0x07
            ]
        );
        assert_eq!(
            frame(&MasterMsg::Deliver {
                topic: "t".into(),
                from: Origin {
                    group: "w".into(),
                    slot: 0,
                    pid: 5
                },
                payload: vec![0x07],
            }),
            [
                0, 0, 0, 9, 0x01, 0x01, b't', 0x01, b'w', 0x00, 0x05, 0x01, 0x07
            ]
        );
        assert_eq!(
            frame(&MasterMsg::Reply {
                id: 3,
                result: Err(ReplyError::Timeout { server: None }),
            }),
            [0, 0, 0, 5, 0x03, 0x03, 0x01, 0x00, 0x00]
        );
        assert_eq!(
            frame(&WorkerMsg::Reply {
                id: 3,
                result: Ok(vec![0x2a]),
            }),
            [0, 0, 0, 5, 0x08, 0x03, 0x00, 0x01, 0x2a]
        );
    }
}
