//! `engine upgrade` with an engine running: the engine is restarted onto the version just installed, and when that
//! one fails to start or to pass its handshake, the previous version is switched back and started again.

use std::time::Duration;

use super::{is_loopback, start_locked, stop_locked, PortSpec, ProtocolMode, StartOpts};
use crate::context::Ctx;
use crate::engine::registration::Registration;
use crate::error::{CliError, ErrorKind};
use crate::venv::store::Store;

/// Restarts the running engine onto the new current version; if the new one fails to start or to pass its
/// handshake, switches back to `old` and starts it again (exit 1, naming the log).
pub(crate) fn restart_onto_new(
    ctx: &Ctx,
    store: &Store,
    reg: &Registration,
    old: &str,
    protocol: ProtocolMode,
) -> anyhow::Result<()> {
    let opts = StartOpts {
        port: PortSpec::Fixed(reg.port),
        host: reg.host.clone(),
        ray_address: reg.ray_address.clone(),
        timeout: Duration::from_secs(60),
        // Only a detached engine is restarted (see `run`).
        foreground: false,
        protocol,
        allow_remote: !is_loopback(&reg.host),
        tls: reg.tls.clone(),
    };
    let new = store.current().unwrap_or_default();
    ctx.printer
        .info(&format!("restarting the running engine onto {new}"));
    stop_locked(ctx, Duration::from_secs(20), false, true)?;
    let log = ctx.paths.engine_log();
    match start_locked(ctx, &opts) {
        Ok(started) => {
            let line = format!(
                "engine restarted at {} (pid {}, engine {new})",
                started.reg.url, started.reg.pid
            );
            // stdout holds one result, the install report above (one document with --json): the restart that
            // follows it is progress.
            ctx.printer.info(&line);
            Ok(())
        }
        Err(e) => {
            ctx.printer.error(&e, None);
            ctx.printer.warn(&format!(
                "engine {new} failed to start; rolling back to {old}"
            ));
            // The failed start's log is rotated away by the next start: name where it went.
            store.swap(old, Some(&new))?;
            let failed_log = std::path::PathBuf::from(format!("{}.1", log.display()));
            let started = start_locked(ctx, &opts)?;
            Err(CliError::new(
                ErrorKind::Failure,
                format!(
                    "upgrade to {new} rolled back: engine {old} is running again at {} (pid {}); the failed start's log is {}",
                    started.reg.url,
                    started.reg.pid,
                    failed_log.display()
                ),
            )
            .hint(format!("breadboard engine logs -n 200; inspect {}", failed_log.display()))
            .into())
        }
    }
}
