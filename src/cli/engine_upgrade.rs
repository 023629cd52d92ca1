//! `breadboard engine upgrade`: install the newest engine version in range side by side, then switch to it.
//! `--check` only reports: exit 0 when up to date, 100 when an upgrade is available (rustup `check` convention).
//! A running (detached) engine is restarted onto the new version, and rolled back if the new one fails its
//! handshake; a foreground engine is left running, with a warning to restart it.

use std::path::PathBuf;

use semver::Version;
use serde::Serialize;

use super::engine_install;
use super::Ctx;
use crate::compat::{self, SUPPORTED_ENGINE};
use crate::config;
use crate::engine;
use crate::error::{CliError, ErrorKind, EXIT_UPGRADE_AVAILABLE};
use crate::lock::ControlLock;
use crate::venv::index::{self as package_index, EngineSource};
use crate::venv::install::{self, Plan};
use crate::venv::store::{InstallerKind, Store};

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// Upgrade (or move) to exactly this version instead of the newest in range
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Only report whether an upgrade is available (exit 0: up to date, 100: available)
    #[arg(long)]
    pub check: bool,
    /// Base Python for the new venv (default: the current engine's)
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Force the installer back end
    #[arg(long, value_enum)]
    pub installer: Option<InstallerKind>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct CheckJson {
    current: String,
    latest: String,
    upgrade_available: bool,
}

pub fn run(ctx: &Ctx, args: &UpgradeArgs) -> anyhow::Result<u8> {
    let store = Store::new(&ctx.paths);
    if args.check {
        // Read-only: no lock, so a check never waits behind a long install.
        return check(ctx, &store, args.json);
    }
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine upgrade", ctx.printer)?;
    store.clean_leftovers(ctx.printer)?;
    let current = current_or_error(&store)?;
    let (source, _) = install::source_or_receipt(ctx, &ctx.settings.source, &store);
    let requested = match &args.version {
        Some(v) => Some(compat::parse_engine_version(v).ok_or_else(|| {
            CliError::new(
                ErrorKind::Usage,
                format!("--version {v:?} is not a release version like 0.1.1"),
            )
        })?),
        None => match newest_or_report(ctx, &store, &source, &current, args.json)? {
            Some(latest) => Some(latest),
            None => return Ok(0),
        },
    };
    let plan = Plan {
        requested,
        source,
        remember_source: false,
        python: config::sourced_python(&ctx.settings.python),
        installer: *ctx.settings.installer.get()?,
        force: false,
    };
    // A running engine is restarted onto the new version (and rolled back if that fails its handshake), with the
    // protocol mode `engine start` would use (resolved now: a bad setting fails before anything is installed). A
    // foreground engine belongs to its terminal: it is not replaced by a detached one, the user restarts it.
    let running = match engine::diagnose(&ctx.paths, Some(ctx.printer), false)? {
        engine::Diagnosis::Live(live) => Some(live.reg),
        _ => None,
    };
    let protocol = match &running {
        Some(reg) if !reg.foreground => Some(*ctx.settings.protocol.get()?),
        _ => None,
    };
    let outcome = install::install_locked(ctx, &store, plan)?;
    engine_install::report(ctx.printer, &outcome, args.json);
    match (running, protocol) {
        (Some(reg), Some(protocol)) => {
            engine::restart_onto_new(ctx, &store, &reg, &current, protocol)?;
            Ok(0)
        }
        (Some(reg), None) => {
            let new = store.current().unwrap_or_default();
            if new != current {
                ctx.printer.warn(&format!(
                    "the running engine (pid {} at {}) runs in the foreground, so it was not restarted: it still runs {current}. \
                     Stop it (Ctrl-C in its terminal) and run `breadboard engine start --foreground` again to use {new}",
                    reg.pid, reg.url
                ));
            }
            Ok(0)
        }
        (None, _) => Ok(0),
    }
}

/// The newest version in range, to upgrade to; `None` when `current` already is (and is healthy), which is reported
/// here.
fn newest_or_report(
    ctx: &Ctx,
    store: &Store,
    source: &EngineSource,
    current: &str,
    json: bool,
) -> anyhow::Result<Option<Version>> {
    let offered = package_index::available_versions(source)?;
    let Some(latest) = newest_in_range(&offered) else {
        return Err(CliError::new(
            ErrorKind::Source,
            format!(
                "{} offers no engine version in the supported range {SUPPORTED_ENGINE}",
                source.describe()
            ),
        )
        .into());
    };
    if Some(&latest) > compat::parse_engine_version(current).as_ref()
        || store.health(current).is_err()
    {
        return Ok(Some(latest));
    }
    if json {
        // Same document as `install --json`, with action "unchanged".
        let unchanged = Plan {
            requested: compat::parse_engine_version(current),
            source: source.clone(),
            remember_source: false,
            python: None,
            installer: None,
            force: false,
        };
        let outcome = install::install_locked(ctx, store, unchanged)?;
        engine_install::report(ctx.printer, &outcome, true);
    } else {
        ctx.printer.result(&format!(
            "engine {current} is up to date (newest in range: {latest})"
        ));
    }
    Ok(None)
}

fn check(ctx: &Ctx, store: &Store, json: bool) -> anyhow::Result<u8> {
    let current = current_or_error(store)?;
    let (source, _) = install::source_or_receipt(ctx, &ctx.settings.source, store);
    let offered = package_index::available_versions(&source)?;
    let latest = newest_in_range(&offered);
    let available = match (&latest, compat::parse_engine_version(&current)) {
        (Some(l), Some(c)) => *l > c,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let latest_text = latest
        .as_ref()
        .map_or_else(|| "none".to_owned(), Version::to_string);
    if json {
        ctx.printer.json(&CheckJson {
            current: current.clone(),
            latest: latest_text.clone(),
            upgrade_available: available,
        });
    } else if available {
        ctx.printer.result(&format!(
            "engine upgrade available: {current} -> {latest_text}"
        ));
    } else {
        ctx.printer
            .result(&format!("engine {current} is up to date"));
    }
    Ok(if available { EXIT_UPGRADE_AVAILABLE } else { 0 })
}

fn newest_in_range(offered: &[Version]) -> Option<Version> {
    offered.iter().rev().find(|v| compat::in_range(v)).cloned()
}

fn current_or_error(store: &Store) -> anyhow::Result<String> {
    store
        .current()
        .filter(|c| store.is_complete(c))
        .ok_or_else(|| {
            CliError::new(
                ErrorKind::Failure,
                "no engine is installed, so there is nothing to upgrade",
            )
            .hint("breadboard engine install")
            .into()
        })
}
