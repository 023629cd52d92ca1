//! The engine instance as the CLI sees it: probing its state (instance lock, registration, health), the handshake,
//! and the start and stop sequences shared by `engine start|stop|restart|status` and `engine upgrade`.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::supervise;
use crate::cli::Ctx;
use crate::compat;
use crate::crash::{self, LastExit};
use crate::engine_client::{ClientError, EngineClient, Health};
use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::procfs;
use crate::registration::{self, Registration};
use crate::sys;
use crate::venv_store::Store;

/// `engine status` states and their exit codes (docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
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
    pub fn exit_code(self) -> u8 {
        match self {
            State::Running => 0,
            State::Stopped => 10,
            State::Starting => 11,
            State::Unhealthy => 12,
            State::Incompatible => 13,
            State::Crashed => 14,
            State::Errored => 15,
        }
    }
    pub fn name(self) -> &'static str {
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

/// What a probe found.
pub enum Probe {
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

fn lock_busy(paths: &Paths) -> bool {
    // For writing where possible (NFS emulates flock with fcntl locks, whose exclusive kind needs a writable fd);
    // read-only where the home is not writable: flock itself needs no write access, and a read-only home must still
    // see its running engine (the write open failing was read as "no supervisor", a healthy engine as crashed).
    let path = paths.engine_lock();
    let file = match OpenOptions::new().write(true).open(&path) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            ) =>
        {
            OpenOptions::new().read(true).open(&path)
        }
        other => other,
    };
    let Ok(file) = file else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false, // released when `file` drops
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}

pub fn client_for(reg: &Registration, timeout: Duration) -> Option<EngineClient> {
    let client = EngineClient::new(&reg.host, reg.port, registration::token(reg), timeout)?;
    Some(match &reg.tls {
        Some(tls) => client.with_pinned_tls(tls.certfile.clone()),
        None => client,
    })
}

