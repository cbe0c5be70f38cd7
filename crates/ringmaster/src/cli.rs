//! The command line of the master role: `serve`, `check`, `routes`,
//! `migrate`, `stats`, and the control commands (`status`, `reload`,
//! `scale`, `restart`, `stop`, `logs`, `events`, thin clients of the control
//! socket, in `control`); and the one-off migrate role the master starts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringmaster_config::{Config, EXIT_CONFIG};
use ringmaster_master::{MasterError, ServeOptions};
use ringmaster_worker::Worker;

use crate::control;

/// The file read when `--config` is not given and it exists.
const DEFAULT_CONFIG: &str = "ringmaster.toml";

#[derive(Debug, Parser)]
#[command(version, about = "A ringmaster application cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The configuration file (default: ./ringmaster.toml if it exists).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the master: bind the groups' addresses, run migrations, run the workers.
    Serve(ConfigArg),
    /// Validate the configuration and connect to every configured backend.
    Check(ConfigArg),
    /// Print every group's route table: method, path, module.
    Routes(ConfigArg),
    /// Run the pending migrations of every module, then exit.
    Migrate(ConfigArg),
    /// Print the running cluster's counters, gauges and histograms.
    Stats(StatsArgs),
    /// Print the running cluster's recent log lines (and follow new ones).
    Logs(LogsArgs),
    /// Print the running cluster's lifecycle events (spawns, readiness,
    /// exits, reloads, scaling) as they happen.
    Events(EventsArgs),
    /// Show every group and worker of the running cluster.
    Status(StatusArgs),
    /// Rolling reload: replace every worker (of one group), new one ready first.
    Reload(ReloadArgs),
    /// Set a group's worker count: `scale web 4`, `scale web +2`, `scale web -1`.
    Scale(ScaleArgs),
    /// Replace one worker, its replacement ready first: `restart web/0`.
    Restart(RestartArgs),
    /// Stop the cluster gracefully; returns once the master has exited.
    Stop(StopArgs),
    /// Replace the master itself with the binary now on disk (as USR2): a
    /// new master starts beside it, and once it is ready the old one
    /// drains and exits.
    Upgrade(ConfigArg),
    /// What an upgrading master runs first: load the configuration, then
    /// print the hand-over version (one JSON line).
    #[command(name = "__preflight", hide = true)]
    Preflight(ConfigArg),
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the status as JSON (the schema is in docs/control.md).
    #[arg(long)]
    json: bool,
    /// Redraw every second until interrupted.
    #[arg(long, short)]
    watch: bool,
}

#[derive(Debug, Args)]
struct ReloadArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only this group (default: every group).
    #[arg(long, short)]
    group: Option<String>,
}

#[derive(Debug, Args)]
struct ScaleArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The group.
    group: String,
    /// The new count (4), or a change (+2, -1).
    #[arg(allow_hyphen_values = true)]
    count: String,
}

#[derive(Debug, Args)]
struct RestartArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The worker, as GROUP/SLOT (web/0).
    worker: String,
}

#[derive(Debug, Args)]
struct StopArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// How long workers may take to finish their requests ("10s"; default:
    /// each group's drain_timeout).
    #[arg(long)]
    timeout: Option<String>,
}

#[derive(Debug, Args)]
struct LogsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Keep printing new lines until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// How many recent lines to print first.
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: usize,
    /// Only lines of this group (`master` for the master's own).
    #[arg(long)]
    group: Option<String>,
    /// Only lines of this slot.
    #[arg(long)]
    slot: Option<usize>,
    /// Only lines at this level or above (trace, debug, info, warn, error);
    /// lines without a level (a panic, a print) are always shown.
    #[arg(long)]
    level: Option<String>,
}

#[derive(Debug, Args)]
struct EventsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print first this many of the recent events the master kept (it
    /// keeps the last 1024).
    #[arg(long, short = 'n', default_value_t = 0)]
    last: usize,
    /// Print each event as its JSON line (the schema is in docs/control.md).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The master's pid (default: read from server.pid_file).
    #[arg(long)]
    pid: Option<u32>,
    /// Print a JSON snapshot.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print the Prometheus text exposition format.
    #[arg(long)]
    prometheus: bool,
}

