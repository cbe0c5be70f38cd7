//! The [`Worker`] trait: what a concrete worker implementation provides.

use std::sync::Arc;

use ringmaster_config::GroupConfig;

/// An error that stops a worker's boot. Its text is sent to the master,
/// which logs it and restarts the worker with backoff, so say what failed
/// and what to do.
pub type BootError = Box<dyn std::error::Error + Send + Sync>;

/// Who and where a worker is; handed to [`Worker::router`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerContext {
    /// The worker's group.
    pub group: Arc<str>,
    /// The worker's slot in its group (0-based).
    pub slot: usize,
    /// How many workers the slot started before this one.
    pub generation: u64,
    /// The worker's process id.
    pub pid: u32,
    /// The configuration of the worker's group.
    pub config: Arc<GroupConfig>,
}

/// A concrete worker implementation: the app one group of workers serves.
///
/// The generic worker knows about processes, fds and signals; an
/// implementation knows none of that. It names itself (groups select it
/// with `groups.NAME.worker`; a binary with one implementation needs no
/// such key) and builds its axum router.
///
/// ```
/// use ringmaster_worker::{BootError, Worker, WorkerContext};
/// use axum::{Router, routing::get};
///
/// struct Hello;
///
/// impl Worker for Hello {
///     fn name(&self) -> &str {
///         "hello"
///     }
///
///     fn router(&self, _ctx: &WorkerContext) -> Result<Router, BootError> {
///         Ok(Router::new().route("/", get(|| async { "Hello, World!" })))
///     }
/// }
/// ```
pub trait Worker: Send + Sync + 'static {
    /// The name groups use to select this implementation.
    fn name(&self) -> &str;

    /// Builds the HTTP app. Runs once per worker process, inside its
    /// runtime, before the worker reports ready.
    fn router(&self, ctx: &WorkerContext) -> Result<axum::Router, BootError>;
}
