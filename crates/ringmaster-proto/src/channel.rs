//! A typed, framed channel over a Unix stream socket.
//!
//! A [`Channel<S, R>`] sends `S` and receives `R`; the master holds a
//! `Channel<MasterMsg, WorkerMsg>` per worker, the worker the opposite.
//! [`Channel::split`] gives a [`Sender`] and a [`Receiver`] that can live in
//! different tasks.

use std::io;
use std::marker::PhantomData;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::frame::{FrameError, decode_frame, encode_frame};
use crate::{MasterMsg, WorkerMsg};

/// Receiving failed; the channel is unusable afterwards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The socket failed.
    #[error("reading the IPC socket failed: {0}")]
    Io(#[source] io::Error),
    /// The peer sent a bad frame (too large, or not a message).
    #[error("bad frame on the IPC socket: {0}")]
    Frame(#[source] FrameError),
    /// The peer closed the socket in the middle of a frame.
    #[error("the IPC socket closed in the middle of a frame ({0} bytes pending)")]
    Truncated(usize),
}

/// Sending failed; the channel is unusable afterwards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The socket failed (the peer is gone, typically).
    #[error("writing the IPC socket failed: {0}")]
    Io(#[source] io::Error),
    /// The message could not be framed.
    #[error("cannot frame the message: {0}")]
    Frame(#[source] FrameError),
}

/// The sending half of a channel.
#[derive(Debug)]
pub struct Sender<S> {
    io: OwnedWriteHalf,
    buf: Vec<u8>,
    _msg: PhantomData<fn(S)>,
}

/// The receiving half of a channel.
#[derive(Debug)]
pub struct Receiver<R> {
    io: OwnedReadHalf,
    // Bytes read but not yet decoded; keeping them here makes `recv`
    // cancel-safe, so it can sit in a `select!` beside other branches.
    buf: BytesMut,
    _msg: PhantomData<fn() -> R>,
}

/// A typed channel: sends `S`, receives `R`.
#[derive(Debug)]
pub struct Channel<S, R> {
    sender: Sender<S>,
    receiver: Receiver<R>,
}

impl<S: Serialize, R: DeserializeOwned> Channel<S, R> {
    /// Wraps a connected Unix stream socket.
    pub fn new(stream: UnixStream) -> Self {
        let (read, write) = stream.into_split();
        Channel {
            sender: Sender {
                io: write,
                buf: Vec::with_capacity(256),
                _msg: PhantomData,
            },
            receiver: Receiver {
                io: read,
                buf: BytesMut::with_capacity(4096),
                _msg: PhantomData,
            },
        }
    }

    /// Sends one message and flushes it.
    pub async fn send(&mut self, msg: &S) -> Result<(), SendError> {
        self.sender.send(msg).await
    }

    /// Receives the next message; `Ok(None)` when the peer closed cleanly.
    pub async fn recv(&mut self) -> Result<Option<R>, RecvError> {
        self.receiver.recv().await
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (Sender<S>, Receiver<R>) {
        (self.sender, self.receiver)
    }
}

impl<S: Serialize> Sender<S> {
    /// Sends one message. Not cancel-safe: a cancelled send may leave half a
    /// frame on the socket, so don't race it in a `select!`.
    pub async fn send(&mut self, msg: &S) -> Result<(), SendError> {
        self.queue(msg)?;
        self.flush().await
    }

    /// Encodes one message into the send buffer without writing it; a
    /// message too large to frame is refused and leaves the buffer as it
    /// was. [`flush`](Self::flush) writes everything queued in one go.
    pub fn queue(&mut self, msg: &S) -> Result<(), SendError> {
        encode_frame(msg, &mut self.buf).map_err(SendError::Frame)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes every queued message. Not cancel-safe (see [`send`](Self::send)).
    pub async fn flush(&mut self) -> Result<(), SendError> {
        let result = self.io.write_all(&self.buf).await.map_err(SendError::Io);
        self.buf.clear();
        result
    }

    /// Writes bytes that are already whole frames (from [`encode_frame`]),
    /// such as one message encoded once for many receivers. Bytes that are
    /// not whole frames break the channel: the peer closes it.
    pub async fn write_frames(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.io.write_all(bytes).await.map_err(SendError::Io)
    }
}

impl<R: DeserializeOwned> Receiver<R> {
    /// Receives the next message; `Ok(None)` when the peer closed cleanly.
    ///
    /// Cancel-safe: bytes already read stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Option<R>, RecvError> {
        loop {
            if let Some(msg) = decode_frame(&mut self.buf).map_err(RecvError::Frame)? {
                return Ok(Some(msg));
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(4096);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(RecvError::Io)?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RecvError::Truncated(self.buf.len()))
                };
            }
        }
    }
}

/// A connected pair: the master's end and the worker's end, for tests.
///
/// ```
/// # tokio_test_block_on(async {
/// use ringmaster_proto::{pair, MasterMsg, WorkerMsg};
/// let (mut master, mut worker) = pair().unwrap();
/// worker.send(&WorkerMsg::Heartbeat).await.unwrap();
/// assert_eq!(master.recv().await.unwrap(), Some(WorkerMsg::Heartbeat));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub fn pair() -> io::Result<(Channel<MasterMsg, WorkerMsg>, Channel<WorkerMsg, MasterMsg>)> {
    let (a, b) = UnixStream::pair()?;
    Ok((Channel::new(a), Channel::new(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_FRAME_LEN;

    #[tokio::test]
    async fn messages_cross_both_ways() {
        let (mut master, mut worker) = pair().unwrap();
        worker
            .send(&WorkerMsg::Hello {
                version: 1,
                pid: 42,
            })
            .await
            .unwrap();
        master
            .send(&MasterMsg::Drain { grace_ms: 10 })
            .await
            .unwrap();
        assert_eq!(
            master.recv().await.unwrap(),
            Some(WorkerMsg::Hello {
                version: 1,
                pid: 42
            })
        );
        assert_eq!(
            worker.recv().await.unwrap(),
            Some(MasterMsg::Drain { grace_ms: 10 })
        );
    }

    #[tokio::test]
    async fn clean_close_is_none_and_truncation_is_an_error() {
        let (mut master, worker) = pair().unwrap();
        drop(worker);
        assert!(master.recv().await.unwrap().is_none());

        let (mut master, worker) = pair().unwrap();
        let (mut tx, _rx) = worker.split();
        tx.write_frames(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(tx);
        drop(_rx);
        assert!(matches!(master.recv().await, Err(RecvError::Truncated(5))));
    }

    #[tokio::test]
    async fn garbage_and_oversized_frames_are_errors() {
        let (mut master, worker) = pair().unwrap();
        let (mut tx, _rx) = worker.split();
        tx.write_frames(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert!(matches!(master.recv().await, Err(RecvError::Frame(_))));

        let (mut master, worker) = pair().unwrap();
        let (mut tx, _rx) = worker.split();
        let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        tx.write_frames(&len).await.unwrap();
        assert!(matches!(
            master.recv().await,
            Err(RecvError::Frame(FrameError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn many_messages_in_one_read() {
        let (mut master, worker) = pair().unwrap();
        let (mut tx, _rx) = worker.split();
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            encode_frame(&WorkerMsg::Heartbeat, &mut bytes).unwrap();
        }
        tx.write_frames(&bytes).await.unwrap();
        for _ in 0..1000 {
            assert_eq!(master.recv().await.unwrap(), Some(WorkerMsg::Heartbeat));
        }
    }
}