pub(crate) fn main(workers: &[Worker], version: &str) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let known: Vec<String> = workers.iter().map(|w| w.name().to_string()).collect();
    let (Command::Serve(arg)
    | Command::Check(arg)
    | Command::Routes(arg)
    | Command::Migrate(arg)
    | Command::Stats(StatsArgs { config: arg, .. })
    | Command::Logs(LogsArgs { config: arg, .. })
    | Command::Events(EventsArgs { config: arg, .. })
    | Command::Status(StatusArgs { config: arg, .. })
    | Command::Reload(ReloadArgs { config: arg, .. })
    | Command::Scale(ScaleArgs { config: arg, .. })
    | Command::Restart(RestartArgs { config: arg, .. })
    | Command::Stop(StopArgs { config: arg, .. })
    | Command::Upgrade(arg)
    | Command::Preflight(arg)) = &cli.command;
    let path = config_path(arg.config.clone());
    if !matches!(cli.command, Command::Serve(_)) {
        crate::logging::init(crate::logging::Output::Stderr);
    }
    let config = match load(path.as_deref(), &known) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::Serve(_) => serve(config, path, known, version),
        Command::Preflight(_) => {
            let report = ringmaster_master::preflight_report(version);
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Upgrade(_) => control::upgrade(&config),
        Command::Check(_) => check(&config, path.as_deref(), workers),
        Command::Routes(_) => routes(&config, workers),
        Command::Migrate(_) => migrate(&config, workers),
        Command::Stats(args) => crate::stats::print(&config, args.pid, args.json, args.prometheus),
        Command::Logs(a) => control::logs(
            &config,
            a.lines,
            a.follow,
            a.group.as_deref(),
            a.slot,
            a.level.as_deref(),
        ),
        Command::Events(a) => control::events(&config, a.last, a.json),
        Command::Status(a) => control::status(&config, a.json, a.watch),
        Command::Reload(a) => control::reload(&config, a.group.as_deref()),
        Command::Scale(a) => control::scale(&config, &a.group, &a.count),
        Command::Restart(a) => control::restart(&config, &a.worker),
        Command::Stop(a) => {
            let timeout = match a.timeout.as_deref().map(ringmaster_config::parse_duration) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) => {
                    eprintln!("error: --timeout: {e}");
                    return ExitCode::from(2);
                }
            };
            control::stop(&config, timeout)
        }
    }
}

/// The migrate role: the master started this process to run migrations
/// with its resolved configuration.
pub(crate) fn migrate_role(workers: &[Worker]) -> ExitCode {
    let text = std::env::var(ringmaster_worker::ENV_CONFIG).unwrap_or_default();
    match Config::from_toml_str(&text, ringmaster_worker::ENV_CONFIG) {
        Ok(config) => migrate(&config, workers),
        Err(e) => {
            eprintln!("error: the configuration from the master is invalid: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = Path::new(DEFAULT_CONFIG);
        default.exists().then(|| default.to_path_buf())
    })
}

/// Loads the configuration and resolves each group's worker implementation;
/// on error prints it and gives the exit code.
fn load(path: Option<&Path>, known: &[String]) -> Result<Config, ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    };
    let mut config = Config::load_from_env(path).map_err(|e| fail(&e))?;
    config.resolve_workers(known).map_err(|e| {
        let origin = path.map_or("configuration".into(), |p| p.display().to_string());
        fail(&format!("{origin}: {e}"))
    })?;
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start a runtime: {e}");
            ExitCode::FAILURE
        })
}

