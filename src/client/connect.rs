//! Finding the engine: a remote one (`--url`, `BREADBOARD_URL`, `[client] url`) with its token from a file or the
//! environment, else the local one from its registration under BREADBOARD_HOME, started through `engine start`'s
//! own code path when the command may start it. The handshake (protocol, engine version) applies to both.

use std::path::Path;
use std::time::{Duration, Instant};

use super::wire::Health;
use super::{http_client, Client, Endpoint};
use crate::context::Ctx;
use crate::engine::crash::LastExit;
use crate::engine::registration::{self, Registration};
use crate::engine::{self, Answer, Diagnosis, Pending, ProtocolMode};
use crate::env_vars::{self, BREADBOARD_API_TOKEN};
use crate::error::{CliError, ErrorKind};
use crate::settings::{self, Origin, TokenSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPolicy {
    /// Start the local engine when none runs (`ask`, `sessions new|send|attach`).
    #[default]
    Start,
    /// Fail at once naming `breadboard engine start` (`--no-start`, read-only commands).
    FailFast,
}

impl StartPolicy {
    /// The policy of a command that may start the engine, given its `--no-start` flag.
    pub fn unless(no_start: bool) -> StartPolicy {
        if no_start {
            StartPolicy::FailFast
        } else {
            StartPolicy::Start
        }
    }
}

/// How a command reaches the engine. Which engine, its token and the protocol mode are settings
/// (`ctx.settings.client_url`, `client_token`, `protocol`: `--url`, `--token-file`, `--protocol`, env, config).
#[derive(Debug, Clone, Default)]
pub struct Connect {
    pub start: StartPolicy,
    /// How long to wait for a local engine that is starting or being restarted by its supervisor.
    pub wait: Duration,
}

pub async fn connect<'a>(ctx: &'a Ctx<'a>, target: Connect) -> anyhow::Result<Client<'a>> {
    let mode = *ctx.settings.protocol.get()?;
    if let Some(base) = ctx.settings.client_url.get()?.clone() {
        let (token, token_origin) = remote_token(ctx)?;
        let endpoint = Endpoint {
            base,
            token,
            token_origin,
            instance_id: None,
            restarts: 0,
            tls_pin: None,
        };
        let client = Client {
            ctx,
            http: http_client(&endpoint)?,
            endpoint,
            mode,
        };
        let health = client.health().await?;
        check_handshake(ctx, &client.endpoint, &health, None, mode)?;
        return Ok(client);
    }
    let endpoint = local_endpoint(ctx, &target, mode)?;
    Ok(Client {
        ctx,
        http: http_client(&endpoint)?,
        endpoint,
        mode,
    })
}

/// The remote engine's token and where it came from (for messages; the token itself is never shown), as the setting
/// says: `--token-file` > BREADBOARD_API_TOKEN_FILE > BREADBOARD_API_TOKEN > `[client] token_file`; never from argv.
fn remote_token(ctx: &Ctx) -> anyhow::Result<(Option<String>, Option<String>)> {
    let setting = &ctx.settings.client_token;
    let source = setting.get()?;
    // Below the variable in precedence: the token would have been its value. An empty value is a variable left set
    // by mistake: sending an empty bearer token would only earn a 401.
    let below_variable = matches!(setting.origin, Origin::Config { .. } | Origin::Default);
    if ctx.settings.api_token_blank && below_variable {
        ctx.printer.warn(&format!(
            "{BREADBOARD_API_TOKEN} is set but empty; ignoring it"
        ));
    }
    match source {
        TokenSource::None => Ok((None, None)),
        TokenSource::Variable => {
            let token = env_vars::get(BREADBOARD_API_TOKEN).unwrap_or_default();
            Ok((
                Some(token.trim().to_owned()),
                Some(format!("the variable {BREADBOARD_API_TOKEN}")),
            ))
        }
        TokenSource::File(path) => {
            let (named, kind) = match &setting.origin {
                Origin::Flag(flag) => (flag.clone(), ErrorKind::Usage),
                Origin::Env(name) => (name.clone(), ErrorKind::Config),
                Origin::Config { .. } | Origin::Default => (
                    "[client] token_file in config.toml".to_owned(),
                    ErrorKind::Config,
                ),
            };
            let origin = format!("the token file {} ({named})", path.display());
            token_from_file(path, origin, kind)
        }
    }
}

/// The token in `path` (trimmed), which must be readable and not empty; `origin` names the file in messages.
fn token_from_file(
    path: &Path,
    origin: String,
    kind: ErrorKind,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(kind, format!("could not read {origin}: {e}"))
            .hint("point it at a readable file that holds the engine's token")
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::new(kind, format!("{origin} is empty")).into());
    }
    Ok((Some(token), Some(origin)))
}

