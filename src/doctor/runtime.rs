//! The Engine section: the running (or dead) instance: its run files, registration, answer on `/health`, crash
//! record and port. Processes an earlier engine left behind are `leftover_processes`' part of it.

use std::time::Duration;

use crate::compat;
use crate::engine::crash::LastExit;
use crate::engine::registration::Registration;
use crate::engine::{self, Answer, Diagnosis, Live};
use crate::paths::Paths;

use super::{leftover_processes, ray, Finding, Repair, Setup};

pub(super) const SECTION: &str = "Engine";

/// How long doctor waits for a busy engine's `/health` (e.g. while a local Ray connects) before calling it busy.
const DOCTOR_HEALTH_PATIENCE: Duration = Duration::from_secs(3);

/// The checks of the running (or dead) instance: registration, the engine's answer, leftovers, crashes, the port.
/// Read-only: nothing is moved aside or killed here (`engine stop` and `--fix` do that).
pub(crate) fn runtime_checks(setup: &Setup) -> Vec<Finding> {
    let paths = setup.paths;
    let mut out = run_file_checks(paths);
    let diagnosis = match engine::diagnose(paths, None, false) {
        // A busy engine (connected, no answer within the quick probe) gets a longer look before it is judged.
        Ok(d) => d.patiently(paths, DOCTOR_HEALTH_PATIENCE),
        Err(e) => {
            out.push(
                Finding::error(
                    SECTION,
                    "engine.registration",
                    "the engine registration cannot be read",
                    format!("{e:#}"),
                )
                .fix("breadboard engine stop   # clears it"),
            );
            return out;
        }
    };
    out.extend(leftover_processes::orphans_check(paths, &diagnosis));
    match &diagnosis {
        Diagnosis::Stopped => out.extend(not_running(setup)),
        Diagnosis::Leftovers(reg) => out.extend(stale_instance(paths, reg, None)),
        Diagnosis::Crashed(dead) | Diagnosis::Errored(dead) => {
            out.extend(stale_instance(paths, &dead.reg, Some(&dead.exit)))
        }
        Diagnosis::Unregistered => out.push(
            Finding::error(
                SECTION,
                "engine.registration",
                "a supervisor holds the instance lock but wrote no registration",
                paths.engine_lock().display().to_string(),
            )
            .fix("breadboard engine restart"),
        ),
        Diagnosis::Live(live) => out.extend(live_instance(live)),
    }
    out
}

/// The token and the registration let anyone who reads them drive the engine: they must be the user's alone.
fn run_file_checks(paths: &Paths) -> Vec<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let files = [
        ("run.token_mode", paths.token_file(), "the engine token"),
        (
            "run.registration_mode",
            paths.registration(),
            "the engine registration",
        ),
    ];
    let mut out = Vec::new();
    for (id, path, what) in files {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        out.push(if mode & 0o077 != 0 {
            Finding::error(
                SECTION,
                id,
                format!("{what} is readable by others"),
                format!("{} has mode {mode:o} (want 600)", path.display()),
            )
            .fix(format!("chmod 600 {}", path.display()))
            .repair(Repair::ChmodPrivate(path.clone()))
        } else {
            Finding::ok(
                SECTION,
                id,
                format!("{what} is private"),
                format!("{} (600)", path.display()),
            )
        });
    }
    out
}

/// No engine runs: a registration left here does not parse (a readable one would be stale), and the port the next
/// start would take should be free.
fn not_running(setup: &Setup) -> Vec<Finding> {
    let paths = setup.paths;
    let registration = if std::fs::metadata(paths.registration()).is_ok() {
        Finding::error(
            SECTION,
            "engine.registration",
            "the engine registration is corrupt",
            paths.registration().display().to_string(),
        )
        .fix("breadboard engine stop   # moves it aside")
        .repair(Repair::RemoveStale { instance_id: None })
    } else {
        Finding::ok(
            SECTION,
            "engine.registration",
            "the engine is not running",
            "no registration",
        )
    };
    let mut out = vec![registration];
    out.push(match setup.config.as_ref().map(engine::configured_port) {
        Ok(Ok(port)) => port_check(port),
        // A config that does not parse is its own finding; check the default port meanwhile.
        Err(_) => port_check(engine::DEFAULT_PORT),
        Ok(Err(e)) => Finding::error(
            SECTION,
            "engine.port",
            "the configured port is not valid",
            format!("{e:#}"),
        )
        .fix(format!("unset {}", crate::env_vars::BREADBOARD_CLI_PORT)),
    });
    out
}

/// An engine registered and died without cleaning up: its registration, what of its session still runs, its crash
/// record, and whether its port was taken since.
fn stale_instance(paths: &Paths, reg: &Registration, crash: Option<&LastExit>) -> Vec<Finding> {
    let leftovers = leftover_processes::of_dead_instance(reg);
    let mut stale = Finding::warn(
        SECTION,
        "engine.registration",
        "a stale engine registration is left behind",
        format!(
            "{} names supervisor pid {} and engine pid {}, but no supervisor holds the instance lock",
            paths.registration().display(),
            reg.supervisor_pid,
            reg.pid
        ),
    )
    .fix("breadboard engine stop   # cleans it up; a live unrelated process with that pid is never signalled");
    if leftovers.is_none() {
        stale = stale.repair(Repair::RemoveStale {
            instance_id: Some(reg.instance_id.clone()),
        });
    }
    let mut out = vec![stale];
    out.extend(leftovers);
    out.extend(crash.map(|c| crash_finding(paths, c)));
    out.push(port_check(reg.port));
    out
}

