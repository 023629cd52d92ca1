//! `engine stop`: what the diagnosis says runs is verified (the supervisor by pid and start time, before any signal),
//! its stop recorded, the [`Ladder`] run (ask, SIGTERM to the group, SIGKILL to the session), then what is true said:
//! every process gone, files cleaned, the port free.

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{self, Registration};
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;

use super::*;

pub(crate) enum Stopped {
    NotRunning,
    Stopped { pid: i32, forced: bool },
}

/// After the current version was switched without a restart (`install`, `rollback`): a running engine keeps its
/// old version until restarted, and says so only as `incompatible` later; say it now.
pub(crate) fn warn_if_running_another(paths: &Paths, printer: &Printer, current: &str) {
    let Some(reg) = registration::peek(paths).filter(|_| lock_busy(paths)) else {
        return;
    };
    // No version: an engine from BREADBOARD_ENGINE_CMD, not from the managed venv.
    let Some(running) = reg.engine_version.as_deref().filter(|v| *v != current) else {
        return;
    };
    let how = if reg.foreground {
        "stop it (Ctrl-C in its terminal) and start it again"
    } else {
        "run `breadboard engine restart`"
    };
    printer.warn(&format!(
        "the running engine (pid {}) is still {running}; to use {current}, {how}",
        reg.pid
    ));
}

/// Polls `cond` every 20 ms: true as soon as it holds, false once `timeout` has passed without it.
pub(super) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `engine stop` under the control lock. `quiet_crash` skips the crash report of a dead instance.
pub(crate) fn stop_locked(
    ctx: &Ctx,
    timeout: Duration,
    force: bool,
    quiet_crash: bool,
) -> anyhow::Result<Stopped> {
    let paths = &ctx.paths;
    let printer = ctx.printer;
    let mut diagnosis = diagnose(paths, Some(printer), true)?;
    // A supervisor that holds the lock but has not written its registration yet: give it a moment.
    if matches!(diagnosis, Diagnosis::Unregistered) {
        wait_until(Duration::from_secs(3), || {
            registration::peek(paths).is_some() || !lock_busy(paths)
        });
        diagnosis = diagnose(paths, Some(printer), true)?;
    }
    match diagnosis {
        Diagnosis::Live(live) => stop_registered(paths, printer, *live, timeout, force),
        Diagnosis::Unregistered => match unregistered_supervisor(paths) {
            Some(sup) => stop_unregistered(paths, printer, sup, timeout, force),
            None => Err(held_by_a_stranger(paths)),
        },
        dead => {
            if let (Some(exit), false) = (dead.crash(), quiet_crash) {
                report_crash_once(paths, printer, dead.stale(), exit);
            }
            clean_stale(paths, dead.stale(), printer);
            Ok(Stopped::NotRunning)
        }
    }
}

/// The stop ladder for a registered instance: verify its identity, record the stop, ask it to shut down, SIGTERM its
/// group, SIGKILL its session, then say what is true.
fn stop_registered(
    paths: &Paths,
    printer: &Printer,
    live: Live,
    timeout: Duration,
    force: bool,
) -> anyhow::Result<Stopped> {
    let (reg, may_ask) = verify_identity(paths, printer, live)?;
    let engine_alive = procfs::same_process(reg.pid, reg.pid_start_ticks);
    record_stop_intent(paths, &reg)?;
    // Resumed only now, with the intent recorded: a supervisor continued earlier could see its engine's exit first
    // and take it for a crash (and restart it).
    if !force {
        resume_if_stopped(
            printer,
            &[
                ("supervisor", reg.supervisor_pid, reg.supervisor_start_ticks),
                ("engine", reg.pid, reg.pid_start_ticks),
            ],
        );
    }
    let mut ladder = Ladder {
        paths,
        printer,
        engine_alive,
        reg,
        may_ask,
        phase: timeout.mul_f64(0.4),
        sent_term: false,
    };
    let done = !force && ladder.graceful();
    if !done {
        ladder.kill(force);
        let rest = timeout
            .saturating_sub(ladder.phase * 2)
            .max(Duration::from_secs(2));
        wait_until(rest, || !lock_busy(paths));
    }
    finish(paths, printer, &ladder.reg, force || !done)
}

