//! The control socket: a Unix socket at `server.control_socket` on which
//! the command line asks the running master for things. Today one
//! request, `logs`; the full control plane comes later.
//!
//! A client sends one line, `logs [follow] [lines=N] [group=G] [slot=S]
//! [level=L]`; the master answers with the last `N` (default 100) matching
//! lines of its ring, one per line, then, with `follow`, every new matching
//! line until the client goes away. A line it does not understand gets one
//! `error: ...` line back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::logs::{LEVELS, Line, LogHub};

/// Clients served at once, at most.
const MAX_CLIENTS: usize = 32;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The socket, removed when the master stops.
pub(crate) struct Control {
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Control {
    /// Binds the socket and serves it; `None` (logged) if it cannot be
    /// bound, for example because another master is using it.
    pub(crate) fn start(path: &Path, logs: LogHub) -> Option<Control> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                tracing::error!(
                    path = %path.display(),
                    "server.control_socket names a file that is not a socket; it is left alone and `logs` will not work"
                );
                return None;
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                tracing::error!(
                    path = %path.display(),
                    "another master answers on the control socket; `logs` will reach that one (set server.control_socket)"
                );
                return None;
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the control socket; `logs` will not work");
                return None;
            }
        };
        // The logs may hold secrets: the socket is the owner's only.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if clients.load(std::sync::atomic::Ordering::Relaxed) >= MAX_CLIENTS {
                            // Dropped: too many clients at once.
                            continue;
                        }
                        clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (logs, clients) = (logs.clone(), clients.clone());
                        tokio::spawn(async move {
                            serve(stream, logs).await;
                            clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Some(Control {
            path: path.to_path_buf(),
        })
    }
}

/// What a `logs` request asks for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LogsRequest {
    pub(crate) follow: bool,
    pub(crate) lines: usize,
    pub(crate) group: Option<String>,
    pub(crate) slot: Option<usize>,
    pub(crate) level: Option<usize>,
}

impl LogsRequest {
    pub(crate) fn parse(line: &str) -> Result<LogsRequest, String> {
        let mut words = line.split_whitespace();
        if words.next() != Some("logs") {
            return Err(format!(
                "unknown request {line:?}; this master answers `logs`"
            ));
        }
        let mut req = LogsRequest {
            lines: 100,
            ..LogsRequest::default()
        };
        for w in words {
            match w.split_once('=') {
                None if w == "follow" => req.follow = true,
                Some(("lines", v)) => {
                    req.lines = v.parse().map_err(|_| format!("lines={v}: not a number"))?
                }
                Some(("group", v)) => req.group = Some(v.to_string()),
                Some(("slot", v)) => {
                    req.slot = Some(v.parse().map_err(|_| format!("slot={v}: not a number"))?)
                }
                Some(("level", v)) => {
                    let up = v.to_ascii_uppercase();
                    let i = LEVELS.iter().position(|l| *l == up).ok_or_else(|| {
                        format!("level={v}: use trace, debug, info, warn or error")
                    })?;
                    req.level = Some(i);
                }
                _ => return Err(format!("unknown option {w:?}")),
            }
        }
        Ok(req)
    }

    /// Whether `line` passes the filters (a line of unknown level always
    /// passes a level filter: it may be a panic).
    pub(crate) fn keeps(&self, line: &Line) -> bool {
        if self.group.as_deref().is_some_and(|g| g != &*line.group) {
            return false;
        }
        if self.slot.is_some() && self.slot != line.slot {
            return false;
        }
        match (self.level, line.level) {
            (Some(min), Some(l)) => LEVELS.iter().position(|x| *x == l).is_none_or(|i| i >= min),
            _ => true,
        }
    }
}

async fn serve(stream: UnixStream, logs: LogHub) {
    let (read, mut write) = stream.into_split();
    let mut first = String::new();
    // A request is one short line; a client cannot make the master buffer more.
    let mut reader = BufReader::new(read.take(4096));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut first)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let req = match LogsRequest::parse(first.trim()) {
        Ok(r) => r,
        Err(e) => {
            let _ = write.write_all(format!("error: {e}\n").as_bytes()).await;
            return;
        }
    };
    // Subscribe before reading the ring, so no line falls between.
    let mut follow = req.follow.then(|| logs.subscribe());
    let mut out = String::new();
    for line in logs.tail(req.lines, |l| req.keeps(l)) {
        out.push_str(&line.text);
        out.push('\n');
    }
    if write.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let Some(rx) = &mut follow else {
        return;
    };
    loop {
        let block = match rx.recv().await {
            Ok(b) => b,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let note = format!("[{n} lines skipped: this client reads too slowly]\n");
                if write.write_all(note.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let mut text = String::new();
        for line in block.lines().filter(|l| req.keeps(l)) {
            text.push_str(&line.text);
            text.push('\n');
        }
        if !text.is_empty() && write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_clear_errors() {
        let r = LogsRequest::parse("logs follow lines=5 group=web slot=1 level=warn").unwrap();
        assert!(r.follow);
        assert_eq!((r.lines, r.slot, r.level), (5, Some(1), Some(3)));
        assert!(
            LogsRequest::parse("logs level=loud")
                .unwrap_err()
                .contains("use trace")
        );
        assert!(
            LogsRequest::parse("stats")
                .unwrap_err()
                .contains("answers `logs`")
        );
        let line = |level| Line {
            group: "web".into(),
            slot: Some(1),
            level,
            text: String::new(),
        };
        assert!(r.keeps(&line(Some("ERROR"))));
        assert!(!r.keeps(&line(Some("INFO"))));
        assert!(r.keeps(&line(None)), "a panic has no level and is kept");
    }
}
