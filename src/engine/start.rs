//! `engine start` under the control lock: spawn the supervisor, wait for the handshake; a start that fails
//! leaves nothing running.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::compat;
use crate::context::Ctx;
use crate::engine::registration::{self, Registration};
use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::fsutil;
use crate::os::sys;
use crate::paths::Paths;
use crate::printer::Printer;
use crate::supervisor;

use super::*;

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
    pub tls: Option<crate::engine::registration::TlsFiles>,
}

pub struct Started {
    pub reg: Registration,
    pub already_running: bool,
    pub version: Option<String>,
    /// `--foreground`: everything is prepared; the caller releases the control lock and calls [`run_foreground`].
    pub foreground: Option<ForegroundPlan>,
}

pub struct ForegroundPlan {
    pub(super) argv: Vec<String>,
    pub(super) listener: Option<TcpListener>,
    pub(super) listen_fd: Option<i32>,
    pub(super) restart: &'static str,
    pub(super) env: Vec<(String, String)>,
    pub(super) opts: StartOpts,
    /// `run/engine.lock`, taken under the control lock and handed to the supervisor loop.
    pub(super) instance_lock: Option<std::fs::File>,
}

/// `engine start` under the control lock (also used by restart and upgrade).
pub(crate) fn start_locked(ctx: &Ctx, opts: &StartOpts) -> anyhow::Result<Started> {
    let paths = &ctx.paths;
    let printer = ctx.printer;
    // Before any side effect (callers check them in their option parsing too): a config error is said as such,
    // even when nothing could be started anyway.
    check_host(&opts.host, opts.allow_remote)?;
    let restart_policy = *ctx.settings.restart.get()?;
    paths.ensure_private(printer)?;
    let diagnosis = diagnose(paths, Some(printer), true)?;
    if diagnosis.is_live() {
        return already_live(paths, printer, diagnosis, opts.timeout);
    }
    if let Some(exit) = diagnosis.crash() {
        report_crash_once(paths, printer, diagnosis.stale(), exit);
        printer.info("starting a new engine");
    }
    clean_stale(paths, diagnosis.stale(), printer);
    // `--foreground`: this process becomes the supervisor. It takes the instance lock now, under the control lock,
    // so no other start can slip in between the caller releasing the control lock and the supervisor loop starting.
    let instance_lock = if opts.foreground {
        Some(take_instance_lock(paths)?)
    } else {
        None
    };
    let launch = resolve_launch(ctx)?;
    let listener = bind(&opts.host, &opts.port)?;
    let plan = prepare(ctx, opts, &launch, &listener)?;
    if opts.foreground {
        return Ok(Started {
            reg: plan.reg,
            already_running: false,
            version: launch.version,
            foreground: Some(ForegroundPlan {
                argv: plan.argv,
                listener: (!launch.port_by_env).then_some(listener),
                listen_fd: plan.listen_fd,
                restart: restart_policy,
                env: plan.env,
                opts: opts.clone(),
                instance_lock,
            }),
        });
    }
    // With the port passed by env, the listener is freed just before the spawn (the override engine binds it itself).
    let listener = (!launch.port_by_env).then_some(listener);
    let reg = spawn_and_wait(
        ctx,
        opts,
        restart_policy,
        &plan,
        listener,
        launch.version.as_deref(),
    )?;
    Ok(Started {
        reg,
        already_running: false,
        version: launch.version,
        foreground: None,
    })
}

fn take_instance_lock(paths: &Paths) -> anyhow::Result<std::fs::File> {
    supervisor::take_instance_lock(paths).map_err(|why| {
        CliError::new(ErrorKind::Failure, why)
            .hint(format!(
                "breadboard engine status; find the holder with: fuser -v {}",
                paths.engine_lock().display()
            ))
            .into()
    })
}

/// What a start hands its supervisor (or, `--foreground`, this process): the registration it will write, the
/// engine's argv and environment, and the fd of the socket the engine inherits.
struct Plan {
    reg: Registration,
    argv: Vec<String>,
    listen_fd: Option<i32>,
    env: Vec<(String, String)>,
}

/// The new instance: its id and token (written 0600), its address as bound, its log (rotated), argv and environment.
fn prepare(
    ctx: &Ctx,
    opts: &StartOpts,
    launch: &Launch,
    listener: &TcpListener,
) -> anyhow::Result<Plan> {
    let paths = &ctx.paths;
    let token = fsutil::random_hex(32)?;
    fsutil::write_private(&paths.token_file(), token.as_bytes())?;
    paths.ensure_logs_dir()?;
    supervisor::rotate(&paths.engine_log());
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
    let ray_start = ctx.settings.ray_start.get()?.as_deref();
    let (ray_start, ray_start_override) = ray_start_mode(opts, ray_start, ctx.printer);
    let mut reg = registration_for(paths, opts, launch, listener.local_addr()?)?;
    reg.command = argv.clone();
    reg.ray_start = Some(ray_start);
    let env = engine_env(
        paths,
        &reg,
        launch.port_by_env.then_some(token.as_str()),
        ray_start_override,
    );
    Ok(Plan {
        reg,
        argv,
        listen_fd,
        env,
    })
}

