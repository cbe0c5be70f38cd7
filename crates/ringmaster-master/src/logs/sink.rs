//! The sink thread: it takes the chunks the hub queued, tags each line
//! (tagging), writes it to the terminal or the file through a buffer,
//! hands the chunk to the hub's ring and followers, and flushes when the
//! queue is empty. When writing fails (disk full, directory gone) it drops
//! and counts lines until the file can be opened again (a reopen is tried
//! every second), and it writes the notes that say how many lines were
//! dropped, so that the notes always add up to the counter. Rotation and
//! reopening are in `rotate`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ringmaster_config::{LogFormat, ServerConfig};

use super::hub::{Block, LogHub};
use super::rotate::{open, today};
use super::tag::{Source, fast_parts, tag};

/// How often a failing sink retries, and the longest it waits idle.
const TICK: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(1);

/// Whole lines of one source, queued to the sink.
pub(super) struct Chunk {
    pub(super) source: Arc<Source>,
    pub(super) bytes: Vec<u8>,
}

/// What the sink receives.
pub(super) enum Msg {
    Lines(Chunk),
    /// Write out everything before this, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where lines go.
pub(super) enum Out {
    Stderr(io::Stderr),
    File {
        path: PathBuf,
        file: Option<BufWriter<File>>,
        size: u64,
        day: u64,
    },
}

impl Out {
    /// The terminal, or the file at `path`, opened now (its directory
    /// created) so that a path that cannot be written fails the start.
    pub(super) fn open(path: Option<&Path>) -> io::Result<Out> {
        Ok(match path {
            None => Out::Stderr(io::stderr()),
            Some(path) => {
                let file = open(path)?;
                let size = file.get_ref().metadata().map(|m| m.len()).unwrap_or(0);
                Out::File {
                    path: path.to_path_buf(),
                    file: Some(file),
                    size,
                    day: today(),
                }
            }
        })
    }
}

pub(super) struct Sink {
    rx: Receiver<Msg>,
    pub(super) out: Out,
    format: LogFormat,
    pub(super) max_size: u64,
    pub(super) daily: bool,
    pub(super) keep: usize,
    pub(super) gzip: bool,
    ring_len: usize,
    pub(super) hub: LogHub,
    pub(super) failing_since: Option<Instant>,
    /// Writing has failed since it last worked: once it works again, a
    /// note says how many lines were dropped (see `noted`).
    pub(super) in_outage: bool,
    /// The dropped-lines counter as far as notes in the log have said it:
    /// lines dropped beyond it get a note once the log is written again,
    /// so the notes always add up to the counter.
    noted: u64,
    /// Lines buffered since the last successful flush.
    pub(super) unflushed: u64,
    /// The gzip of the last rotated file, while it runs.
    pub(super) gzip_job: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    /// A sink writing to `out` what `rx` brings, as `cfg` says.
    pub(super) fn new(rx: Receiver<Msg>, out: Out, cfg: &ServerConfig, hub: LogHub) -> Sink {
        Sink {
            rx,
            out,
            format: cfg.log_format,
            max_size: cfg.log_max_size,
            daily: cfg.log_daily,
            keep: cfg.log_keep,
            gzip: cfg.log_gzip,
            ring_len: cfg.log_ring,
            hub,
            failing_since: None,
            in_outage: false,
            noted: 0,
            unflushed: 0,
            gzip_job: None,
        }
    }

    /// The sink thread's loop, until every hub handle is gone.
    pub(super) fn run(mut self) {
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
            self.hub.queued.fetch_sub(
                chunk.bytes.capacity() + super::hub::CHUNK_OVERHEAD,
                Ordering::Relaxed,
            );
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
            self.hub.lock_ring().push(block.clone(), self.ring_len);
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
    pub(super) fn fail(&mut self, e: io::Error, with_line: bool) {
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

    /// Once the file is open again after an outage, says how many lines
    /// are missing: everything not noted yet, the outage's lines and any
    /// the queue dropped before it.
    pub(super) fn note_outage(&mut self, master: &Arc<Source>) {
        let dropped = self.hub.stats.dropped.load(Ordering::Relaxed);
        let n = dropped.saturating_sub(self.noted);
        let note = format!("{n} log lines dropped while the log could not be written");
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
}
