//! The per-instance supervisor, run as `breadboard __supervise` (hidden; `cli/supervise.rs` parses it). `engine start` spawns it in its own session
//! (setsid, stdin /dev/null, stdout/stderr to the engine log); `engine start --foreground` runs the same loop in
//! its own process. It:
//! - holds `run/engine.lock` for exactly as long as the engine and everything it spawned live;
//! - is a child subreaper, so double-forked Ray daemons re-parent to it;
//! - spawns the engine (own process group, PDEATHSIG=SIGKILL), writes `run/engine.json`;
//! - copies the engine's stdout/stderr into the log, rotating it when it passes the size cap;
//! - on the engine's exit records `run/last-exit.json` (exit code or signal, uptime, whether a stop was asked),
//!   ends every remaining descendant and session member, and removes the registration after a requested stop (a
//!   registration left behind without a stop request is how later commands recognise a crash);
//! - with `engine.restart = "on-failure"`, restarts a crashed engine (same instance, port and token) after an
//!   exponential backoff (1 s, 2 s, 4 s ... 30 s; first delay `BREADBOARD_RESTART_BACKOFF_MS`), and gives up after
//!   3 crashes within 60 s: it records the crash loop in `run/last-exit.json` and exits, leaving the registration
//!   behind, which `engine status` reports as `errored`. A stop request (`engine stop`'s `run/stop-requested`, the
//!   registration's marker, or a signal) is never restarted.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine::crash::{self, LastExit};
use crate::engine::registration::{self, Registration};
use crate::fsutil;
use crate::os::procfs;
use crate::os::sys;
use crate::paths::Paths;

mod engine_process;
mod instance_lock;
mod log;
mod restart;

pub(crate) use engine_process::end_everything;
pub(crate) use instance_lock::take_instance_lock;
pub(crate) use log::{open_log, rotate, RotatingLog, Sink};
use restart::{AfterCrash, RestartPolicy};

/// Env var carrying the registration template from `engine start` to the supervisor (no secrets in it).
pub(crate) const SPEC_ENV: &str = "BREADBOARD_SUPERVISOR_SPEC";

/// Entry point of the hidden subcommand (detached mode): `command` is the engine's argv, `listen_fd` the socket to
/// hand it, `restart` the policy (`no` | `on-failure`).
pub(crate) fn run_detached(
    command: &[String],
    listen_fd: Option<i32>,
    restart: &str,
) -> anyhow::Result<u8> {
    let paths = Paths::from_env()?;
    let spec: Registration = serde_json::from_str(
        &std::env::var(SPEC_ENV)
            .map_err(|_| anyhow::anyhow!("{SPEC_ENV} is not set: this command is internal"))?,
    )?;
    let sink = Sink::Log(Arc::new(Mutex::new(RotatingLog::open(
        spec.log_path.clone(),
    ))));
    Ok(supervise(
        &paths, spec, command, listen_fd, restart, sink, None,
    ))
}

/// Called once the engine answered its handshake (foreground mode prints the URL from here).
pub(crate) type ReadyHook<'a> = &'a mut dyn FnMut(&Registration) -> bool;

/// The supervisor loop run in the CLI's own process (`engine start --foreground`).
pub(crate) struct Attached<'a> {
    /// Polled until it returns true, for each engine the loop spawns.
    pub ready_hook: ReadyHook<'a>,
    /// `run/engine.lock`, taken by the caller under the control lock.
    pub instance_lock: File,
}

/// Writes the registration, keeping a stop marker `engine stop` may have written meanwhile (same instance).
pub(super) fn write_registration(paths: &Paths, reg: &mut Registration, sink: &Sink) {
    if let Some(on_disk) = registration::peek(paths) {
        if on_disk.instance_id == reg.instance_id && on_disk.stop_requested_at.is_some() {
            reg.stop_requested_at = on_disk.stop_requested_at;
        }
    }
    if let Err(e) = registration::write(paths, reg) {
        sink.line(&format!("could not write the registration: {e:#}"));
    }
}

