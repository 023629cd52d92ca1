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

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::crash::{self, LastExit};
use crate::fsutil;
use crate::lock::{FileLock, LockFailure};
use crate::paths::Paths;
use crate::procfs;
use crate::registration::{self, Registration};
use crate::sys;

/// Env var carrying the registration template from `engine start` to the supervisor (no secrets in it).
pub(crate) const SPEC_ENV: &str = "BREADBOARD_SUPERVISOR_SPEC";

/// Where the engine's output goes.
#[derive(Clone)]
pub(crate) enum Sink {
    /// The log file, rotated when it passes `max_bytes`.
    Log(Arc<Mutex<RotatingLog>>),
    /// The terminal (foreground).
    Stderr,
}

impl Sink {
    pub(crate) fn line(&self, msg: &str) {
        let line = format!(
            "{} breadboard-supervisor[{}]: {msg}\n",
            fsutil::now_rfc3339(),
            sys::getpid()
        );
        self.write(line.as_bytes());
    }
    fn write(&self, bytes: &[u8]) {
        match self {
            Sink::Log(log) => {
                if let Ok(mut l) = log.lock() {
                    l.write(bytes);
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(bytes);
            }
        }
    }
}

pub(crate) struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    max_bytes: u64,
}

impl RotatingLog {
    pub(crate) fn open(path: PathBuf) -> RotatingLog {
        let max_bytes = *crate::settings::without_flags(&Default::default())
            .log_max_bytes
            .get()
            .unwrap_or(&crate::settings::DEFAULT_LOG_MAX_BYTES);
        let file = open_log(&path).ok();
        RotatingLog {
            path,
            file,
            max_bytes,
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
            if f.metadata().is_ok_and(|m| m.len() > self.max_bytes) {
                rotate(&self.path);
                self.file = open_log(&self.path).ok();
            }
        }
    }
}

pub(crate) const KEEP_LOGS: usize = 5;

/// `engine.log` -> `.1` -> ... -> `.5` (the oldest is dropped).
pub(crate) fn rotate(path: &std::path::Path) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
    let _ = std::fs::remove_file(name(KEEP_LOGS));
    for i in (1..KEEP_LOGS).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(path, name(1));
}

