//! Typed names for the IPC pool: a [`Topic<T>`] carries messages of one
//! type, a [`RequestTopic<Req, Resp, E>`] requests of one type answered by
//! one reply type or one error type. Declared once as constants, they let
//! the compiler check that a publisher and its subscribers, or a caller
//! and the group that serves it, agree on the types.

use std::fmt;
use std::marker::PhantomData;

use crate::ipc::IpcError;

/// A topic whose messages are `T` (any serde type).
///
/// ```
/// use ringmaster_worker::Topic;
/// /// Codes deleted on any worker.
/// pub const INVALIDATE: Topic<String> = Topic::new("links.invalidate");
/// ```
pub struct Topic<T> {
    name: &'static str,
    _msg: PhantomData<fn(T) -> T>,
}

impl<T> Topic<T> {
    /// The topic `name` (dots by convention: `links.invalidate`).
    pub const fn new(name: &'static str) -> Self {
        Topic {
            name,
            _msg: PhantomData,
        }
    }

    /// Its name, as the master and `stats` show it.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Topic<T> {}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?}: {})", self.name, std::any::type_name::<T>())
    }
}

/// A request topic: requests are `Req`, a reply is `Resp` or, when the
/// serving handler fails, `E` (a `String` unless said otherwise).
///
/// ```
/// use ringmaster_worker::RequestTopic;
/// /// How many links the api group stores.
/// pub const STATS: RequestTopic<(), u64> = RequestTopic::new("api.stats");
/// ```
pub struct RequestTopic<Req, Resp, E = String> {
    name: &'static str,
    _types: PhantomData<fn(Req) -> Result<Resp, E>>,
}

impl<Req, Resp, E> RequestTopic<Req, Resp, E> {
    /// The request topic `name`.
    pub const fn new(name: &'static str) -> Self {
        RequestTopic {
            name,
            _types: PhantomData,
        }
    }

    /// Its name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<Req, Resp, E> Clone for RequestTopic<Req, Resp, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp, E> Copy for RequestTopic<Req, Resp, E> {}

impl<Req, Resp, E> fmt::Debug for RequestTopic<Req, Resp, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestTopic({:?})", self.name)
    }
}

/// Why a request on a [`RequestTopic`] got no reply: the pool failed it
/// ([`IpcError`]: no server, timeout, ...), or the serving handler
/// answered its error type.
#[derive(Debug)]
pub enum RequestError<E> {
    /// The IPC pool failed the request.
    Ipc(IpcError),
    /// The serving handler returned this error.
    Handler(E),
}

impl<E: fmt::Display> fmt::Display for RequestError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Ipc(e) => e.fmt(f),
            RequestError::Handler(e) => write!(f, "the serving worker answered an error: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RequestError<E> {}

impl<E> From<IpcError> for RequestError<E> {
    fn from(e: IpcError) -> Self {
        RequestError::Ipc(e)
    }
}
