//! Probing the instance: the instance lock (busy = alive), the registration and `/health`, and whether what
//! answers is this instance. [`super::diagnose`] turns what a probe found into the one [`super::Diagnosis`].

use std::time::Duration;

use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{self, Registration};
use crate::engine_client::{ClientError, EngineClient, Health};
use crate::fsutil;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;

use super::handshake::{handshake_problems, pinned_version};

/// What a probe found.
pub(super) enum Probe {
    /// The instance lock is free: no supervisor lives. `stale` is a registration left behind; without a stop
    /// request it means the engine died unasked (`crash` then says how).
    Down {
        stale: Option<Registration>,
        crash: Option<LastExit>,
    },
    /// A supervisor holds the instance lock.
    Live {
        reg: Option<Registration>,
        health: Option<Result<Health, ClientError>>,
    },
}

/// Whether the instance lock is held: by a live supervisor, since a lock dies with its process.
pub(super) fn lock_busy(paths: &Paths) -> bool {
    crate::lock::is_held(&paths.engine_lock())
}

pub(crate) fn client_for(reg: &Registration, timeout: Duration) -> Option<EngineClient> {
    let client = EngineClient::new(&reg.host, reg.port, registration::token(reg), timeout)?;
    Some(match &reg.tls {
        Some(tls) => client.with_pinned_tls(tls.certfile.clone()),
        None => client,
    })
}

/// Probes the instance. `mutate` moves a corrupt registration aside (with a warning); read-only callers peek.
pub(super) fn probe(
    paths: &Paths,
    printer: Option<&Printer>,
    mutate: bool,
) -> anyhow::Result<Probe> {
    let busy = lock_busy(paths);
    let reg = if mutate {
        registration::read(paths, printer)?
    } else {
        registration::peek(paths)
    };
    if !busy {
        let crash = match &reg {
            Some(r) if !registration::stop_requested(paths, &r.instance_id) => Some(
                crash::read(paths)
                    .filter(|e| e.instance_id == r.instance_id)
                    .unwrap_or_else(|| LastExit {
                        instance_id: r.instance_id.clone(),
                        pid: r.pid,
                        uptime_s: (fsutil::unix_now() - r.started_at_unix).max(0.0),
                        ended_at: "unknown (the supervisor is gone)".into(),
                        supervisor_lost: true,
                        ..Default::default()
                    }),
            )
            .filter(|e| !e.stop_requested),
            _ => None,
        };
        return Ok(Probe::Down { stale: reg, crash });
    }
    let health = reg
        .as_ref()
        .and_then(|r| client_for(r, Duration::from_millis(500)))
        .map(|c| c.health());
    Ok(Probe::Live { reg, health })
}

/// What answered `/health` for a live, registered instance, judged once for every caller (status, start, doctor,
/// the client): identity, then the handshake against the pinned version, then how a request failed.
#[derive(Debug)]
pub(crate) enum Answer {
    /// This instance, compatible.
    Ready(Health),
    /// This instance, on another protocol or not the pinned version: the problems, worded for messages.
    Incompatible(Health, Vec<String>),
    /// Something answers on the port with another identity.
    Stranger(Health),
    /// It refuses our token (HTTP 401).
    TokenRefused(ClientError),
    /// Connected, but no answer in time.
    Busy(ClientError),
    /// No connection, or an unexpected answer.
    NotAnswering(ClientError),
    /// The registration has no usable address.
    NoAddress,
}

impl Answer {
    /// The request's error, when it failed.
    pub(crate) fn error(&self) -> Option<&ClientError> {
        match self {
            Answer::TokenRefused(e) | Answer::Busy(e) | Answer::NotAnswering(e) => Some(e),
            _ => None,
        }
    }
}

/// Judges `health` (as [`probe`] gave it) for the instance `reg`.
pub(crate) fn answer(
    paths: &Paths,
    reg: &Registration,
    health: Option<Result<Health, ClientError>>,
) -> Answer {
    match health {
        None => Answer::NoAddress,
        Some(Ok(h)) if !identity_ok(&h, reg) => Answer::Stranger(h),
        Some(Ok(h)) => {
            // An engine command override has no pinned version.
            let pinned = reg.engine_version.as_ref().and(pinned_version(paths));
            let problems = handshake_problems(&h, pinned.as_deref());
            if problems.is_empty() {
                Answer::Ready(h)
            } else {
                Answer::Incompatible(h, problems)
            }
        }
        Some(Err(e @ ClientError::Http(401, _))) => Answer::TokenRefused(e),
        Some(Err(e @ ClientError::Slow(_))) => Answer::Busy(e),
        Some(Err(e)) => Answer::NotAnswering(e),
    }
}

/// Health matches the registration's instance, and its pid is the engine the supervisor spawned or, for a shell
/// snippet (`engine.command = "cd X && cmd"`), a process of that engine's process group.
///
/// An engine that does not echo our instance id (upstream BreadBoard's `/health` has none) is identified by what
/// it does send: its pid, which must be the process the supervisor spawned (same start time, so not a reused pid)
/// or one of its group, answering on the port it was told to bind.
pub(crate) fn identity_ok(h: &Health, reg: &Registration) -> bool {
    let spawned = h.pid == i64::from(reg.pid);
    if h.instance_id.is_empty() {
        return (spawned && procfs::same_process(reg.pid, reg.pid_start_ticks))
            || in_engine_group(h.pid, reg);
    }
    h.instance_id == reg.instance_id && (spawned || in_engine_group(h.pid, reg))
}

#[cfg(target_os = "linux")]
pub(super) fn in_engine_group(pid: i64, reg: &Registration) -> bool {
    let Ok(pid) = sys::Pid::try_from(pid) else {
        return false;
    };
    reg.pgid > 1
        && pid > 0
        && procfs::stat(pid).is_some_and(|s| s.pgid == reg.pgid && s.state != 'Z')
        && procfs::descendants(reg.pid).contains(&pid)
}

/// Without /proc the group cannot be checked: only the spawned process itself is the engine.
#[cfg(not(target_os = "linux"))]
pub(super) fn in_engine_group(_pid: i64, _reg: &Registration) -> bool {
    false
}
