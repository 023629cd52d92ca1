//! `engine stop`: the stop ladder (ask, SIGTERM to the group, SIGKILL to the session), only ever on processes
//! verified by pid and start time.

use std::time::{Duration, Instant};

use crate::context::Ctx;
use crate::crash::{self, LastExit};
use crate::engine_client::ClientError;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::procfs;
use crate::registration::{self, Registration};
use crate::sys;

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

fn held_by_a_stranger(paths: &Paths) -> anyhow::Error {
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
fn same_instance(a: &Registration, b: &Registration) -> bool {
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

/// One stop of a verified instance, step by step.
struct Ladder<'a> {
    paths: &'a Paths,
    printer: &'a Printer,
    reg: Registration,
    /// The engine may be asked to shut down over HTTP: it answered as this instance, or was busy.
    may_ask: bool,
    /// The registered engine process lives (pid and start time).
    engine_alive: bool,
    /// The time each graceful step gets.
    phase: Duration,
    sent_term: bool,
}

impl Ladder<'_> {
    fn free(&self) -> bool {
        !lock_busy(self.paths)
    }

    /// The graceful steps: the supervisor between engines exits by itself, the engine is asked to shut down, then
    /// gets SIGTERM. Whether the instance ended.
    fn graceful(&mut self) -> bool {
        if !self.engine_alive && self.await_supervisor() {
            return true;
        }
        if self.ask_to_shut_down() {
            return true;
        }
        self.sigterm()
    }

    /// No engine process: the supervisor is between engines (restart = "on-failure" waiting to restart a crashed
    /// one). It sees the intent and exits; unless it restarted the engine just before, which is then stopped like
    /// any other. Whether the instance ended.
    fn await_supervisor(&mut self) -> bool {
        let restarted = || {
            registration::peek(self.paths).filter(|r| {
                same_instance(r, &self.reg)
                    && r.pid != self.reg.pid
                    && procfs::same_process(r.pid, r.pid_start_ticks)
            })
        };
        let done = wait_until(self.phase, || self.free() || restarted().is_some());
        if self.free() {
            return done;
        }
        let Some(now) = restarted() else {
            return done;
        };
        self.printer.debug(&format!(
            "the supervisor restarted the engine (pid {}) as the stop began; stopping that one",
            now.pid
        ));
        let health = client_for(&now, Duration::from_millis(500)).map(|c| c.health());
        self.may_ask = matches!(health, Some(Ok(_) | Err(ClientError::Slow(_))));
        self.reg = now;
        self.engine_alive = true;
        false
    }

    /// `POST /v1/shutdown`, then the engine gets a phase to end. Whether the instance ended.
    fn ask_to_shut_down(&self) -> bool {
        // A busy engine (connected, slow to answer) is asked too: it reads the request when it can.
        let Some(client) =
            client_for(&self.reg, Duration::from_millis(1000)).filter(|_| self.may_ask)
        else {
            return false;
        };
        match client.shutdown() {
            Ok(()) => wait_until(self.phase, || self.free()),
            // Delivered but not answered in time: a busy engine reads it when it can, so it gets the same phase.
            Err(e @ ClientError::Slow(_)) => {
                self.printer.debug(&format!(
                    "POST /v1/shutdown: {e}; waiting for the engine to stop"
                ));
                wait_until(self.phase, || self.free())
            }
            Err(e) => {
                self.printer
                    .debug(&format!("POST /v1/shutdown failed: {e}"));
                false
            }
        }
    }

    /// SIGTERM to the engine's process group, verified first; without an engine to get it, the same wait. Whether
    /// the instance ended.
    fn sigterm(&mut self) -> bool {
        let reg = &self.reg;
        if self.engine_alive && procfs::same_process(reg.pid, reg.pid_start_ticks) {
            self.printer.info(&format!(
                "the engine did not stop by itself; sending SIGTERM to its process group {}",
                reg.pgid
            ));
            let _ = sys::killpg(reg.pgid, libc::SIGTERM);
            self.sent_term = true;
        }
        wait_until(self.phase, || self.free())
    }

    /// SIGKILL to every process of the instance, its supervisor verified right before; then to the supervisor itself
    /// if it does not reap, record and release the lock by itself.
    fn kill(&self, force: bool) {
        let reg = &self.reg;
        if !procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks) {
            return;
        }
        if !force {
            // Only what happened: SIGTERM may never have been sent (no engine process was left to get it).
            self.printer.info(if self.sent_term {
                "the engine ignored SIGTERM; killing its session"
            } else {
                "the engine did not stop in time; killing its session"
            });
        }
        for p in instance_processes(reg) {
            let _ = sys::kill(p, libc::SIGKILL);
        }
        if !wait_until(Duration::from_secs(2), || self.free())
            && procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks)
        {
            let _ = sys::kill(reg.supervisor_pid, libc::SIGKILL);
            for p in instance_processes(reg) {
                let _ = sys::kill(p, libc::SIGKILL);
            }
        }
    }
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
    let pid_list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let hint = match (survivors_gone, pid_list.is_empty()) {
        (false, true) => "retry with: breadboard engine stop --force".to_owned(),
        (false, false) => format!(
            "retry with `breadboard engine stop --force`, or end them by hand: kill -9 {}",
            pid_list.join(" ")
        ),
        (true, true) => format!(
            "find the holder with `ss -ltnp 'sport = :{}'`, or start the engine on another port (--port auto)",
            reg.port
        ),
        (true, false) => format!(
            "end it (kill {}; kill -9 {} if it ignores that), or start the engine on another port (--port auto)",
            pid_list.join(" "),
            pid_list.join(" ")
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

/// A supervisor or engine stopped by a signal (SIGSTOP, Ctrl-Z: state T) can neither answer, stop its engine nor
/// exit: each is continued (SIGCONT, harmless to a running process, so it is sent wherever `/proc` cannot tell) once
/// its pid is checked against its start time, and the engine's whole process group with it (a stopped Ray driver or
/// worker would hold the engine's shutdown up). A warning only when `/proc` shows one stopped.
pub(super) fn resume_if_stopped(printer: &Printer, procs: &[(&str, sys::Pid, u64)]) {
    for (what, pid, ticks) in procs {
        if !procfs::same_process(*pid, *ticks) {
            continue;
        }
        let stat = procfs::stat(*pid);
        if stat
            .as_ref()
            .is_some_and(|s| s.state == 'T' || s.state == 't')
        {
            printer.warn(&format!(
                "the {what} (pid {pid}) was stopped by a signal (SIGSTOP or Ctrl-Z); sent it SIGCONT so it can stop"
            ));
        }
        let _ = sys::kill(*pid, libc::SIGCONT);
        if *what == "engine" {
            if let Some(pgid) = stat.map(|s| s.pgid).filter(|g| *g > 1) {
                let _ = sys::killpg(pgid, libc::SIGCONT);
            }
        }
    }
}

/// Every live process of the instance other than the supervisor: its session (detached) or descendants.
pub(super) fn instance_processes(reg: &Registration) -> Vec<sys::Pid> {
    let sup = reg.supervisor_pid;
    let mut v = procfs::descendants(sup);
    if let Some(sid) = reg.sid {
        if sid == sup {
            for p in procfs::session_members(sid, &[sup]) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
    }
    v
}
