//! `engine start --foreground`: the supervisor loop in this process.

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::engine::crash;
use crate::engine::registration::{self, Registration};
use crate::engine_client::Health;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::os::sys;
use crate::supervisor;

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
    let instance_lock = match plan.instance_lock {
        Some(lock) => lock,
        None => supervisor::take_instance_lock(&ctx.paths)
            .map_err(|why| CliError::new(ErrorKind::Failure, why))?,
    };
    // The engine inherits our environment: set it here (this process is single-threaded at this point).
    for k in super::start::NOT_INHERITED {
        std::env::remove_var(k);
    }
    for (k, v) in &plan.env {
        std::env::set_var(k, v);
    }
    let mut watch = Watch {
        ctx,
        pinned: version,
        opts: &plan.opts,
        deadline: Instant::now() + plan.opts.timeout,
        deadline_pid: 0,
        announced: false,
        failure: None,
        on_ready,
    };
    let code = supervisor::supervise(
        &ctx.paths,
        reg.clone(),
        &plan.argv,
        plan.listen_fd,
        plan.restart,
        supervisor::Sink::Stderr,
        Some(supervisor::Attached {
            ready_hook: &mut |r: &Registration| watch.poll(r),
            instance_lock,
        }),
    );
    drop(plan.listener);
    registration::clear_stop_request(&ctx.paths, &reg.instance_id);
    if let Some(e) = watch.failure {
        // The supervisor recorded a requested stop: nothing to report as a crash.
        return Err(e);
    }
    outcome(ctx, &reg, code)
}

/// The supervisor loop's view of each engine it spawns until that one passes its handshake.
struct Watch<'a, 'r> {
    ctx: &'a Ctx<'a>,
    pinned: Option<String>,
    opts: &'a StartOpts,
    /// The handshake deadline runs from each engine's spawn (restart = "on-failure" spawns new ones).
    deadline: Instant,
    deadline_pid: i32,
    announced: bool,
    /// Why this process stopped the engine itself (a failed handshake): that, not the engine's exit, is the error.
    failure: Option<anyhow::Error>,
    on_ready: &'r mut dyn FnMut(&Registration),
}

impl Watch<'_, '_> {
    /// Whether the engine `r` is done with: ready, or stopped by this process.
    fn poll(&mut self, r: &Registration) -> bool {
        if r.pid != self.deadline_pid {
            self.deadline_pid = r.pid;
            self.deadline = Instant::now() + self.opts.timeout;
        }
        let Some(client) = client_for(r, Duration::from_millis(300)) else {
            return true;
        };
        match client.health() {
            Ok(h) if identity_ok(&h, r) => self.answered(r, &h),
            _ if Instant::now() > self.deadline => {
                self.overdue(r);
                true
            }
            _ => false,
        }
    }

    /// It answers as itself: strict handshake failures stop it, soft ones are warned about; else it is ready.
    fn answered(&mut self, r: &Registration, h: &Health) -> bool {
        let printer = self.ctx.printer;
        let problems = handshake_problems(h, self.pinned.as_deref());
        if !problems.is_empty() {
            if self.opts.protocol == ProtocolMode::Strict {
                printer.warn(&format!(
                    "handshake failed (strict protocol mode): {}; stopping the engine",
                    problems.join("; ")
                ));
                self.failure = Some(handshake_error(&problems, self.pinned.as_deref(), None));
                self.stop_engine(r);
                return true;
            }
            for p in &problems {
                printer.warn(&format!("{p} (continuing: protocol mode soft)"));
            }
        }
        let mut done = r.clone();
        done.ready_at = Some(fsutil::now_rfc3339());
        let _ = registration::write(&self.ctx.paths, &done);
        printer.info(&format!(
            "engine ready at {} (pid {}); Ctrl-C stops it",
            r.url, r.pid
        ));
        if !self.announced {
            self.announced = true;
            (self.on_ready)(&done);
        }
        true
    }

    /// No handshake within `--timeout`: the engine is stopped, and that is the error.
    fn overdue(&mut self, r: &Registration) {
        let secs = self.opts.timeout.as_secs_f64();
        self.ctx.printer.warn(&format!(
            "the engine did not answer its handshake within {secs}s: stopping it"
        ));
        self.failure = Some(
            CliError::new(
                ErrorKind::Failure,
                format!("the engine did not answer its handshake within {secs}s; it was stopped"),
            )
            .hint("see the engine's output above, or raise --timeout")
            .into(),
        );
        self.stop_engine(r);
    }

    /// A stop this process decides on is a requested stop: the intent is recorded before the signal, as `engine stop`
    /// does, so the supervisor loop neither restarts the engine nor records a crash.
    fn stop_engine(&self, r: &Registration) {
        let _ = registration::request_stop(&self.ctx.paths, &r.instance_id);
        let _ = sys::killpg(r.pgid, libc::SIGTERM);
    }
}

/// What the supervisor loop's exit `code` means for `engine start --foreground`.
fn outcome(ctx: &Ctx, reg: &Registration, code: u8) -> anyhow::Result<u8> {
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
    if code == 0 {
        ctx.printer.info("engine stopped");
        return Ok(0);
    }
    let Some(exit) = crash::read(&ctx.paths).filter(|e| e.instance_id == reg.instance_id) else {
        return Err(CliError::new(ErrorKind::Failure, "the engine exited").into());
    };
    crash::acknowledge(&ctx.paths, &exit.instance_id);
    let what = match &exit.crash_loop {
        Some(cl) => format!(
            "{}; the last one: {}",
            cl.summary(exit.restarts),
            exit.how()
        ),
        None => exit.how(),
    };
    Err(
        CliError::new(ErrorKind::Failure, format!("the engine exited: {what}"))
            .hint("see the engine's output above; then: breadboard engine start --foreground")
            .into(),
    )
}