/// The local engine as the registration, the instance lock and `/health` show it.
pub(crate) enum LocalState {
    Ready(Box<Registration>, Health),
    /// No supervisor: nothing runs. `crash` says how the last engine ended, when it died unasked.
    Down {
        stale: Option<Box<Registration>>,
        crash: Option<Box<LastExit>>,
    },
    /// A supervisor lives but its engine does not answer yet (starting, or being restarted after a crash: then
    /// how it ended, for the crash report).
    Waiting(String, Option<Box<(Registration, LastExit)>>),
    /// It answers, but refuses the registration's token.
    Refused(Box<Registration>),
}

pub(crate) fn local_state(ctx: &Ctx) -> anyhow::Result<LocalState> {
    Ok(match engine::diagnose(&ctx.paths, None, false)? {
        Diagnosis::Stopped => LocalState::Down {
            stale: None,
            crash: None,
        },
        Diagnosis::Leftovers(reg) => LocalState::Down {
            stale: Some(reg),
            crash: None,
        },
        Diagnosis::Crashed(dead) | Diagnosis::Errored(dead) => LocalState::Down {
            stale: Some(Box::new(dead.reg)),
            crash: Some(Box::new(dead.exit)),
        },
        Diagnosis::Unregistered => {
            LocalState::Waiting("its supervisor is starting it".to_owned(), None)
        }
        Diagnosis::Live(live) => live_state(*live),
    })
}

/// A live instance as the client sees it. The handshake is checked by the caller, in the command's protocol mode.
fn live_state(live: engine::Live) -> LocalState {
    let reg = live.reg;
    match live.answer {
        Answer::Ready(h) | Answer::Incompatible(h, _) => LocalState::Ready(Box::new(reg), h),
        Answer::Stranger(_) => LocalState::Waiting(
            format!(
                "{} answers with another identity than its registration",
                reg.url
            ),
            None,
        ),
        Answer::TokenRefused(_) => LocalState::Refused(Box::new(reg)),
        Answer::Busy(e) | Answer::NotAnswering(e) => match live.pending {
            Some(Pending::Restart(p)) => {
                let why = format!(
                    "the engine crashed ({}); its supervisor restarts it (restart = \"on-failure\")",
                    p.after
                );
                let exit = live.last_exit.filter(|x| !x.stop_requested);
                LocalState::Waiting(why, exit.map(|x| Box::new((reg, x))))
            }
            _ => LocalState::Waiting(format!("{} is not answering yet ({e})", reg.url), None),
        },
        Answer::NoAddress => {
            LocalState::Waiting("its registration has no valid address".to_owned(), None)
        }
    }
}

pub(crate) fn endpoint_of(reg: &Registration) -> Endpoint {
    Endpoint {
        base: reg.url.trim_end_matches('/').to_owned(),
        token: registration::token(reg),
        token_origin: Some(format!("the token file {}", reg.token_file.display())),
        instance_id: Some(reg.instance_id.clone()),
        restarts: reg.restarts,
        tls_pin: reg.tls.as_ref().map(|t| t.certfile.clone()),
    }
}

