//! `engine start --foreground`: the supervisor loop in this process.

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::crash::{self};
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::registration::{self, Registration};
use crate::supervisor;
use crate::sys;

use super::*;

/// Runs the supervisor loop in this process (`engine start --foreground`), after the control lock is released (the
/// instance lock was taken under it). `on_ready` runs once, when the first engine passes its handshake (`--json`
/// prints the start document from there). Returns the exit code: 0 after Ctrl-C (a clean stop).
pub(crate) fn run_foreground(
    ctx: &Ctx,
    started: Started,
    on_ready: &mut dyn FnMut(&Registration),
) -> anyhow::Result<u8> {
    let Started {
        reg,
        version,
        foreground,
        ..
    } = started;
    let Some(plan) = foreground else {
        return Ok(0);
    };
    let ForegroundPlan {
        argv,
        listener,
        listen_fd,
        restart,
        env,
        opts,
        instance_lock,
    } = plan;
    let opts = &opts;
    let instance_lock = match instance_lock {
        Some(lock) => lock,
        None => supervisor::take_instance_lock(&ctx.paths)
            .map_err(|why| CliError::new(ErrorKind::Failure, why))?,
    };
    // The engine inherits our environment: set it here (this process is single-threaded at this point).
    for k in super::start::NOT_INHERITED {
        std::env::remove_var(k);
    }
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let printer = ctx.printer;
    let pinned = version.clone();
    let strict = opts.protocol == ProtocolMode::Strict;
    let paths = ctx.paths.clone();
    // The handshake deadline runs from each engine's spawn (restart = "on-failure" spawns new ones).
    let mut deadline = Instant::now() + opts.timeout;
    let mut deadline_pid = 0;
    let mut announced = false;
    // Why this process stopped the engine itself (a failed handshake): that, not the engine's exit, is the error.
    let mut failure: Option<anyhow::Error> = None;
    // A stop this process decides on is a requested stop: record the intent before the signal, as `engine stop`
    // does, so the supervisor loop neither restarts the engine nor records a crash.
    let stop_engine = |r: &Registration| {
        let _ = registration::request_stop(&paths, &r.instance_id);
        let _ = sys::killpg(r.pgid, libc::SIGTERM);
    };
    let mut hook = |r: &Registration| -> bool {
        if r.pid != deadline_pid {
            deadline_pid = r.pid;
            deadline = Instant::now() + opts.timeout;
        }
        let Some(client) = client_for(r, Duration::from_millis(300)) else {
            return true;
        };
        match client.health() {
            Ok(h) if identity_ok(&h, r) => {
                let problems = handshake_problems(&h, pinned.as_deref());
                if !problems.is_empty() {
                    if strict {
                        printer.warn(&format!(
                            "handshake failed (strict protocol mode): {}; stopping the engine",
                            problems.join("; ")
                        ));
                        failure = Some(handshake_error(&problems, pinned.as_deref(), None));
                        stop_engine(r);
                        return true;
                    }
                    for p in &problems {
                        printer.warn(&format!("{p} (continuing: protocol mode soft)"));
                    }
                }
                let mut done = r.clone();
                done.ready_at = Some(fsutil::now_rfc3339());
                let _ = registration::write(&paths, &done);
                printer.info(&format!(
                    "engine ready at {} (pid {}); Ctrl-C stops it",
                    r.url, r.pid
                ));
                if !announced {
                    announced = true;
                    on_ready(&done);
                }
                true
            }
            _ => {
                if Instant::now() > deadline {
                    printer.warn(&format!(
                        "the engine did not answer its handshake within {}s: stopping it",
                        opts.timeout.as_secs_f64()
                    ));
                    failure = Some(
                        CliError::new(
                            ErrorKind::Failure,
                            format!(
                                "the engine did not answer its handshake within {}s; it was stopped",
                                opts.timeout.as_secs_f64()
                            ),
                        )
                        .hint("see the engine's output above, or raise --timeout")
                        .into(),
                    );
                    stop_engine(r);
                    return true;
                }
                false
            }
        }
    };
    let code = supervisor::supervise(
        &ctx.paths,
        reg.clone(),
        &argv,
        listen_fd,
        restart,
        supervisor::Sink::Stderr,
        Some(supervisor::Attached {
            ready_hook: &mut hook,
            instance_lock,
        }),
    );
    drop(listener);
    registration::clear_stop_request(&ctx.paths, &reg.instance_id);
    if let Some(e) = failure {
        // The supervisor recorded a requested stop: nothing to report as a crash.
        return Err(e);
    }
    if code == supervisor::EXIT_LOCK_BUSY {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!(
                "could not take the instance lock {}",
                ctx.paths.engine_lock().display()
            ),
        )
        .hint("breadboard engine status")
        .into());
    }
    if code != 0 {
        if let Some(exit) = crash::read(&ctx.paths).filter(|e| e.instance_id == reg.instance_id) {
            crash::acknowledge(&ctx.paths, &exit.instance_id);
            let what = match &exit.crash_loop {
                Some(cl) => format!(
                    "{}; the last one: {}",
                    cl.summary(exit.restarts),
                    exit.how()
                ),
                None => exit.how(),
            };
            return Err(
                CliError::new(ErrorKind::Failure, format!("the engine exited: {what}"))
                    .hint(
                        "see the engine's output above; then: breadboard engine start --foreground",
                    )
                    .into(),
            );
        }
        return Err(CliError::new(ErrorKind::Failure, "the engine exited").into());
    }
    printer.info("engine stopped");
    Ok(0)
}