/// The supervisor's exit code when it cannot take `run/engine.lock` (held by another supervisor, or unopenable).
pub(crate) const EXIT_LOCK_BUSY: u8 = 3;

/// The supervisor loop. Returns the process exit code: 0 after a requested stop, 1 after a crash (or a crash loop
/// with `restart = "on-failure"`), [`EXIT_LOCK_BUSY`] when it cannot take the instance lock. Without `attached`
/// (detached mode) the loop takes the instance lock itself.
pub(crate) fn supervise(
    paths: &Paths,
    mut reg: Registration,
    command: &[String],
    listen_fd: Option<i32>,
    restart: &str,
    sink: Sink,
    attached: Option<Attached>,
) -> u8 {
    sys::catch_stop_signals();
    let (mut ready_hook, instance_lock) = match attached {
        Some(a) => (Some(a.ready_hook), Some(a.instance_lock)),
        None => (None, None),
    };
    let _lock = match instance_lock.map_or_else(|| take_instance_lock(paths), Ok) {
        Ok(lock) => lock,
        Err(why) => {
            sink.line(&format!("{why}; exiting (code {EXIT_LOCK_BUSY})"));
            return EXIT_LOCK_BUSY;
        }
    };
    if let Err(e) = sys::set_child_subreaper() {
        sink.line(&format!("could not become a child subreaper: {e}"));
    }
    identify_supervisor(&mut reg, restart);
    let mut policy = (restart == "on-failure").then(|| RestartPolicy::new(&sink));
    let mut restarts: u32 = 0;
    let code = loop {
        let exit = match run_engine(
            paths,
            &mut reg,
            command,
            listen_fd,
            restarts,
            &sink,
            &mut ready_hook,
        ) {
            Ok(exit) => exit,
            Err(exit) => {
                let _ = crash::write(paths, &exit);
                break 1;
            }
        };
        if exit.stop_requested {
            let _ = crash::write(paths, &exit);
            break 0;
        }
        let Some(policy) = policy.as_mut() else {
            let _ = crash::write(paths, &exit);
            break 1;
        };
        match restart_after(paths, &mut reg, exit, policy, restarts, &sink) {
            Some(code) => break code,
            None => restarts += 1,
        }
    };
    if code == 0 {
        if registration::peek(paths).is_none_or(|r| r.instance_id == reg.instance_id) {
            let _ = registration::remove(paths);
        }
        let _ = fsutil::remove_file_if_exists(&reg.token_file);
    }
    code
}

/// What the registration says of the supervisor itself: who it is (pid, start time, boot, session) and its policy.
fn identify_supervisor(reg: &mut Registration, restart: &str) {
    let me = sys::getpid();
    reg.supervisor_pid = me;
    reg.supervisor_start_ticks = procfs::start_ticks(me).unwrap_or(0);
    reg.sid = (!reg.foreground).then(sys::getsid);
    reg.boot_id = procfs::boot_id();
    reg.uid = sys::getuid();
    reg.restart_policy = Some(restart.to_owned());
}

