//! Waiting for a started engine: ready when its `/health` names this instance and its handshake passes; an
//! engine already running is reported or waited for, never reused when it is not compatible.

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{self, Registration};
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::supervisor;

use super::*;

/// An engine already running (`diagnosis` is live): reused when it is this instance and compatible, else an error that
/// says what runs and what to do.
pub(super) fn already_live(
    paths: &Paths,
    printer: &Printer,
    diagnosis: Diagnosis,
    timeout: Duration,
) -> anyhow::Result<Started> {
    let Diagnosis::Live(live) = waited_if_busy(paths, printer, diagnosis, timeout) else {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!("{} is held but there is no registration (an engine is starting, or its supervisor is wedged)", paths.engine_lock().display()),
        )
        .hint("breadboard engine status; breadboard engine restart")
        .into());
    };
    let reg = live.reg;
    match live.answer {
        Answer::Ready(h) => Ok(Started {
            version: Some(h.engine_version.clone()),
            reg,
            already_running: true,
            foreground: None,
        }),
        Answer::Incompatible(_, problems) => Err(CliError::new(
            ErrorKind::Failure,
            format!("an incompatible engine is running at {} (pid {}): {}", reg.url, reg.pid, problems.join("; ")),
        )
        .hint("breadboard engine restart  (replaces it with the pinned version)")
        .into()),
        Answer::Stranger(_) => Err(CliError::new(
            ErrorKind::Failure,
            format!("the engine at {} answers with another identity than its registration (pid {}, instance {})", reg.url, reg.pid, reg.instance_id),
        )
        .hint("breadboard engine restart")
        .into()),
        Answer::Busy(e) => Err(CliError::new(
            ErrorKind::Failure,
            format!("an engine is running (pid {}, supervisor {}) but busy at {}: {e}", reg.pid, reg.supervisor_pid, reg.url),
        )
        .hint("wait and retry (breadboard engine status), or breadboard engine restart  (see: breadboard engine logs -n 100)")
        .into()),
        Answer::TokenRefused(e) | Answer::NotAnswering(e) => Err(CliError::new(
            ErrorKind::Failure,
            format!("an engine is running (pid {}, supervisor {}) but not answering at {}: {e}", reg.pid, reg.supervisor_pid, reg.url),
        )
        .hint("breadboard engine restart  (or: breadboard engine logs -n 100)")
        .into()),
        Answer::NoAddress => Err(CliError::new(ErrorKind::Failure, "the engine's address in its registration is invalid")
            .hint("breadboard engine restart")
            .into()),
    }
}

/// A running engine that is busy (connected, no answer yet) is waited for, up to --timeout, rather than called
/// unreachable: it answers once the work that holds it up is done.
fn waited_if_busy(
    paths: &Paths,
    printer: &Printer,
    diagnosis: Diagnosis,
    timeout: Duration,
) -> Diagnosis {
    let Diagnosis::Live(live) = &diagnosis else {
        return diagnosis;
    };
    let Answer::Busy(e) = &live.answer else {
        return diagnosis;
    };
    printer.info(&format!(
        "the engine (pid {}) is running but busy: {e}; waiting up to {}s for it to answer",
        live.reg.pid,
        timeout.as_secs_f64()
    ));
    diagnosis.patiently(paths, timeout)
}

