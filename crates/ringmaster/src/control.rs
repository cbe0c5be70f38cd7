//! The command line's side of the control socket: `status`, `reload`,
//! `scale`, `restart`, `stop`, `logs` and `events` are thin clients that send one
//! JSON request line and print the reply lines (`docs/control.md`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringmaster_config::Config;
use ringmaster_proto::ControlRequest;
use ringmaster_worker::ClusterStatus;
use serde_json::Value;

/// One connection to the master's control socket.
pub(crate) struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

/// A command that failed: the message to print.
pub(crate) type Failure = String;

impl Client {
    /// Connects to the socket of `config`, with a message that names the
    /// socket and what to do when no master answers.
    pub(crate) fn connect(config: &Config) -> Result<Client, Failure> {
        let path = config.server.control_socket.clone();
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Client {
                path,
                reader: BufReader::new(stream),
            }),
            Err(e) => Err(no_master(&path, &e)),
        }
    }

    /// Sends one request.
    pub(crate) fn send(&mut self, request: &ControlRequest) -> Result<(), Failure> {
        let line = request.to_line();
        if let Err(e) = self.reader.get_mut().write_all(line.as_bytes()) {
            // The master may have said why before it closed (a refused uid).
            if let Ok(Some(reply)) = self.next()
                && reply["ok"] == false
            {
                return Err(error_text(&reply));
            }
            return Err(format!(
                "the master at {} closed the connection: {e}",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// The next reply line; `None` when the master closed the connection.
    pub(crate) fn next(&mut self) -> Result<Option<Value>, Failure> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
                format!(
                    "the master at {} sent a line that is not JSON ({e}): {line}",
                    self.path.display()
                )
            }),
            Err(e) => Err(format!(
                "reading from the master at {} failed: {e}",
                self.path.display()
            )),
        }
    }

    /// Sends `request` and returns the final line's result, calling
    /// `event` for every event line before it.
    pub(crate) fn call(
        &mut self,
        request: &ControlRequest,
        mut event: impl FnMut(&Value),
    ) -> Result<Value, Failure> {
        self.send(request)?;
        loop {
            let Some(line) = self.next()? else {
                return Err(format!(
                    "the master at {} closed the connection before it answered",
                    self.path.display()
                ));
            };
            match line.get("ok").and_then(Value::as_bool) {
                Some(true) => return Ok(line["result"].clone()),
                Some(false) => return Err(error_text(&line)),
                None => event(&line),
            }
        }
    }
}

/// What to say when the socket does not answer.
fn no_master(path: &Path, e: &std::io::Error) -> Failure {
    let what = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: the socket belongs to another user; run the command as the master's user or root".to_string()
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "no master is running there; start one with `serve`, or pass the --config (or run from the directory) the master was started with".to_string()
        }
        _ => format!("{e}; check server.control_socket"),
    };
    format!(
        "cannot reach the master at {} ({e}): {what}",
        path.display()
    )
}

/// The message of an error line.
fn error_text(line: &Value) -> Failure {
    let e = &line["error"];
    let message = e["message"].as_str().unwrap_or("(no message)");
    match e["code"].as_str() {
        Some(code) => format!("{message} [{code}]"),
        None => message.to_string(),
    }
}

