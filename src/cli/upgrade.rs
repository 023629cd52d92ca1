//! `breadboard upgrade`: replace this binary with a newer release (`selfupdate::update_binary`), then upgrade the
//! engine with the new binary (`selfupdate::EngineStep`), and print what happened. The steps and the reasons are in
//! `src/selfupdate/mod.rs`.

use std::path::Path;

use serde::Serialize;

use super::GlobalArgs;
use crate::build_info::VERSION;
use crate::error::{CliError, ErrorKind, EXIT_UPGRADE_AVAILABLE};
use crate::paths::Paths;
use crate::printer::Printer;
use crate::selfupdate::{self, Action, Change, EngineOutcome, EngineStep, Request};
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// Install exactly this release (a lower one downgrades) instead of the latest
    #[arg(long, value_name = "V", conflicts_with_all = ["rollback", "engine_only"])]
    pub version: Option<String>,
    /// Only report whether an upgrade is available (exit 0: up to date, 100: available)
    #[arg(long, conflicts_with = "rollback")]
    pub check: bool,
    /// Upgrade the breadboard binary only, not the engine
    #[arg(long, conflicts_with = "engine_only")]
    pub cli_only: bool,
    /// Upgrade the engine only (works for npm-managed copies too); as `breadboard engine upgrade`
    #[arg(long)]
    pub engine_only: bool,
    /// Switch back to the binary the last upgrade replaced (kept as <binary>.previous)
    #[arg(long, conflicts_with_all = ["engine_only", "cli_only"])]
    pub rollback: bool,
    /// Do not ask for confirmation (implied without a terminal, or when CI is set)
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct UpgradeJson {
    cli: Option<CliJson>,
    /// `engine upgrade --json`'s document, when the engine step ran.
    engine: Option<serde_json::Value>,
    /// `ran`, `failed`, `no_engine` or `skipped` (`--cli-only`, or a rollback).
    engine_step: &'static str,
}

#[derive(Serialize)]
struct CliJson {
    /// `upgraded`, `downgraded`, `unchanged` or `rolled_back`.
    action: &'static str,
    from: String,
    to: String,
    path: String,
    previous_path: Option<String>,
}

#[derive(Serialize)]
struct CheckJson {
    cli: Option<CliCheckJson>,
    /// `engine upgrade --check --json`'s document, when the engine was checked.
    engine: Option<serde_json::Value>,
    upgrade_available: bool,
}

#[derive(Serialize)]
struct CliCheckJson {
    current: String,
    latest: String,
    upgrade_available: bool,
}

pub(crate) fn run(
    printer: &Printer,
    paths: &Paths,
    settings: &Settings,
    global: &GlobalArgs,
    args: &UpgradeArgs,
) -> anyhow::Result<u8> {
    let exe = selfupdate::running_exe()?;
    let request = Request {
        version: args
            .version
            .as_deref()
            .map(selfupdate::parse_version)
            .transpose()?,
        check: args.check,
        rollback: args.rollback,
        yes: args.yes,
    };
    let engine = EngineStep::new(paths, engine_flags(global), args.json);
    if args.engine_only {
        return engine_only(printer, &engine, &exe, args);
    }
    let (cli, action) = match selfupdate::update_binary(printer, paths, settings, &exe, &request)? {
        Change::Checked { latest, action } => {
            return check(printer, &engine, &exe, args, &latest, action)
        }
        Change::RolledBack { to, previous } => {
            if !args.json {
                printer.result(&format!(
                    "rolled breadboard back {VERSION} -> {to} at {} ({VERSION} is kept as {}; the engine is \
                     unchanged: breadboard engine rollback switches it)",
                    exe.display(),
                    previous.display()
                ));
            }
            let cli = cli_json("rolled_back", &to, &exe, Some(&previous));
            return finish(printer, args.json, Some(cli), None, "skipped", 0);
        }
        Change::UpToDate { latest } => up_to_date(printer, &exe, args, &latest),
        Change::Moved {
            action,
            to,
            previous,
        } => moved(printer, &exe, args.json, action, &to, &previous),
    };
    if args.cli_only {
        return finish(printer, args.json, Some(cli), None, "skipped", 0);
    }
    engine_step(printer, &engine, &exe, args.json, cli, action)
}

/// The binary was replaced (upgraded or downgraded): say so; the engine's step follows.
fn moved(
    printer: &Printer,
    exe: &Path,
    json: bool,
    action: Action,
    to: &str,
    previous: &Path,
) -> (CliJson, Action) {
    if !json {
        printer.result(&format!(
            "{} breadboard {VERSION} -> {to} at {} (the old binary is kept as {}: breadboard upgrade --rollback)",
            action.done(),
            exe.display(),
            previous.display()
        ));
    }
    (cli_json(action.done(), to, exe, Some(previous)), action)
}

/// The binary stays as it is; the engine's step follows.
fn up_to_date(
    printer: &Printer,
    exe: &Path,
    args: &UpgradeArgs,
    latest: &str,
) -> (CliJson, Action) {
    if !args.json {
        printer.result(&up_to_date_line(latest, args.version.is_some()));
    }
    (cli_json("unchanged", latest, exe, None), Action::Unchanged)
}

