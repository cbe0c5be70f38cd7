//! The application log: every worker's output, the migrate process's and
//! the master's own events, tagged, bounded, and written by one sink thread.
//!
//! - **Capture.** Each worker gets three pipes: its `tracing` output (fd
//!   [`LOG_FD`], which the worker writes without ever blocking), and its
//!   stdout and stderr (panics, prints, C libraries). A reader task per
//!   pipe ([`read_pipe`]) cuts the stream at the last newline and sends the
//!   whole lines, with the worker's [`Source`], to the sink (the migrate
//!   process's stdout and stderr are read the same way); a line longer
//!   than `server.log_max_line` is cut with a marker, and a last line
//!   without newline (an abort) is kept.
//! - **Backpressure.** The queue to the sink is bounded in bytes
//!   (`server.log_buffer`); beyond it lines are dropped and counted, so the
//!   pipes are always drained and no worker blocks on the master.
//! - **The sink thread** tags each line (a prefix in text, fields in
//!   JSON), writes it to the terminal or the file, keeps the last lines in
//!   a ring for `logs`, and sends them to `logs --follow` clients. It
//!   rotates the file by size and/or daily, keeps `log_keep` files,
//!   gzips them if asked, reopens the file on SIGUSR1, and when writing
//!   fails (disk full, directory gone) it drops and counts lines, retries
//!   every second, and writes "N lines dropped" once it can again.
//!
//! [`LOG_FD`]: ringmaster_proto::handoff::LOG_FD

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ringmaster_config::{LogFormat, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// How often a failing sink retries, and the longest it waits idle.
const TICK: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(1);
/// Chunks queued to the sink at most (besides the byte bound).
const QUEUE_CHUNKS: usize = 16 * 1024;

/// Where a line comes from.
#[derive(Debug)]
pub struct Source {
    /// The group, or `master`, or `migrate`.
    pub group: Arc<str>,
    /// The slot (none for the master).
    pub slot: Option<usize>,
    /// The process id.
    pub pid: u32,
    /// The slot's generation.
    pub generation: u64,
    /// The stream: `log` (tracing), `stdout` or `stderr`.
    pub stream: &'static str,
    text_prefix: String,
    json_fields: String,
}

impl Source {
    /// A worker's stream.
    pub fn worker(
        group: &str,
        slot: usize,
        pid: u32,
        generation: u64,
        stream: &'static str,
    ) -> Self {
        Source {
            group: group.into(),
            slot: Some(slot),
            pid,
            generation,
            stream,
            text_prefix: format!("{group}/{slot} {pid} g{generation} | "),
            json_fields: format!(
                "\"group\":{},\"slot\":{slot},\"pid\":{pid},\"generation\":{generation}",
                json_string(group)
            ),
        }
    }

    /// A stream of the one-off migrate process: its lines are tagged
    /// `migrate PID | ` (group `migrate` in JSON), as the master's are.
    pub fn migrate(pid: u32, stream: &'static str) -> Self {
        Source {
            group: "migrate".into(),
            slot: None,
            pid,
            generation: 0,
            stream,
            text_prefix: format!("migrate {pid} | "),
            json_fields: format!("\"group\":\"migrate\",\"pid\":{pid}"),
        }
    }

    /// The master's own events.
    pub fn master(pid: u32) -> Self {
        Source {
            group: "master".into(),
            slot: None,
            pid,
            generation: 0,
            stream: "log",
            text_prefix: format!("master {pid} | "),
            json_fields: format!("\"group\":\"master\",\"pid\":{pid}"),
        }
    }
}

/// One tagged line, as kept for `logs`.
#[derive(Debug, Clone)]
pub struct Line {
    /// The group, or `master`, or `migrate`.
    pub group: Arc<str>,
    /// The slot, for a worker.
    pub slot: Option<usize>,
    /// The level found in the line (`TRACE` .. `ERROR`), if any.
    pub level: Option<&'static str>,
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

struct Chunk {
    source: Arc<Source>,
    bytes: Vec<u8>,
}

/// What the sink receives.
enum Msg {
    Lines(Chunk),
    /// Write out everything before this, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Whole lines of one source as written, kept for `logs` and sent to
/// followers; they are tagged (as [`Line`]s) only when someone reads them.
#[derive(Debug)]
pub struct Block {
    source: Arc<Source>,
    bytes: Vec<u8>,
    lines: usize,
    format: LogFormat,
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
struct Ring {
    blocks: VecDeque<(u64, Arc<Block>)>,
    /// Lines the blocks hold.
    lines: usize,
    /// The sequence number the next line gets (the first line is 1).
    next_seq: u64,
}

/// The handle on the log: cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    tx: SyncSender<Msg>,
    /// Pipe readers still running.
    readers: Arc<AtomicUsize>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    stats: Arc<LogStats>,
    /// Recent blocks of lines, for `logs` and the admin worker's tail.
    ring: Arc<Mutex<Ring>>,
    follow: broadcast::Sender<Arc<Block>>,
    reopen: Arc<AtomicBool>,
    max_line: usize,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub").finish_non_exhaustive()
    }
}

/// Where lines go.
enum Out {
    Stderr(io::Stderr),
    File {
        path: PathBuf,
        file: Option<BufWriter<File>>,
        size: u64,
        day: u64,
    },
}

impl LogHub {
    /// Starts the sink thread. With a log file, it is opened (its
    /// directory created) now, so a path that cannot be written is an
    /// error at start, not a silent loss.
    pub fn start(cfg: &ServerConfig) -> io::Result<LogHub> {
        let out = match &cfg.log_file {
            None => Out::Stderr(io::stderr()),
            Some(path) => {
                let file = open(path)?;
                let size = file.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
                Out::File {
                    path: path.clone(),
                    file: Some(file),
                    size,
                    day: today(),
                }
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CHUNKS);
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
        let sink = Sink {
            rx,
            out,
            format: cfg.log_format,
            max_size: cfg.log_max_size,
            daily: cfg.log_daily,
            keep: cfg.log_keep,
            gzip: cfg.log_gzip,
            ring_len: cfg.log_ring,
            hub: hub.clone(),
            failing_since: None,
            in_outage: false,
            noted: 0,
            unflushed: 0,
            gzip_job: None,
        };
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

    fn lock_ring(&self) -> std::sync::MutexGuard<'_, Ring> {
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
        let len = bytes.len();
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
        if let Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) =
            self.tx.try_send(Msg::Lines(chunk))
        {
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
        let (tx, rx) = std::sync::mpsc::channel();
        let mut flush = Msg::Flush(tx);
        // Never a blocking send on the runtime: the queue may be full.
        loop {
            match self.tx.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if tokio::time::Instant::now() < deadline => {
                    flush = m;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(_) => return,
            }
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

struct Sink {
    rx: Receiver<Msg>,
    out: Out,
    format: LogFormat,
    max_size: u64,
    daily: bool,
    keep: usize,
    gzip: bool,
    ring_len: usize,
    hub: LogHub,
    failing_since: Option<Instant>,
    /// Writing has failed since it last worked: once it works again, a
    /// note says how many lines were dropped (see `noted`).
    in_outage: bool,
    /// The dropped-lines counter as far as notes in the log have said it:
    /// lines dropped beyond it get a note once the log is written again,
    /// so the notes always add up to the counter.
    noted: u64,
    /// Lines buffered since the last successful flush.
    unflushed: u64,
    /// The gzip of the last rotated file, while it runs.
    gzip_job: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn run(mut self) {
        let master = Arc::new(Source::master(std::process::id()));
        loop {
            let chunk = match self.rx.recv_timeout(TICK) {
                Ok(Msg::Lines(c)) => Some(c),
                Ok(Msg::Flush(ack)) => {
                    self.flush();
                    let _ = ack.send(());
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            };
            if self.hub.reopen.swap(false, Ordering::Relaxed) {
                self.reopen(&master);
            }
            if self.failing_since.is_some_and(|t| t.elapsed() >= RETRY) {
                self.reopen(&master);
            }
            let Some(chunk) = chunk else {
                self.flush();
                continue;
            };
            self.hub
                .queued
                .fetch_sub(chunk.bytes.len(), Ordering::Relaxed);
            self.write_chunk(chunk);
            // Flush when the queue is empty: batches under load, prompt
            // lines when quiet.
            if self.hub.queued.load(Ordering::Relaxed) == 0 {
                self.flush();
                self.note_queue_drops(&master);
            }
        }
    }

    fn write_chunk(&mut self, chunk: Chunk) {
        let src = &chunk.source;
        let mut lines = 0;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &chunk.bytes) {
            let raw = &chunk.bytes[start..nl];
            start = nl + 1;
            if raw.is_empty() {
                continue;
            }
            lines += 1;
            match fast_parts(raw, src, self.format) {
                Some(parts) => self.write_line(&parts),
                None => {
                    let (tagged, _) = tag(&String::from_utf8_lossy(raw), src, self.format);
                    self.write_line(&[tagged.as_bytes()]);
                }
            }
        }
        let follow = self.hub.follow.receiver_count() > 0;
        if self.ring_len == 0 && !follow {
            return;
        }
        // The bytes move into the ring as they are: nothing is tagged
        // unless `logs` asks.
        let block = Arc::new(Block {
            source: chunk.source,
            bytes: chunk.bytes,
            lines,
            format: self.format,
        });
        if self.ring_len > 0 {
            let mut ring = self.hub.lock_ring();
            let first = ring.next_seq;
            ring.next_seq += block.lines as u64;
            ring.lines += block.lines;
            ring.blocks.push_back((first, block.clone()));
            while ring.blocks.len() > 1 && ring.lines - ring.blocks[0].1.lines >= self.ring_len {
                let old = ring.blocks.pop_front().map_or(0, |(_, b)| b.lines);
                ring.lines -= old;
            }
        }
        if follow {
            let _ = self.hub.follow.send(block);
        }
    }

    /// Writes one tagged line, given in parts (rotating first if it would
    /// not fit).
    fn write_line(&mut self, parts: &[&[u8]]) {
        if self.failing_since.is_some() {
            self.hub.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let len = parts.iter().map(|p| p.len() as u64).sum::<u64>() + 1;
        self.maybe_rotate(len);
        if self.failing_since.is_some() {
            // The rotation failed: this line is lost too.
            self.hub.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let write = |w: &mut dyn Write| -> io::Result<()> {
            for p in parts {
                w.write_all(p)?;
            }
            w.write_all(b"\n")
        };
        let result = match &mut self.out {
            Out::Stderr(e) => write(e),
            Out::File { file, size, .. } => match file {
                Some(f) => write(f).map(|()| *size += len),
                None => Err(io::Error::other("the log file is not open")),
            },
        };
        match result {
            Ok(()) => self.unflushed += 1,
            Err(e) => self.fail(e, true),
        }
    }

    /// Writing failed: the line at hand and those still buffered are lost
    /// (counted); lines are dropped until a reopen works.
    fn fail(&mut self, e: io::Error, with_line: bool) {
        if self.failing_since.is_none() {
            eprintln!(
                "ringmaster: cannot write the log ({e}); dropping lines and retrying every second"
            );
        }
        self.failing_since = Some(Instant::now());
        self.note_failure_start();
        let lost = std::mem::take(&mut self.unflushed) + u64::from(with_line);
        self.hub.stats.dropped.fetch_add(lost, Ordering::Relaxed);
        if let Out::File { file, .. } = &mut self.out {
            // What the buffer holds is lost with the failed write.
            *file = None;
        }
    }

    fn flush(&mut self) {
        let result = match &mut self.out {
            Out::Stderr(e) => e.flush(),
            Out::File { file: Some(f), .. } => f.flush(),
            Out::File { file: None, .. } => Ok(()),
        };
        match result {
            Ok(()) => {
                let n = std::mem::take(&mut self.unflushed);
                self.hub.stats.written.fetch_add(n, Ordering::Relaxed);
                if self.failing_since.is_none() {
                    // Written for real (the note too): the outage is over.
                    self.in_outage = false;
                }
            }
            Err(e) => self.fail(e, false),
        }
    }

    /// While the log is written, says how many lines the queue dropped
    /// (the sink could not keep up with `server.log_buffer`) since the
    /// last note, so that a reader of the log knows lines are missing.
    fn note_queue_drops(&mut self, master: &Arc<Source>) {
        if self.failing_since.is_some() || self.in_outage {
            return;
        }
        let dropped = self.hub.stats.dropped.load(Ordering::Relaxed);
        if dropped <= self.noted {
            return;
        }
        let n = dropped - self.noted;
        let note =
            format!("{n} log lines dropped: the log could not keep up (server.log_buffer is full)");
        if self.write_note(&note, master) {
            self.noted = dropped;
        }
    }

    /// Writes a note about dropped lines as one write of its own, after
    /// what is buffered: it is whole in the file when this returns true.
    /// Otherwise it is lost and counted (a cut one is trimmed at the next
    /// reopen), and the next note says its lines again.
    fn write_note(&mut self, note: &str, master: &Arc<Source>) -> bool {
        self.flush();
        if self.failing_since.is_some() {
            return false;
        }
        let (tagged, _) = tag(note, master, self.format);
        let mut line = tagged.into_bytes();
        line.push(b'\n');
        let result = match &mut self.out {
            Out::Stderr(e) => e.write_all(&line),
            Out::File {
                file: Some(f),
                size,
                ..
            } => f
                .get_mut()
                .write_all(&line)
                .map(|()| *size += line.len() as u64),
            Out::File { file: None, .. } => Err(io::Error::other("the log file is not open")),
        };
        match result {
            Ok(()) => {
                self.hub.stats.written.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.fail(e, true);
                false
            }
        }
    }

    /// Marks an outage: the next note, once writing works, covers it.
    fn note_failure_start(&mut self) {
        self.in_outage = true;
    }

    /// Opens the file at its path again (SIGUSR1, or a retry after a
    /// failure); then says how many lines were dropped meanwhile.
    fn reopen(&mut self, master: &Arc<Source>) {
        let Out::File {
            path, file, size, ..
        } = &mut self.out
        else {
            self.failing_since = None;
            return;
        };
        if let Some(f) = file {
            let n = std::mem::take(&mut self.unflushed);
            if f.flush().is_ok() {
                self.hub.stats.written.fetch_add(n, Ordering::Relaxed);
            } else {
                self.in_outage = true;
                self.hub.stats.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        match open(path) {
            Ok(f) => {
                if self.in_outage {
                    // A write cut by the failure may have left half a line.
                    trim_torn_tail(path);
                }
                *size = f.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
                *file = Some(f);
                self.failing_since = None;
                if self.in_outage {
                    // Everything not noted yet: the outage's lines, and any
                    // the queue dropped before it.
                    let dropped = self.hub.stats.dropped.load(Ordering::Relaxed);
                    let n = dropped.saturating_sub(self.noted);
                    let note = format!("{n} log lines dropped while the log could not be written");
                    if self.write_note(&note, master) {
                        self.noted = dropped;
                    }
                }
            }
            Err(e) => {
                if self.failing_since.is_none() {
                    eprintln!(
                        "ringmaster: cannot open the log file {} ({e}); dropping lines and retrying every second",
                        path.display()
                    );
                }
                self.failing_since = Some(Instant::now());
                self.in_outage = true;
                *file = None;
            }
        }
    }

    /// Rotates before a line of `len` bytes if the size or the day says so.
    fn maybe_rotate(&mut self, len: u64) {
        let Out::File {
            file, size, day, ..
        } = &mut self.out
        else {
            return;
        };
        let by_size = self.max_size > 0 && *size > 0 && *size + len > self.max_size;
        let by_day = self.daily && today() != *day;
        if !by_size && !by_day {
            return;
        }
        let flushed = file.as_mut().map(|f| f.flush());
        *file = None;
        match flushed {
            Some(Ok(())) => {
                let n = std::mem::take(&mut self.unflushed);
                self.hub.stats.written.fetch_add(n, Ordering::Relaxed);
            }
            Some(Err(e)) => {
                self.fail(e, false);
                return;
            }
            None => {}
        }
        let Out::File {
            path,
            file,
            size,
            day,
        } = &mut self.out
        else {
            return;
        };
        rotate(path, self.keep, self.gzip, &mut self.gzip_job);
        *day = today();
        match open(path) {
            Ok(f) => {
                *size = 0;
                *file = Some(f);
            }
            Err(e) => self.fail(e, false),
        }
    }
}

/// Shifts `path.1` .. `path.N` up by one (dropping the oldest), moves
/// `path` to `path.1`, and gzips it in the background if asked. One gzip
/// at a time: a rotation first waits for the previous one (`job`), so no
/// file is shifted while it is being compressed.
fn rotate(path: &Path, keep: usize, gzip: bool, job: &mut Option<std::thread::JoinHandle<()>>) {
    if let Some(previous) = job.take() {
        let _ = previous.join();
    }
    let name = |i: usize, gz: bool| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}{}", if gz { ".gz" } else { "" }));
        PathBuf::from(p)
    };
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    for gz in [false, true] {
        let _ = std::fs::remove_file(name(keep, gz));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(name(i, gz), name(i + 1, gz));
        }
    }
    let first = name(1, false);
    if std::fs::rename(path, &first).is_ok() && gzip {
        let gz = name(1, true);
        *job = Some(std::thread::spawn(move || {
            if let Err(e) = gzip_file(&first, &gz) {
                eprintln!("ringmaster: cannot gzip {}: {e}", first.display());
            }
        }));
    }
}

fn gzip_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = File::open(from)?;
    let tmp = to.with_extension("gz.tmp");
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::default());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?.sync_all()?;
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
}

fn open(path: &Path) -> io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(256 * 1024, f))
}

/// Days since the epoch (UTC).
fn today() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// Cuts a file back to its last whole line: a write that failed midway
/// (a full disk) may have left part of one, which the next line would
/// otherwise continue.
fn trim_torn_tail(path: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return;
    };
    let back = len.min(256 << 10);
    let mut tail = vec![0; back as usize];
    if back == 0 || f.seek(SeekFrom::Start(len - back)).is_err() || f.read_exact(&mut tail).is_err()
    {
        return;
    }
    if tail.last() == Some(&b'\n') {
        return;
    }
    let keep = match memchr::memrchr(b'\n', &tail) {
        Some(i) => len - back + i as u64 + 1,
        None if back == len => 0,
        None => return,
    };
    let _ = f.set_len(keep);
}

/// The levels, least severe first.
pub(crate) const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// The tagged line as slices of `raw` and `src`, when no copy is needed:
/// text (prefix, line) and JSON objects (fields spliced after `{`).
fn fast_parts<'a>(raw: &'a [u8], src: &'a Source, format: LogFormat) -> Option<[&'a [u8]; 4]> {
    match format {
        // A carriage return could hide the prefix on a terminal: such a
        // line takes the slow path, which escapes it.
        LogFormat::Text if memchr::memchr(b'\r', raw).is_none() => {
            Some([src.text_prefix.as_bytes(), raw, b"", b""])
        }
        LogFormat::Text => None,
        LogFormat::Json => {
            let t = raw.trim_ascii_end();
            if t.len() < 2
                || t[0] != b'{'
                || t[t.len() - 1] != b'}'
                || std::str::from_utf8(t).is_err()
            {
                return None;
            }
            // The master's fields go last: with a duplicate key, the last
            // one wins in JSON parsers, so a worker cannot pose as another.
            let body = t[..t.len() - 1].trim_ascii_end();
            let sep: &[u8] = if body.len() == 1 { b"" } else { b"," };
            Some([body, sep, src.json_fields.as_bytes(), b"}"])
        }
    }
}

/// Tags a line with its source; finds its level.
fn tag(text: &str, src: &Source, format: LogFormat) -> (String, Option<&'static str>) {
    match format {
        LogFormat::Json => {
            let t = text.trim_end();
            if t.starts_with('{') && t.ends_with('}') {
                let level = t.find("\"level\":\"").and_then(|i| {
                    let rest = &t[i + 9..];
                    LEVELS.iter().copied().find(|l| rest.starts_with(l))
                });
                let body = t[..t.len() - 1].trim_end();
                let sep = if body.len() == 1 { "" } else { "," };
                (format!("{body}{sep}{}}}", src.json_fields), level)
            } else {
                // Raw output (a panic, a print, a C library): wrapped.
                let level = if src.stream == "stderr" {
                    "WARN"
                } else {
                    "INFO"
                };
                let line = format!(
                    "{{{},\"level\":\"{level}\",\"stream\":\"{}\",\"fields\":{{\"message\":{}}}}}",
                    src.json_fields,
                    src.stream,
                    json_string(t)
                );
                (line, Some(level))
            }
        }
        LogFormat::Text => {
            let level = text
                .split_whitespace()
                .take(3)
                .find_map(|w| LEVELS.iter().copied().find(|l| *l == w));
            let mut out = String::with_capacity(src.text_prefix.len() + text.len());
            out.push_str(&src.text_prefix);
            out.push_str(&text.replace('\r', "\\r"));
            (out, level)
        }
    }
}

/// `s` as a JSON string literal (serde_json's escaping: a `&str` always
/// serializes).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_get_fields_and_raw_lines_are_wrapped() {
        let src = Source::worker("web", 1, 42, 3, "log");
        let (t, level) = tag(
            r#"{"level":"INFO","fields":{"message":"hi"}}"#,
            &src,
            LogFormat::Json,
        );
        assert_eq!(
            t,
            r#"{"level":"INFO","fields":{"message":"hi"},"group":"web","slot":1,"pid":42,"generation":3}"#
        );
        assert_eq!(level, Some("INFO"));
        let err = Source::worker("web", 1, 42, 3, "stderr");
        let (t, level) = tag("thread 'x' panicked at \"a\\b\"", &err, LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["fields"]["message"], "thread 'x' panicked at \"a\\b\"");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(level, Some("WARN"));
        let (t, level) = tag(
            "2026-01-01T00:00:00Z  WARN something",
            &src,
            LogFormat::Text,
        );
        assert_eq!(t, "web/1 42 g3 | 2026-01-01T00:00:00Z  WARN something");
        assert_eq!(level, Some("WARN"));
    }

    #[test]
    fn the_fast_path_writes_what_tag_gives() {
        let src = Source::worker("web", 2, 7, 1, "log");
        for (raw, format) in [
            ("2026-01-01T00:00:00Z  INFO hello", LogFormat::Text),
            (
                r#"{"level":"INFO","fields":{"message":"x"}}"#,
                LogFormat::Json,
            ),
            ("{}", LogFormat::Json),
        ] {
            let fast: Vec<u8> = fast_parts(raw.as_bytes(), &src, format).unwrap().concat();
            assert_eq!(String::from_utf8(fast).unwrap(), tag(raw, &src, format).0);
        }
        assert!(fast_parts(b"not json", &src, LogFormat::Json).is_none());
    }

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let mut out = Vec::new();
        push_line(&mut out, &[b'a'; 300], 256);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(&"a".repeat(256)));
        assert!(s.ends_with(" [line cut: longer than 256 bytes]\n"), "{s}");
    }

    #[test]
    fn rotated_files_are_gzipped_whole() {
        let dir = std::env::temp_dir().join(format!("rm-gzip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        let text = "a line\n".repeat(1000);
        std::fs::write(&path, &text).unwrap();
        let mut job = None;
        rotate(&path, 2, true, &mut job);
        let gz = dir.join("app.log.1.gz");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gz.exists() {
            assert!(Instant::now() < deadline, "no {}", gz.display());
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut back = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(File::open(&gz).unwrap()),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, text);
        assert!(!dir.join("app.log.1").exists(), "the plain copy is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("rm-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        for i in 0..5 {
            std::fs::write(&path, format!("{i}")).unwrap();
            rotate(&path, 3, false, &mut None);
        }
        let read = |n: usize| std::fs::read_to_string(dir.join(format!("app.log.{n}"))).unwrap();
        assert_eq!(
            (read(1), read(2), read(3)),
            ("4".into(), "3".into(), "2".into())
        );
        assert!(!dir.join("app.log.4").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn since_hands_out_each_line_once_with_its_sequence() {
        let dir = std::env::temp_dir().join(format!("rm-since-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ServerConfig::default();
        cfg.log_file = Some(dir.join("app.log"));
        cfg.log_ring = 5;
        let hub = LogHub::start(&cfg).unwrap();
        let src = Arc::new(Source::worker("web", 0, 42, 0, "log"));
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
