//! `status` as tables: one line per group, then one per worker.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use ringmaster_worker::{ClusterStatus, ExitInfo};

/// The status as text, ready to print.
pub(crate) fn render(s: &ClusterStatus) -> String {
    let mut out = format!(
        "master {}  up {}  {}",
        s.master_pid,
        duration(s.uptime_ms),
        s.state
    );
    if let Some(r) = &s.reload {
        let _ = write!(out, " ({}: {}/{})", r.groups.join(", "), r.done, r.total);
    }
    out.push_str("\n\n");
    out.push_str(&table(&group_rows(s)));
    out.push('\n');
    out.push_str(&table(&worker_rows(s)));
    if let Some(b) = &s.bridge {
        let _ = write!(
            out,
            "\nbridge {}  {}{}  topics {}  sent {}  received {}  dropped {}\n",
            b.state,
            b.url,
            if b.required { "  (required)" } else { "" },
            b.topics.join(", "),
            b.sent,
            b.received,
            b.dropped
        );
    }
    out
}

/// One row per group, under a header.
fn group_rows(s: &ClusterStatus) -> Vec<Vec<String>> {
    let mut groups = vec![row(&[
        "GROUP",
        "WORKER",
        "LISTEN",
        "READY",
        "STATE",
        "LAST EXIT",
    ])];
    for g in &s.groups {
        groups.push(vec![
            g.name.clone(),
            g.worker.clone(),
            format!("{} ({})", g.listen, g.listen_mode),
            format!("{}/{}", g.ready, g.count),
            g.state.clone(),
            g.last_exit.as_ref().map_or("-".into(), exit),
        ]);
    }
    groups
}

/// One row per worker (and per slot waiting for one), under a header.
fn worker_rows(s: &ClusterStatus) -> Vec<Vec<String>> {
    let mut workers = vec![row(&[
        "GROUP",
        "SLOT",
        "PID",
        "STATE",
        "GEN",
        "UPTIME",
        "RESTARTS",
        "HEARTBEAT",
        "RSS",
        "CPU%",
        "INFLIGHT",
        "REQ/S",
        "P99",
        "NOTE",
    ])];
    for g in &s.groups {
        for w in &g.workers {
            let note = match (&w.reason, w.restart_in_ms, &w.last_exit) {
                (Some(r), _, _) if w.state != "waiting" => r.clone(),
                (_, Some(ms), Some(e)) => {
                    format!("restart in {}; last exit: {}", duration(ms), exit(e))
                }
                (_, _, Some(e)) => format!("last exit: {}", exit(e)),
                _ => String::new(),
            };
            workers.push(vec![
                g.name.clone(),
                w.slot.to_string(),
                w.pid.map_or("-".into(), |p| p.to_string()),
                w.state.clone(),
                w.generation.to_string(),
                if w.pid.is_some() {
                    duration(w.uptime_ms)
                } else {
                    "-".into()
                },
                w.restarts.to_string(),
                w.heartbeat_age_ms
                    .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1e3)),
                mib(w.rss_bytes),
                format!("{:.1}", w.cpu_percent),
                w.in_flight.to_string(),
                format!("{:.1}", w.requests_per_sec),
                w.p99_ms.map_or("-".into(), |ms| format!("{ms:.1}ms")),
                note,
            ]);
        }
    }
    workers
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (c, v) in r.iter().enumerate() {
            if c == last {
                out.push_str(v);
            } else {
                let _ = write!(out, "{v:w$}  ", w = widths[c]);
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// `3h 12m`, `4m 5s`, `12s`, `350ms`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        format!("{:.1}M", bytes as f64 / (1 << 20) as f64)
    }
}

/// `signal 9 (SIGKILL), unexpected exit, 5m 2s ago`.
fn exit(e: &ExitInfo) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    format!(
        "{}, {}, {} ago",
        e.status,
        e.reason,
        duration(now.saturating_sub(e.at_ms))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(350), "350ms");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(245_000), "4m 5s");
        assert_eq!(duration(3 * 3_600_000 + 12 * 60_000), "3h 12m");
        assert_eq!(duration(2 * 86_400_000), "2d 0h");
    }

    #[test]
    fn columns_line_up() {
        let t = table(&[row(&["A", "BB", "C"]), row(&["long", "x", "y"])]);
        assert_eq!(t, "A     BB  C\nlong  x   y\n");
    }
}
