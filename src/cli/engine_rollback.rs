//! `breadboard engine rollback`: swap `current` and `previous`.

use serde::Serialize;

use super::Ctx;
use crate::error::{CliError, ErrorKind};
use crate::lock::ControlLock;
use crate::venv::store::Store;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Print the result as JSON: {current, previous}
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct RollbackJson {
    current: String,
    previous: Option<String>,
}

pub fn run(ctx: &Ctx, args: &RollbackArgs) -> anyhow::Result<u8> {
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine rollback", ctx.printer)?;
    let store = Store::new(&ctx.paths);
    store.clean_leftovers(ctx.printer)?;
    let Some(target) = store.previous().filter(|p| store.is_complete(p)) else {
        return Err(CliError::new(ErrorKind::Failure, "there is no previous engine version to roll back to")
            .hint("see what is installed with `breadboard engine list`; install a version with `breadboard engine install --version V`")
            .into());
    };
    if let Err(why) = store.health(&target) {
        ctx.printer.warn(&format!(
            "engine {target} is broken ({why}); rebuild it with `breadboard engine install --version {target} --force`"
        ));
    }
    let from = store.current().filter(|c| store.is_complete(c));
    store.swap(&target, from.as_deref())?;
    crate::engine::warn_if_running_another(&ctx.paths, ctx.printer, &target);
    if args.json {
        ctx.printer.json(&RollbackJson {
            current: target,
            previous: from,
        });
    } else {
        match from {
            Some(from) => ctx
                .printer
                .result(&format!("rolled back from engine {from} to {target}")),
            None => ctx.printer.result(&format!("switched to engine {target}")),
        }
    }
    Ok(0)
}