pub(crate) fn open_log(path: &std::path::Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

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

/// Crash-loop detection: this many crashes within [`CRASH_LOOP_WINDOW`] -> give up (state `errored`).
pub(crate) const CRASH_LOOP_CRASHES: usize = 3;
pub(crate) const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = crate::settings::MAX_RESTART_BACKOFF;
const STABLE_UPTIME_S: f64 = 30.0;

fn initial_backoff(sink: &Sink) -> Duration {
    let settings = crate::settings::without_flags(&Default::default());
    match settings.restart_backoff.get() {
        Ok(backoff) => *backoff,
        Err(e) => {
            sink.line(&e.message);
            Duration::from_secs(1)
        }
    }
}

/// Writes the registration, keeping a stop marker `engine stop` may have written meanwhile (same instance).
fn write_registration(paths: &Paths, reg: &mut Registration, sink: &Sink) {
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
    let me = sys::getpid();
    reg.supervisor_pid = me;
    reg.supervisor_start_ticks = procfs::start_ticks(me).unwrap_or(0);
    reg.sid = (!reg.foreground).then(sys::getsid);
    reg.boot_id = procfs::boot_id();
    reg.uid = sys::getuid();
    reg.restart_policy = Some(restart.to_owned());

    let on_failure = restart == "on-failure";
    let initial = initial_backoff(&sink);
    let mut backoff = initial;
    // Crashes inside the crash-loop window: when, and a one-line account of each.
    let mut crashes: Vec<(Instant, String)> = Vec::new();
    let mut restarts: u32 = 0;
    let code = loop {
        let started = Instant::now();
        let started_unix = fsutil::unix_now();
        let mark = format!("{} {}", reg.instance_id, paths.home.display());
        let (engine_pid, copier) = match spawn_engine(command, listen_fd, &mark, &sink) {
            Ok(v) => v,
            Err(e) => {
                sink.line(&format!(
                    "could not start the engine ({}): {e}",
                    command.join(" ")
                ));
                let exit = LastExit {
                    instance_id: reg.instance_id.clone(),
                    pid: 0,
                    exit_code: Some(127),
                    ended_at: fsutil::now_rfc3339(),
                    ended_at_unix: fsutil::unix_now(),
                    restarts,
                    ..Default::default()
                };
                let _ = crash::write(paths, &exit);
                break 1;
            }
        };
        reg.pid = engine_pid;
        reg.pgid = engine_pid;
        reg.pid_start_ticks = procfs::start_ticks(engine_pid).unwrap_or(0);
        reg.started_at = fsutil::now_rfc3339();
        reg.started_at_unix = started_unix;
        reg.ready_at = None;
        reg.restarts = restarts;
        reg.restart_pending = None;
        write_registration(paths, &mut reg, &sink);
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

        let (status, signalled) = wait_engine(paths, &mut reg, &sink, &mut ready_hook);
        // Classified by intent, never by the exit code: a stop signal, or `engine stop`'s marker.
        let stop_requested = signalled || registration::stop_requested(paths, &reg.instance_id);
        let mut exit = LastExit {
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
        end_everything(paths, &reg, &sink);
        if let Some(c) = copier {
            // The pipe reaches EOF once every holder of its write end is gone (they all are now).
            let deadline = Instant::now() + Duration::from_secs(1);
            while !c.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if stop_requested {
            let _ = crash::write(paths, &exit);
            break 0;
        }
        if !on_failure {
            let _ = crash::write(paths, &exit);
            break 1;
        }
        // Restart policy: exponential backoff (reset after 30 s of stable uptime); 3 crashes within 60 s -> give up.
        if exit.uptime_s > STABLE_UPTIME_S {
            backoff = initial;
        }
        let now = Instant::now();
        crashes.retain(|(t, _)| now.duration_since(*t) < CRASH_LOOP_WINDOW);
        crashes.push((
            now,
            format!(
                "{} after {} at {}",
                exit.how(),
                crash::human_duration(exit.uptime_s),
                exit.ended_at
            ),
        ));
        if crashes.len() >= CRASH_LOOP_CRASHES {
            let cl = crash::CrashLoop {
                crashes: crashes.len() as u32,
                window_s: CRASH_LOOP_WINDOW.as_secs(),
                gave_up_at: fsutil::now_rfc3339(),
                history: crashes.iter().map(|(_, h)| h.clone()).collect(),
            };
            sink.line(&format!(
                "{} (state errored); `breadboard engine start` starts afresh",
                cl.summary(restarts)
            ));
            exit.crash_loop = Some(cl);
            let _ = crash::write(paths, &exit);
            reg.restart_pending = None;
            write_registration(paths, &mut reg, &sink);
            break 1;
        }
        let _ = crash::write(paths, &exit);
        let due_unix = fsutil::unix_now() + backoff.as_secs_f64();
        reg.restart_pending = Some(registration::RestartPending {
            at: fsutil::rfc3339(due_unix.ceil() as i64),
            at_unix: due_unix,
            after: exit.how(),
        });
        write_registration(paths, &mut reg, &sink);
        sink.line(&format!(
            "restarting the engine in {:.1}s (restart = on-failure; crash {} of {CRASH_LOOP_CRASHES} within {} s gives up)",
            backoff.as_secs_f64(),
            crashes.len(),
            CRASH_LOOP_WINDOW.as_secs()
        ));
        let wake = Instant::now() + backoff;
        let mut stopped = false;
        loop {
            if sys::take_signal().is_some() || registration::stop_requested(paths, &reg.instance_id)
            {
                stopped = true;
                break;
            }
            if Instant::now() >= wake {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if stopped {
            sink.line("stop requested while waiting to restart: not restarting");
            break 0;
        }
        restarts += 1;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    if code == 0 {
        if registration::peek(paths).is_none_or(|r| r.instance_id == reg.instance_id) {
            let _ = registration::remove(paths);
        }
        let _ = fsutil::remove_file_if_exists(&reg.token_file);
    }
    code
}

/// Takes `run/engine.lock` (retrying briefly: `engine status` probes it with a non-blocking try_lock). The error
/// says why it could not.
pub(crate) fn take_instance_lock(paths: &Paths) -> Result<File, String> {
    let path = paths.engine_lock();
    paths
        .ensure_run_dir()
        .map_err(|e| format!("could not create {}: {e:#}", paths.run_dir().display()))?;
    let lock = FileLock::acquire_within(
        &path,
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {},
    );
    match lock {
        Ok(lock) => Ok(lock.into_file()),
        Err(LockFailure::Open(e)) => Err(format!(
            "could not open the instance lock {}: {e}",
            path.display()
        )),
        Err(LockFailure::Lock(e)) => Err(format!(
            "could not lock the instance lock {}: {e}",
            path.display()
        )),
        Err(LockFailure::Busy) => Err(format!(
            "the instance lock {} is held by another supervisor",
            path.display()
        )),
    }
}

fn spawn_engine(
    command: &[String],
    _listen_fd: Option<i32>,
    mark: &str,
    sink: &Sink,
) -> std::io::Result<(sys::Pid, Option<std::thread::JoinHandle<()>>)> {
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env_remove(SPEC_ENV)
        .env(crate::env_vars::BREADBOARD_ENGINE_MARK, mark)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    sys::pre_exec_engine(&mut cmd, sys::getpid());
    let child = cmd.spawn()?;
    drop(cmd); // closes our copy of the pipe's write end
    let pid = child.id() as sys::Pid;
    // The Child handle is dropped without waiting: the loop reaps with waitpid(-1), which also reaps orphans.
    drop(child);
    let sink = sink.clone();
    let copier = std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.write(&buf[..n]),
            }
        }
    });
    Ok((pid, Some(copier)))
}

/// Waits for the engine to exit, reaping every other child (orphans re-parented to us) on the way. Forwards a stop
/// signal to the engine's process group (a second one escalates to SIGKILL). After an automatic restart nobody else
/// waits for the handshake, so the supervisor records `ready_at` itself once `/health` answers with our identity.
fn wait_engine(
    paths: &Paths,
    reg: &mut Registration,
    sink: &Sink,
    ready_hook: &mut Option<ReadyHook>,
) -> (sys::WaitStatus, bool) {
    let mut stop_requested = false;
    let mut signals = 0;
    let mut ready_done = ready_hook.is_none();
    let mut self_ready_done = reg.restarts == 0 || ready_hook.is_some();
    let mut next_health = Instant::now();
    loop {
        if let Some(sig) = sys::take_signal() {
            stop_requested = true;
            signals += 1;
            let fwd = if signals > 1 {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            sink.line(&format!(
                "received {}: stopping the engine ({})",
                sys::signal_name(sig),
                sys::signal_name(fwd)
            ));
            let _ = sys::killpg(reg.pgid, fwd);
        }
        while let Some(ws) = sys::reap_any() {
            if ws.pid == reg.pid {
                return (ws, stop_requested);
            }
        }
        if !ready_done {
            if let Some(hook) = ready_hook.as_mut() {
                let ok = hook(reg);
                if ok {
                    ready_done = true;
                }
            }
        }
        if !self_ready_done && Instant::now() >= next_health {
            next_health = Instant::now() + Duration::from_millis(100);
            let answered = crate::engine::client_for(reg, Duration::from_millis(300))
                .and_then(|c| c.health().ok())
                .is_some_and(|h| crate::engine::identity_ok(&h, reg));
            if answered {
                self_ready_done = true;
                reg.ready_at = Some(fsutil::now_rfc3339());
                write_registration(paths, reg, sink);
                sink.line(&format!(
                    "engine pid {} is ready again (automatic restart {})",
                    reg.pid, reg.restarts
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends every process left over from the engine: our descendants (including re-parented orphans) and, when we lead
/// a session, every member of it. SIGTERM, up to 3 s, then SIGKILL; reaps as it goes.
///
/// Without a child subreaper (macOS, the portable build) an orphan that left our session re-parents to init, out
/// of reach of both; it still carries this instance's mark, so the marked processes of this instance are ended too.
pub(crate) fn end_everything(paths: &Paths, reg: &Registration, sink: &Sink) {
    let me = sys::getpid();
    let leftovers = || {
        let mut v = procfs::descendants(me);
        if let Some(sid) = reg.sid {
            for p in procfs::session_members(sid, &[me]) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        #[cfg(not(linux_extras))]
        for m in crate::engine::marked_leftovers(paths, None) {
            if m.instance == reg.instance_id && m.pid != me && !v.contains(&m.pid) {
                v.push(m.pid);
            }
        }
        #[cfg(linux_extras)]
        let _ = paths;
        v
    };
    let first = leftovers();
    if first.is_empty() {
        while sys::reap_any().is_some() {}
        return;
    }
    sink.line(&format!(
        "ending {} leftover process(es): {first:?}",
        first.len()
    ));
    for &p in &first {
        let _ = sys::kill(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        while sys::reap_any().is_some() {}
        let left = leftovers();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            sink.line(&format!("SIGKILL to {left:?}"));
            for &p in &left {
                let _ = sys::kill(p, libc::SIGKILL);
            }
            let kill_deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < kill_deadline && !leftovers().is_empty() {
                while sys::reap_any().is_some() {}
                std::thread::sleep(Duration::from_millis(10));
            }
            while sys::reap_any().is_some() {}
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