/// Runs the engine once, from its spawn to the end of everything it left. `Err`: it could not be spawned (the exit
/// to record).
fn run_engine(
    paths: &Paths,
    reg: &mut Registration,
    command: &[String],
    listen_fd: Option<i32>,
    restarts: u32,
    sink: &Sink,
    ready_hook: &mut Option<ReadyHook>,
) -> Result<LastExit, Box<LastExit>> {
    let started = Instant::now();
    let started_unix = fsutil::unix_now();
    let mark = format!("{} {}", reg.instance_id, paths.home.display());
    let (engine_pid, copier) = engine_process::spawn_engine(command, listen_fd, &mark, sink)
        .map_err(|e| {
            sink.line(&format!(
                "could not start the engine ({}): {e}",
                command.join(" ")
            ));
            Box::new(LastExit {
                instance_id: reg.instance_id.clone(),
                pid: 0,
                exit_code: Some(127),
                ended_at: fsutil::now_rfc3339(),
                ended_at_unix: fsutil::unix_now(),
                restarts,
                ..Default::default()
            })
        })?;
    register_engine(paths, reg, engine_pid, started_unix, restarts, sink);
    let (status, signalled) = engine_process::wait_engine(paths, reg, sink, ready_hook);
    // Classified by intent, never by the exit code: a stop signal, or `engine stop`'s marker.
    let stop_requested = signalled || registration::stop_requested(paths, &reg.instance_id);
    let exit = LastExit {
        instance_id: reg.instance_id.clone(),
        pid: engine_pid,
        exit_code: status.code,
        signal: status.signal,
        core_dumped: status.core_dumped,
        uptime_s: started.elapsed().as_secs_f64(),
        stop_requested,
        ended_at: fsutil::now_rfc3339(),
        ended_at_unix: fsutil::unix_now(),
        supervisor_lost: false,
        restarts,
        crash_loop: None,
    };
    sink.line(&format!(
        "engine pid {engine_pid} ended: {} after {} ({})",
        exit.how(),
        crash::human_duration(exit.uptime_s),
        if stop_requested {
            "stop requested"
        } else {
            "no stop was requested"
        }
    ));
    end_everything(paths, reg, sink);
    engine_process::drain_output(copier);
    Ok(exit)
}

/// The registration names the new engine process (what `engine status` and every client read).
fn register_engine(
    paths: &Paths,
    reg: &mut Registration,
    engine_pid: sys::Pid,
    started_unix: f64,
    restarts: u32,
    sink: &Sink,
) {
    reg.pid = engine_pid;
    reg.pgid = engine_pid;
    reg.pid_start_ticks = procfs::start_ticks(engine_pid).unwrap_or(0);
    reg.started_at = fsutil::now_rfc3339();
    reg.started_at_unix = started_unix;
    reg.ready_at = None;
    reg.restarts = restarts;
    reg.restart_pending = None;
    write_registration(paths, reg, sink);
    sink.line(&format!(
        "engine started: pid {engine_pid}, instance {}, {}{}",
        reg.instance_id,
        reg.url,
        if restarts > 0 {
            format!(" (automatic restart {restarts}, restart = on-failure)")
        } else {
            String::new()
        }
    ));
}

/// After a crash with `restart = "on-failure"`: records it, then waits out the backoff (`None`: restart now) or
/// ends the supervisor (`Some(code)`: a crash loop, 1, or a stop while waiting, 0).
fn restart_after(
    paths: &Paths,
    reg: &mut Registration,
    mut exit: LastExit,
    policy: &mut RestartPolicy,
    restarts: u32,
    sink: &Sink,
) -> Option<u8> {
    let delay = match policy.after_crash(&exit) {
        AfterCrash::GiveUp(cl) => {
            sink.line(&format!(
                "{} (state errored); `breadboard engine start` starts afresh",
                cl.summary(restarts)
            ));
            exit.crash_loop = Some(cl);
            let _ = crash::write(paths, &exit);
            reg.restart_pending = None;
            write_registration(paths, reg, sink);
            return Some(1);
        }
        AfterCrash::RestartIn(delay) => delay,
    };
    let _ = crash::write(paths, &exit);
    let due_unix = fsutil::unix_now() + delay.as_secs_f64();
    reg.restart_pending = Some(registration::RestartPending {
        at: fsutil::rfc3339(due_unix.ceil() as i64),
        at_unix: due_unix,
        after: exit.how(),
    });
    write_registration(paths, reg, sink);
    sink.line(&policy.announce(delay));
    if !restart::wait_to_restart(paths, &reg.instance_id, delay) {
        sink.line("stop requested while waiting to restart: not restarting");
        return Some(0);
    }
    None
}
