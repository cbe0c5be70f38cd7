//! The one-off migrate process: the binary re-executed in the migrate role,
//! with the resolved configuration, before any worker starts and before a
//! reload's new workers. The master itself never opens a database: it only
//! waits for the process's exit status.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ringmaster_proto::handoff;
use tokio::process::Command;

/// The longest a migration run may take before it is killed.
pub(crate) const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the migrate process to completion; the error says what failed
/// (the caller says what happens next: a retry, or an aborted reload).
pub(crate) async fn run(exe: &Path, config_toml: &str, timeout: Duration) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut cmd = Command::new(exe);
    for var in handoff::ALL_ENV {
        cmd.env_remove(var);
    }
    cmd.env(handoff::ENV_ROLE, handoff::ROLE_MIGRATE)
        .env(handoff::ENV_MASTER_PID, std::process::id().to_string())
        .env(handoff::ENV_CONFIG, config_toml)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl with integer arguments only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the migrate process {}: {e}", exe.display()))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for the migrate process failed: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            return Err(format!(
                "migrations did not finish within {}s; the process was killed",
                timeout.as_secs()
            ));
        }
    };
    if status.success() {
        tracing::info!(
            ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "migrations done"
        );
        Ok(())
    } else {
        // What to do next depends on why they ran: the caller says it.
        Err(format!(
            "the migrate process failed ({}); its error is in the lines above",
            crate::spawn::describe_exit(status)
        ))
    }
}
