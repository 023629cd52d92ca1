//! Command-line definition (clap derive) and dispatch. One file per command; each holds its `Args` and `run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::context::Ctx;
use crate::paths::Paths;
use crate::printer::{ColorChoice, Printer, Verbosity};
use crate::settings::{Flags, Settings};

pub mod ask;
pub mod completions;
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
pub mod sessions_attach;
pub mod sessions_follow;
pub mod sessions_list;
pub mod sessions_new;
pub mod sessions_rm;
pub mod sessions_send;
pub mod sessions_show;
pub mod sessions_stop;
pub mod sessions_watch;
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
    /// Ask the engine once: a one-shot session whose answer streams to stdout
    Ask(ask::AskArgs),
    /// Talk to the engine's sessions: list, show, new, send, follow, attach, stop, rm
    Sessions(SessionsArgs),
    /// Manage the engine: install, upgrade, roll back, uninstall, list, start, stop, status, logs
    Engine(EngineArgs),
    /// Upgrade breadboard itself (when install.sh installed it), then the engine
    Upgrade(upgrade::UpgradeArgs),
    /// Print a shell completion script (bash, zsh, fish, ...) on stdout
    Completions(completions::CompletionsArgs),
    /// Internal: write the man pages into a directory (the release tarball ships them)
    #[command(name = "__man", hide = true)]
    Man(completions::ManArgs),
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

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub command: SessionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List the sessions: id, status, provider/model, created, last activity, last seq
    #[command(visible_alias = "ls")]
    List(sessions_list::ListArgs),
    /// Show a session's summary and its conversation so far
    Show(sessions_show::ShowArgs),
    /// Create an idle interactive session and print its id
    New(sessions_new::NewArgs),
    /// Send an input to a session (--wait streams its answer)
    Send(sessions_send::SendArgs),
    /// Print a session's events, then follow them live (Ctrl-C detaches; nothing is cancelled)
    Follow(sessions_follow::FollowArgs),
    /// Talk to a session in a line editor: each line is an input, Ctrl-C stops the turn, Ctrl-D detaches
    Attach(sessions_attach::AttachArgs),
    /// Stop the turn in progress (the session stays and takes the next input)
    Stop(sessions_stop::StopArgs),
    /// Delete a session and its events
    #[command(visible_alias = "delete")]
    Rm(sessions_rm::RmArgs),
}

/// How the client commands reach the engine: the local one by default, or a remote one.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Engine connection")]
pub struct ConnectArgs {
    /// A remote engine (http:// or https://) instead of the local one; also BREADBOARD_URL or [client] url
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// File holding the remote engine's token; also BREADBOARD_API_TOKEN_FILE (or BREADBOARD_API_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Handshake mode: strict fails on a protocol or version mismatch, soft warns (config protocol.mode)
    #[arg(long, value_enum)]
    pub protocol: Option<crate::engine::ProtocolMode>,
}

