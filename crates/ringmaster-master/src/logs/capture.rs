//! Capture: reading the pipes of workers and of the migrate process
//! (fd [`LOG_FD`] for `tracing`, stdout and stderr). A reader task per
//! pipe ([`read_pipe`]) cuts the stream at the last newline and pushes the
//! whole lines, with their [`Source`], into the hub; a line longer than
//! `server.log_max_line` is cut with a marker, and a last line without
//! newline (an abort) is kept. The hub never blocks a reader, so the pipes
//! are always drained.
//!
//! [`LOG_FD`]: ringmaster_proto::handoff::LOG_FD

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;

use super::hub::LogHub;
use super::tag::Source;

/// Reads one worker pipe until end-of-file, sending whole lines to `hub`.
/// The common case (no line too long) sends the bytes read as they are,
/// without copying them.
pub async fn read_pipe(
    mut pipe: tokio::net::unix::pipe::Receiver,
    source: Arc<Source>,
    hub: LogHub,
) {
    hub.readers.fetch_add(1, Ordering::Relaxed);
    read_lines(&mut pipe, &source, &hub).await;
    hub.readers.fetch_sub(1, Ordering::Relaxed);
}

async fn read_lines(
    pipe: &mut tokio::net::unix::pipe::Receiver,
    source: &Arc<Source>,
    hub: &LogHub,
) {
    let mut lines = LineCutter::new(hub.max_line);
    loop {
        lines.make_room();
        match pipe.read_buf(&mut lines.buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(out) = lines.take_whole() {
            hub.push(source, out);
        }
    }
    if let Some(out) = lines.take_rest() {
        hub.push(source, out);
    }
}

/// The bytes read from one pipe so far, handed out as whole lines of at
/// most `max` bytes each.
struct LineCutter {
    buf: Vec<u8>,
    max: usize,
    /// Skipping the rest of a line that was cut.
    skipping: bool,
}

impl LineCutter {
    fn new(max: usize) -> Self {
        LineCutter {
            buf: Vec::with_capacity(64 * 1024),
            max,
            skipping: false,
        }
    }

    /// Makes room in the buffer for the next read.
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
    }

    /// The whole lines read so far, to push, if any; a partial last line
    /// stays for the next read.
    fn take_whole(&mut self) -> Option<Vec<u8>> {
        let Some(last) = memchr::memrchr(b'\n', &self.buf) else {
            return self.cut_partial();
        };
        let whole = last + 1;
        if !self.skipping && longest_line(&self.buf[..whole]) <= self.max {
            // A few lines in a large buffer: hand over a copy of just
            // them, so that what is queued holds about its bytes (the
            // queue is bounded in bytes), and keep the buffer.
            if whole.saturating_mul(4) < self.buf.capacity() {
                let out = self.buf[..whole].to_vec();
                self.buf.drain(..whole);
                return Some(out);
            }
            // Hand over the whole lines, keep the partial one.
            let rest = self.buf[whole..].to_vec();
            self.buf.truncate(whole);
            return Some(std::mem::replace(&mut self.buf, rest));
        }
        let out = self.cut_lines(whole);
        (!out.is_empty()).then_some(out)
    }

    /// A line without its newline yet that is already too long: its
    /// start, cut, the first time; then its bytes are skipped up to the
    /// newline, so the buffer never holds more than one read of it.
    fn cut_partial(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() <= self.max {
            return None;
        }
        let mut out = None;
        if !self.skipping {
            let mut cut = Vec::new();
            push_line(&mut cut, &self.buf, self.max);
            out = Some(cut);
            self.skipping = true;
        }
        self.buf.clear();
        out
    }

    /// Takes the lines in the buffer's first `whole` bytes out of it, each
    /// cut to `max` bytes, without the end of a line already cut.
    fn cut_lines(&mut self, whole: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(whole);
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &self.buf[..whole]) {
            if self.skipping {
                self.skipping = false;
            } else {
                push_line(&mut out, &self.buf[start..nl], self.max);
            }
            start = nl + 1;
        }
        self.buf.drain(..whole);
        out
    }

    /// At end-of-file: a last line without its newline (an abort, a
    /// crash) is kept, unless it is the end of a line already cut.
    fn take_rest(&mut self) -> Option<Vec<u8>> {
        if self.buf.is_empty() || self.skipping {
            return None;
        }
        let mut out = Vec::new();
        push_line(&mut out, &self.buf, self.max);
        Some(out)
    }
}

/// The length of the longest line in `whole`, which ends with a newline.
fn longest_line(whole: &[u8]) -> usize {
    let mut longest = 0;
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', whole) {
        longest = longest.max(nl - start);
        start = nl + 1;
    }
    longest
}

/// Appends `line` (cut to `max` bytes with a marker) and a newline.
fn push_line(out: &mut Vec<u8>, line: &[u8], max: usize) {
    if line.len() <= max {
        out.extend_from_slice(line);
    } else {
        out.extend_from_slice(&line[..max]);
        out.extend_from_slice(format!(" [line cut: longer than {max} bytes]").as_bytes());
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let mut out = Vec::new();
        push_line(&mut out, &[b'a'; 300], 256);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(&"a".repeat(256)));
        assert!(s.ends_with(" [line cut: longer than 256 bytes]\n"), "{s}");
    }

    #[test]
    fn a_few_lines_go_out_as_a_small_copy_and_the_partial_one_stays() {
        let mut cut = LineCutter::new(16 * 1024);
        cut.buf.extend_from_slice(b"one\ntwo\npart");
        let out = cut.take_whole().unwrap();
        assert_eq!(out, b"one\ntwo\n");
        assert!(
            out.capacity() < 1024,
            "a copy sized to its lines, not the 64 KiB buffer"
        );
        assert_eq!(cut.buf, b"part");
        assert!(cut.buf.capacity() >= 64 * 1024, "the read buffer is kept");
        // A buffer mostly full of lines is handed over as it is.
        cut.buf.clear();
        let line = [b'x'; 99];
        while cut.buf.len() < 60 * 1024 {
            cut.buf.extend_from_slice(&line);
            cut.buf.push(b'\n');
        }
        let full = cut.take_whole().unwrap();
        assert!(full.capacity() >= 60 * 1024);
        assert!(cut.buf.is_empty());
    }
}
