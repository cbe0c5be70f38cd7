//! The control socket's commands, as the supervisor carries them out:
//! `status`, `reload`, `restart`, `scale` and `stop`. The connection task
//! (`crate::control`) parsed the request; what comes back is reply lines.

use std::time::Duration;

use serde_json::{Value, json};

use super::replace::notify;
use super::{Stop, Supervisor};
use crate::control::request::{error, ok};
use crate::control::{Command, ScaleTo};

/// The longest drain a `stop --timeout` may give (as long as any duration
/// of the configuration).
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most workers a group may run (as the configuration allows).
const MAX_COUNT: i64 = 1024;

impl Supervisor {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Reload { group, events } => {
                if self.awaiting_startup_migrations() {
                    // As a HUP does then: the first workers wait for the
                    // start-up migrations; retry them with the file re-read.
                    self.retry_startup_migrations();
                    let message = "no worker runs yet: the start-up migrations failed; they are \
                                   retried now with the configuration re-read (see the master's log)";
                    return notify(Some(&events), error("starting", message.into()));
                }
                let only = match group {
                    None => None,
                    Some(name) => match self.group_index(&name) {
                        Ok(g) => Some(g),
                        Err(e) => return notify(Some(&events), e),
                    },
                };
                if let Err(e) = self.start_reload(only, Some(events.clone())) {
                    notify(Some(&events), e);
                }
            }
            Command::Restart {
                group,
                slot,
                events,
            } => {
                let result = self
                    .refuse_while_starting()
                    .and_then(|()| self.group_index(&group))
                    .and_then(|g| self.restart_slot(g, slot, events.clone()));
                if let Err(e) = result {
                    notify(Some(&events), e);
                }
            }
            Command::Upgrade { events } => {
                if let Err(e) = self.begin_upgrade(Some(events.clone())) {
                    notify(Some(&events), e);
                }
            }
            Command::Scale { group, to, reply } => {
                let _ = reply.send(self.scale_command(&group, to));
            }
            Command::Stop { timeout, events } => self.stop_command(timeout, events),
        }
    }

    /// The index of the group named `name`, or an error line listing them.
    fn group_index(&self, name: &str) -> Result<usize, Value> {
        self.groups
            .iter()
            .position(|g| g.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
                error(
                    "not_found",
                    format!(
                        "no group named {name:?}; the groups are {}",
                        names.join(", ")
                    ),
                )
            })
    }

    /// Commands that change workers wait for the first workers to run.
    fn refuse_while_starting(&self) -> Result<(), Value> {
        if self.stopping.is_some() {
            return Err(error("stopping", "the master is stopping".into()));
        }
        if self.awaiting_startup_migrations() {
            return Err(error(
                "starting",
                "no worker runs until the start-up migrations pass (see the master's log); retry then".into(),
            ));
        }
        self.refuse_while_upgrading()
    }

    fn scale_command(&mut self, name: &str, to: ScaleTo) -> Value {
        let g = match self
            .refuse_while_starting()
            .and_then(|()| self.group_index(name))
        {
            Ok(g) => g,
            Err(e) => return e,
        };
        if self.groups[g].is_builtin() {
            let name = &self.groups[g].name;
            return error("bad_request", format!("the {name} group runs one worker"));
        }
        let from = self.groups[g].slots.len();
        let target = match to {
            ScaleTo::Count(n) => i64::try_from(n).unwrap_or(i64::MAX),
            ScaleTo::Delta(d) => (from as i64).saturating_add(d),
        };
        if !(1..=MAX_COUNT).contains(&target) {
            return error(
                "bad_request",
                format!(
                    "a group runs 1 to {MAX_COUNT} workers; {name} has {from}, the request asks for {target}"
                ),
            );
        }
        let now = self.scale_group(g, target as usize);
        if now != target as usize {
            return error(
                "failed",
                format!(
                    "cannot open sockets for the new slots (see the master's log); {name} keeps {now} workers"
                ),
            );
        }
        tracing::info!(group = name, from, to = now, "scaled by the control socket");
        ok(json!({"group": name, "from": from, "to": now}))
    }

    fn stop_command(&mut self, timeout: Option<Duration>, events: crate::control::Events) {
        if let Some(t) = timeout
            && self.stopping.is_none()
        {
            // Bounded as any duration of the configuration is: a deadline
            // computed from it must not overflow.
            self.stop_grace = Some(t.min(MAX_GRACE));
        }
        notify(
            Some(&events),
            json!({"event": "stopping", "master_pid": self.master_pid, "workers": self.workers.len()}),
        );
        self.stop_events.push(events);
        self.stop(Stop::Graceful);
    }
}
