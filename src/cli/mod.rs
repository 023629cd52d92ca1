//! Command-line definition (clap derive) and dispatch. One file per command; each holds its `Args` and `run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::error::{CliError, ErrorKind};
use crate::paths::Paths;
use crate::printer::{ColorChoice, Printer, Verbosity};

pub mod engine_doctor;
pub mod engine_install;
pub mod engine_list;
pub mod engine_logs;
pub mod engine_restart;
pub mod engine_rollback;
pub mod engine_start;
pub mod engine_status;
pub mod engine_stop;
pub mod engine_uninstall;
pub mod engine_upgrade;
pub mod supervise;
pub mod upgrade;

#[derive(Debug, Parser)]
#[command(
    name = "breadboard",
    version = crate::build_info::VERSION,
    about = "Install, supervise and talk to the BreadBoard agent engine"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Only print results and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Show more detail, including the installer's output
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colour (NO_COLOR is honoured by `auto`)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Never draw progress bars
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the engine: install, upgrade, roll back, uninstall, list, start, stop, status, logs
    Engine(EngineArgs),
    /// Upgrade breadboard itself (when install.sh installed it), then the engine
    Upgrade(upgrade::UpgradeArgs),
    /// Internal: the engine supervisor spawned by `engine start`
    #[command(name = "__supervise", hide = true)]
    Supervise(supervise::SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    #[command(subcommand)]
    pub command: EngineCommand,
}

#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Install the engine into a managed venv and make it current
    Install(engine_install::InstallArgs),
    /// Install the newest engine version in range side by side, then switch to it
    Upgrade(engine_upgrade::UpgradeArgs),
    /// Switch back to the previous engine version
    Rollback(engine_rollback::RollbackArgs),
    /// Remove the engine venvs (and with --purge, the engine's data)
    Uninstall(engine_uninstall::UninstallArgs),
    /// List installed engine versions
    #[command(visible_alias = "versions")]
    List(engine_list::ListArgs),
    /// Start the engine in the background (idempotent)
    Start(engine_start::StartArgs),
    /// Stop the engine and everything it started (idempotent)
    Stop(engine_stop::StopArgs),
    /// Stop and start the engine under one lock
    Restart(engine_restart::RestartArgs),
    /// Show whether the engine runs (exit code per state)
    Status(engine_status::StatusArgs),
    /// Find what is broken in the setup and say the command that fixes it
    Doctor(engine_doctor::DoctorArgs),
    /// Show (or follow) the engine log
    Logs(engine_logs::LogsArgs),
}

impl Cli {
    pub fn printer(&self) -> Printer {
        let verbosity = if self.global.quiet {
            Verbosity::Quiet
        } else if self.global.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        Printer::new(verbosity, self.global.color, self.global.no_progress)
    }
}

/// What every command gets: resolved paths, the printer and the loaded config.
pub struct Ctx<'a> {
    pub paths: Paths,
    pub printer: &'a Printer,
    pub config: Config,
}

impl<'a> Ctx<'a> {
    /// For commands that need only `run/` and the logs (stop, status, logs): a config.toml that does not parse is
    /// warned about and defaults are used, so a typo in it never keeps a running engine from being seen or stopped.
    pub fn load_lenient(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        let paths = Paths::from_env()?;
        let config = match Config::load(&paths.config_file(), printer) {
            Ok(config) => config,
            Err(e) => match e.downcast_ref::<CliError>() {
                Some(ce) if ce.kind == ErrorKind::Config => {
                    let hint = ce
                        .hint
                        .as_deref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    printer.warn(&format!(
                        "{}; using defaults for this command{hint}",
                        ce.message
                    ));
                    Config::default()
                }
                _ => return Err(e),
            },
        };
        Ok(Ctx {
            paths,
            printer,
            config,
        })
    }

    pub fn load(printer: &'a Printer) -> anyhow::Result<Ctx<'a>> {
        let paths = Paths::from_env()?;
        let config = Config::load(&paths.config_file(), printer)?;
        Ok(Ctx {
            paths,
            printer,
            config,
        })
    }
}

/// Runs the command; `Ok` carries the exit code (0, or 100 for "upgrade available").
pub fn run(cli: Cli, printer: &Printer) -> anyhow::Result<u8> {
    match cli.command {
        Command::Engine(engine) => match engine.command {
            EngineCommand::List(args) => {
                // No config needed to list: keeps `engine list` to a few syscalls.
                engine_list::run(&Paths::from_env()?, printer, &args)
            }
            EngineCommand::Install(args) => engine_install::run(&Ctx::load(printer)?, &args),
            EngineCommand::Upgrade(args) => engine_upgrade::run(&Ctx::load(printer)?, &args),
            EngineCommand::Rollback(args) => engine_rollback::run(&Ctx::load(printer)?, &args),
            EngineCommand::Uninstall(args) => engine_uninstall::run(&Ctx::load(printer)?, &args),
            EngineCommand::Start(args) => engine_start::run(&Ctx::load(printer)?, &args),
            EngineCommand::Stop(args) => engine_stop::run(&Ctx::load_lenient(printer)?, &args),
            EngineCommand::Restart(args) => engine_restart::run(&Ctx::load(printer)?, &args),
            EngineCommand::Status(args) => engine_status::run(&Ctx::load_lenient(printer)?, &args),
            // Doctor loads the config itself: a broken config is one of its findings, not a reason to stop.
            EngineCommand::Doctor(args) => engine_doctor::run(&Paths::from_env()?, printer, &args),
            EngineCommand::Logs(args) => engine_logs::run(&Ctx::load_lenient(printer)?, &args),
        },
        Command::Upgrade(args) => upgrade::run(printer, &cli.global, &args),
        Command::Supervise(args) => supervise::run(&args),
    }
}

/// Source flags shared by commands that install.
#[derive(Debug, Args, Default)]
pub struct SourceArgs {
    /// Package index to install the engine from (PEP 503/691 simple index). Remembered in config.toml
    #[arg(long, value_name = "URL")]
    pub index_url: Option<String>,
    /// Additional package index (repeatable). Remembered in config.toml
    #[arg(long, value_name = "URL")]
    pub extra_index_url: Vec<String>,
    /// Directory (or URL) of wheels; alone it means an offline install. Remembered in config.toml
    #[arg(long, value_name = "DIR")]
    pub find_links: Option<String>,
    /// A local engine project directory or wheel file. Remembered in config.toml
    #[arg(long, value_name = "PATH")]
    pub source: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