/// The local engine's endpoint, starting the engine when `target.start` allows it, waiting (up to `target.wait`)
/// for one that is starting or restarting.
fn local_endpoint(ctx: &Ctx, target: &Connect, mode: ProtocolMode) -> anyhow::Result<Endpoint> {
    let deadline = Instant::now() + target.wait;
    let mut said = None::<String>;
    let mut started = false;
    loop {
        match local_state(ctx)? {
            LocalState::Ready(reg, health) => {
                let endpoint = endpoint_of(&reg);
                check_local_handshake(ctx, &endpoint, &reg, &health, mode)?;
                return Ok(endpoint);
            }
            LocalState::Refused(reg) => return Err(endpoint_of(&reg).token_refused()),
            LocalState::Down { stale, crash } => {
                if let Some(exit) = &crash {
                    engine::report_crash_once(&ctx.paths, ctx.printer, stale.as_deref(), exit);
                }
                if target.start == StartPolicy::FailFast || started {
                    return Err(not_running(ctx, crash.as_deref()));
                }
                start_local(
                    ctx,
                    "no engine is running: starting it (as `breadboard engine start`)",
                    stale.as_deref(),
                )?;
                started = true;
            }
            LocalState::Waiting(why, crashed) => {
                if let Some(c) = crashed.as_deref() {
                    engine::report_crash_once(&ctx.paths, ctx.printer, Some(&c.0), &c.1);
                }
                if Instant::now() >= deadline {
                    return Err(CliError::new(
                        ErrorKind::EngineUnavailable,
                        format!("the local engine is not answering: {why}"),
                    )
                    .hint("breadboard engine status (breadboard engine logs -n 100 shows why)")
                    .into());
                }
                if said.as_deref() != Some(why.as_str()) {
                    ctx.printer.info(&format!("waiting for the engine: {why}"));
                    said = Some(why);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Whether an engine can be started here: an installed venv, or an engine command override.
fn installed(ctx: &Ctx) -> bool {
    let store = crate::venv::store::Store::new(&ctx.paths);
    engine::has_command_override(ctx) || store.current().is_some_and(|c| store.is_complete(&c))
}

fn not_installed(ctx: &Ctx) -> anyhow::Error {
    CliError::new(
        ErrorKind::EngineUnavailable,
        format!("no engine is installed in {}", ctx.paths.home.display()),
    )
    .hint("breadboard engine install")
    .into()
}

pub(crate) fn not_running(ctx: &Ctx, crash: Option<&LastExit>) -> anyhow::Error {
    if !installed(ctx) {
        return not_installed(ctx);
    }
    let why = crash.map_or_else(String::new, |e| format!(" (it ended: {})", e.how()));
    CliError::new(
        ErrorKind::EngineUnavailable,
        format!("no engine is running{why}"),
    )
    .hint("breadboard engine start")
    .into()
}

/// Starts the local engine exactly as `breadboard engine start` does (its output goes to the engine log).
/// `prev`: the engine that died, so that a restart serves where and how its clients look (its port and TLS; else
/// the configured ones).
pub(crate) fn start_local(
    ctx: &Ctx,
    why: &str,
    prev: Option<&Registration>,
) -> anyhow::Result<Registration> {
    if !installed(ctx) {
        return Err(not_installed(ctx));
    }
    ctx.printer.info(why);
    // As `breadboard engine start` with no flags would, but where and how the engine that died served. The client
    // commands' settings hold no start flags, but `--protocol`: that one is the client's handshake, not the start's,
    // whose mode is the one without it.
    let settings = &ctx.settings;
    let start_protocol = match settings.protocol.origin {
        Origin::Flag(_) => *settings::without_flags(&ctx.config).protocol.get()?,
        _ => *settings.protocol.get()?,
    };
    let opts = engine::StartOpts {
        port: match prev {
            Some(r) => engine::PortSpec::Fixed(r.port),
            None => settings.port.get()?.clone(),
        },
        host: settings::DEFAULT_HOST.to_owned(),
        ray_address: settings.ray_address.get()?.clone(),
        timeout: Duration::from_secs(60),
        foreground: false,
        protocol: start_protocol,
        allow_remote: false,
        tls: match prev.and_then(|r| r.tls.clone()) {
            Some(tls) => Some(tls),
            None => engine::tls_files(ctx, None, None)?,
        },
    };
    let lock = crate::lock::ControlLock::acquire(&ctx.paths, "breadboard (client)", ctx.printer)?;
    let started = engine::start_locked(ctx, &opts)?;
    drop(lock);
    if !started.already_running {
        ctx.printer.info(&format!(
            "engine started at {} (log: {})",
            started.reg.url,
            started.reg.log_path.display()
        ));
    }
    Ok(started.reg)
}

/// The local engine's handshake: its protocol, and its version against the pinned one (an engine command override
/// has no pinned version). Checked at connect, and again whenever a stream resumes on a new instance (an `engine
/// upgrade` or a restart may have put another version there).
pub(crate) fn check_local_handshake(
    ctx: &Ctx,
    endpoint: &Endpoint,
    reg: &Registration,
    health: &Health,
    mode: ProtocolMode,
) -> anyhow::Result<()> {
    let pinned = reg
        .engine_version
        .as_ref()
        .and(engine::pinned_version(&ctx.paths));
    check_handshake(ctx, endpoint, health, Some(pinned.as_deref()), mode)
}

/// Protocol and version: `pinned` is `Some` for the local engine (its version must be the pinned one, when one is
/// pinned), `None` for a remote one (its version must be in the range this CLI supports).
fn check_handshake(
    ctx: &Ctx,
    endpoint: &Endpoint,
    h: &Health,
    pinned: Option<Option<&str>>,
    mode: ProtocolMode,
) -> anyhow::Result<()> {
    let mut problems = engine::handshake_problems(h, pinned.flatten());
    if pinned.is_none() {
        problems.extend(engine::unsupported_version(h));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let at = endpoint.describe();
    if mode == ProtocolMode::Soft {
        for p in &problems {
            ctx.printer
                .warn(&format!("{at}: {p} (continuing: protocol mode soft)"));
        }
        return Ok(());
    }
    Err(CliError::new(
        ErrorKind::ProtocolMismatch,
        format!("handshake with {at} failed: {} (strict protocol mode)", problems.join("; ")),
    )
    .hint(if endpoint.is_local() {
        "breadboard engine restart  (runs the pinned version), or allow it with --protocol soft".to_owned()
    } else {
        "use an engine that speaks protocol 1.x in the supported range, or allow it with --protocol soft"
            .to_owned()
    })
    .into())
}
