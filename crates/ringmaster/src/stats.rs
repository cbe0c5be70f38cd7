//! `stats`: reads the running master's registry segment and prints it, as
//! a table, JSON or the Prometheus text format.
//!
//! The master's pid comes from `server.pid_file` (or `--pid`); the segment
//! is the master's memfd, opened read-only through `/proc/PID/fd`, so no
//! request reaches the master and a busy master does not slow it down.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use ringmaster_config::Config;
use ringmaster_registry::{Segment, Snapshot, Value};

/// The name the master gives its memfd (as `/proc/PID/fd` shows it).
const MEMFD_NAME: &str = "/memfd:ringmaster-registry";

pub(crate) fn print(config: &Config, pid: Option<u32>, json: bool, prometheus: bool) -> ExitCode {
    match snapshot(config, pid) {
        Ok(snap) => {
            let text = if json {
                format!("{}\n", snap.to_json())
            } else if prometheus {
                snap.to_prometheus()
            } else {
                table(&snap)
            };
            // A closed pipe (`stats | head`) is the reader's choice, not an error.
            use std::io::Write;
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn snapshot(config: &Config, pid: Option<u32>) -> Result<Snapshot, String> {
    let pid_file = &config.server.pid_file;
    let pid = match pid {
        Some(p) => p,
        None => std::fs::read_to_string(pid_file)
            .map_err(|e| {
                format!(
                    "cannot read the master's pid from {} ({e}); is the cluster running from this directory? Pass --pid or set server.pid_file",
                    pid_file.display()
                )
            })?
            .trim()
            .parse()
            .map_err(|_| format!("{} does not hold a pid", pid_file.display()))?,
    };
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!("cannot look into {dir} ({e}); is process {pid} a running ringmaster master of this user?")
    })?;
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with(MEMFD_NAME) {
            continue;
        }
        let file = std::fs::File::open(entry.path())
            .map_err(|e| format!("cannot open the registry of process {pid}: {e}"))?;
        let segment = Segment::open(OwnedFd::from(file), false).map_err(|e| e.to_string())?;
        return Ok(segment.snapshot());
    }
    Err(format!(
        "process {pid} has no ringmaster registry: is it a ringmaster master (not a worker)?"
    ))
}

/// One line per series: name, labels, value; a histogram shows its count,
/// sum and mean.
fn table(snap: &Snapshot) -> String {
    let rows: Vec<(String, String, String)> = snap
        .series
        .iter()
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let value = match &s.value {
                Value::Counter(v) => v.to_string(),
                Value::Gauge(v) => v.to_string(),
                Value::Histogram { count, sum, .. } => {
                    let mean = if *count > 0 { sum / *count as f64 } else { 0.0 };
                    format!("count={count} sum={sum:.6} mean={mean:.6}")
                }
            };
            (s.name.clone(), labels, value)
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
    let mut out = format!("{:w0$}  {:w1$}  VALUE\n", "NAME", "LABELS");
    for (name, labels, value) in rows {
        out.push_str(&format!("{name:w0$}  {labels:w1$}  {value}\n"));
    }
    out
}