/// Prints the failure and gives exit code 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// `status [--json] [--watch]`.
pub(crate) fn status(config: &Config, json_out: bool, watch: bool) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    loop {
        let result = match client.call(&ControlRequest::Status {}, |_| {}) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        let text = if json_out {
            format!("{result:#}\n")
        } else {
            match serde_json::from_value::<ClusterStatus>(result) {
                Ok(s) => crate::status_table::render(&s),
                Err(e) => {
                    return fail(&format!("the master's status has an unexpected shape: {e}"));
                }
            }
        };
        let mut out = std::io::stdout().lock();
        if watch {
            // Home and clear: redraw in place, as `watch` does.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        if !watch {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `reload [--group G]`: streams each slot's replacement.
pub(crate) fn reload(config: &Config, group: Option<&str>) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let request = ControlRequest::Reload {
        group: group.map(str::to_string),
    };
    let result = client.call(&request, |e| match e["event"].as_str() {
        Some("migrating") => println!("running migrations"),
        Some("started") => println!("reloading {} ({} workers)", names(&e["groups"]), e["slots"]),
        Some("replaced") => println!(
            "{}/{}: {} -> {}, ready in {} ms",
            e["group"].as_str().unwrap_or("?"),
            e["slot"],
            pid(&e["old_pid"]),
            pid(&e["new_pid"]),
            e["ready_ms"]
        ),
        _ => println!("{e}"),
    });
    match result {
        Ok(r) => {
            println!(
                "reload done: {} workers replaced in {} ms",
                r["replaced"], r["ms"]
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("reload stopped: {e}")),
    }
}

/// `upgrade`: the master replaced by the binary on disk; returns once the
/// new master serves (the old one then drains and exits by itself).
pub(crate) fn upgrade(config: &Config) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result = client.call(&ControlRequest::Upgrade {}, |e| match e["event"].as_str() {
        Some("preflight") => println!("checking {}", e["exe"].as_str().unwrap_or("?")),
        Some("started") => println!(
            "new master pid {} (version {}) starting",
            pid(&e["pid"]),
            e["version"].as_str().unwrap_or("?")
        ),
        _ => println!("{e}"),
    });
    match result {
        Ok(r) => {
            println!(
                "upgraded: master pid {} (version {}) serves; the old master {} drains its workers and exits",
                pid(&r["pid"]),
                r["version"].as_str().unwrap_or("?"),
                pid(&r["old_pid"])
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!(
            "upgrade failed, the running master serves on: {e}"
        )),
    }
}

/// `scale GROUP N|+K|-K`.
pub(crate) fn scale(config: &Config, group: &str, how: &str) -> ExitCode {
    let request = match how.as_bytes().first() {
        Some(b'+' | b'-') => match how.parse::<i64>() {
            Ok(d) => ControlRequest::Scale {
                group: group.to_string(),
                count: None,
                delta: Some(d),
            },
            Err(_) => {
                return fail(&format!(
                    "scale {group} {how}: expected a number such as 4, +2 or -1"
                ));
            }
        },
        _ => match how.parse::<usize>() {
            Ok(n) => ControlRequest::Scale {
                group: group.to_string(),
                count: Some(n),
                delta: None,
            },
            Err(_) => {
                return fail(&format!(
                    "scale {group} {how}: expected a number such as 4, +2 or -1"
                ));
            }
        },
    };
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match client.call(&request, |_| {}) {
        Ok(r) => {
            println!("{group}: {} -> {} workers", r["from"], r["to"]);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `restart GROUP/SLOT`.
pub(crate) fn restart(config: &Config, target: &str) -> ExitCode {
    let Some((group, slot)) = target
        .split_once('/')
        .and_then(|(g, s)| Some((g, s.parse::<usize>().ok()?)))
    else {
        return fail(&format!(
            "restart {target}: expected GROUP/SLOT, such as web/0"
        ));
    };
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let request = ControlRequest::Restart {
        group: group.to_string(),
        slot,
    };
    let result = client.call(&request, |e| {
        if e["event"] == "started" {
            println!(
                "{group}/{slot}: starting a replacement for {}",
                pid(&e["old_pid"])
            );
        }
    });
    match result {
        Ok(r) => {
            println!(
                "{group}/{slot}: {} -> {}, ready in {} ms",
                pid(&r["old_pid"]),
                pid(&r["new_pid"]),
                r["ready_ms"]
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("restart failed: {e}")),
    }
}

/// `stop [--timeout D]`: returns once the master has exited.
pub(crate) fn stop(config: &Config, timeout: Option<Duration>) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let request = ControlRequest::Stop {
        timeout_ms: timeout.map(|t| t.as_millis() as u64),
    };
    if let Err(e) = client.send(&request) {
        return fail(&e);
    }
    let mut master = None;
    // The master closes the connection as it exits; the final line may
    // or may not make it before.
    while let Ok(Some(line)) = client.next() {
        match line.get("ok").and_then(Value::as_bool) {
            Some(false) => return fail(&error_text(&line)),
            Some(true) => {}
            None if line["event"] == "stopping" => {
                master = line["master_pid"].as_u64();
                println!("stopping: draining {} workers", line["workers"]);
            }
            None if line["event"] == "exited" => println!(
                "{}/{} ({}) exited: {}",
                line["group"].as_str().unwrap_or("?"),
                line["slot"],
                line["pid"],
                line["status"].as_str().unwrap_or("?")
            ),
            None => {}
        }
    }
    let Some(pid) = master else {
        return fail("the master closed the connection before it began to stop");
    };
    // Workers are gone; the master flushes its log and exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while process_exists(pid as i32) {
        if Instant::now() > deadline {
            return fail(&format!(
                "the master (pid {pid}) is still running 30 s after its workers stopped"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("master {pid} stopped");
    ExitCode::SUCCESS
}

/// Whether any thread of process `pid` still runs. A process whose
/// threads are all zombies has exited (its parent has not reaped it yet).
fn process_exists(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            stat.rfind(')')
                .and_then(|i| stat.get(i + 2..i + 3))
                .is_some_and(|state| state != "Z" && state != "X")
        })
    })
}

/// `logs`: the recent lines, and with `--follow` every new one.
pub(crate) fn logs(
    config: &Config,
    lines: usize,
    follow: bool,
    group: Option<&str>,
    slot: Option<usize>,
    level: Option<&str>,
) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let request = ControlRequest::Logs {
        follow,
        lines,
        group: group.map(str::to_string),
        slot,
        level: level.map(str::to_string),
    };
    if let Err(e) = client.send(&request) {
        return fail(&e);
    }
    print_stream(&mut client, follow, |line| match line["event"].as_str() {
        Some("log") => Some(line["text"].as_str().unwrap_or("").to_string()),
        Some("skipped") => Some(format!(
            "[{} blocks of lines skipped: this client reads too slowly]",
            line["blocks"]
        )),
        _ => None,
    })
}

/// `events`: the last `last` lifecycle events, then every new one, as
/// text (`+12.345s worker ready web/0 pid 4242 (boot 11.3 ms)`) or JSON.
pub(crate) fn events(config: &Config, last: usize, json_out: bool) -> ExitCode {
    let mut client = match Client::connect(config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = client.send(&ControlRequest::Events { last }) {
        return fail(&e);
    }
    print_stream(&mut client, true, |line| match line["event"].as_str() {
        Some("lifecycle") if json_out => Some(line.to_string()),
        Some("lifecycle") => Some(
            match serde_json::from_value::<ringmaster_proto::LifecycleRecord>(line) {
                Ok(r) => format!("+{:.3}s {}", r.at_ms as f64 / 1e3, r.what),
                Err(e) => format!("(an event that does not read: {e})"),
            },
        ),
        Some("skipped") => Some(format!(
            "[{} events skipped: this client reads too slowly]",
            line["events"]
        )),
        _ => None,
    })
}

/// Prints what `show` makes of each event line (`None`: nothing) until
/// the final line or the master hangs up; flushed after each line when
/// `live` (a follower), so that a pipe sees lines as they come.
fn print_stream(
    client: &mut Client,
    live: bool,
    mut show: impl FnMut(Value) -> Option<String>,
) -> ExitCode {
    let mut out = std::io::stdout().lock();
    loop {
        let line = match client.next() {
            Ok(Some(line)) => line,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => return fail(&e),
        };
        if line["ok"] == false {
            return fail(&error_text(&line));
        }
        if line["ok"] == true {
            return ExitCode::SUCCESS;
        }
        let Some(text) = show(line) else {
            continue;
        };
        if writeln!(out, "{text}").is_err() || (live && out.flush().is_err()) {
            return ExitCode::SUCCESS;
        }
    }
}

fn pid(v: &Value) -> String {
    v.as_u64().map_or("(none)".into(), |p| p.to_string())
}

fn names(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
