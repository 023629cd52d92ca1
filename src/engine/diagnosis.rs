//! What the instance is, judged once: one [`diagnose`] gives one [`Diagnosis`] that `engine status`, `start`,
//! `stop`, `restart`, doctor and the client each map to their own output. A new state is added here, and the
//! compiler then names every caller that must say something about it.

use std::time::Duration;

use serde::Serialize;

use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{Registration, RestartPending};
use crate::error::ExitStatus;
use crate::paths::Paths;
use crate::printer::Printer;

use super::probe::{answer, client_for, probe, Answer, Probe};

/// The instance, as one probe (instance lock, registration, `/health`) found it.
#[derive(Debug)]
pub(crate) enum Diagnosis {
    /// Nothing runs and no earlier instance is registered (a registration that cannot be read is moved aside by a
    /// mutating look, left in place by a read-only one).
    Stopped,
    /// Nothing runs, but an instance that was asked to stop left its registration (and maybe processes, found by
    /// [`super::clean_stale`], which the next `stop` or `start` runs).
    Leftovers(Box<Registration>),
    /// The engine died without a stop request: its registration and how it ended (the crash report's data).
    Crashed(Box<Dead>),
    /// `restart = "on-failure"` gave up: the engine crashed 3 times within 60 s ([`LastExit::crash_loop`]).
    Errored(Box<Dead>),
    /// A supervisor holds the instance lock without a readable registration: it is starting, or its registration
    /// was lost under a running engine ([`super::unregistered_supervisor`] finds it).
    Unregistered,
    /// A supervisor lives and its registration names the engine: what answers its `/health`.
    Live(Box<Live>),
}

/// A dead instance that did not end by request.
#[derive(Debug)]
pub(crate) struct Dead {
    pub(crate) reg: Registration,
    pub(crate) exit: LastExit,
}

/// A registered instance whose supervisor lives.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) reg: Registration,
    /// What answered `/health`: ready, incompatible, a stranger, token refused, busy, not answering, no address.
    pub(crate) answer: Answer,
    /// For an engine whose request failed: what it may be waiting for, so that it may yet answer.
    pub(crate) pending: Option<Pending>,
    /// How this instance's engine last ended, when its supervisor restarted it or is about to.
    pub(crate) last_exit: Option<LastExit>,
}

/// Why a live engine that does not answer is not (yet) called unhealthy.
#[derive(Debug)]
pub(crate) enum Pending {
    /// It crashed and its supervisor restarts it (`restart = "on-failure"`).
    Restart(RestartPending),
    /// It was never ready: its start is still waiting for the handshake.
    Handshake,
}

/// `engine status` states and their exit codes (docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Running,
    Stopped,
    Starting,
    Unhealthy,
    Incompatible,
    Crashed,
    /// `restart = "on-failure"` gave up: the engine crashed 3 times within 60 s.
    Errored,
}

impl State {
    pub(crate) fn exit_status(self) -> ExitStatus {
        match self {
            State::Running => ExitStatus::Success,
            State::Stopped => ExitStatus::Stopped,
            State::Starting => ExitStatus::Starting,
            State::Unhealthy => ExitStatus::Unhealthy,
            State::Incompatible => ExitStatus::Incompatible,
            State::Crashed => ExitStatus::Crashed,
            State::Errored => ExitStatus::Errored,
        }
    }
    pub(crate) fn exit_code(self) -> u8 {
        self.exit_status().code()
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Unhealthy => "unhealthy",
            State::Incompatible => "incompatible",
            State::Crashed => "crashed",
            State::Errored => "errored",
        }
    }
}

/// Probes the instance and judges what it found. `mutate` moves a corrupt registration aside (with a warning on
/// `printer`); read-only callers peek. A busy engine is judged on the quick probe: [`Diagnosis::patiently`] gives it
/// longer.
pub(crate) fn diagnose(
    paths: &Paths,
    printer: Option<&Printer>,
    mutate: bool,
) -> anyhow::Result<Diagnosis> {
    Ok(match probe(paths, printer, mutate)? {
        Probe::Down { stale: None, .. } => Diagnosis::Stopped,
        Probe::Down {
            stale: Some(reg),
            crash: None,
        } => Diagnosis::Leftovers(Box::new(reg)),
        Probe::Down {
            stale: Some(reg),
            crash: Some(exit),
        } => {
            let looped = exit.crash_loop.is_some();
            let dead = Box::new(Dead { reg, exit });
            if looped {
                Diagnosis::Errored(dead)
            } else {
                Diagnosis::Crashed(dead)
            }
        }
        Probe::Live { reg: None, .. } => Diagnosis::Unregistered,
        Probe::Live {
            reg: Some(reg),
            health,
        } => {
            let answer = answer(paths, &reg, health);
            let last_exit = (reg.restarts > 0 || reg.restart_pending.is_some())
                .then(|| crash::read(paths).filter(|e| e.instance_id == reg.instance_id))
                .flatten();
            Diagnosis::Live(Box::new(Live {
                pending: pending(&reg, &answer),
                reg,
                answer,
                last_exit,
            }))
        }
    })
}

/// What a live engine whose request failed may be waiting for: a restart after a crash first, then its handshake.
fn pending(reg: &Registration, answer: &Answer) -> Option<Pending> {
    answer.error()?;
    match &reg.restart_pending {
        Some(p) => Some(Pending::Restart(p.clone())),
        None if reg.ready_at.is_none() => Some(Pending::Handshake),
        None => None,
    }
}

impl Diagnosis {
    /// The `engine status` state, whose exit code is the command's.
    pub(crate) fn state(&self) -> State {
        match self {
            Diagnosis::Stopped | Diagnosis::Leftovers(_) => State::Stopped,
            Diagnosis::Crashed(_) => State::Crashed,
            Diagnosis::Errored(_) => State::Errored,
            Diagnosis::Unregistered => State::Starting,
            Diagnosis::Live(live) => match (&live.answer, &live.pending) {
                (Answer::Ready(_), _) => State::Running,
                (Answer::Incompatible(..), _) => State::Incompatible,
                (_, Some(_)) => State::Starting,
                _ => State::Unhealthy,
            },
        }
    }

    /// Whether a supervisor holds the instance lock.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self, Diagnosis::Unregistered | Diagnosis::Live(_))
    }

    /// The registration a dead instance left behind, for the crash report and [`super::clean_stale`].
    pub(crate) fn stale(&self) -> Option<&Registration> {
        match self {
            Diagnosis::Leftovers(reg) => Some(reg),
            Diagnosis::Crashed(dead) | Diagnosis::Errored(dead) => Some(&dead.reg),
            _ => None,
        }
    }

    /// How a dead instance ended, when it was not asked to.
    pub(crate) fn crash(&self) -> Option<&LastExit> {
        match self {
            Diagnosis::Crashed(dead) | Diagnosis::Errored(dead) => Some(&dead.exit),
            _ => None,
        }
    }

    /// Asks `/health` again, waiting up to `patience` for the answer, when the engine connected but did not answer
    /// the quick probe in time (busy, e.g. while a local Ray connects). Any other diagnosis stays as it is.
    pub(crate) fn patiently(self, paths: &Paths, patience: Duration) -> Diagnosis {
        match self {
            Diagnosis::Live(mut live) if matches!(live.answer, Answer::Busy(_)) => {
                let health = client_for(&live.reg, patience).map(|c| c.health());
                live.answer = answer(paths, &live.reg, health);
                live.pending = pending(&live.reg, &live.answer);
                Diagnosis::Live(live)
            }
            other => other,
        }
    }
}