/// The registered instance, verified before any signal: its supervisor is the process holding the lock (pid and start
/// time, this boot). With `restart = "on-failure"` a supervisor that just restarted its engine is followed to the new
/// one. Also whether the engine may be asked to shut down over HTTP: not when its `/health` names another process.
fn verify_identity(
    paths: &Paths,
    printer: &Printer,
    live: Live,
) -> anyhow::Result<(Registration, bool)> {
    let reg = live.reg;
    let same_boot = reg.boot_id == procfs::boot_id();
    if !(same_boot && procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks)) {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!(
                "the registered supervisor (pid {}) is not the process holding the instance lock (pid reused or registration replaced); refusing to signal it",
                reg.supervisor_pid
            ),
        )
        .hint(format!("inspect: breadboard engine status; fuser -v {}", paths.engine_lock().display()))
        .into());
    }
    let (reg, answer) = follow_restart(paths, reg, live.answer);
    let may_ask = match &answer {
        Answer::Ready(_) | Answer::Incompatible(..) | Answer::Busy(_) => true,
        Answer::Stranger(h) => {
            // Not asked to shut down over HTTP: whatever answers there is not known to be ours. The processes
            // signalled below are, checked by pid and start time: the supervisor above, the engine below.
            printer.debug(&format!(
                "{} answers as pid {} instance {:?}, not the registered pid {} instance {}; stopping by signals only",
                reg.url, h.pid, h.instance_id, reg.pid, reg.instance_id
            ));
            false
        }
        Answer::TokenRefused(_) | Answer::NotAnswering(_) | Answer::NoAddress => false,
    };
    Ok((reg, may_ask))
}

