//! The hub: the handle everyone holds on the log ([`LogHub`]). It starts
//! the sink thread, queues lines to it under the byte bound (dropping and
//! counting beyond it), keeps the ring of recent lines that `logs` and the
//! admin worker's tail read, fans new lines out to `logs --follow`
//! clients, and holds the counters. The pipe readers (capture) and the
//! master's own tracing ([`HubWriter`]) push into it; the sink drains it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SendError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringmaster_config::{LogFormat, ServerConfig};
use ringmaster_proto::LogLevel;
use tokio::sync::broadcast;

use super::sink::{Chunk, Msg, Out, Sink};
use super::tag::{Source, tag};

/// What a queued chunk costs besides its allocation (its entry, its
/// source handle), counted against `log_buffer` with the allocation's
/// capacity: the queue grows on demand (a bounded channel preallocated
/// 640 KiB for 16,384 chunks, a third of an idle master's own memory),
/// and the bound in bytes is a bound on what the queue holds, a flood of
/// tiny chunks included.
pub(super) const CHUNK_OVERHEAD: usize = 64;

/// One tagged line, as kept for `logs`.
#[derive(Debug, Clone)]
pub struct Line {
    /// The group, or `master`, or `migrate`.
    pub group: Arc<str>,
    /// The slot, for a worker.
    pub slot: Option<usize>,
    /// The level found in the line (`TRACE` .. `ERROR`), if any.
    pub level: Option<LogLevel>,
    /// The line as written, without its newline.
    pub text: String,
}

/// Counters of the log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines written to the sink.
    pub written: AtomicU64,
    /// Lines dropped (queue full or sink failing).
    pub dropped: AtomicU64,
}

/// Whole lines of one source as written, kept for `logs` and sent to
/// followers; they are tagged (as [`Line`]s) only when someone reads them.
#[derive(Debug)]
pub struct Block {
    pub(super) source: Arc<Source>,
    pub(super) bytes: Vec<u8>,
    pub(super) lines: usize,
    pub(super) format: LogFormat,
}

impl Block {
    /// The block's lines, tagged as in the log.
    pub fn lines(&self) -> impl Iterator<Item = Line> + '_ {
        self.bytes
            .split(|b| *b == b'\n')
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                let (text, level) = tag(&String::from_utf8_lossy(raw), &self.source, self.format);
                Line {
                    group: self.source.group.clone(),
                    slot: self.source.slot,
                    level,
                    text,
                }
            })
    }
}

/// The recent blocks, each with the sequence number of its first line.
#[derive(Default)]
pub(super) struct Ring {
    blocks: VecDeque<(u64, Arc<Block>)>,
    /// Lines the blocks hold.
    lines: usize,
    /// The sequence number the next line gets (the first line is 1).
    next_seq: u64,
}

impl Ring {
    /// Keeps `block`, then lets the oldest blocks go while the others
    /// still hold `ring_len` lines.
    pub(super) fn push(&mut self, block: Arc<Block>, ring_len: usize) {
        let first = self.next_seq;
        self.next_seq += block.lines as u64;
        self.lines += block.lines;
        self.blocks.push_back((first, block));
        while self.blocks.len() > 1 && self.lines - self.blocks[0].1.lines >= ring_len {
            let old = self.blocks.pop_front().map_or(0, |(_, b)| b.lines);
            self.lines -= old;
        }
    }
}

/// The handle on the log: cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    tx: Sender<Msg>,
    /// Pipe readers still running.
    pub(super) readers: Arc<AtomicUsize>,
    pub(super) queued: Arc<AtomicUsize>,
    limit: usize,
    pub(super) stats: Arc<LogStats>,
    /// Recent blocks of lines, for `logs` and the admin worker's tail.
    ring: Arc<Mutex<Ring>>,
    pub(super) follow: broadcast::Sender<Arc<Block>>,
    pub(super) reopen: Arc<AtomicBool>,
    pub(super) max_line: usize,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub").finish_non_exhaustive()
    }
}