/// Polls until the new instance answers its handshake (or dies, or the timeout passes).
pub(super) fn wait_ready(
    ctx: &Ctx,
    instance_id: &str,
    pinned: Option<&str>,
    opts: &StartOpts,
    child: &mut std::process::Child,
    spawn_at: Instant,
    steps: &mut crate::printer::Steps,
) -> anyhow::Result<Registration> {
    let paths = &ctx.paths;
    let deadline = spawn_at + opts.timeout;
    let mut delay = Duration::from_millis(10);
    let mut announced = false;
    loop {
        let reg = registration::peek(paths).filter(|r| r.instance_id == instance_id);
        let exited = crash::read(paths).filter(|e| e.instance_id == instance_id);
        let sup_done = child.try_wait().ok().flatten();
        if exited.is_some() || sup_done.is_some() {
            return Err(died_before_ready(
                ctx,
                instance_id,
                reg,
                child,
                sup_done,
                steps,
            ));
        }
        if let Some(reg) = reg {
            if !announced {
                steps.step(&format!("waiting for {}/health (pid {})", reg.url, reg.pid));
                announced = true;
            }
            if let Some(ready) = ready_now(ctx, reg, pinned, opts, steps)? {
                return Ok(ready);
            }
        }
        if Instant::now() >= deadline {
            steps.finish();
            return Err(not_ready_in_time(ctx, opts));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// The registered new instance, once its `/health` names it and its handshake passes (strict: a failed handshake
/// stops it; soft: warned about), marked ready. `None` while it does not answer as itself yet.
fn ready_now(
    ctx: &Ctx,
    mut reg: Registration,
    pinned: Option<&str>,
    opts: &StartOpts,
    steps: &mut crate::printer::Steps,
) -> anyhow::Result<Option<Registration>> {
    let Some(health) = client_for(&reg, Duration::from_millis(500)).and_then(|c| c.health().ok())
    else {
        return Ok(None);
    };
    if !identity_ok(&health, &reg) {
        return Ok(None);
    }
    let problems = handshake_problems(&health, pinned);
    if !problems.is_empty() {
        if opts.protocol == ProtocolMode::Strict {
            steps.finish();
            let stopped = stop_locked(ctx, Duration::from_secs(10), false, true);
            return Err(handshake_error(&problems, pinned, stopped.err()));
        }
        for p in &problems {
            ctx.printer
                .warn(&format!("{p} (continuing: protocol mode soft)"));
        }
    }
    reg.ready_at = Some(fsutil::now_rfc3339());
    // The supervisor writes the registration once; ready_at is the CLI's only update.
    if registration::peek(&ctx.paths)
        .is_some_and(|r| r.instance_id == reg.instance_id && r.pid == reg.pid)
    {
        registration::write(&ctx.paths, &reg)?;
    }
    Ok(Some(reg))
}

/// The engine or its supervisor ended before the handshake: wait for the supervisor's cleanup (a failed start is not
/// retried by restart = "on-failure": the stop intent makes the supervisor exit instead of restarting), leave nothing
/// running, then say why.
fn died_before_ready(
    ctx: &Ctx,
    instance_id: &str,
    reg: Option<Registration>,
    child: &mut std::process::Child,
    sup_done: Option<std::process::ExitStatus>,
    steps: &mut crate::printer::Steps,
) -> anyhow::Error {
    let paths = &ctx.paths;
    if sup_done.is_none() {
        let _ = registration::request_stop(paths, instance_id);
    }
    let sup_status = sup_done.or_else(|| wait_child(child, Duration::from_secs(6)));
    if sup_status.is_none() {
        // Still alive (e.g. restart = "on-failure" retrying): a failed start leaves nothing running.
        let _ = stop_locked(ctx, Duration::from_secs(5), true, true);
    }
    steps.finish();
    let recorded = crash::read(paths).filter(|e| e.instance_id == instance_id);
    match (recorded, sup_status.and_then(|s| s.code())) {
        // The supervisor ended by itself without ever recording an engine exit: it did not start one.
        (None, Some(code)) => supervisor_failed(ctx, instance_id, code),
        (recorded, _) => engine_died(ctx, instance_id, reg, recorded),
    }
}

/// Removes this instance's registration and stop intent: another instance's registration is never removed here.
fn forget_instance(paths: &Paths, instance_id: &str) {
    registration::clear_stop_request(paths, instance_id);
    if registration::peek(paths).is_some_and(|r| r.instance_id == instance_id) {
        let _ = registration::remove(paths);
    }
}

/// The supervisor exited with `code` before it started an engine: the log's last lines and why.
fn supervisor_failed(ctx: &Ctx, instance_id: &str, code: i32) -> anyhow::Error {
    let paths = &ctx.paths;
    forget_instance(paths, instance_id);
    let log = paths.engine_log();
    let tail = crash::log_tail(&log, 5, None);
    if !tail.is_empty() {
        ctx.printer.info_always(&format!(
            "--- last lines of {} ---\n{}",
            log.display(),
            tail.join("\n")
        ));
    }
    let lock = paths.engine_lock();
    if code == i32::from(supervisor::EXIT_LOCK_BUSY) {
        return CliError::new(
            ErrorKind::Failure,
            format!(
                "the supervisor could not take the instance lock {} (exit {code}), so no engine was started",
                lock.display()
            ),
        )
        .hint(format!(
            "breadboard engine status; if no engine runs, find the holder with: fuser -v {}",
            lock.display()
        ))
        .into();
    }
    CliError::new(
        ErrorKind::Failure,
        format!("the supervisor exited with code {code} before starting the engine"),
    )
    .hint(format!(
        "breadboard engine logs -n 200  (log: {})",
        log.display()
    ))
    .into()
}

/// The engine ended before it was ready: the crash report (once), and the error.
fn engine_died(
    ctx: &Ctx,
    instance_id: &str,
    reg: Option<Registration>,
    recorded: Option<LastExit>,
) -> anyhow::Error {
    let paths = &ctx.paths;
    let exit = recorded.unwrap_or_else(|| LastExit {
        instance_id: instance_id.to_owned(),
        supervisor_lost: true,
        ended_at: fsutil::now_rfc3339(),
        ..Default::default()
    });
    let stub = reg.unwrap_or_else(|| Registration {
        log_path: paths.engine_log(),
        ..Default::default()
    });
    crash::report(ctx.printer, paths, Some(&stub), &exit);
    crash::acknowledge(paths, instance_id);
    forget_instance(paths, instance_id);
    CliError::new(
        ErrorKind::Failure,
        format!("the engine exited before it was ready ({})", exit.how()),
    )
    .hint(format!(
        "breadboard engine logs -n 200  (log: {})",
        paths.engine_log().display()
    ))
    .into()
}

/// No handshake within `--timeout`: the log's last lines, and the engine stopped (a failed start leaves nothing
/// running; if the stop fails, the error says so).
fn not_ready_in_time(ctx: &Ctx, opts: &StartOpts) -> anyhow::Error {
    let log = ctx.paths.engine_log();
    let tail = crash::log_tail(&log, 20, None);
    ctx.printer.info_always(&format!(
        "--- last lines of {} ---\n{}",
        log.display(),
        tail.join("\n")
    ));
    let stopped = stop_locked(ctx, Duration::from_secs(5), false, true);
    let (what, hint) = match &stopped {
        Ok(_) => (
            "it was stopped".to_owned(),
            "breadboard engine logs -n 200, or raise --timeout".to_owned(),
        ),
        Err(e) => (
            format!("stopping it failed too: {e:#}"),
            "breadboard engine stop --force".to_owned(),
        ),
    };
    CliError::new(
        ErrorKind::Failure,
        format!(
            "the engine did not answer its handshake within {}s; {what}",
            opts.timeout.as_secs_f64()
        ),
    )
    .hint(hint)
    .into()
}

pub(super) fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
