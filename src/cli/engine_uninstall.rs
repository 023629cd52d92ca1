//! `breadboard engine uninstall [--purge]`: remove the engine venvs and the current/previous links; `--purge` also
//! deletes the engine's data dir, after a confirmation on a terminal or with `--yes`. Refused while an engine runs.

use serde::Serialize;

use super::Ctx;
use crate::engine::{self, Diagnosis};
use crate::error::{CliError, ErrorKind};
use crate::lock::ControlLock;
use crate::venv::store::Store;

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Also delete the engine's data (sessions, logs of runs) under BREADBOARD_HOME/data
    #[arg(long)]
    pub purge: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Print the result as JSON: {removed_versions, purged_data}
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct UninstallJson {
    removed_versions: Vec<String>,
    purged_data: bool,
}

/// Refuses while an engine runs: its venv (and, with `--purge`, its data) would be deleted under it. Like rustup
/// and uv, the user stops it first; nothing is stopped implicitly, not even with `--yes`.
fn refuse_if_running(ctx: &Ctx) -> anyhow::Result<()> {
    let reg = match engine::diagnose(&ctx.paths, None, false)? {
        Diagnosis::Live(live) => Some(live.reg),
        Diagnosis::Unregistered => None,
        _ => return Ok(()),
    };
    let what = match &reg {
        Some(r) => format!(
            "an engine is running at {} (pid {}{})",
            r.url,
            r.pid,
            if r.foreground {
                ", in the foreground"
            } else {
                ""
            }
        ),
        None => format!(
            "an engine is starting ({} is held)",
            ctx.paths.engine_lock().display()
        ),
    };
    Err(CliError::new(
        ErrorKind::Failure,
        format!(
            "{what}; uninstalling would delete its venv and data under it, so nothing was removed"
        ),
    )
    .hint(if reg.as_ref().is_some_and(|r| r.foreground) {
        "stop it (Ctrl-C in its terminal, or `breadboard engine stop`), then run this command again"
    } else {
        "breadboard engine stop, then run this command again"
    })
    .into())
}

pub fn run(ctx: &Ctx, args: &UninstallArgs) -> anyhow::Result<u8> {
    let data = ctx.paths.data_dir();
    // Before any question; checked again under the lock.
    refuse_if_running(ctx)?;
    // Ask before taking the lock: a prompt must not block other commands.
    if args.purge && !args.yes && data.exists() {
        if !ctx.printer.interactive() {
            return Err(CliError::new(
                ErrorKind::Usage,
                format!(
                    "refusing to delete {} without confirmation (not a terminal)",
                    data.display()
                ),
            )
            .hint("breadboard engine uninstall --purge --yes")
            .into());
        }
        if !ctx.printer.confirm(&format!(
            "Delete the engine's data in {}? This cannot be undone.",
            data.display()
        )) {
            return Err(CliError::new(ErrorKind::Usage, "aborted: nothing was removed").into());
        }
    }
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine uninstall", ctx.printer)?;
    // Every start takes the control lock, so no engine can start from here on.
    refuse_if_running(ctx)?;
    let (removed, purged) = Store::new(&ctx.paths).remove_all(args.purge)?;
    if args.json {
        ctx.printer.json(&UninstallJson {
            removed_versions: removed,
            purged_data: purged,
        });
    } else {
        if removed.is_empty() {
            ctx.printer.result("no engine versions were installed");
        } else {
            ctx.printer
                .result(&format!("removed engine versions: {}", removed.join(", ")));
        }
        if purged {
            ctx.printer
                .result(&format!("deleted engine data in {}", data.display()));
        }
    }
    Ok(0)
}