/// Probes the instance. `mutate` moves a corrupt registration aside (with a warning); read-only callers peek.
pub fn probe(paths: &Paths, printer: Option<&Printer>, mutate: bool) -> anyhow::Result<Probe> {
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

/// Asks `/health` again, with a longer read timeout, of an engine that connected but did not answer in time (busy,
/// e.g. while a local Ray connects). Other answers are returned as they are.
pub fn health_patiently(
    reg: &Registration,
    first: Option<Result<Health, ClientError>>,
    patience: Duration,
) -> Option<Result<Health, ClientError>> {
    match first {
        Some(Err(ClientError::Slow(_))) => client_for(reg, patience).map(|c| c.health()),
        other => other,
    }
}

/// Health matches the registration's instance, and its pid is the engine the supervisor spawned or, for a shell
/// snippet (`engine.command = "cd X && cmd"`), a process of that engine's process group.
///
/// An engine that does not echo our instance id (upstream BreadBoard's `/health` has none) is identified by what
/// it does send: its pid, which must be the process the supervisor spawned (same start time, so not a reused pid)
/// or one of its group, answering on the port it was told to bind.
pub fn identity_ok(h: &Health, reg: &Registration) -> bool {
    let spawned = h.pid == i64::from(reg.pid);
    if h.instance_id.is_empty() {
        return (spawned && procfs::same_process(reg.pid, reg.pid_start_ticks))
            || in_engine_group(h.pid, reg);
    }
    h.instance_id == reg.instance_id && (spawned || in_engine_group(h.pid, reg))
}

#[cfg(target_os = "linux")]
fn in_engine_group(pid: i64, reg: &Registration) -> bool {
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
fn in_engine_group(_pid: i64, _reg: &Registration) -> bool {
    false
}

/// Handshake problems (empty when compatible): protocol must be one the CLI speaks; the engine version must be the
/// pinned one (no pin for a command override).
pub fn handshake_problems(h: &Health, pinned: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if !compat::protocol_compatible(&h.protocol_version) {
        out.push(format!(
            "the engine speaks protocol {:?}, this CLI speaks {}",
            h.protocol_version,
            compat::PROTOCOL_VERSION
        ));
    }
    if let Some(pin) = pinned {
        if h.engine_version != pin {
            out.push(format!(
                "the engine is version {}, but the pinned (current) version is {pin}",
                h.engine_version
            ));
        }
    }
    out
}

/// The version `engine/current` pins, from its receipt.
pub fn pinned_version(paths: &Paths) -> Option<String> {
    let store = Store::new(paths);
    let cur = store.current()?;
    store
        .read_receipt(&cur)
        .ok()
        .flatten()
        .map(|r| r.engine_version)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolMode {
    Strict,
    Soft,
}

/// flag > BREADBOARD_PROTOCOL_STRICT > config `protocol.mode` > strict.
pub fn protocol_mode(
    flag: Option<ProtocolMode>,
    config: &crate::config::Config,
) -> anyhow::Result<ProtocolMode> {
    if let Some(m) = flag {
        return Ok(m);
    }
    if let Some(v) = env_vars::get(env_vars::BREADBOARD_PROTOCOL_STRICT) {
        return match v.as_str() {
            "1" | "true" => Ok(ProtocolMode::Strict),
            "0" | "false" => Ok(ProtocolMode::Soft),
            _ => Err(CliError::new(
                ErrorKind::Config,
                format!(
                    "{}={v:?}: expected 0 or 1",
                    env_vars::BREADBOARD_PROTOCOL_STRICT
                ),
            )
            .into()),
        };
    }
    configured_protocol_mode(config)
}

/// `[protocol] mode` of config.toml.
fn configured_protocol_mode(config: &crate::config::Config) -> anyhow::Result<ProtocolMode> {
    match config.protocol.mode.as_deref() {
        None | Some("strict") => Ok(ProtocolMode::Strict),
        Some("soft") => Ok(ProtocolMode::Soft),
        Some(other) => Err(CliError::new(
            ErrorKind::Config,
            format!("protocol.mode = {other:?} in config.toml: expected \"strict\" or \"soft\""),
        )
        .hint("set [protocol] mode = \"strict\" or \"soft\"")
        .into()),
    }
}

/// `[engine] restart` of config.toml: the supervisor's restart policy (doctor checks it with the same code).
pub fn restart_policy(config: &crate::config::Config) -> anyhow::Result<&'static str> {
    match &config.engine.restart {
        Some(toml::Value::String(s)) if s == "on-failure" => Ok("on-failure"),
        Some(toml::Value::String(s)) if s == "no" || s == "never" => Ok("no"),
        None => Ok("no"),
        Some(other) => Err(CliError::new(
            ErrorKind::Config,
            format!("engine.restart = {other} in config.toml: expected \"no\" or \"on-failure\""),
        )
        .hint("set [engine] restart = \"no\" or \"on-failure\"")
        .into()),
    }
}

/// Kills what is left of a dead instance's session (its supervisor is gone: lock free). Only processes of our uid,
/// in the recorded session, started after the supervisor, on this boot — and only if the session leader itself is
/// gone (a live process with that pid is someone else, so that session is not ours).
pub fn clean_stale(paths: &Paths, stale: Option<&Registration>, printer: &Printer) {
    if let Some(r) = stale {
        let same_boot = r.boot_id == procfs::boot_id();
        let mut members: Vec<sys::Pid> = Vec::new();
        if let Some(sid) = r.sid {
            if same_boot && !procfs::alive(sid) && sid == r.supervisor_pid {
                members = procfs::session_members(sid, &[])
                    .into_iter()
                    .filter(|p| {
                        procfs::start_ticks(*p).is_some_and(|t| t >= r.supervisor_start_ticks)
                    })
                    .collect();
            }
        }
        // The engine's own process group, led by the engine: what a foreground engine (whose session is the
        // terminal's) left, or what escaped the session without a child subreaper to catch it (macOS). Its leader is
        // the registered engine itself (outliving its supervisor where there is no parent-death signal) or gone: a
        // group id is not reused while the group has members. Only processes started after the engine count.
        let leader_ours = !procfs::alive(r.pgid) || procfs::same_process(r.pid, r.pid_start_ticks);
        if same_boot && r.pgid > 1 && r.pgid == r.pid && leader_ours {
            for p in procfs::group_members(r.pgid) {
                if !members.contains(&p)
                    && procfs::start_ticks(p).is_some_and(|t| t >= r.pid_start_ticks)
                {
                    members.push(p);
                }
            }
        }
        if !members.is_empty() {
            printer.info(&format!(
                "ending {} leftover process(es) of the dead engine: {members:?}",
                members.len()
            ));
            for p in &members {
                let _ = sys::kill(*p, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && members.iter().any(|p| procfs::alive(*p)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !registration::stop_requested(paths, &r.instance_id)
            && crash::read(paths).is_none_or(|e| e.instance_id != r.instance_id)
        {
            // Keep a record of how it ended, so the crash is not shown again.
            let _ = crash::write(
                paths,
                &LastExit {
                    instance_id: r.instance_id.clone(),
                    pid: r.pid,
                    supervisor_lost: true,
                    ended_at: fsutil::now_rfc3339(),
                    ended_at_unix: fsutil::unix_now(),
                    ..Default::default()
                },
            );
        }
        registration::clear_stop_request(paths, &r.instance_id);
    }
    end_marked_leftovers(paths, printer, None);
    // The dead instance's token opens nothing any more; with the lock free no engine can be using ours, even one
    // whose registration was lost (only ever our own file, whatever a record says).
    let _ = fsutil::remove_file_if_exists(&paths.token_file());
    let _ = registration::remove(paths);
}

/// Processes an engine of this home started that outlived it, found by the mark the supervisor gives every engine
/// (inherited by Ray's daemons and workers, whoever re-parented them): any instance's but `live`'s.
pub fn marked_leftovers(paths: &Paths, live: Option<&str>) -> Vec<procfs::Marked> {
    procfs::marked_processes(env_vars::BREADBOARD_ENGINE_MARK, &paths.home)
        .into_iter()
        .filter(|m| Some(m.instance.as_str()) != live)
        .collect()
}

/// Ends [`marked_leftovers`] (SIGKILL: their engine is gone, nothing of theirs needs a graceful end), saying so.
pub fn end_marked_leftovers(paths: &Paths, printer: &Printer, live: Option<&str>) {
    let left = marked_leftovers(paths, live);
    if left.is_empty() {
        return;
    }
    let pids: Vec<sys::Pid> = left.iter().map(|m| m.pid).collect();
    printer.info(&format!(
        "ending {} leftover process(es) of an earlier engine of this home: {pids:?}",
        left.len()
    ));
    for m in &left {
        // Checked again right before the kill: the pid may have been reused since the scan.
        if procfs::same_process(m.pid, m.start_ticks) {
            let _ = sys::kill(m.pid, libc::SIGKILL);
        }
    }
    wait_until(Duration::from_secs(3), || {
        left.iter()
            .all(|m| !procfs::same_process(m.pid, m.start_ticks))
    });
}

/// Shows a crash report once per crash.
pub fn report_crash_once(
    paths: &Paths,
    printer: &Printer,
    reg: Option<&Registration>,
    exit: &LastExit,
) -> bool {
    if crash::acknowledged(paths, &exit.instance_id) {
        return false;
    }
    crash::report(printer, paths, reg, exit);
    crash::acknowledge(paths, &exit.instance_id);
    true
}

// ---------------------------------------------------------------------------------------------------------------
// start

#[derive(Debug, Clone)]
pub enum PortSpec {
    Auto,
    Fixed(u16),
}

impl std::str::FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(PortSpec::Auto);
        }
        match s.parse::<u16>() {
            // 0 is not a port: a free one is asked for by name, so a typo or a script's empty value is never taken
            // as "any port".
            Ok(0) => Err("0 is not a port; for a free port, say `--port auto`".to_owned()),
            Ok(p) => Ok(PortSpec::Fixed(p)),
            Err(_) => Err(format!("{s:?} is not a port number or `auto`")),
        }
    }
}

pub const DEFAULT_PORT: u16 = 9099;

/// The port `engine start` uses without `--port`: env `BREADBOARD_CLI_PORT`, else config `engine.port`, else 9099.
pub fn configured_port(config: &crate::config::Config) -> anyhow::Result<u16> {
    match env_vars::get(env_vars::BREADBOARD_CLI_PORT) {
        Some(v) => v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            CliError::new(
                ErrorKind::Config,
                format!(
                    "{}={v:?} is not a port number",
                    env_vars::BREADBOARD_CLI_PORT
                ),
            )
            .hint(format!(
                "unset {} or set it to a port such as 9099",
                env_vars::BREADBOARD_CLI_PORT
            ))
            .into()
        }),
        None => match config.engine.port {
            Some(0) => Err(CliError::new(
                ErrorKind::Config,
                "engine.port = 0 in config.toml is not a port",
            )
            .hint("set [engine] port to a port such as 9099, or remove it; for a free port use `--port auto`")
            .into()),
            port => Ok(port.unwrap_or(DEFAULT_PORT)),
        },
    }
}

#[derive(Debug, Clone)]
pub struct StartOpts {
    pub port: PortSpec,
    pub host: String,
    pub ray_address: Option<String>,
    pub timeout: Duration,
    pub foreground: bool,
    pub protocol: ProtocolMode,
    pub allow_remote: bool,
    /// Serve HTTPS with these.
    pub tls: Option<crate::registration::TlsFiles>,
}

pub struct Started {
    pub reg: Registration,
    pub already_running: bool,
    pub version: Option<String>,
    /// `--foreground`: everything is prepared; the caller releases the control lock and calls [`run_foreground`].
    pub foreground: Option<ForegroundPlan>,
}

pub struct ForegroundPlan {
    argv: Vec<String>,
    listener: Option<TcpListener>,
    listen_fd: Option<i32>,
    restart: &'static str,
    env: Vec<(String, String)>,
    opts: StartOpts,
    /// `run/engine.lock`, taken under the control lock and handed to the supervisor loop.
    instance_lock: Option<std::fs::File>,
}

/// `localhost`, `127.x.y.z`, `::1` or `[::1]`.
pub fn is_loopback(host: &str) -> bool {
    let host = strip_brackets(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[::1]` -> `::1` (only a matching pair is removed).
fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `--host` other than loopback needs `--allow-remote` (exit 2). Checked before anything else happens, so it is a
/// usage error even when an engine already runs.
pub fn check_host(host: &str, allow_remote: bool) -> anyhow::Result<()> {
    if host.trim().is_empty() {
        return Err(CliError::new(ErrorKind::Usage, "--host must not be empty")
            .hint("leave --host out to serve on 127.0.0.1")
            .into());
    }
    if !is_loopback(host) && !allow_remote {
        return Err(CliError::new(
            ErrorKind::Usage,
            format!("refusing to serve on non-loopback host {host} without --allow-remote"),
        )
        .hint("the engine is token-protected; put TLS in front of it (docs/remote.md) and confirm with --allow-remote")
        .into());
    }
    Ok(())
}

/// How the engine is launched.
struct Launch {
    argv: Vec<String>,
    venv: Option<PathBuf>,
    version: Option<String>,
    /// The engine takes the port by env (command override) rather than an inherited fd.
    port_by_env: bool,
}

/// The argv of an engine command given as one string (`BREADBOARD_ENGINE_CMD`, or `engine.command` as a string):
/// run by `/bin/sh -c` as written. A single simple command (`python3 serve.py --x 'a b'`) is prefixed with `exec`,
/// so the engine is the supervisor's own child; a snippet with shell syntax (`cd X && cmd`, `A=1 cmd`, a pipeline)
/// runs as written, and the engine is found as the process of that group that answers `/health` with its pid and
/// this instance's id ([`identity_ok`]).
pub fn shell_argv(command: &str) -> Vec<String> {
    let script = if is_simple_command(command) {
        format!("exec {command}")
    } else {
        command.to_owned()
    };
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// One command with arguments that `exec` in front runs unchanged. Conservative: anything it is unsure of runs as
/// written instead (the engine then found by its identity). The first word must be a plain program name or path (no
/// quoting, expansion or assignment) and not a shell keyword or builtin (`exec eval ...`, `exec cd ...` break);
/// nowhere an operator, redirection, subshell, command substitution, brace group or newline.
fn is_simple_command(command: &str) -> bool {
    const SHELL_WORDS: [&str; 56] = [
        // Reserved words.
        "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if",
        "in", "select", "then", "time", "until", "while", "[[", "]]",
        // Special and regular builtins (POSIX, and the common bash/dash ones).
        ".", ":", "break", "continue", "eval", "exec", "exit", "export", "readonly", "return",
        "set", "shift", "times", "trap", "unset", "alias", "bg", "cd", "command", "fc", "fg",
        "getopts", "hash", "jobs", "read", "type", "ulimit", "umask", "unalias", "wait", "source",
        "local", "builtin", "declare", "typeset",
    ];
    let mut words = command.split_whitespace();
    let Some(first) = words.next() else {
        return false;
    };
    let plain = |w: &str| {
        w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./+:@%,".contains(c))
    };
    plain(first)
        && !SHELL_WORDS.contains(&first)
        && !command.contains([';', '&', '|', '\n', '(', ')', '`', '<', '>', '{', '}'])
        && !command.contains("$(")
}

fn resolve_launch(ctx: &Ctx) -> anyhow::Result<Launch> {
    let override_cmd: Option<Vec<String>> = match env_vars::get(env_vars::BREADBOARD_ENGINE_CMD) {
        Some(cmd) => Some(shell_argv(&cmd)),
        None => match &ctx.config.engine.command {
            None => None,
            Some(toml::Value::String(s)) => Some(shell_argv(s)),
            Some(toml::Value::Array(a)) => Some(
                a.iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        CliError::new(
                            ErrorKind::Config,
                            "engine.command in config.toml must be a string or a list of strings",
                        )
                    })?,
            ),
            Some(_) => {
                return Err(CliError::new(
                    ErrorKind::Config,
                    "engine.command in config.toml must be a string or a list of strings",
                )
                .into())
            }
        },
    };
    if let Some(argv) = override_cmd {
        return Ok(Launch {
            argv,
            venv: None,
            version: None,
            port_by_env: true,
        });
    }
    let store = Store::new(&ctx.paths);
    let Some(cur) = store.current().filter(|c| store.is_complete(c)) else {
        return Err(CliError::new(ErrorKind::Failure, "no engine is installed")
            .hint("breadboard engine install")
            .into());
    };
    if let Err(why) = store.health(&cur) {
        return Err(CliError::new(
            ErrorKind::Validation,
            format!("the current engine venv ({cur}) is broken: {why}"),
        )
        .hint(format!("breadboard engine install --version {cur} --force"))
        .into());
    }
    let venv = store.dir(&cur);
    let python = venv.join("bin/python");
    let data = ctx.paths.data_dir();
    Ok(Launch {
        argv: vec![
            python.display().to_string(),
            "-m".into(),
            "breadboard_engine".into(),
            "serve".into(),
            "--data-dir".into(),
            data.display().to_string(),
        ],
        venv: Some(venv),
        version: pinned_version(&ctx.paths).or(Some(cur)),
        port_by_env: false,
    })
}

