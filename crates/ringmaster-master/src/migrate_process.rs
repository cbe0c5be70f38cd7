//! The one-off migrate process: the binary re-executed in the migrate role,
//! with the resolved configuration, before any worker starts and before a
//! reload's new workers. The master itself never opens a database: it only
//! waits for the process's exit status. Its stdout and stderr go through
//! the master's log like a worker's, tagged `migrate PID | `; the process
//! says why it failed, the master only what happens next.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ringmaster_proto::{LogLevel, LogStream, handoff};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::logs::{LogHub, Source, read_pipe};

/// The longest a migration run may take before it is killed.
pub(crate) const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the process's last lines may take to reach the log after it
/// exited (a descendant holding its stdout must not hold the master up).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Why a migration run failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MigrateError {
    /// What the master says in its log (the process's own lines come
    /// before it, so it does not repeat them).
    pub(crate) message: String,
    /// The same with the process's last error line in place of the
    /// pointer to the log, for those who see no log (the lifecycle event,
    /// `reload`'s reply), when the process wrote one.
    pub(crate) detailed: Option<String>,
}

impl From<String> for MigrateError {
    fn from(message: String) -> Self {
        MigrateError {
            message,
            detailed: None,
        }
    }
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl MigrateError {
    /// The message with the process's last error line, when there is one.
    pub(crate) fn with_cause(&self) -> String {
        self.detailed
            .clone()
            .unwrap_or_else(|| self.message.clone())
    }
}

/// Runs the migrate process to completion, its output into `logs` (else
/// the master's stderr); the error says what failed (the caller says what
/// happens next: a retry, or an aborted reload).
pub(crate) async fn run(
    exe: &Path,
    config_toml: &str,
    timeout: Duration,
    logs: Option<LogHub>,
) -> Result<(), MigrateError> {
    let started = std::time::Instant::now();
    let mut cmd = migrate_command(exe, config_toml);
    let pipes = match &logs {
        Some(_) => output_pipes(&mut cmd)?,
        None => Vec::new(),
    };
    die_with_master(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the migrate process {}: {e}", exe.display()))?;
    // `cmd` holds the write ends: they must close here, or the readers
    // never see end-of-file.
    drop(cmd);
    let pid = child.id().unwrap_or(0);
    let own = crate::reaper::Own::new(pid);
    let readers = match &logs {
        Some(hub) => read_output(pipes, hub, pid),
        None => Vec::new(),
    };
    let status = wait(&mut child, timeout).await;
    drop(own);
    let status = status?;
    // Its lines first, then the master's about it.
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        for reader in readers {
            let _ = reader.await;
        }
    })
    .await;
    if status.success() {
        tracing::info!(
            pid,
            ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "migrations done"
        );
        Ok(())
    } else {
        let status = crate::spawn::describe_exit(status);
        let cause = match &logs {
            // The lines read are queued for the sink: once it has them in
            // the ring, the last error line can be read back.
            Some(hub) => {
                hub.settled(tokio::time::Instant::now() + OUTPUT_GRACE)
                    .await;
                last_error(hub, pid)
            }
            None => None,
        };
        Err(MigrateError {
            message: format!(
                "the migrate process failed ({status}); its error is in the lines above"
            ),
            detailed: cause.map(|c| format!("the migrate process failed ({status}): {c}")),
        })
    }
}

/// The message of the last ERROR line process `pid` wrote, without its
/// tag, time and level.
fn last_error(hub: &LogHub, pid: u32) -> Option<String> {
    let prefix = format!("migrate {pid} | ");
    let line = hub
        .tail(1, |l| {
            l.level == Some(LogLevel::Error)
                && &*l.group == "migrate"
                && l.text.starts_with(&prefix)
        })
        .pop()?;
    let text = &line.text[prefix.len()..];
    // `TIME ERROR target: message`, or a JSON line kept whole.
    Some(match text.split_once(" ERROR ") {
        Some((_, rest)) => rest.trim().to_string(),
        None => text.trim().to_string(),
    })
}

/// The command that re-executes the binary in the migrate role: its
/// handoff environment set afresh, no stdin, a process group of its own,
/// killed if the master drops it (a timeout).
fn migrate_command(exe: &Path, config_toml: &str) -> Command {
    let mut cmd = Command::new(exe);
    for var in handoff::ALL_ENV
        .iter()
        .chain(&handoff::SERVICE_MANAGER_ENV)
        .chain(&handoff::UPGRADE_ENV)
    {
        cmd.env_remove(var);
    }
    cmd.env(handoff::ENV_ROLE, handoff::ROLE_MIGRATE)
        .env(handoff::ENV_MASTER_PID, std::process::id().to_string())
        .env(handoff::ENV_CONFIG, config_toml)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Sends the process's stdout and stderr into pipes; returns their read
/// ends, with the stream each is.
fn output_pipes(cmd: &mut Command) -> Result<Vec<(OwnedFd, LogStream)>, String> {
    let fail = |e| format!("cannot make a pipe for the migrate process's output: {e}");
    let (out_r, out_w) = crate::spawn::pipe().map_err(fail)?;
    let (err_r, err_w) = crate::spawn::pipe().map_err(fail)?;
    cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
    Ok(vec![(out_r, LogStream::Stdout), (err_r, LogStream::Stderr)])
}

/// Has the kernel SIGKILL the process if the master dies first.
fn die_with_master(cmd: &mut Command) {
    // SAFETY: prctl with integer arguments only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A reader task per pipe into `hub`, its lines tagged `migrate PID | `.
fn read_output(pipes: Vec<(OwnedFd, LogStream)>, hub: &LogHub, pid: u32) -> Vec<JoinHandle<()>> {
    let mut readers = Vec::new();
    for (fd, stream) in pipes {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => {
                let source = Arc::new(Source::migrate(pid, stream));
                readers.push(tokio::spawn(read_pipe(rx, source, hub.clone())));
            }
            Err(e) => {
                tracing::error!(pid, stream = stream.as_str(), error = %e, "cannot read the migrate process's output")
            }
        }
    }
    readers
}

/// Waits for the process's exit, killing it once `timeout` has passed.
async fn wait(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(format!("waiting for the migrate process failed: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            // Reaped here, while the reaper still leaves it to us.
            let _ = child.wait().await;
            Err(format!(
                "migrations did not finish within {}s; the process was killed",
                timeout.as_secs()
            ))
        }
    }
}
