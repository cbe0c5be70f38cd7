//! The contract between a ringmaster master and its worker processes.
//!
//! This crate is a leaf: it knows nothing of processes, HTTP or backends, so
//! the wire format can be tested and fuzzed alone. It owns:
//!
//! - the **frame** format: a 4-byte big-endian length, then that many bytes of
//!   payload, never more than [`MAX_FRAME_LEN`];
//! - the **messages**, one versioned enum per direction: [`WorkerMsg`]
//!   (worker to master) and [`MasterMsg`] (master to worker), encoded with
//!   postcard;
//! - the typed [`Channel`] over a Unix stream socket, with [`pair`] for tests;
//! - the master's **lifecycle events**, [`Lifecycle`], as the control
//!   socket streams them;
//! - the **hand-over** contract of a re-executed worker: the fixed fd numbers
//!   and environment variables in [`handoff`].
//!
//! # Layout
//!
//! - `frame`: length-prefixed framing, cancel-safe reading.
//! - `message`: the message enums and [`PROTOCOL_VERSION`].
//! - `control`: [`ControlRequest`], the control socket's requests.
//! - `lifecycle`: [`Lifecycle`] and [`LifecycleRecord`].
//! - `log`: [`LogLevel`] and [`LogStream`], the application log's words.
//! - `status`: [`ClusterStatus`], what `status` shows, over IPC and as JSON.
//! - `channel`: [`Channel`], [`Sender`], [`Receiver`] and [`pair`].
//! - `writer`: [`write_batches`], the batching frame writer both roles run.
//! - [`handoff`]: fd numbers and environment variable names.
#![warn(missing_docs)]

mod channel;
mod control;
mod frame;
pub mod handoff;
mod lifecycle;
mod log;
mod message;
mod status;
mod writer;

#[doc(inline)]
pub use channel::{Channel, Receiver, RecvError, SendError, Sender, pair};
#[doc(inline)]
pub use control::{CONTROL_VERSION, ControlRequest};
#[doc(inline)]
pub use frame::{FrameError, MAX_FRAME_LEN, decode_frame, encode_frame};
#[doc(inline)]
pub use lifecycle::{Lifecycle, LifecycleRecord};
#[doc(inline)]
pub use log::{LogLevel, LogStream};
#[doc(inline)]
pub use message::{
    Answer, BootPhase, BootStep, IpcStats, MasterMsg, MetricKind, Origin, PROTOCOL_VERSION,
    ReplyError, Service, Target, WorkerInfo, WorkerMsg,
};
#[doc(inline)]
pub use status::{
    BridgeState, BridgeStatus, ClusterStatus, ExitInfo, GroupState, GroupStatus, LogLine, LogLines,
    ReloadProgress, WorkerStatus,
};
pub use writer::{Batch, FrameSink, Outbound, write_batches};