fn port_in_use_error(host: &str, port: u16) -> anyhow::Error {
    // Maybe another breadboard engine (another home): its /health says so.
    let is_engine =
        EngineClient::new(host, port, None, Duration::from_millis(300)).is_some_and(|c| {
            matches!(c.request("GET", "/health"),
            Ok((_, body)) if body.contains("protocol_version") || body.contains("unauthorized"))
        });
    let owner = procfs::port_owner(port);
    let who = match (is_engine, owner) {
        (true, Some((pid, cmd))) => format!("another BreadBoard engine (pid {pid}, `{cmd}`)"),
        (true, None) => "another BreadBoard engine".to_owned(),
        (false, Some((pid, cmd))) => format!("pid {pid} (`{cmd}`)"),
        (false, None) => format!("another process ({})", procfs::UNNAMED_HOLDER),
    };
    CliError::new(
        ErrorKind::Failure,
        format!("port {port} on {host} is in use by {who}"),
    )
    .hint(format!(
        "use another port (`--port {}` or `--port auto`), or stop that process",
        port.wrapping_add(1)
    ))
    .into()
}

fn bind(host: &str, port: &PortSpec) -> anyhow::Result<TcpListener> {
    let p = match port {
        PortSpec::Auto => 0,
        PortSpec::Fixed(p) => *p,
    };
    let host = strip_brackets(host);
    // `localhost` may resolve to ::1 first; the engine is registered (and reached) by the address it is bound to.
    let bind_host = if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1"
    } else {
        host
    };
    TcpListener::bind((bind_host, p)).map_err(|e| bind_error(bind_host, p, &e))
}