/// With `restart = "on-failure"` the supervisor may have just restarted the engine (same instance and supervisor, a
/// new engine pid): its registration is followed for up to 2 s rather than calling the new engine a stranger.
fn follow_restart(
    paths: &Paths,
    mut reg: Registration,
    mut answer: Answer,
) -> (Registration, Answer) {
    if reg.restart_policy.as_deref() != Some("on-failure") {
        return (reg, answer);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches!(answer, Answer::Stranger(_)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Some(now) = registration::peek(paths) else {
            break;
        };
        if !same_instance(&now, &reg) {
            break;
        }
        let health = client_for(&now, Duration::from_millis(500)).map(|c| c.health());
        answer = super::answer(paths, &now, health);
        reg = now;
    }
    (reg, answer)
}

/// Same instance, same supervisor (the engine pid may differ: a restart).
pub(super) fn same_instance(a: &Registration, b: &Registration) -> bool {
    a.instance_id == b.instance_id && a.supervisor_pid == b.supervisor_pid
}

/// Records the intent first: the supervisor classifies the exit by it, not by the exit code, and never restarts an
/// engine whose stop was asked for. The intent file cannot be lost to a registration the supervisor rewrites.
fn record_stop_intent(paths: &Paths, reg: &Registration) -> anyhow::Result<()> {
    registration::request_stop(paths, &reg.instance_id)?;
    let mut marked = registration::peek(paths)
        .filter(|r| same_instance(r, reg))
        .unwrap_or_else(|| reg.clone());
    marked.stop_requested_at = Some(fsutil::now_rfc3339());
    registration::write(paths, &marked)
}

/// Says what is true after the ladder: every process of the instance gone (else nothing is cleaned up: the
/// registration, token and stop intent stay, so a retry or `--force` can find and verify what is left, and nothing
/// reports this instance as a crash), its files removed, its end recorded, its port free.
fn finish(
    paths: &Paths,
    printer: &Printer,
    reg: &Registration,
    forced: bool,
) -> anyhow::Result<Stopped> {
    let survivors_gone = wait_until(Duration::from_secs(2), || {
        instance_processes(reg).is_empty() && !procfs::alive(reg.supervisor_pid)
    });
    let port_free = wait_until(Duration::from_secs(2), || !procfs::port_listening(reg.port));
    if !survivors_gone {
        return Err(stop_failed(reg, false));
    }
    if registration::peek(paths).is_some_and(|r| r.instance_id == reg.instance_id) {
        let _ = registration::remove(paths);
    }
    let _ = fsutil::remove_file_if_exists(&reg.token_file);
    registration::clear_stop_request(paths, &reg.instance_id);
    record_requested_exit(paths, reg);
    end_marked_leftovers(paths, printer, None);
    if !port_free {
        // Every process of the instance is gone, but something else holds its port: the stop did not free it.
        return Err(stop_failed(reg, true));
    }
    Ok(Stopped::Stopped {
        pid: reg.pid,
        forced,
    })
}

/// The supervisor records how its engine ended; when it could not (killed first), the stop records it.
fn record_requested_exit(paths: &Paths, reg: &Registration) {
    if crash::read(paths).is_some_and(|e| e.instance_id == reg.instance_id) {
        return;
    }
    let _ = crash::write(
        paths,
        &LastExit {
            instance_id: reg.instance_id.clone(),
            pid: reg.pid,
            signal: Some(libc::SIGKILL),
            stop_requested: true,
            uptime_s: (fsutil::unix_now() - reg.started_at_unix).max(0.0),
            ended_at: fsutil::now_rfc3339(),
            ended_at_unix: fsutil::unix_now(),
            exit_code: None,
            supervisor_lost: false,
            core_dumped: false,
            restarts: reg.restarts,
            crash_loop: None,
        },
    );
}

/// A stop that left processes of the instance (`survivors_gone` false), or its port listening: what is left, and how
/// to end it.
pub(super) fn stop_failed(reg: &Registration, survivors_gone: bool) -> anyhow::Error {
    let (what, pids) = what_is_left(reg, survivors_gone);
    let pid_list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let hint = match (survivors_gone, pid_list.is_empty()) {
        (false, true) => "retry with: breadboard engine stop --force".to_owned(),
        (false, false) => format!(
            "retry with `breadboard engine stop --force`, or end them by hand: kill -9 {pid_list}"
        ),
        (true, true) => format!(
            "find the holder with `ss -ltnp 'sport = :{}'`, or start the engine on another port (--port auto)",
            reg.port
        ),
        (true, false) => format!(
            "end it (kill {pid_list}; kill -9 {pid_list} if it ignores that), or start the engine on another port (--port auto)"
        ),
    };
    let outcome = if survivors_gone {
        "every process of the engine ended, but its port was not freed"
    } else {
        "its registration is kept, so `engine stop` can retry"
    };
    CliError::new(
        ErrorKind::Failure,
        format!(
            "the engine (instance {}) did not stop completely: {}; {outcome}",
            reg.instance_id,
            what.join("; ")
        ),
    )
    .hint(hint)
    .into()
}

/// What a stop left: the instance's surviving processes (unless `survivors_gone`) and the holder of its port, said,
/// and the pids to end.
fn what_is_left(reg: &Registration, survivors_gone: bool) -> (Vec<String>, Vec<sys::Pid>) {
    let mut what = Vec::new();
    let mut pids = Vec::new();
    if !survivors_gone {
        let mut left = instance_processes(reg);
        if procfs::alive(reg.supervisor_pid) {
            left.insert(0, reg.supervisor_pid);
        }
        let listed: Vec<String> = left
            .iter()
            .map(|p| format!("{p} (`{}`)", procfs::cmdline(*p).unwrap_or_default()))
            .collect();
        what.push(format!(
            "processes of the engine survived SIGKILL: {}",
            listed.join(", ")
        ));
        pids.extend(left);
    }
    if procfs::port_listening(reg.port) {
        match procfs::port_owner(reg.port) {
            Some((pid, cmd)) => {
                what.push(format!(
                    "port {} is still listening, held by pid {pid} (`{cmd}`)",
                    reg.port
                ));
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
            None => what.push(format!(
                "port {} is still listening (by a process: {})",
                reg.port,
                procfs::UNNAMED_HOLDER
            )),
        }
    }
    (what, pids)
}