fn serve(config: Config, path: Option<PathBuf>, known: Vec<String>, version: &str) -> ExitCode {
    // Errors about a path the configuration names say which file set it.
    let origin = path
        .as_ref()
        .map_or("the default configuration".to_string(), |p| {
            p.display().to_string()
        });
    let hub = match ringmaster_master::logs::LogHub::start(&config.server) {
        Ok(hub) => hub,
        Err(e) => {
            let file = config
                .server
                .log_file
                .as_ref()
                .map_or("stderr".into(), |p| p.display().to_string());
            let what = if config.server.log_file.as_ref().is_some_and(|p| p.is_dir()) {
                "it is a directory; name a file in it, such as log/app.log".to_string()
            } else {
                format!("{e}; fix the path or its directory's permissions")
            };
            eprintln!("error: {origin}: server.log_file: cannot open {file}: {what}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logging::init(crate::logging::Output::Master(
        hub.clone(),
        config.server.log_format,
    ));
    // Always: the binary on disk at a reload decides whether it has any
    // migrations, not the one the master started from.
    let opts = ServeOptions::new(config, known)
        .version(version)
        .config_path(path)
        .migrate(true)
        .logs(hub);
    match ringmaster_master::serve(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (MasterError::Config(_) | MasterError::Worker(_) | MasterError::Activation(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e @ (MasterError::PidFile(_) | MasterError::Control(_))) => {
            eprintln!("error: {origin}: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line to stdout; a reader that went away (`check | head`) is
/// its choice, not an error: the command stops quietly instead of
/// panicking as `println!` would.
macro_rules! out {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            return ExitCode::SUCCESS;
        }
    };
}

fn check(config: &Config, path: Option<&Path>, workers: &[Worker]) -> ExitCode {
    use std::io::Write;
    let origin = path.map_or("defaults and environment".into(), |p| {
        p.display().to_string()
    });
    out!("configuration OK ({origin})");
    out!(
        "  usable CPUs: {} (a group without `count` runs one worker per usable CPU)",
        ringmaster_config::CpuBudget::current().describe()
    );
    for (name, g) in &config.groups {
        out!(
            "  group {name}: {} {} on {} ({}), worker {}",
            g.count,
            if g.count == 1 { "worker" } else { "workers" },
            g.listen,
            g.listen_mode,
            g.worker.as_deref().unwrap_or("")
        );
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut failed = 0;
    for name in config.backends.keys() {
        let url = config.backend(name).redacted_url();
        match runtime.block_on(ringmaster_worker::probe(name, config)) {
            Ok(()) => {
                out!("  backend {name}: {url} OK");
            }
            Err(e) => {
                failed += 1;
                out!("  backend {name}: FAILED: {e}");
            }
        }
    }
    failed += check_implicit(config, workers, &runtime);
    if failed > 0 {
        eprintln!("error: {failed} backend(s) unreachable");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Probes the implicit SQLite backends (a module's backend with no
/// `[backends.NAME]`) whose files exist; returns how many failed.
fn check_implicit(config: &Config, workers: &[Worker], runtime: &tokio::runtime::Runtime) -> usize {
    use std::io::Write;
    let mut failed = 0;
    for name in implicit_backends(config, workers) {
        let url = config.backend(&name).url;
        let file = url.strip_prefix("sqlite://").unwrap_or(&url);
        let file = std::path::absolute(file).unwrap_or_else(|_| file.into());
        let what = format!(
            "  backend {name}: {url} (implicit: no [backends.{name}]; file {})",
            file.display()
        );
        // Opening a missing file would create it: `check` changes nothing.
        if !file.exists() {
            let _ = writeln!(
                std::io::stdout().lock(),
                "{what} not created yet (`serve` or `migrate` creates it)"
            );
            continue;
        }
        match runtime.block_on(ringmaster_worker::probe(&name, config)) {
            Ok(()) => {
                let _ = writeln!(std::io::stdout().lock(), "{what} OK");
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stdout().lock(), "{what} FAILED: {e}");
            }
        }
    }
    failed
}

/// The SQL backends the groups' modules name without a
/// `[backends.NAME]` section (each the embedded SQLite file `NAME.db`),
/// once each.
fn implicit_backends(config: &Config, workers: &[Worker]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for group in config.groups.values() {
        let worker = workers
            .iter()
            .find(|w| Some(w.name()) == group.worker.as_deref());
        for backend in worker.map(Worker::backends).unwrap_or_default() {
            let name = backend.name();
            if matches!(backend, ringmaster_worker::Backend::Sql(_))
                && !config.backends.contains_key(name)
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn routes(config: &Config, workers: &[Worker]) -> ExitCode {
    use std::io::Write;
    out!("{:<8} {:<7} {:<32} MODULE", "GROUP", "METHOD", "PATH");
    for (name, group) in &config.groups {
        let Some(worker) = workers
            .iter()
            .find(|w| Some(w.name()) == group.worker.as_deref())
        else {
            continue;
        };
        for r in ringmaster_worker::routes(worker) {
            out!("{name:<8} {:<7} {:<32} {}", r.method, r.path, r.module);
        }
    }
    ExitCode::SUCCESS
}

fn migrate(config: &Config, workers: &[Worker]) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(ringmaster_worker::migrate(workers, config)) {
        Ok(n) => {
            tracing::info!(applied = n, "migrations up to date");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Once: in the migrate role this line is the one the master's
            // log shows (tagged `migrate`), and the master adds only what
            // it does next.
            tracing::error!(error = %e, "migrations failed");
            ExitCode::FAILURE
        }
    }
}
