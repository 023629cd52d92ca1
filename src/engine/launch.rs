//! What runs as the engine (the pinned venv, or a command override) and the socket it is handed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::context::Ctx;
use crate::engine_client::EngineClient;
use crate::error::{CliError, ErrorKind};
use crate::os::procfs;
use crate::settings::EngineCommand;
use crate::venv::store::Store;

use super::*;

/// How the engine is launched.
pub(super) struct Launch {
    pub(super) argv: Vec<String>,
    pub(super) venv: Option<PathBuf>,
    pub(super) version: Option<String>,
    /// The engine takes the port by env (command override) rather than an inherited fd.
    pub(super) port_by_env: bool,
}

/// The argv of an engine command given as one string (`BREADBOARD_ENGINE_CMD`, or `engine.command` as a string):
/// run by `/bin/sh -c` as written. A single simple command (`python3 serve.py --x 'a b'`) is prefixed with `exec`,
/// so the engine is the supervisor's own child; a snippet with shell syntax (`cd X && cmd`, `A=1 cmd`, a pipeline)
/// runs as written, and the engine is found as the process of that group that answers `/health` with its pid and
/// this instance's id ([`identity_ok`]).
pub(crate) fn shell_argv(command: &str) -> Vec<String> {
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
pub(super) fn is_simple_command(command: &str) -> bool {
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

/// Whether an engine command override is set (`BREADBOARD_ENGINE_CMD` or config `engine.command`, even an invalid
/// one): then an engine can run without an installed venv.
pub(crate) fn has_command_override(ctx: &Ctx) -> bool {
    ctx.settings
        .engine_command
        .get()
        .map_or(true, |command| command.is_some())
}

/// What runs as the engine: the command override when one is set, else the pinned venv.
pub(super) fn resolve_launch(ctx: &Ctx) -> anyhow::Result<Launch> {
    match ctx.settings.engine_command.get()? {
        Some(command) => Ok(override_launch(command)),
        None => installed_launch(ctx),
    }
}

/// A command override: no venv, no pinned version, the port by env.
fn override_launch(command: &EngineCommand) -> Launch {
    let argv = match command {
        EngineCommand::Shell(s) => shell_argv(s),
        EngineCommand::Argv(a) => a.clone(),
    };
    Launch {
        argv,
        venv: None,
        version: None,
        port_by_env: true,
    }
}

/// The engine of `engine/current`, which must be installed and healthy.
fn installed_launch(ctx: &Ctx) -> anyhow::Result<Launch> {
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

pub(super) fn port_in_use_error(host: &str, port: u16) -> anyhow::Error {
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

pub(super) fn bind(host: &str, port: &PortSpec) -> anyhow::Result<TcpListener> {
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
pub(super) fn bind_error(host: &str, port: u16, e: &std::io::Error) -> anyhow::Error {
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
