//! The log file on disk, for the sink: opening it, reopening it at its
//! path (SIGUSR1 after an external logrotate, or the sink's retry after a
//! failure, which trims a torn last line and has the sink note the lines
//! dropped meanwhile), and rotating it by size and/or daily: keeping
//! `log_keep` files and gzipping the newest in the background if asked.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::sink::{Out, Sink};
use super::tag::Source;

impl Sink {
    /// Opens the file at its path again (SIGUSR1, or a retry after a
    /// failure); then says how many lines were dropped meanwhile.
    pub(super) fn reopen(&mut self, master: &Arc<Source>) {
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
                    self.note_outage(master);
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
    pub(super) fn maybe_rotate(&mut self, len: u64) {
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

/// Opens the log file for appending, through a buffer, creating it and
/// its directory if need be.
pub(super) fn open(path: &Path) -> io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::with_capacity(256 * 1024, f))
}

/// Days since the epoch (UTC).
pub(super) fn today() -> u64 {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