impl LogHub {
    /// Starts the sink thread. With a log file, it is opened (its
    /// directory created) now, so a path that cannot be written is an
    /// error at start, not a silent loss.
    pub fn start(cfg: &ServerConfig) -> io::Result<LogHub> {
        let out = Out::open(cfg.log_file.as_deref())?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Blocks of up to ~64 KiB: a follower that does not read holds at
        // most this many.
        let (follow, _) = broadcast::channel(256);
        let hub = LogHub {
            tx,
            readers: Arc::new(AtomicUsize::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
            limit: cfg.log_buffer,
            stats: Arc::new(LogStats::default()),
            ring: Arc::new(Mutex::new(Ring {
                next_seq: 1,
                ..Ring::default()
            })),
            follow,
            reopen: Arc::new(AtomicBool::new(false)),
            max_line: cfg.log_max_line,
        };
        let sink = Sink::new(rx, out, cfg, hub.clone());
        std::thread::Builder::new()
            .name("ringmaster-log".into())
            .spawn(move || sink.run())?;
        Ok(hub)
    }

    /// The counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Asks the sink to reopen the log file (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// The last `n` lines that pass `keep`, oldest first.
    pub fn tail(&self, n: usize, keep: impl Fn(&Line) -> bool) -> Vec<Line> {
        let blocks: Vec<Arc<Block>> = self
            .lock_ring()
            .blocks
            .iter()
            .map(|(_, b)| b.clone())
            .collect();
        let mut out = Vec::new();
        for block in blocks.iter().rev() {
            let mut lines: Vec<Line> = block.lines().filter(|l| keep(l)).collect();
            while let Some(l) = lines.pop() {
                if out.len() == n {
                    break;
                }
                out.push(l);
            }
            if out.len() == n {
                break;
            }
        }
        out.reverse();
        out
    }

    pub(super) fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lines after sequence number `after`, at most `max` (the
    /// newest), oldest first, each with its sequence number; the number to
    /// ask after next; and how many newer lines were left out (gone from
    /// the ring, or past `max`).
    pub fn since(&self, after: u64, max: usize) -> (Vec<(u64, Line)>, u64, u64) {
        let (blocks, next) = {
            let ring = self.lock_ring();
            let blocks: Vec<(u64, Arc<Block>)> = ring
                .blocks
                .iter()
                .filter(|(first, b)| first + b.lines as u64 > after + 1)
                .cloned()
                .collect();
            (blocks, ring.next_seq)
        };
        let newer = next.saturating_sub(after + 1);
        // Newest blocks first, and only as many lines as asked: a caller
        // far behind costs `max` lines, not the ring.
        let mut out: Vec<(u64, Line)> = Vec::new();
        for (first, block) in blocks.iter().rev() {
            if out.len() >= max {
                break;
            }
            let lines = block
                .lines()
                .enumerate()
                .map(|(i, l)| (first + i as u64, l));
            let mut fresh: Vec<(u64, Line)> = lines.filter(|(seq, _)| *seq > after).collect();
            let room = max - out.len();
            if fresh.len() > room {
                fresh.drain(..fresh.len() - room);
            }
            fresh.append(&mut out);
            out = fresh;
        }
        let skipped = newer.saturating_sub(out.len() as u64);
        (out, next.saturating_sub(1).max(after), skipped)
    }

    /// New blocks of lines from now on (a lagging follower skips some).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Block>> {
        self.follow.subscribe()
    }

    /// Queues whole lines (`bytes` ends with a newline) from `source`;
    /// drops and counts them if the sink is too far behind.
    pub fn push(&self, source: &Arc<Source>, bytes: Vec<u8>) {
        // What the chunk holds, not only its bytes: its allocation.
        let len = bytes.capacity() + CHUNK_OVERHEAD;
        let queued = self.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + len > self.limit {
            self.drop_lines(&bytes);
            return;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        let chunk = Chunk {
            source: source.clone(),
            bytes,
        };
        if let Err(SendError(msg)) = self.tx.send(Msg::Lines(chunk)) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            if let Msg::Lines(c) = msg {
                self.drop_lines(&c.bytes);
            }
        }
    }

    fn drop_lines(&self, bytes: &[u8]) {
        let n = memchr::memchr_iter(b'\n', bytes).count().max(1);
        self.stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Waits (up to `timeout`) until every worker pipe reached its end and
    /// every line queued so far is written: call it before the master
    /// exits, so the last lines (workers' exits, the stop) are not lost.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.readers.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.settled(deadline).await;
    }

    /// Waits (until `deadline`) until every line pushed so far is written
    /// and in the ring, so that [`tail`](Self::tail) sees it.
    pub async fn settled(&self, deadline: tokio::time::Instant) {
        let (tx, rx) = std::sync::mpsc::channel();
        // The queue is unbounded (bounded in bytes by `push`): the send
        // never blocks.
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return;
        }
        while rx.try_recv().is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A writer for the master's own events: each `write` is one event;
    /// it never blocks.
    pub fn writer(&self, source: Arc<Source>) -> HubWriter {
        HubWriter {
            hub: self.clone(),
            source,
            buf: Vec::new(),
        }
    }
}

/// The master's log writer: buffers one event, queues it when dropped.
pub struct HubWriter {
    hub: LogHub,
    source: Arc<Source>,
    buf: Vec<u8>,
}

impl Write for HubWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if !self.buf.ends_with(b"\n") {
            self.buf.push(b'\n');
        }
        self.hub.push(&self.source, std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn since_hands_out_each_line_once_with_its_sequence() {
        let dir = std::env::temp_dir().join(format!("rm-since-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ServerConfig::default();
        cfg.log_file = Some(dir.join("app.log"));
        cfg.log_ring = 5;
        let hub = LogHub::start(&cfg).unwrap();
        let src = Arc::new(Source::worker(
            "web",
            0,
            42,
            0,
            ringmaster_proto::LogStream::Log,
        ));
        hub.push(&src, b"one\ntwo\n".to_vec());
        hub.push(&src, b"three\n".to_vec());
        hub.drain(Duration::from_secs(5)).await;
        let (lines, next, skipped) = hub.since(0, 100);
        let seqs: Vec<u64> = lines.iter().map(|(s, _)| *s).collect();
        assert_eq!((seqs, next, skipped), (vec![1, 2, 3], 3, 0));
        assert!(lines[2].1.text.ends_with("three"));
        let (lines, next, _) = hub.since(2, 100);
        assert_eq!((lines.len(), next), (1, 3));
        assert_eq!(hub.since(3, 100).0.len(), 0, "nothing new");
        // Past the ring (5 lines) and past `max`: the newest are kept, the
        // rest counted.
        let many: String = (0..10).map(|i| format!("n{i}\n")).collect();
        hub.push(&src, many.into_bytes());
        hub.drain(Duration::from_secs(5)).await;
        let (lines, next, skipped) = hub.since(3, 2);
        assert_eq!(next, 13);
        assert_eq!(
            lines.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![12, 13]
        );
        assert_eq!(skipped, 8);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
