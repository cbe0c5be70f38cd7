//! The command line of the master role: `serve` and `check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ringmaster_config::{Config, EXIT_CONFIG};
use ringmaster_master::{MasterError, ServeOptions};
use ringmaster_worker::Worker;

/// The file `serve` reads when `--config` is not given and it exists.
const DEFAULT_CONFIG: &str = "ringmaster.toml";

#[derive(Debug, Parser)]
#[command(version, about = "A ringmaster application cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the master: bind the groups' addresses and run their workers.
    Serve {
        /// The configuration file (default: ./ringmaster.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the groups it defines.
    Check {
        /// The configuration file (default: ./ringmaster.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub(crate) fn main(workers: &[Arc<dyn Worker>]) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let known: Vec<String> = workers.iter().map(|w| w.name().to_string()).collect();
    match cli.command {
        Command::Serve { config } => serve(config, known),
        Command::Check { config } => check(config, &known),
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
    ringmaster_master::resolve_workers(&mut config, known).map_err(|e| {
        let origin = path.map_or("configuration".into(), |p| p.display().to_string());
        fail(&format!("{origin}: {e}"))
    })?;
    Ok(config)
}

fn serve(config: Option<PathBuf>, known: Vec<String>) -> ExitCode {
    let path = config_path(config);
    let config = match load(path.as_deref(), &known) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = ServeOptions::new(config, known).config_path(path);
    match ringmaster_master::serve(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (MasterError::Config(_) | MasterError::Worker(_))) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: Option<PathBuf>, known: &[String]) -> ExitCode {
    let path = config_path(config);
    let config = match load(path.as_deref(), known) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let origin = path
        .as_deref()
        .map_or("defaults and environment".into(), |p| {
            p.display().to_string()
        });
    println!("configuration OK ({origin})");
    for (name, g) in &config.groups {
        println!(
            "  group {name}: {} workers on {} ({}), worker {}",
            g.count,
            g.listen,
            g.listen_mode,
            g.worker.as_deref().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}
