//! `breadboard engine restart`: stop + start under one control lock; never reuses the incumbent.

use super::engine_start::{self, StartArgs};
use super::Ctx;
use crate::engine;
use crate::lock::ControlLock;

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// Seconds for the stop ladder
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    pub stop_timeout: f64,
    /// Kill the running engine instead of asking it to stop
    #[arg(long)]
    pub force: bool,
}

pub fn run(ctx: &Ctx, args: &RestartArgs) -> anyhow::Result<u8> {
    let mut opts = engine_start::opts(ctx, &args.start)?;
    // Keep the running engine's port, Ray cluster and TLS unless told otherwise (from its supervisor's own spec when the
    // registration file was lost).
    let prev = crate::engine::registration::peek(&ctx.paths).or_else(|| {
        engine::unregistered_supervisor(&ctx.paths)
            .and_then(crate::engine::registration::from_supervisor)
    });
    if let Some(prev) = prev {
        if args.start.port.is_none() {
            opts.port = engine::PortSpec::Fixed(prev.port);
        }
        if opts.ray_address.is_none() {
            opts.ray_address = prev.ray_address;
        }
        if opts.tls.is_none() {
            opts.tls = prev.tls;
        }
    }
    let t = super::engine_stop::timeout(args.stop_timeout)?;
    let lock = ControlLock::acquire(&ctx.paths, "breadboard engine restart", ctx.printer)?;
    if let engine::Stopped::Stopped { pid, .. } = engine::stop_locked(ctx, t, args.force, true)? {
        ctx.printer.info(&format!("stopped engine pid {pid}"));
    }
    let started = engine::start_locked(ctx, &opts)?;
    drop(lock);
    engine_start::finish(ctx, started, args.start.json, "restarted")
}