/// What went wrong binding `host:port`, with the way out.
fn bind_error(host: &str, port: u16, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind as K;
    if e.kind() == K::AddrInUse {
        return port_in_use_error(host, port);
    }
    let hint = match e.kind() {
        K::AddrNotAvailable => format!(
            "is {host} an address of this machine? `ip -brief address` lists them; or serve on loopback: --host 127.0.0.1"
        ),
        K::PermissionDenied => format!(
            "ports below 1024 need privileges: use a port >= 1024 (`--port {}`) or `--port auto`",
            DEFAULT_PORT
        ),
        _ if e.raw_os_error().is_none() => format!(
            "{host} does not resolve to an address: check the spelling of --host, or give an IP address such as 127.0.0.1"
        ),
        _ => "check --host and --port; `--host 127.0.0.1 --port auto` works on any machine".to_owned(),
    };
    CliError::new(
        ErrorKind::Failure,
        format!("could not bind {host}:{port}: {e}"),
    )
    .hint(hint)
    .into()
}

/// `engine start` under the control lock (also used by restart and upgrade).
pub fn start_locked(ctx: &Ctx, opts: &StartOpts) -> anyhow::Result<Started> {
    let paths = &ctx.paths;
    let printer = ctx.printer;
    // Before any side effect (callers check it in their option parsing too).
    check_host(&opts.host, opts.allow_remote)?;
    paths.ensure_private(printer)?;
    match probe(paths, Some(printer), true)? {
        Probe::Live { reg, health } => {
            return already_live(paths, printer, reg, health, opts.timeout)
        }
        Probe::Down { stale, crash } => {
            if let Some(exit) = &crash {
                report_crash_once(paths, printer, stale.as_ref(), exit);
                printer.info("starting a new engine");
            }
            clean_stale(paths, stale.as_ref(), printer);
        }
    }
    // `--foreground`: this process becomes the supervisor. It takes the instance lock now, under the control lock,
    // so no other start can slip in between the caller releasing the control lock and the supervisor loop starting.
    let instance_lock = if opts.foreground {
        Some(supervise::take_instance_lock(paths).map_err(|why| {
            CliError::new(ErrorKind::Failure, why).hint(format!(
                "breadboard engine status; find the holder with: fuser -v {}",
                paths.engine_lock().display()
            ))
        })?)
    } else {
        None
    };
    let launch = resolve_launch(ctx)?;
    let listener = bind(&opts.host, &opts.port)?;
    let local = listener.local_addr()?;
    let port = local.port();
    // The registration (and so every client, and an override engine's BREADBOARD_CLI_HOST) names the address the
    // socket is bound to, never a name: `localhost` may resolve to ::1 first while the engine listens on 127.0.0.1.
    let host = local.ip().to_string();
    let instance_id = fsutil::uuid4()?;
    let token = fsutil::random_hex(32)?;
    let token_file = paths.token_file();
    fsutil::write_private(&token_file, token.as_bytes())?;
    let url_host = if local.is_ipv6() {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let log_path = paths.engine_log();
    paths.ensure_logs_dir()?;
    supervise::rotate(&log_path);

    let mut argv = launch.argv.clone();
    let listen_fd = if launch.port_by_env {
        None
    } else {
        let fd = listener.as_raw_fd();
        sys::clear_cloexec(fd)?;
        argv.push("--fd".into());
        argv.push(fd.to_string());
        Some(fd)
    };
    // The engine's Ray start mode (background | lazy | off, env BREADBOARD_RAY_START). Joining a cluster needs Ray:
    // `off` would silently ignore the address, so it gives way to `background`, with a warning.
    let mut ray_start_override = None;
    let ray_start = match (
        &opts.ray_address,
        env_vars::get("BREADBOARD_RAY_START").as_deref(),
    ) {
        (Some(addr), Some("off")) => {
            printer.warn(&format!(
                "BREADBOARD_RAY_START=off is ignored: the engine joins the Ray cluster at {addr} (--ray-address or ray.address)"
            ));
            ray_start_override = Some("background");
            "background".to_owned()
        }
        (_, Some(mode)) => mode.to_owned(),
        (_, None) => "background".to_owned(),
    };
    let reg = Registration {
        schema: registration::SCHEMA,
        instance_id: instance_id.clone(),
        host: host.clone(),
        port,
        url: format!(
            "{}://{url_host}:{port}",
            if opts.tls.is_some() { "https" } else { "http" }
        ),
        tls: opts.tls.clone(),
        token_file: token_file.clone(),
        engine_version: launch.version.clone(),
        protocol_version: compat::PROTOCOL_VERSION.to_owned(),
        venv: launch.venv.clone(),
        command: argv.clone(),
        log_path: log_path.clone(),
        ray_address: opts.ray_address.clone(),
        ray_start: Some(ray_start),
        foreground: opts.foreground,
        cli_version: crate::build_info::VERSION.to_owned(),
        ..Default::default()
    };
    let restart_policy = restart_policy(&ctx.config)?;
    let mut env: Vec<(String, String)> = vec![
        ("BREADBOARD_INSTANCE_ID".into(), instance_id.clone()),
        (
            "BREADBOARD_API_TOKEN_FILE".into(),
            token_file.display().to_string(),
        ),
        (
            "BREADBOARD_DATA_DIR".into(),
            paths.data_dir().display().to_string(),
        ),
        ("BREADBOARD_CLI_HOST".into(), host.clone()),
        ("BREADBOARD_CLI_PORT".into(), port.to_string()),
        ("BREADBOARD_HOME".into(), paths.home.display().to_string()),
    ];
    if launch.port_by_env {
        // The upstream env contract has no token file.
        env.push(("BREADBOARD_API_TOKEN".into(), token.clone()));
    }
    if let Some(addr) = &opts.ray_address {
        env.push(("BREADBOARD_RAY_ADDRESS".into(), addr.clone()));
    }
    if let Some(tls) = &opts.tls {
        for (name, path) in [
            (env_vars::BREADBOARD_SSL_CERTFILE, &tls.certfile),
            (env_vars::BREADBOARD_SSL_KEYFILE, &tls.keyfile),
        ] {
            env.push((name.into(), path.display().to_string()));
        }
    }
    if let Some(mode) = ray_start_override {
        env.push(("BREADBOARD_RAY_START".into(), mode.into()));
    }
    if !is_loopback(&host) {
        // The engine itself refuses a remote bind without a token; it has one.
        env.push(("BREADBOARD_ALLOW_INSECURE_REMOTE".into(), "0".into()));
    }
    let apply_env = |cmd: &mut Command| {
        cmd.env_remove("RAY_ADDRESS")
            .env_remove(env_vars::BREADBOARD_ENGINE_MARK)
            .env_remove("BREADBOARD_API_TOKEN")
            .env_remove("BREADBOARD_RAY_ADDRESS")
            .env_remove("BREADBOARD_ALLOW_INSECURE_REMOTE")
            // The engine serves TLS exactly when this start says so (its registration says https then).
            .env_remove(env_vars::BREADBOARD_SSL_CERTFILE)
            .env_remove(env_vars::BREADBOARD_SSL_KEYFILE);
        for (k, v) in &env {
            cmd.env(k, v);
        }
    };

    if opts.foreground {
        return Ok(Started {
            reg,
            already_running: false,
            version: launch.version,
            foreground: Some(ForegroundPlan {
                argv,
                listener: (!launch.port_by_env).then_some(listener),
                listen_fd,
                restart: restart_policy,
                env,
                opts: opts.clone(),
                instance_lock,
            }),
        });
    }

    let log = supervise::open_log(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("__supervise").arg("--restart").arg(restart_policy);
    if let Some(fd) = listen_fd {
        cmd.arg("--listen-fd").arg(fd.to_string());
    }
    cmd.arg("--").args(&argv);
    apply_env(&mut cmd);
    cmd.env(supervise::SPEC_ENV, serde_json::to_string(&reg)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&paths.home);
    sys::pre_exec_setsid(&mut cmd);
    // With the port passed by env, free it just before the spawn (the override engine binds it itself).
    let listener = (!launch.port_by_env).then_some(listener);
    let spawn_at = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not spawn the supervisor: {e}"))?;
    drop(cmd);
    drop(listener);
    let mut steps = printer.steps(3);
    steps.step("starting the engine");
    let ready = wait_ready(
        ctx,
        &instance_id,
        launch.version.as_deref(),
        opts,
        &mut child,
        spawn_at,
        &mut steps,
    );
    steps.finish();
    match ready {
        Ok(reg) => Ok(Started {
            reg,
            already_running: false,
            version: launch.version,
            foreground: None,
        }),
        Err(e) => Err(e),
    }
}

fn already_live(
    paths: &Paths,
    printer: &Printer,
    reg: Option<Registration>,
    health: Option<Result<Health, ClientError>>,
    timeout: Duration,
) -> anyhow::Result<Started> {
    let Some(reg) = reg else {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!("{} is held but there is no registration (an engine is starting, or its supervisor is wedged)", paths.engine_lock().display()),
        )
        .hint("breadboard engine status; breadboard engine restart")
        .into());
    };
    // A running engine that is busy (connected, no answer yet) is waited for, up to --timeout, rather than called
    // unreachable: it answers once the work that holds it up is done.
    let health = if let Some(Err(e @ ClientError::Slow(_))) = &health {
        printer.info(&format!(
            "the engine (pid {}) is running but busy: {e}; waiting up to {}s for it to answer",
            reg.pid,
            timeout.as_secs_f64()
        ));
        health_patiently(&reg, health, timeout)
    } else {
        health
    };
    match health {
        Some(Ok(h)) if identity_ok(&h, &reg) => {
            let pinned = reg.engine_version.as_ref().and(pinned_version(paths));
            let problems = handshake_problems(&h, pinned.as_deref());
            if problems.is_empty() {
                Ok(Started { version: Some(h.engine_version.clone()), reg, already_running: true, foreground: None })
            } else {
                Err(CliError::new(
                    ErrorKind::Failure,
                    format!("an incompatible engine is running at {} (pid {}): {}", reg.url, reg.pid, problems.join("; ")),
                )
                .hint("breadboard engine restart  (replaces it with the pinned version)")
                .into())
            }
        }
        Some(Ok(_)) => Err(CliError::new(
            ErrorKind::Failure,
            format!("the engine at {} answers with another identity than its registration (pid {}, instance {})", reg.url, reg.pid, reg.instance_id),
        )
        .hint("breadboard engine restart")
        .into()),
        Some(Err(e @ ClientError::Slow(_))) => Err(CliError::new(
            ErrorKind::Failure,
            format!("an engine is running (pid {}, supervisor {}) but busy at {}: {e}", reg.pid, reg.supervisor_pid, reg.url),
        )
        .hint("wait and retry (breadboard engine status), or breadboard engine restart  (see: breadboard engine logs -n 100)")
        .into()),
        Some(Err(e)) => Err(CliError::new(
            ErrorKind::Failure,
            format!("an engine is running (pid {}, supervisor {}) but not answering at {}: {e}", reg.pid, reg.supervisor_pid, reg.url),
        )
        .hint("breadboard engine restart  (or: breadboard engine logs -n 100)")
        .into()),
        None => Err(CliError::new(ErrorKind::Failure, "the engine's address in its registration is invalid")
            .hint("breadboard engine restart")
            .into()),
    }
}

