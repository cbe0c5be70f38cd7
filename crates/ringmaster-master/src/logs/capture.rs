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
    let max = hub.max_line;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Skipping the rest of a line that was cut.
    let mut skipping = false;
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(last) = memchr::memrchr(b'\n', &buf) else {
            if buf.len() > max {
                if !skipping {
                    let mut out = Vec::new();
                    push_line(&mut out, &buf, max);
                    hub.push(source, out);
                    skipping = true;
                }
                buf.clear();
            }
            continue;
        };
        let whole = last + 1;
        let mut longest = 0;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..whole]) {
            longest = longest.max(nl - start);
            start = nl + 1;
        }
        if !skipping && longest <= max {
            // Hand over the whole lines, keep the partial one.
            let rest = buf[whole..].to_vec();
            buf.truncate(whole);
            let out = std::mem::replace(&mut buf, rest);
            hub.push(source, out);
            continue;
        }
        let mut out = Vec::with_capacity(whole);
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..whole]) {
            if skipping {
                skipping = false;
            } else {
                push_line(&mut out, &buf[start..nl], max);
            }
            start = nl + 1;
        }
        buf.drain(..whole);
        if !out.is_empty() {
            hub.push(source, out);
        }
    }
    // A last line without its newline (an abort, a crash) is kept.
    if !buf.is_empty() && !skipping {
        let mut out = Vec::new();
        push_line(&mut out, &buf, max);
        hub.push(source, out);
    }
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
}
