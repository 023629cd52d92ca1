//! A supervisor whose registration is gone (deleted or corrupted under a running engine): found by the instance
//! lock it holds, verified by its command line, and stopped by signal, since there is no engine pid, port or token
//! to use.

use std::time::Duration;

use crate::engine::registration;
use crate::error::{CliError, ErrorKind};
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;

use super::*;

/// The supervisor holding the instance lock when there is no readable registration (it was deleted or corrupted
/// under a running engine). Only our supervisor takes that lock; its command line is checked all the same.
pub(crate) fn unregistered_supervisor(paths: &Paths) -> Option<sys::Pid> {
    let is_supervisor =
        |pid: sys::Pid| procfs::cmdline(pid).is_some_and(|c| c.contains("__supervise"));
    if let Some(holder) = procfs::flock_holder(&paths.engine_lock()) {
        return Some(holder).filter(|pid| is_supervisor(*pid));
    }
    // Where a lock's holder cannot be named (macOS, the portable build), the supervisor is found by what it carries:
    // its spec in its environment names this home's token file. Only while the lock is held, so a supervisor that
    // is gone is never matched.
    if !lock_busy(paths) {
        return None;
    }
    let token_file = paths.token_file();
    procfs::own_processes()
        .into_iter()
        .filter(|pid| *pid != sys::getpid() && is_supervisor(*pid))
        .find(|pid| registration::from_supervisor(*pid).is_some_and(|r| r.token_file == token_file))
}

/// A supervisor, then every process of its session (it is the session leader) and below it.
pub(super) fn supervisor_session(sup: sys::Pid) -> Vec<sys::Pid> {
    let mut v = vec![sup];
    for p in procfs::descendants(sup)
        .into_iter()
        .chain(procfs::session_members(sup, &[sup]))
    {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}

/// Stops a supervisor whose registration is gone: without it there is no engine pid, port or token to use, but
/// SIGTERM to the supervisor is a stop it understands (it stops its engine and ends its session); a second
/// escalates to SIGKILL of the engine's group. Without this the engine could not be stopped by any command.
pub(super) fn stop_unregistered(
    paths: &Paths,
    printer: &Printer,
    sup: sys::Pid,
    timeout: Duration,
    force: bool,
) -> anyhow::Result<Stopped> {
    printer.warn(&format!(
        "{} is missing or unreadable, but supervisor pid {sup} holds {}: stopping it by signal",
        paths.registration().display(),
        paths.engine_lock().display()
    ));
    let free = || !lock_busy(paths);
    // Identity is re-checked before each signal: the pid must still be the process found holding the lock.
    let Some(ticks) = procfs::start_ticks(sup) else {
        return Ok(Stopped::NotRunning);
    };
    let same = || procfs::same_process(sup, ticks);
    if !force {
        resume_if_stopped(printer, &[("supervisor", sup, ticks)]);
    }
    let mut done = false;
    if !force && same() {
        let _ = sys::kill(sup, libc::SIGTERM);
        done = wait_until(timeout.mul_f64(0.8), free);
    }
    let forced = !done;
    if !done && same() {
        // Without a registration there is no stop intent to record, so the supervisor goes first: killed, it cannot
        // mistake its engine's death for a crash and restart it.
        if !force {
            printer.info("the engine did not stop in time; killing its session");
        }
        for p in supervisor_session(sup) {
            let _ = sys::kill(p, libc::SIGKILL);
        }
    }
    if wait_until(Duration::from_secs(5).max(timeout.mul_f64(0.2)), free) {
        clean_stale(paths, None, printer);
    } else {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!("supervisor pid {sup} did not exit"),
        )
        .hint(format!(
            "inspect: fuser -v {}",
            paths.engine_lock().display()
        ))
        .into());
    }
    Ok(Stopped::Stopped { pid: sup, forced })
}

/// The instance lock is held by a process that is not our supervisor.
pub(super) fn held_by_a_stranger(paths: &Paths) -> anyhow::Error {
    let lock = paths.engine_lock();
    CliError::new(
        ErrorKind::Failure,
        format!(
            "{} is held by a process without a registration; refusing to signal anything",
            lock.display()
        ),
    )
    .hint(format!("find the holder with: fuser -v {}", lock.display()))
    .into()
}
