//! The batching frame writer both roles run: [`write_batches`].
//!
//! One task owns the sending half of an IPC socket; everyone else puts
//! items on its bounded `mpsc` queue. The master runs one per worker, on
//! a queue of frames it encoded already ([`Bytes`], often one message
//! encoded once for many workers); the worker runs one to the master, on
//! a queue of messages it frames as it takes them. Both used to have a
//! loop of their own; this is that loop, once.
//!
//! The writer waits for one item, then takes whatever else is queued,
//! without waiting, while the batch holds fewer than `max_batch` bytes
//! (so a batch passes the limit by at most its last frame), and writes
//! the batch with one `write_all`. Frames are copied into one reused
//! buffer: they are small (a heartbeat is five bytes), and a contiguous
//! write of a few dozen kilobytes costs less than a `writev` of hundreds
//! of tiny slices. A socket that does not take the batch blocks only
//! this task: the queue fills and its senders wait or drop, each by its
//! own policy.
//!
//! The loop ends with `Ok(())` when every sender of the queue is gone
//! and all it queued is written, and with the error of the first write
//! that fails (the peer is gone, typically): what was queued behind it is
//! dropped. The sending half is dropped either way, which on a Unix
//! stream socket shuts its writing direction down, so the peer sees the
//! end of the stream.

use std::future::Future;
use std::io;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::channel::{SendError, Sender};
use crate::frame::{FrameError, encode_frame};

/// An item of a writer's queue: it knows what it adds to a [`Batch`].
///
/// ```
/// use ringmaster_proto::{Batch, Outbound, WorkerMsg};
///
/// /// A worker's queue: messages, framed by the writer.
/// struct Msg(WorkerMsg);
///
/// impl Outbound for Msg {
///     fn add_to(self, batch: &mut Batch) {
///         // Too large to frame: dropped (a real writer logs it).
///         let _ = batch.encode(&self.0);
///     }
/// }
/// ```
pub trait Outbound {
    /// Adds this item to the batch about to be written: frames, or a
    /// wait for what is before it to be written.
    fn add_to(self, batch: &mut Batch);
}

/// Frames already encoded (with [`encode_frame`]), as the master queues
/// them: copied into the batch as they are.
impl Outbound for Bytes {
    fn add_to(self, batch: &mut Batch) {
        batch.push_frames(&self);
    }
}

/// The bytes [`write_batches`] writes next, and who waits for them.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    // Answered once `bytes` (and so everything queued before each wait)
    // is written; dropped unanswered if the write fails.
    written: Vec<oneshot::Sender<()>>,
}

impl Batch {
    /// Appends bytes that are already whole frames (from
    /// [`encode_frame`]). Bytes that are not whole frames break the
    /// channel: the peer closes it.
    pub fn push_frames(&mut self, frames: &[u8]) {
        self.bytes.extend_from_slice(frames);
    }

    /// Encodes `msg` as one frame at the end of the batch; a message too
    /// large to frame, or that cannot be encoded, is refused and leaves
    /// the batch as it was.
    pub fn encode<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        encode_frame(msg, &mut self.bytes)
    }

    /// Answers `done` once this batch is written, that is once everything
    /// queued before the item that asked is on the socket. If the write
    /// fails `done` is dropped, and its receiver sees the error.
    pub fn when_written(&mut self, done: oneshot::Sender<()>) {
        self.written.push(done);
    }

    /// Bytes in the batch so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the batch holds no bytes (it may still hold waits).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The sending half [`write_batches`] writes to: any [`AsyncWrite`], or
/// a channel's [`Sender`] (which the roles hold, its reading half being
/// the other task's).
pub trait FrameSink {
    /// Writes all of `bytes`. Not cancel-safe: a cancelled write may
    /// leave half a frame on the socket.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}

impl<W: AsyncWrite + Unpin + Send> FrameSink for W {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, bytes).await
    }
}