impl ConnectArgs {
    pub fn connect(
        &self,
        start: crate::client::StartPolicy,
        wait: std::time::Duration,
    ) -> crate::client::Connect {
        // The connection flags themselves are settings (`ctx.settings`): see `Command::setting_flags`.
        crate::client::Connect { start, wait }
    }
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

/// Runs the command; `Ok` carries the exit code (0, or 100 for "upgrade available").
pub fn run(cli: Cli, printer: &Printer) -> anyhow::Result<u8> {
    let flags = cli.command.setting_flags()?;
    let load = |printer| Ctx::load_with(printer, &flags);
    let lenient = |printer| Ctx::load_lenient_with(printer, &flags);
    match cli.command {
        Command::Engine(engine) => match engine.command {
            EngineCommand::List(args) => {
                // No config needed to list: keeps `engine list` to a few syscalls.
                engine_list::run(&Paths::from_env()?, printer, &args)
            }
            EngineCommand::Install(args) => engine_install::run(&load(printer)?, &args),
            EngineCommand::Upgrade(args) => engine_upgrade::run(&load(printer)?, &args),
            EngineCommand::Rollback(args) => engine_rollback::run(&load(printer)?, &args),
            EngineCommand::Uninstall(args) => engine_uninstall::run(&load(printer)?, &args),
            EngineCommand::Start(args) => engine_start::run(&load(printer)?, &args),
            EngineCommand::Stop(args) => engine_stop::run(&lenient(printer)?, &args),
            EngineCommand::Restart(args) => engine_restart::run(&load(printer)?, &args),
            EngineCommand::Status(args) => engine_status::run(&lenient(printer)?, &args),
            // Doctor loads the config itself: a broken config is one of its findings, not a reason to stop.
            EngineCommand::Doctor(args) => {
                let paths = Paths::from_env()?;
                print_settings(&paths, printer);
                engine_doctor::run(&paths, printer, &args)
            }
            EngineCommand::Logs(args) => engine_logs::run(&lenient(printer)?, &args),
        },
        Command::Ask(args) => ask::run(&load(printer)?, &args),
        Command::Sessions(sessions) => {
            let ctx = load(printer)?;
            match sessions.command {
                SessionsCommand::List(args) => sessions_list::run(&ctx, &args),
                SessionsCommand::Show(args) => sessions_show::run(&ctx, &args),
                SessionsCommand::New(args) => sessions_new::run(&ctx, &args),
                SessionsCommand::Send(args) => sessions_send::run(&ctx, &args),
                SessionsCommand::Follow(args) => sessions_follow::run(&ctx, &args),
                SessionsCommand::Attach(args) => sessions_attach::run(&ctx, &args),
                SessionsCommand::Stop(args) => sessions_stop::run(&ctx, &args),
                SessionsCommand::Rm(args) => sessions_rm::run(&ctx, &args),
            }
        }
        Command::Upgrade(args) => {
            // No Ctx: a config that does not parse is left to the engine step to report, its values to the
            // defaults here.
            let paths = Paths::from_env()?;
            let config = crate::config::Config::load_quiet(&paths.config_file()).ok();
            let settings = Settings::without_command(&paths, config.as_ref());
            settings.print_verbose(printer);
            upgrade::run(printer, &paths, &settings, &cli.global, &args)
        }
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => completions::run_man(printer, &args),
        Command::Supervise(args) => supervise::run(&args),
    }
}

/// With `-v`, the settings of doctor, which builds no [`Ctx`], printed as a [`Ctx`] prints them; a config that does
/// not parse is left to doctor to report, its values to the defaults here.
fn print_settings(paths: &Paths, printer: &Printer) {
    if printer.verbose() {
        let config = crate::config::Config::load_quiet(&paths.config_file()).ok();
        crate::settings::print_entries(printer, &Settings::report(paths, config.as_ref()));
    }
}

impl Command {
    /// The flags that are settings (`--port`, `--python`, `--url`, ...), for [`crate::settings::Settings`].
    fn setting_flags(&self) -> anyhow::Result<Flags> {
        let start = |a: &engine_start::StartArgs| Flags {
            port: a.port.clone(),
            // clap fills in the default: only another address is known to come from the flag.
            host: Some(a.host.clone()).filter(|h| h != crate::settings::DEFAULT_HOST),
            ray_address: a.ray_address.clone(),
            protocol: a.protocol,
            ssl_certfile: a.ssl_certfile.clone(),
            ssl_keyfile: a.ssl_keyfile.clone(),
            ..Flags::default()
        };
        let connect = |c: &ConnectArgs| Flags {
            url: c.url.clone(),
            token_file: c.token_file.clone(),
            protocol: c.protocol,
            ..Flags::default()
        };
        Ok(match self {
            Command::Engine(engine) => match &engine.command {
                EngineCommand::Install(a) => Flags {
                    python: a.python.clone(),
                    installer: a.installer,
                    source: engine_install::source_from_flags(&a.source)?,
                    ..Flags::default()
                },
                EngineCommand::Upgrade(a) => Flags {
                    python: a.python.clone(),
                    installer: a.installer,
                    ..Flags::default()
                },
                EngineCommand::Start(a) => start(a),
                EngineCommand::Restart(a) => start(&a.start),
                _ => Flags::default(),
            },
            Command::Ask(a) => connect(&a.connect),
            Command::Sessions(s) => connect(match &s.command {
                SessionsCommand::List(a) => &a.connect,
                SessionsCommand::Show(a) => &a.connect,
                SessionsCommand::New(a) => &a.connect,
                SessionsCommand::Send(a) => &a.connect,
                SessionsCommand::Follow(a) => &a.connect,
                SessionsCommand::Attach(a) => &a.connect,
                SessionsCommand::Stop(a) => &a.connect,
                SessionsCommand::Rm(a) => &a.connect,
            }),
            _ => Flags::default(),
        })
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
    /// A local engine project directory or wheel file, or the http(s) URL of a wheel (verified by its `#sha256=` or
    /// the SHA256SUMS next to it). Remembered in config.toml
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