/// The engine, upgraded by the binary now installed at `exe`.
fn engine_step(
    printer: &Printer,
    engine: &EngineStep,
    exe: &Path,
    json: bool,
    cli: CliJson,
    action: Action,
) -> anyhow::Result<u8> {
    match engine.run(printer, exe, false)? {
        EngineOutcome::NoEngine => {
            printer.info(
                "no engine is installed; skipping the engine step (breadboard engine install installs one)",
            );
            finish(printer, json, Some(cli), None, "no_engine", 0)
        }
        EngineOutcome::Ran { code: 0, json: doc } => {
            finish(printer, json, Some(cli), doc, "ran", 0)
        }
        EngineOutcome::Ran { code, json: doc } => {
            let to = cli.to.clone();
            let code = finish(printer, json, Some(cli), doc, "failed", code)?;
            let message = match action {
                Action::Unchanged => format!(
                    "the engine step (`breadboard engine upgrade`) failed with exit code {code}"
                ),
                moved => format!(
                    "breadboard was {} to {to}, but the engine step (`breadboard engine upgrade`) failed with exit \
                     code {code}",
                    moved.done()
                ),
            };
            printer.error(
                &anyhow::anyhow!(message),
                Some("fix the cause shown above, then run: breadboard upgrade --engine-only"),
            );
            Ok(code)
        }
    }
}

fn cli_json(action: &'static str, to: &str, exe: &Path, previous: Option<&Path>) -> CliJson {
    CliJson {
        action,
        from: VERSION.to_owned(),
        to: to.to_owned(),
        path: exe.display().to_string(),
        previous_path: previous.map(|p| p.display().to_string()),
    }
}

/// The child gets the same output settings as this command.
fn engine_flags(global: &GlobalArgs) -> Vec<String> {
    let mut flags = Vec::new();
    if global.quiet {
        flags.push("--quiet".to_owned());
    }
    for _ in 0..global.verbose {
        flags.push("--verbose".to_owned());
    }
    if let Some(color) = clap::ValueEnum::to_possible_value(&global.color) {
        flags.push(format!("--color={}", color.get_name()));
    }
    if global.no_progress {
        flags.push("--no-progress".to_owned());
    }
    flags
}

fn check(
    printer: &Printer,
    engine: &EngineStep,
    exe: &Path,
    args: &UpgradeArgs,
    latest: &str,
    action: Action,
) -> anyhow::Result<u8> {
    let cli_available = action != Action::Unchanged;
    if !args.json {
        printer.result(&match action {
            Action::Unchanged => up_to_date_line(latest, args.version.is_some()),
            Action::Upgrade => format!("breadboard upgrade available: {VERSION} -> {latest}"),
            Action::Downgrade => format!("breadboard {VERSION} would be downgraded to {latest}"),
        });
    }
    // The engine's newest version depends on the new binary's range: it can only be checked when this binary is
    // the one that stays. Then `upgrade --check` answers for everything `upgrade` would do.
    if cli_available || args.cli_only {
        return emit_check(printer, args.json, latest, cli_available, None, false);
    }
    match engine.run(printer, exe, true)? {
        EngineOutcome::NoEngine => emit_check(printer, args.json, latest, false, None, false),
        // Without --json the child printed its own line.
        EngineOutcome::Ran { code, json } if code == 0 || code == EXIT_UPGRADE_AVAILABLE => {
            let engine_available = code == EXIT_UPGRADE_AVAILABLE;
            emit_check(printer, args.json, latest, false, json, engine_available)
        }
        EngineOutcome::Ran { code, .. } => {
            printer.error(
                &anyhow::anyhow!(
                    "checking the engine (`breadboard engine upgrade --check`) failed with exit code {code}"
                ),
                Some("breadboard upgrade --check --cli-only checks the binary alone"),
            );
            Ok(code)
        }
    }
}

fn emit_check(
    printer: &Printer,
    json: bool,
    latest: &str,
    cli_available: bool,
    engine: Option<serde_json::Value>,
    engine_available: bool,
) -> anyhow::Result<u8> {
    let available = cli_available || engine_available;
    if json {
        printer.json(&CheckJson {
            cli: Some(CliCheckJson {
                current: VERSION.to_owned(),
                latest: latest.to_owned(),
                upgrade_available: cli_available,
            }),
            engine,
            upgrade_available: available,
        });
    }
    Ok(if available { EXIT_UPGRADE_AVAILABLE } else { 0 })
}

/// `--engine-only`: `engine upgrade` (or `--check`) through this binary; no install-method check, because the engine
/// venv belongs to breadboard whoever installed the binary.
fn engine_only(
    printer: &Printer,
    engine: &EngineStep,
    exe: &Path,
    args: &UpgradeArgs,
) -> anyhow::Result<u8> {
    match engine.run(printer, exe, args.check)? {
        EngineOutcome::NoEngine => Err(CliError::new(
            ErrorKind::Failure,
            "no engine is installed, so there is nothing to upgrade",
        )
        .hint("breadboard engine install")
        .into()),
        EngineOutcome::Ran { code, json } => {
            if args.json {
                if args.check {
                    printer.json(&CheckJson {
                        cli: None,
                        upgrade_available: code == EXIT_UPGRADE_AVAILABLE,
                        engine: json,
                    });
                } else {
                    let step = if code == 0 { "ran" } else { "failed" };
                    printer.json(&UpgradeJson {
                        cli: None,
                        engine: json,
                        engine_step: step,
                    });
                }
            }
            Ok(code)
        }
    }
}

fn finish(
    printer: &Printer,
    json: bool,
    cli: Option<CliJson>,
    engine: Option<serde_json::Value>,
    engine_step: &'static str,
    code: u8,
) -> anyhow::Result<u8> {
    if json {
        printer.json(&UpgradeJson {
            cli,
            engine,
            engine_step,
        });
    }
    Ok(code)
}

fn up_to_date_line(latest: &str, explicit: bool) -> String {
    if explicit || latest == VERSION {
        format!("breadboard {VERSION} is up to date")
    } else {
        format!("breadboard {VERSION} is up to date (newer than the latest release, {latest})")
    }
}