impl<S: Serialize> FrameSink for Sender<S> {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.write_frames(bytes).await {
            Ok(()) => Ok(()),
            Err(SendError::Io(e)) => Err(e),
            // Writing bytes frames nothing; should that ever change, the
            // channel is unusable all the same.
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Writes the items of `rx` to `out` in batches of about `max_batch`
/// bytes, until the queue closes (`Ok`) or a write fails (its error).
///
/// Each batch is one item waited for, then every item already queued
/// while the batch is under `max_batch` bytes, written with one
/// `write_all`; waits ([`Batch::when_written`]) are answered after it.
/// `out` is dropped when this returns. Not cancel-safe (see
/// [`FrameSink::write_all`]): run it as a task of its own.
///
/// ```
/// # tokio_test_block_on(async {
/// use bytes::Bytes;
/// use ringmaster_proto::{WorkerMsg, encode_frame, pair, write_batches};
/// use tokio::sync::mpsc;
///
/// let (mut master, worker) = pair().unwrap();
/// let (tx, _rx) = worker.split();
/// let (frames, mut queue) = mpsc::channel::<Bytes>(16);
/// let mut frame = Vec::new();
/// encode_frame(&WorkerMsg::Heartbeat, &mut frame).unwrap();
/// frames.send(Bytes::from(frame)).await.unwrap();
/// drop(frames);
/// write_batches(&mut queue, tx, 64 * 1024).await.unwrap();
/// assert_eq!(master.recv().await.unwrap(), Some(WorkerMsg::Heartbeat));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn write_batches<T: Outbound>(
    rx: &mut mpsc::Receiver<T>,
    mut out: impl FrameSink,
    max_batch: usize,
) -> io::Result<()> {
    let mut batch = Batch {
        bytes: Vec::with_capacity(max_batch),
        written: Vec::new(),
    };
    while let Some(first) = rx.recv().await {
        first.add_to(&mut batch);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => item.add_to(&mut batch),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            out.write_all(&batch.bytes).await?;
            batch.bytes.clear();
        }
        for done in batch.written.drain(..) {
            let _ = done.send(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::frame::decode_frame;
    use crate::{WorkerMsg, pair};

    /// A test frame: its place in the queue and a body of some length.
    type Body = (u32, Vec<u8>);

    fn frame(i: u32, len: usize) -> Bytes {
        let mut out = Vec::new();
        encode_frame(&(i, vec![i as u8; len]), &mut out).unwrap();
        Bytes::from(out)
    }

    /// Decodes every frame of `bytes`, which must end on a frame's end.
    fn bodies(bytes: &[u8]) -> Vec<Body> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(body) = decode_frame::<Body>(&mut buf).unwrap() {
            out.push(body);
        }
        assert!(buf.is_empty(), "{} bytes of a cut frame", buf.len());
        out
    }

    /// Takes whatever is written at once, and remembers each write.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Frames, and waits for their writing, as a worker queues them.
    enum Item {
        Frame(Bytes),
        Flushed(oneshot::Sender<()>),
    }

    impl Outbound for Item {
        fn add_to(self, batch: &mut Batch) {
            match self {
                Item::Frame(f) => f.add_to(batch),
                Item::Flushed(done) => batch.when_written(done),
            }
        }
    }

    #[tokio::test]
    async fn frames_arrive_whole_and_in_order() {
        let (tx, mut rx) = mpsc::channel(4);
        let (near, mut far) = tokio::io::duplex(1000);
        // Sizes around and past the batch limit, through a small queue
        // and a small pipe: many batches, each write in several pieces.
        let sizes = [0, 1, 100, 3000, 5, 20_000, 7, 4096, 0, 1];
        let writer = tokio::spawn(async move { write_batches(&mut rx, near, 4096).await });
        let sender = tokio::spawn(async move {
            for (i, len) in sizes.iter().enumerate() {
                tx.send(frame(i as u32, *len)).await.unwrap();
            }
        });
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        sender.await.unwrap();
        writer.await.unwrap().unwrap();
        let want: Vec<Body> = sizes
            .iter()
            .enumerate()
            .map(|(i, len)| (i as u32, vec![i as u8; *len]))
            .collect();
        assert_eq!(bodies(&got), want);
    }

    #[tokio::test]
    async fn what_is_queued_goes_in_one_write_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(64);
        let one = frame(0, 96);
        let len = one.len();
        assert_eq!(len, 4 + 1 + 1 + 96, "index, length and body");
        for i in 0..10 {
            tx.send(frame(i, 96)).await.unwrap();
        }
        drop(tx);
        let mut out = Recorder::default();
        // Under the limit after two frames, at it after three: batches of
        // three frames, the last of one.
        write_batches(&mut rx, &mut out, 3 * len - 1).await.unwrap();
        let sizes: Vec<usize> = out.writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3 * len, 3 * len, 3 * len, len]);
        assert_eq!(bodies(&out.writes.concat()).len(), 10);

