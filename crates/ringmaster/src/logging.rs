//! Log output of both roles: `tracing` to stderr, filtered by
//! `RINGMASTER_LOG` (e.g. `info`, `debug`, `info,ringmaster_master=debug`).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The variable that sets the log filter.
pub(crate) const ENV_LOG: &str = "RINGMASTER_LOG";

/// Installs the subscriber; a bad filter falls back to `info` with a warning.
pub(crate) fn init() {
    let spec = std::env::var(ENV_LOG).unwrap_or_else(|_| "info".to_string());
    let (filter, bad) = match spec.parse::<Targets>() {
        Ok(f) => (f, None),
        Err(e) => ("info".parse().unwrap_or_default(), Some(e)),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("{ENV_LOG}={spec:?} is not a valid filter ({e}); logging at info");
    }
}
