//! Running the migrate process from the supervisor's loop: before the first
//! workers start (retried with backoff while it fails, so a database that
//! is down delays the start instead of stopping the master) and before a
//! reload's new workers (a failure aborts that reload).

use std::time::Duration;

use ringmaster_config::Config;
use ringmaster_proto::Lifecycle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Supervisor;
use super::replace::notify;
use crate::control::Events;
use crate::control::request::error;
use crate::migrate_process::MigrateError;
use crate::restart::Backoff;

/// Failed start-up migrations are retried after 1 s, doubling up to 30 s.
const MIGRATE_RETRY: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// Why migrations run.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    /// Before the first workers.
    Startup,
    /// Before a reload of group `only` (or of all) rolls; `events`
    /// follows it.
    Reload {
        only: Option<usize>,
        events: Option<Events>,
    },
}

impl Purpose {
    /// As lifecycle events name it.
    fn name(&self) -> &'static str {
        match self {
            Purpose::Startup => "startup",
            Purpose::Reload { .. } => "reload",
        }
    }
}

/// A migrate process in flight.
pub(super) struct Migrating {
    purpose: Purpose,
    config: Config,
    done: oneshot::Receiver<Result<(), MigrateError>>,
}

impl Migrating {
    /// Whether these are the start-up migrations.
    pub(super) fn is_startup(&self) -> bool {
        matches!(self.purpose, Purpose::Startup)
    }
}

/// What a finished migration reports to the loop.
pub(super) struct Finished {
    purpose: Purpose,
    config: Config,
    outcome: Result<(), MigrateError>,
}

/// Completes when the migrate process in flight finishes; pending forever
/// when none runs (for `select!`).
pub(super) async fn done(migrating: &mut Option<Migrating>) -> Option<Finished> {
    match migrating {
        Some(m) => {
            let outcome = (&mut m.done).await.unwrap_or_else(|_| {
                Err(MigrateError::from(
                    "the migrate task ended without a result".to_string(),
                ))
            });
            Some(Finished {
                purpose: m.purpose.clone(),
                config: m.config.clone(),
                outcome,
            })
        }
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Starts the migrate process for `config` in a task.
    pub(super) fn spawn_migration(&mut self, config: Config, purpose: Purpose) {
        self.publish(Lifecycle::MigrationStarted {
            purpose: purpose.name().into(),
        });
        let (tx, rx) = oneshot::channel();
        let exe = self.exe.clone();
        let toml = config.to_toml_string().map_err(|e| e.to_string());
        let logs = self.opts.logs.clone();
        tokio::spawn(async move {
            let timeout = crate::migrate_process::MIGRATE_TIMEOUT;
            let result = match toml {
                Ok(toml) => crate::migrate_process::run(&exe, &toml, timeout, logs).await,
                Err(e) => Err(MigrateError::from(e)),
            };
            let _ = tx.send(result);
        });
        self.migrating = Some(Migrating {
            purpose,
            config,
            done: rx,
        });
    }

    /// A migrate process finished.
    pub(super) fn after_migration(&mut self, finished: Finished) {
        if self.stopping.is_some() {
            if let Purpose::Reload { events, .. } = &finished.purpose {
                notify(
                    events.as_ref(),
                    error("stopping", "the master is stopping".into()),
                );
            }
            return;
        }
        if finished.outcome.is_ok() {
            self.publish(Lifecycle::MigrationPassed {
                purpose: finished.purpose.name().into(),
            });
        }
        match (finished.purpose, finished.outcome) {
            (Purpose::Startup, Ok(())) => {
                self.migrate_retry = None;
                self.start_all();
            }
            (Purpose::Startup, Err(e)) => self.startup_migrations_failed(e),
            (Purpose::Reload { only, events }, Ok(())) => {
                self.begin_rolling(finished.config, only, events);
            }
            (Purpose::Reload { events, .. }, Err(e)) => {
                self.publish(Lifecycle::MigrationFailed {
                    purpose: "reload".into(),
                    error: e.with_cause(),
                    retry_in_ms: None,
                });
                tracing::error!(
                    error = %e,
                    "reload aborted: migrations failed; the running workers are kept; \
                     fix the cause and reload again (HUP or `reload`)"
                );
                let message = format!(
                    "migrations failed, nothing was reloaded: {}; \
                     the running workers are kept; fix the cause and reload again",
                    e.with_cause()
                );
                notify(events.as_ref(), error("migrations_failed", message));
                self.publish(Lifecycle::ReloadAborted {
                    reason: format!("migrations failed: {}", e.with_cause()),
                });
                self.after_reload();
            }
        }
    }

    /// Start-up migrations failed: no worker starts; they are tried again
    /// after the backoff (or at the next HUP).
    fn startup_migrations_failed(&mut self, e: MigrateError) {
        let attempts = self.migrate_retry.map_or(0, |(_, n)| n) + 1;
        let delay = MIGRATE_RETRY.delay(attempts);
        tracing::error!(
            error = %e,
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            "migrations failed; no worker starts until they pass: the master keeps its \
             sockets and retries in {} s (HUP retries now, with the configuration re-read); \
             fix the cause or stop the master",
            delay.as_secs()
        );
        self.publish(Lifecycle::MigrationFailed {
            purpose: "startup".into(),
            error: e.with_cause(),
            retry_in_ms: Some(delay.as_millis() as u64),
        });
        self.migrate_retry = Some((Instant::now() + delay, attempts));
    }

    /// HUP while the first workers wait for migrations: re-read the
    /// configuration (the operator may have fixed a backend URL) and try
    /// again now.
    pub(super) fn retry_startup_migrations(&mut self) {
        if self.migrating.is_some() {
            tracing::warn!("start-up migrations are running; this HUP is ignored");
            return;
        }
        match self.reread_config() {
            Ok(config) => {
                self.apply_config(config);
                tracing::info!(
                    "HUP: retrying the start-up migrations with the configuration re-read"
                );
                let config = self.opts.config.clone();
                self.spawn_migration(config, Purpose::Startup);
            }
            Err(e) => tracing::error!(
                error = %e,
                "the configuration is invalid; fix it and send HUP again"
            ),
        }
    }

    /// Retries start-up migrations when their time has come.
    pub(super) fn retry_migration(&mut self, now: Instant) {
        if let Some((at, _)) = self.migrate_retry
            && now >= at
            && self.migrating.is_none()
        {
            let config = self.opts.config.clone();
            self.spawn_migration(config, Purpose::Startup);
        }
    }
}