        // With room for all, everything queued is one write.
        let (tx, mut rx) = mpsc::channel(64);
        for i in 0..10 {
            tx.send(frame(i, 96)).await.unwrap();
        }
        drop(tx);
        let mut out = Recorder::default();
        write_batches(&mut rx, &mut out, 64 * 1024).await.unwrap();
        assert_eq!(out.writes.len(), 1);
        assert_eq!(bodies(&out.writes[0]).len(), 10);
    }

    #[tokio::test]
    async fn a_closed_queue_ends_the_loop_and_the_stream() {
        let (master, worker) = pair().unwrap();
        let (_master_tx, mut master_rx) = master.split();
        let (tx, _worker_rx) = worker.split();
        let (frames, mut queue) = mpsc::channel(8);
        for _ in 0..3 {
            let mut f = Vec::new();
            encode_frame(&WorkerMsg::Heartbeat, &mut f).unwrap();
            frames.send(Bytes::from(f)).await.unwrap();
        }
        drop(frames);
        write_batches(&mut queue, tx, 64 * 1024).await.unwrap();
        for _ in 0..3 {
            assert_eq!(master_rx.recv().await.unwrap(), Some(WorkerMsg::Heartbeat));
        }
        // The sending half went with the loop: the peer sees a clean end.
        assert!(master_rx.recv().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_peer_gone_is_an_error() {
        let (master, worker) = pair().unwrap();
        drop(master);
        let (tx, _rx) = worker.split();
        let (frames, mut queue) = mpsc::channel(8);
        frames.send(frame(0, 10)).await.unwrap();
        let err = write_batches(&mut queue, tx, 64 * 1024).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");

        let (near, far) = tokio::io::duplex(64);
        drop(far);
        let (frames, mut queue) = mpsc::channel(8);
        frames.send(frame(0, 10)).await.unwrap();
        let err = write_batches(&mut queue, near, 64 * 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    }

    #[tokio::test]
    async fn a_wait_is_answered_once_what_is_before_it_is_written() {
        let (tx, mut rx) = mpsc::channel(8);
        // A pipe that takes 16 bytes until the far end reads.
        let (near, mut far) = tokio::io::duplex(16);
        let (done, mut written) = oneshot::channel();
        tx.send(Item::Frame(frame(0, 100))).await.unwrap();
        tx.send(Item::Flushed(done)).await.unwrap();
        let writer = tokio::spawn(async move { write_batches(&mut rx, near, 64 * 1024).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(written.try_recv().is_err(), "answered before the write");
        let mut got = vec![0; frame(0, 100).len()];
        far.read_exact(&mut got).await.unwrap();
        written.await.unwrap();
        assert_eq!(bodies(&got), [(0, vec![0; 100])]);
        drop(tx);
        writer.await.unwrap().unwrap();

        // A write that fails drops the wait: its receiver sees an error.
        let (tx, mut rx) = mpsc::channel(8);
        let (near, far) = tokio::io::duplex(16);
        drop(far);
        let (done, written) = oneshot::channel();
        tx.send(Item::Frame(frame(0, 100))).await.unwrap();
        tx.send(Item::Flushed(done)).await.unwrap();
        assert!(write_batches(&mut rx, near, 64 * 1024).await.is_err());
        assert!(written.await.is_err());
    }
}