/// The registration of a new instance bound to `local`, as the supervisor will write it.
fn registration_for(
    paths: &Paths,
    opts: &StartOpts,
    launch: &Launch,
    local: std::net::SocketAddr,
) -> anyhow::Result<Registration> {
    let port = local.port();
    // The registration (and so every client, and an override engine's BREADBOARD_CLI_HOST) names the address the
    // socket is bound to, never a name: `localhost` may resolve to ::1 first while the engine listens on 127.0.0.1.
    let host = local.ip().to_string();
    let url_host = if local.is_ipv6() {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(Registration {
        schema: registration::SCHEMA,
        instance_id: fsutil::uuid4()?,
        url: format!(
            "{}://{url_host}:{port}",
            if opts.tls.is_some() { "https" } else { "http" }
        ),
        host,
        port,
        tls: opts.tls.clone(),
        token_file: paths.token_file(),
        engine_version: launch.version.clone(),
        protocol_version: compat::PROTOCOL_VERSION.to_owned(),
        venv: launch.venv.clone(),
        log_path: paths.engine_log(),
        ray_address: opts.ray_address.clone(),
        foreground: opts.foreground,
        cli_version: crate::build_info::VERSION.to_owned(),
        ..Default::default()
    })
}

/// Spawns `breadboard __supervise` in a new session with the engine's socket, then waits for the handshake.
fn spawn_and_wait(
    ctx: &Ctx,
    opts: &StartOpts,
    restart_policy: &str,
    plan: &Plan,
    listener: Option<TcpListener>,
    pinned: Option<&str>,
) -> anyhow::Result<Registration> {
    let paths = &ctx.paths;
    let log = supervisor::open_log(&plan.reg.log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("__supervise").arg("--restart").arg(restart_policy);
    if let Some(fd) = plan.listen_fd {
        cmd.arg("--listen-fd").arg(fd.to_string());
    }
    cmd.arg("--").args(&plan.argv);
    apply_engine_env(&mut cmd, &plan.env);
    cmd.env(supervisor::SPEC_ENV, serde_json::to_string(&plan.reg)?)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&paths.home);
    sys::pre_exec_setsid(&mut cmd);
    let spawn_at = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not spawn the supervisor: {e}"))?;
    drop(cmd);
    drop(listener);
    let mut steps = ctx.printer.steps(3);
    steps.step("starting the engine");
    let ready = wait_ready(
        ctx,
        &plan.reg.instance_id,
        pinned,
        opts,
        &mut child,
        spawn_at,
        &mut steps,
    );
    steps.finish();
    ready
}

/// The engine's Ray start mode (background | lazy | off; `ray_start`: the setting, env BREADBOARD_RAY_START), and the
/// value to pass when it is not the environment's: joining a cluster needs Ray, so `off` would silently ignore the
/// address; it gives way to `background`, with a warning.
fn ray_start_mode(
    opts: &StartOpts,
    ray_start: Option<&str>,
    printer: &Printer,
) -> (String, Option<&'static str>) {
    match (&opts.ray_address, ray_start) {
        (Some(addr), Some("off")) => {
            printer.warn(&format!(
                "BREADBOARD_RAY_START=off is ignored: the engine joins the Ray cluster at {addr} (--ray-address or ray.address)"
            ));
            ("background".to_owned(), Some("background"))
        }
        (_, Some(mode)) => (mode.to_owned(), None),
        (_, None) => ("background".to_owned(), None),
    }
}

/// What the engine's environment gets from this start: its identity, token file, data dir, address, home, Ray and
/// TLS settings. `token`: the token itself, for an engine command override (the upstream env contract has no token
/// file).
fn engine_env(
    paths: &Paths,
    reg: &Registration,
    token: Option<&str>,
    ray_start_override: Option<&str>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("BREADBOARD_INSTANCE_ID".into(), reg.instance_id.clone()),
        (
            "BREADBOARD_API_TOKEN_FILE".into(),
            reg.token_file.display().to_string(),
        ),
        (
            "BREADBOARD_DATA_DIR".into(),
            paths.data_dir().display().to_string(),
        ),
        ("BREADBOARD_CLI_HOST".into(), reg.host.clone()),
        ("BREADBOARD_CLI_PORT".into(), reg.port.to_string()),
        ("BREADBOARD_HOME".into(), paths.home.display().to_string()),
    ];
    if let Some(token) = token {
        env.push(("BREADBOARD_API_TOKEN".into(), token.to_owned()));
    }
    if let Some(addr) = &reg.ray_address {
        env.push(("BREADBOARD_RAY_ADDRESS".into(), addr.clone()));
    }
    if let Some(tls) = &reg.tls {
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
    if !is_loopback(&reg.host) {
        // The engine itself refuses a remote bind without a token; it has one.
        env.push(("BREADBOARD_ALLOW_INSECURE_REMOTE".into(), "0".into()));
    }
    env
}

/// What the engine never inherits from the CLI's environment: another cluster's address, another engine's mark
/// or token, and TLS files (the engine serves TLS exactly when this start says so: its registration says https
/// then). What this start means it to have is in [`engine_env`].
pub(super) const NOT_INHERITED: [&str; 7] = [
    "RAY_ADDRESS",
    env_vars::BREADBOARD_ENGINE_MARK,
    "BREADBOARD_API_TOKEN",
    "BREADBOARD_RAY_ADDRESS",
    "BREADBOARD_ALLOW_INSECURE_REMOTE",
    env_vars::BREADBOARD_SSL_CERTFILE,
    env_vars::BREADBOARD_SSL_KEYFILE,
];

/// The engine's environment: the CLI's without [`NOT_INHERITED`], plus [`engine_env`].
fn apply_engine_env(cmd: &mut Command, env: &[(String, String)]) {
    for k in NOT_INHERITED {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}
