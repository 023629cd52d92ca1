//! `breadboard engine stop`: POST /v1/shutdown, then SIGTERM to the engine's group, then SIGKILL to the
//! supervisor's session; identity verified before every signal. Idempotent: "not running" exits 0.

use std::time::Duration;

use super::Ctx;
use crate::engine::{self, Stopped};
use crate::error::{CliError, ErrorKind};
use crate::lock::ControlLock;

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds for the whole stop ladder (graceful, SIGTERM, SIGKILL)
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    pub timeout: f64,
    /// Skip the graceful steps: SIGKILL the engine's session at once
    #[arg(long)]
    pub force: bool,
}

pub fn timeout(secs: f64) -> anyhow::Result<Duration> {
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(CliError::new(
            ErrorKind::Usage,
            "--timeout must be a positive number of seconds",
        )
        .into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(ctx: &Ctx, args: &StopArgs) -> anyhow::Result<u8> {
    let t = timeout(args.timeout)?;
    let _lock = ControlLock::acquire(&ctx.paths, "breadboard engine stop", ctx.printer)?;
    match engine::stop_locked(ctx, t, args.force, false)? {
        Stopped::NotRunning => ctx.printer.result("engine is not running"),
        Stopped::Stopped { pid, forced } => ctx.printer.result(&format!(
            "engine stopped (pid {pid}{})",
            if forced { ", killed" } else { "" }
        )),
    }
    Ok(0)
}
