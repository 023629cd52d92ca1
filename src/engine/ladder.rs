//! The steps of the stop ladder for a verified instance: the supervisor between engines exits by itself, the
//! engine is asked to shut down, its group gets SIGTERM, its session SIGKILL; each signal only after its target is
//! checked by pid and start time.

use std::time::Duration;

use crate::engine::registration::{self, Registration};
use crate::engine_client::ClientError;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;

use super::*;

/// One stop of a verified instance, step by step.
pub(super) struct Ladder<'a> {
    pub(super) paths: &'a Paths,
    pub(super) printer: &'a Printer,
    pub(super) reg: Registration,
    /// The engine may be asked to shut down over HTTP: it answered as this instance, or was busy.
    pub(super) may_ask: bool,
    /// The registered engine process lives (pid and start time).
    pub(super) engine_alive: bool,
    /// The time each graceful step gets.
    pub(super) phase: Duration,
    pub(super) sent_term: bool,
}

impl Ladder<'_> {
    fn free(&self) -> bool {
        !lock_busy(self.paths)
    }

    /// The graceful steps: the supervisor between engines exits by itself, the engine is asked to shut down, then
    /// gets SIGTERM. Whether the instance ended.
    pub(super) fn graceful(&mut self) -> bool {
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
    pub(super) fn kill(&self, force: bool) {
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