/// Polls until the new instance answers its handshake (or dies, or the timeout passes).
fn wait_ready(
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
            // Died before ready: wait for the supervisor to finish its cleanup, then report. A failed start is not
            // retried by restart = "on-failure": the stop intent makes the supervisor exit instead of restarting.
            if sup_done.is_none() {
                let _ = registration::request_stop(paths, instance_id);
            }
            let sup_status = sup_done.or_else(|| wait_child(child, Duration::from_secs(6)));
            if sup_status.is_none() {
                // Still alive (e.g. restart = "on-failure" retrying): a failed start leaves nothing running.
                let _ = stop_locked(ctx, Duration::from_secs(5), true, true);
            }
            steps.finish();
            // Only this instance's files: another instance's registration is never removed here.
            let ours = |r: &Registration| r.instance_id == instance_id;
            let recorded = crash::read(paths).filter(|e| e.instance_id == instance_id);
            if let (None, Some(code)) = (&recorded, sup_status.and_then(|s| s.code())) {
                // The supervisor ended by itself without ever recording an engine exit: it did not start one.
                registration::clear_stop_request(paths, instance_id);
                if registration::peek(paths).is_some_and(|r| ours(&r)) {
                    let _ = registration::remove(paths);
                }
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
                return Err(if code == i32::from(supervise::EXIT_LOCK_BUSY) {
                    CliError::new(
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
                } else {
                    CliError::new(
                        ErrorKind::Failure,
                        format!("the supervisor exited with code {code} before starting the engine"),
                    )
                    .hint(format!(
                        "breadboard engine logs -n 200  (log: {})",
                        log.display()
                    ))
                }
                .into());
            }
            let exit = recorded.unwrap_or_else(|| LastExit {
                instance_id: instance_id.to_owned(),
                supervisor_lost: true,
                ended_at: fsutil::now_rfc3339(),
                ..Default::default()
            });
            let stub = reg.clone().unwrap_or_else(|| Registration {
                log_path: paths.engine_log(),
                ..Default::default()
            });
            crash::report(ctx.printer, paths, Some(&stub), &exit);
            crash::acknowledge(paths, instance_id);
            if registration::peek(paths).is_some_and(|r| ours(&r)) {
                let _ = registration::remove(paths);
            }
            registration::clear_stop_request(paths, instance_id);
            return Err(CliError::new(
                ErrorKind::Failure,
                format!("the engine exited before it was ready ({})", exit.how()),
            )
            .hint(format!(
                "breadboard engine logs -n 200  (log: {})",
                paths.engine_log().display()
            ))
            .into());
        }
        if let Some(reg) = reg {
            if !announced {
                steps.step(&format!("waiting for {}/health (pid {})", reg.url, reg.pid));
                announced = true;
            }
            if let Some(client) = client_for(&reg, Duration::from_millis(500)) {
                if let Ok(h) = client.health() {
                    if identity_ok(&h, &reg) {
                        let problems = handshake_problems(&h, pinned);
                        if !problems.is_empty() {
                            if opts.protocol == ProtocolMode::Strict {
                                steps.finish();
                                let stopped =
                                    stop_locked(ctx, Duration::from_secs(10), false, true);
                                return Err(handshake_error(&problems, pinned, stopped.err()));
                            }
                            for p in &problems {
                                ctx.printer
                                    .warn(&format!("{p} (continuing: protocol mode soft)"));
                            }
                        }
                        let mut reg = reg;
                        reg.ready_at = Some(fsutil::now_rfc3339());
                        // The supervisor writes the registration once; ready_at is the CLI's only update.
                        if registration::peek(paths)
                            .is_some_and(|r| r.instance_id == reg.instance_id && r.pid == reg.pid)
                        {
                            registration::write(paths, &reg)?;
                        }
                        return Ok(reg);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            steps.finish();
            let log = paths.engine_log();
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
            return Err(CliError::new(
                ErrorKind::Failure,
                format!(
                    "the engine did not answer its handshake within {}s; {what}",
                    opts.timeout.as_secs_f64()
                ),
            )
            .hint(hint)
            .into());
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

fn wait_child(
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

/// The error of a failed strict handshake (the engine has been, or is being, stopped).
/// `stop_failed`: why the engine that failed its handshake could not be stopped (else it was).
fn handshake_error(
    problems: &[String],
    pinned: Option<&str>,
    stop_failed: Option<anyhow::Error>,
) -> anyhow::Error {
    let stopped = match &stop_failed {
        None => "the engine was stopped".to_owned(),
        Some(e) => {
            format!("stopping the engine failed too ({e:#}): run `breadboard engine stop --force`")
        }
    };
    CliError::new(
        ErrorKind::Failure,
        format!(
            "handshake failed: {} (strict protocol mode); {stopped}",
            problems.join("; ")
        ),
    )
    .hint(match pinned {
        Some(p) => format!("reinstall the pinned engine: breadboard engine install --version {p} --force, or allow it with --protocol soft (BREADBOARD_PROTOCOL_STRICT=0)"),
        None => "use an engine that speaks protocol 1.x, or allow it with --protocol soft (BREADBOARD_PROTOCOL_STRICT=0)".to_owned(),
    })
    .into()
}

/// Runs the supervisor loop in this process (`engine start --foreground`), after the control lock is released (the
/// instance lock was taken under it). `on_ready` runs once, when the first engine passes its handshake (`--json`
/// prints the start document from there). Returns the exit code: 0 after Ctrl-C (a clean stop).
pub fn run_foreground(
    ctx: &Ctx,
    started: Started,
    on_ready: &mut dyn FnMut(&Registration),
) -> anyhow::Result<u8> {
    let Started {
        reg,
        version,
        foreground,
        ..
    } = started;
    let Some(plan) = foreground else {
        return Ok(0);
    };
    let ForegroundPlan {
        argv,
        listener,
        listen_fd,
        restart,
        env,
        opts,
        instance_lock,
    } = plan;
    let opts = &opts;
    let instance_lock = match instance_lock {
        Some(lock) => lock,
        None => supervise::take_instance_lock(&ctx.paths)
            .map_err(|why| CliError::new(ErrorKind::Failure, why))?,
    };
    // The engine inherits our environment: set it here (this process is single-threaded at this point).
    for k in [
        "RAY_ADDRESS",
        env_vars::BREADBOARD_ENGINE_MARK,
        "BREADBOARD_API_TOKEN",
        "BREADBOARD_RAY_ADDRESS",
        "BREADBOARD_ALLOW_INSECURE_REMOTE",
    ] {
        std::env::remove_var(k);
    }
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let printer = ctx.printer;
    let pinned = version.clone();
    let strict = opts.protocol == ProtocolMode::Strict;
    let paths = ctx.paths.clone();
    // The handshake deadline runs from each engine's spawn (restart = "on-failure" spawns new ones).
    let mut deadline = Instant::now() + opts.timeout;
    let mut deadline_pid = 0;
    let mut announced = false;
    // Why this process stopped the engine itself (a failed handshake): that, not the engine's exit, is the error.
    let mut failure: Option<anyhow::Error> = None;
    // A stop this process decides on is a requested stop: record the intent before the signal, as `engine stop`
    // does, so the supervisor loop neither restarts the engine nor records a crash.
    let stop_engine = |r: &Registration| {
        let _ = registration::request_stop(&paths, &r.instance_id);
        let _ = sys::killpg(r.pgid, libc::SIGTERM);
    };
    let mut hook = |r: &Registration| -> bool {
        if r.pid != deadline_pid {
            deadline_pid = r.pid;
            deadline = Instant::now() + opts.timeout;
        }
        let Some(client) = client_for(r, Duration::from_millis(300)) else {
            return true;
        };
        match client.health() {
            Ok(h) if identity_ok(&h, r) => {
                let problems = handshake_problems(&h, pinned.as_deref());
                if !problems.is_empty() {
                    if strict {
                        printer.warn(&format!(
                            "handshake failed (strict protocol mode): {}; stopping the engine",
                            problems.join("; ")
                        ));
                        failure = Some(handshake_error(&problems, pinned.as_deref(), None));
                        stop_engine(r);
                        return true;
                    }
                    for p in &problems {
                        printer.warn(&format!("{p} (continuing: protocol mode soft)"));
                    }
                }
                let mut done = r.clone();
                done.ready_at = Some(fsutil::now_rfc3339());
                let _ = registration::write(&paths, &done);
                printer.info(&format!(
                    "engine ready at {} (pid {}); Ctrl-C stops it",
                    r.url, r.pid
                ));
                if !announced {
                    announced = true;
                    on_ready(&done);
                }
                true
            }
            _ => {
                if Instant::now() > deadline {
                    printer.warn(&format!(
                        "the engine did not answer its handshake within {}s: stopping it",
                        opts.timeout.as_secs_f64()
                    ));
                    failure = Some(
                        CliError::new(
                            ErrorKind::Failure,
                            format!(
                                "the engine did not answer its handshake within {}s; it was stopped",
                                opts.timeout.as_secs_f64()
                            ),
                        )
                        .hint("see the engine's output above, or raise --timeout")
                        .into(),
                    );
                    stop_engine(r);
                    return true;
                }
                false
            }
        }
    };
    let code = supervise::supervise(
        &ctx.paths,
        reg.clone(),
        &argv,
        listen_fd,
        restart,
        supervise::Sink::Stderr,
        Some(supervise::Attached {
            ready_hook: &mut hook,
            instance_lock,
        }),
    );
    drop(listener);
    registration::clear_stop_request(&ctx.paths, &reg.instance_id);
    if let Some(e) = failure {
        // The supervisor recorded a requested stop: nothing to report as a crash.
        return Err(e);
    }
    if code == supervise::EXIT_LOCK_BUSY {
        return Err(CliError::new(
            ErrorKind::Failure,
            format!(
                "could not take the instance lock {}",
                ctx.paths.engine_lock().display()
            ),
        )
        .hint("breadboard engine status")
        .into());
    }
    if code != 0 {
        if let Some(exit) = crash::read(&ctx.paths).filter(|e| e.instance_id == reg.instance_id) {
            crash::acknowledge(&ctx.paths, &exit.instance_id);
            let what = match &exit.crash_loop {
                Some(cl) => format!(
                    "{}; the last one: {}",
                    cl.summary(exit.restarts),
                    exit.how()
                ),
                None => exit.how(),
            };
            return Err(
                CliError::new(ErrorKind::Failure, format!("the engine exited: {what}"))
                    .hint(
                        "see the engine's output above; then: breadboard engine start --foreground",
                    )
                    .into(),
            );
        }
        return Err(CliError::new(ErrorKind::Failure, "the engine exited").into());
    }
    printer.info("engine stopped");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------------------------
// stop

pub enum Stopped {
    NotRunning,
    Stopped { pid: i32, forced: bool },
}

/// After the current version was switched without a restart (`install`, `rollback`): a running engine keeps its
/// old version until restarted, and says so only as `incompatible` later; say it now.
pub fn warn_if_running_another(paths: &Paths, printer: &Printer, current: &str) {
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
pub fn unregistered_supervisor(paths: &Paths) -> Option<sys::Pid> {
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
fn supervisor_session(sup: sys::Pid) -> Vec<sys::Pid> {
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
fn stop_unregistered(
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

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
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
pub fn stop_locked(
    ctx: &Ctx,
    timeout: Duration,
    force: bool,
    quiet_crash: bool,
) -> anyhow::Result<Stopped> {
    let paths = &ctx.paths;
    let printer = ctx.printer;
    let mut probed = probe(paths, Some(printer), true)?;
    // A supervisor that holds the lock but has not written its registration yet: give it a moment.
    if matches!(&probed, Probe::Live { reg: None, .. }) {
        wait_until(Duration::from_secs(3), || {
            registration::peek(paths).is_some() || !lock_busy(paths)
        });
        probed = probe(paths, Some(printer), true)?;
    }
    let (mut reg, mut health) = match probed {
        Probe::Down { stale, crash } => {
            if let (Some(exit), false) = (&crash, quiet_crash) {
                report_crash_once(paths, printer, stale.as_ref(), exit);
            }
            clean_stale(paths, stale.as_ref(), printer);
            return Ok(Stopped::NotRunning);
        }
        Probe::Live { reg: None, .. } => {
            return match unregistered_supervisor(paths) {
                Some(sup) => stop_unregistered(paths, printer, sup, timeout, force),
                None => Err(CliError::new(
                    ErrorKind::Failure,
                    format!(
                        "{} is held by a process without a registration; refusing to signal anything",
                        paths.engine_lock().display()
                    ),
                )
                .hint(format!(
                    "find the holder with: fuser -v {}",
                    paths.engine_lock().display()
                ))
                .into()),
            };
        }
        Probe::Live {
            reg: Some(reg),
            health,
        } => (reg, health),
    };
    // Identity before any signal.
    let same_boot = reg.boot_id == procfs::boot_id();
    let sup_ok = same_boot && procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks);
    if !sup_ok {
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
    // With `restart = "on-failure"` the supervisor may have just restarted the engine (same instance and supervisor,
    // a new engine pid): follow its registration rather than calling the new engine a stranger.
    let follow_deadline = Instant::now()
        + if reg.restart_policy.as_deref() == Some("on-failure") {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
    while matches!(&health, Some(Ok(h)) if !identity_ok(h, &reg))
        && Instant::now() < follow_deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        let Some(now) = registration::peek(paths) else {
            break;
        };
        if now.instance_id != reg.instance_id || now.supervisor_pid != reg.supervisor_pid {
            break;
        }
        health = client_for(&now, Duration::from_millis(500)).map(|c| c.health());
        reg = now;
    }
    if let Some(Ok(h)) = &health {
        if !identity_ok(h, &reg) {
            // Not asked to shut down over HTTP: whatever answers there is not known to be ours. The processes
            // signalled below are, checked by pid and start time: the supervisor above, the engine below.
            printer.debug(&format!(
                "{} answers as pid {} instance {:?}, not the registered pid {} instance {}; stopping by signals only",
                reg.url, h.pid, h.instance_id, reg.pid, reg.instance_id
            ));
            health = None;
        }
    }
    let mut engine_ok = procfs::same_process(reg.pid, reg.pid_start_ticks);
    // Record the intent first: the supervisor classifies the exit by it, not by the exit code, and never restarts
    // an engine whose stop was asked for. The intent file cannot be lost to a registration the supervisor rewrites.
    registration::request_stop(paths, &reg.instance_id)?;
    let same_instance = |r: &Registration, reg: &Registration| {
        r.instance_id == reg.instance_id && r.supervisor_pid == reg.supervisor_pid
    };
    let mut marked = registration::peek(paths)
        .filter(|r| same_instance(r, &reg))
        .unwrap_or_else(|| reg.clone());
    marked.stop_requested_at = Some(fsutil::now_rfc3339());
    registration::write(paths, &marked)?;
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
    let phase = timeout.mul_f64(0.4);
    let free = || !lock_busy(paths);
    let mut forced = force;
    let mut done = false;
    let mut sent_term = false;
    if !force && !engine_ok {
        // No engine process: the supervisor is between engines (restart = "on-failure" waiting to restart a crashed
        // one). It sees the intent and exits; unless it restarted the engine just before, which is then stopped
        // like any other.
        let restarted = || {
            registration::peek(paths).filter(|r| {
                same_instance(r, &reg)
                    && r.pid != reg.pid
                    && procfs::same_process(r.pid, r.pid_start_ticks)
            })
        };
        done = wait_until(phase, || free() || restarted().is_some());
        if !free() {
            if let Some(now) = restarted() {
                printer.debug(&format!(
                    "the supervisor restarted the engine (pid {}) as the stop began; stopping that one",
                    now.pid
                ));
                health = client_for(&now, Duration::from_millis(500)).map(|c| c.health());
                reg = now;
                engine_ok = true;
                done = false;
            }
        }
    }
    if !force && !done {
        // A busy engine (connected, slow to answer) is asked to shut down too: it reads the request when it can.
        if let (Some(Ok(_) | Err(ClientError::Slow(_))), Some(client)) =
            (&health, client_for(&reg, Duration::from_millis(1000)))
        {
            match client.shutdown() {
                Ok(()) => done = wait_until(phase, free),
                // Delivered but not answered in time: a busy engine reads it when it can, so it gets the same phase.
                Err(e @ ClientError::Slow(_)) => {
                    printer.debug(&format!(
                        "POST /v1/shutdown: {e}; waiting for the engine to stop"
                    ));
                    done = wait_until(phase, free);
                }
                Err(e) => printer.debug(&format!("POST /v1/shutdown failed: {e}")),
            }
        }
        if !done && engine_ok && procfs::same_process(reg.pid, reg.pid_start_ticks) {
            printer.info(&format!(
                "the engine did not stop by itself; sending SIGTERM to its process group {}",
                reg.pgid
            ));
            let _ = sys::killpg(reg.pgid, libc::SIGTERM);
            sent_term = true;
            done = wait_until(phase, free);
        } else if !done {
            done = wait_until(phase, free);
        }
    }
    if !done {
        forced = true;
        // Re-verify right before SIGKILL.
        if procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks) {
            if !force {
                // Only what happened: SIGTERM may never have been sent (no engine process was left to get it).
                printer.info(if sent_term {
                    "the engine ignored SIGTERM; killing its session"
                } else {
                    "the engine did not stop in time; killing its session"
                });
            }
            let victims = instance_processes(&reg);
            for p in &victims {
                let _ = sys::kill(*p, libc::SIGKILL);
            }
            // The supervisor reaps, records the exit and releases the lock; kill it too if it does not.
            if !wait_until(Duration::from_secs(2), free)
                && procfs::same_process(reg.supervisor_pid, reg.supervisor_start_ticks)
            {
                let _ = sys::kill(reg.supervisor_pid, libc::SIGKILL);
                for p in instance_processes(&reg) {
                    let _ = sys::kill(p, libc::SIGKILL);
                }
            }
        }
        let rest = timeout
            .saturating_sub(phase * 2)
            .max(Duration::from_secs(2));
        wait_until(rest, free);
    }
    // Verify: no process of the instance remains, the port is free.
    let survivors_gone = wait_until(Duration::from_secs(2), || {
        instance_processes(&reg).is_empty() && !procfs::alive(reg.supervisor_pid)
    });
    let port_free = wait_until(Duration::from_secs(2), || !procfs::port_listening(reg.port));
    if !survivors_gone {
        // Nothing is cleaned up: the registration, token and stop intent stay, so a retry (or `--force`) can find
        // and verify what is left, and nothing reports this instance as a crash.
        return Err(stop_failed(&reg, false));
    }
    if registration::peek(paths).is_some_and(|r| r.instance_id == reg.instance_id) {
        let _ = registration::remove(paths);
    }
    let _ = fsutil::remove_file_if_exists(&reg.token_file);
    registration::clear_stop_request(paths, &reg.instance_id);
    if crash::read(paths).is_none_or(|e| e.instance_id != reg.instance_id) {
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
    end_marked_leftovers(paths, printer, None);
    if !port_free {
        // Every process of the instance is gone, but something else holds its port: the stop did not free it.
        return Err(stop_failed(&reg, true));
    }
    Ok(Stopped::Stopped {
        pid: reg.pid,
        forced,
    })
}

/// A stop that left processes of the instance (`survivors_gone` false), or its port listening: what is left, and how
/// to end it.
fn stop_failed(reg: &Registration, survivors_gone: bool) -> anyhow::Error {
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
fn resume_if_stopped(printer: &Printer, procs: &[(&str, sys::Pid, u64)]) {
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
fn instance_processes(reg: &Registration) -> Vec<sys::Pid> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_command_is_execed_and_a_shell_snippet_runs_as_written() {
        assert_eq!(
            shell_argv("python3 serve.py --name 'a b'")[2],
            "exec python3 serve.py --name 'a b'"
        );
        assert_eq!(
            shell_argv("/opt/engine/.venv/bin/python -m x --port $PORT")[2],
            "exec /opt/engine/.venv/bin/python -m x --port $PORT"
        );
        for snippet in [
            "cd /srv/engine && python3 serve.py",
            "A=1 python3 serve.py",
            "python3 a.py; python3 b.py",
            "python3 serve.py 2>err.log",
            "source env.sh\npython3 serve.py",
            "export A=1",
            "eval python3 serve.py",
            "trap '' HUP; python3 serve.py",
            "command python3 serve.py",
            "read x",
            "exec python3 serve.py",
            "set -e",
            ". ./env.sh",
            "cd /srv",
            "'python3' serve.py",
            "$PY serve.py",
            "{ python3 serve.py; }",
        ] {
            assert_eq!(shell_argv(snippet)[2], snippet);
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "0.0.0.0",
            "::",
            "[::]",
            "192.0.2.1",
            "example.com",
            "[::1",
            "::1]",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn host_check_is_a_usage_error() {
        assert!(check_host("[::1]", false).is_ok());
        assert!(check_host("0.0.0.0", true).is_ok());
        for (h, remote) in [("0.0.0.0", false), ("", true)] {
            let e = check_host(h, remote).unwrap_err();
            assert_eq!(crate::error::classify(&e).0, 2, "{h}: {e:#}");
        }
    }

    #[test]
    fn localhost_binds_127_0_0_1_and_bind_errors_have_hints() {
        let l = bind("localhost", &PortSpec::Auto).unwrap();
        assert_eq!(l.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        let l6 = bind("[::1]", &PortSpec::Auto);
        if let Ok(l6) = l6 {
            assert_eq!(l6.local_addr().unwrap().ip().to_string(), "::1");
        }
        // 192.0.2.1 (TEST-NET-1) is no address of this machine.
        let e = bind("192.0.2.1", &PortSpec::Auto).unwrap_err();
        let (code, hint) = crate::error::classify(&e);
        assert_eq!(code, 1);
        assert!(
            hint.is_some_and(|h| h.contains("is 192.0.2.1 an address of this machine?")),
            "{e:#} {hint:?}"
        );
    }
}
