//! The messages, one enum per direction.
//!
//! Both enums are encoded with postcard: the variant is a varint index, so
//! new variants are only ever appended. The worker's first message is
//! [`WorkerMsg::Hello`] carrying [`PROTOCOL_VERSION`]; a master that speaks
//! another version stops that worker.

use serde::{Deserialize, Serialize};

/// Version of the message catalogue. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// A message from a worker to its master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One phase of a worker's boot and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootPhase {
    /// Name of the phase, e.g. `"build_app"`.
    pub name: String,
    /// Duration of the phase in microseconds.
    pub micros: u64,
}

/// A message from the master to one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MasterMsg {
    /// Stop accepting, finish in-flight requests within `grace_ms`, exit 0.
    Drain {
        /// The grace period in milliseconds; after it the worker exits anyway.
        grace_ms: u64,
    },
}
