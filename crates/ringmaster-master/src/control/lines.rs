//! Reading request lines: bounded, cancel-safe, and the fuzz entry point
//! that runs the reader and the parser on arbitrary bytes.

use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::OwnedReadHalf;

use super::MAX_LINE;
use super::request::{self, LogFilter, Request, is_final};

/// Why a request line could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    TooLong,
    Io,
}

/// Reads lines of at most [`MAX_LINE`] bytes; cancel-safe (what was read
/// stays in the buffer).
pub(super) struct LineReader<R = OwnedReadHalf> {
    read: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(read: R) -> Self {
        LineReader {
            read,
            buf: Vec::with_capacity(512),
        }
    }

    /// The next line without its newline; `None` at end-of-file.
    pub(super) async fn next(&mut self) -> Result<Option<String>, ReadError> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                if nl > MAX_LINE {
                    return Err(ReadError::TooLong);
                }
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..nl]).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                return Ok(Some(text));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            let mut chunk = [0u8; 4096];
            match self.read.read(&mut chunk).await {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Err(ReadError::Io),
            }
        }
    }

    /// Reads and drops what the client still sends, for at most `limit`,
    /// so that closing does not reset the connection before the client
    /// has read the error line.
    pub(super) async fn discard(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            let mut chunk = [0u8; 16 * 1024];
            let mut total = 0usize;
            while let Ok(n) = self.read.read(&mut chunk).await {
                total += n;
                if n == 0 || total > 64 << 20 {
                    break;
                }
            }
        })
        .await;
    }
}

/// What the fuzz target `control_request` and its proptest version run:
/// `bytes` read in reads of `step` bytes by the connection's line reader,
/// each line parsed as a request (and a `logs` request's filter built), as
/// a connection does before it asks the supervisor anything. Panics if a
/// refused line's reply is not a final error line with a code and a
/// message, or if the reader takes more than [`MAX_LINE`] bytes for a line.
pub(crate) fn fuzz_request_lines(bytes: &[u8], step: usize) {
    let mut reader = LineReader::new(Chunks {
        rest: bytes,
        step: step.max(1),
    });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        // The reader never waits: `Chunks` is always ready.
        let polled = std::pin::pin!(reader.next()).poll(&mut cx);
        let std::task::Poll::Ready(next) = polled else {
            panic!("the line reader waited on a reader that is always ready");
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) | Err(ReadError::Io) => return,
            Err(ReadError::TooLong) => {
                assert!(
                    reader.buf.len() > MAX_LINE,
                    "refused a line of at most MAX_LINE bytes"
                );
                return;
            }
        };
        assert!(
            line.len() <= 3 * MAX_LINE,
            "lossy UTF-8 grows a line at most threefold"
        );
        let reply = match request::parse(&line) {
            Ok(Request::Logs {
                group, slot, level, ..
            }) => LogFilter::new(group, slot, level.as_deref()).err(),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = reply {
            assert!(is_final(&e), "{e}");
            assert!(e["error"]["code"].is_string(), "{e}");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{e}"
            );
        }
    }
}

/// A reader that hands out `step` bytes per read.
struct Chunks<'a> {
    rest: &'a [u8],
    step: usize,
}

impl tokio::io::AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.step.min(self.rest.len()).min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        std::task::Poll::Ready(Ok(()))
    }
}