fn live_instance(live: &Live) -> Vec<Finding> {
    let reg = &live.reg;
    let mut out = vec![Finding::ok(
        SECTION,
        "engine.registration",
        "the engine registration is live",
        format!(
            "supervisor pid {}, engine pid {}",
            reg.supervisor_pid, reg.pid
        ),
    )];
    if matches!(live.answer, Answer::Ready(_) | Answer::Incompatible(..)) {
        out.push(ray::engine_check(reg));
    }
    out.push(health_finding(reg, &live.answer));
    out
}

/// What answered `/health` at the registered address, and the command that gets a working engine back.
fn health_finding(reg: &Registration, answer: &Answer) -> Finding {
    let not_answering = |detail: String| {
        Finding::error(
            SECTION,
            "engine.health",
            "the engine does not answer /health",
            detail,
        )
        .fix("breadboard engine restart")
    };
    match answer {
        Answer::Stranger(h) => Finding::error(
            SECTION,
            "engine.health",
            "another process answers on the engine's port",
            format!(
                "{} answers as pid {} instance {}, the registration says pid {} instance {}",
                reg.url, h.pid, h.instance_id, reg.pid, reg.instance_id
            ),
        )
        .fix("breadboard engine restart"),
        Answer::Ready(h) => Finding::ok(
            SECTION,
            "engine.health",
            format!("the engine answers at {}", reg.url),
            format!(
                "engine {} (protocol {}), pid {}",
                h.engine_version, h.protocol_version, h.pid
            ),
        ),
        Answer::Incompatible(h, problems) if compat::protocol_compatible(&h.protocol_version) => {
            Finding::warn(
                SECTION,
                "engine.health",
                "the running engine is not the pinned version",
                problems.join("; "),
            )
            .fix("breadboard engine restart   # to apply the upgrade")
        }
        Answer::Incompatible(_, problems) => Finding::error(
            SECTION,
            "engine.health",
            "the running engine is incompatible",
            problems.join("; "),
        )
        .fix("breadboard engine restart"),
        // Slow because it is stopped (SIGSTOP, Ctrl-Z), not busy: it will never answer by itself.
        Answer::Busy(e) if stopped_by_signal(reg.pid) => not_answering(format!(
            "{}: {e}; pid {} is stopped by a signal (SIGSTOP or Ctrl-Z)",
            reg.url, reg.pid
        )),
        Answer::Busy(e) => Finding::warn(
            SECTION,
            "engine.health",
            "the engine is running but busy",
            format!("{}: {e}", reg.url),
        )
        .fix("breadboard engine logs -n 100   # what it is doing; restart only if it stays busy"),
        Answer::TokenRefused(e) | Answer::NotAnswering(e) => {
            not_answering(format!("{}: {e}", reg.url))
        }
        Answer::NoAddress => Finding::error(
            SECTION,
            "engine.health",
            "the engine's address does not resolve",
            format!("{}:{}", reg.host, reg.port),
        )
        .fix("breadboard engine restart"),
    }
}

fn stopped_by_signal(pid: crate::os::sys::Pid) -> bool {
    crate::os::procfs::stat(pid).is_some_and(|s| s.state == 'T' || s.state == 't')
}

fn crash_finding(paths: &Paths, exit: &LastExit) -> Finding {
    let detail = format!(
        "{} at {}; log: {}",
        exit.how(),
        exit.ended_at,
        paths.engine_log().display()
    );
    if crate::engine::crash::acknowledged(paths, &exit.instance_id) {
        return Finding::ok(
            SECTION,
            "engine.crash",
            "the last engine crash was already reported",
            detail,
        );
    }
    Finding::warn(
        SECTION,
        "engine.crash",
        "the engine died without being asked to stop",
        detail,
    )
    .fix("breadboard engine status   # the crash report; then: breadboard engine start")
}

fn port_check(port: u16) -> Finding {
    match crate::os::procfs::port_owner(port) {
        Some((pid, cmd)) => Finding::warn(
            SECTION,
            "engine.port",
            format!("port {port} is in use by another process"),
            format!("pid {pid}: {}", cmd.chars().take(100).collect::<String>()),
        )
        .fix(format!(
            "breadboard engine start --port auto   # or stop pid {pid}"
        )),
        None if crate::os::procfs::port_listening(port) => Finding::warn(
            SECTION,
            "engine.port",
            format!("port {port} is in use"),
            format!("by another process ({})", crate::os::procfs::UNNAMED_HOLDER),
        )
        .fix("breadboard engine start --port auto"),
        None => Finding::ok(
            SECTION,
            "engine.port",
            format!("port {port} is free"),
            String::new(),
        ),
    }
}
