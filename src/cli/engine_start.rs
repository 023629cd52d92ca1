//! `breadboard engine start`: spawns the supervisor (detached) which spawns the engine; waits for the handshake.
//! Idempotent: a healthy, compatible engine already running is reported and left alone.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::Ctx;
use crate::engine::registration::Registration;
use crate::engine::{self, PortSpec, ProtocolMode, StartOpts, Started};
use crate::error::{CliError, ErrorKind};
use crate::lock::ControlLock;

#[derive(Debug, clap::Args, Clone)]
pub struct StartArgs {
    /// Port to serve on, or `auto` for a free one
    #[arg(long, value_name = "P|auto")]
    pub port: Option<PortSpec>,
    /// Address to bind (loopback by default; anything else needs --allow-remote)
    #[arg(long, value_name = "H", default_value = "127.0.0.1")]
    pub host: String,
    /// Join this existing Ray cluster instead of starting a local Ray (config ray.address)
    #[arg(long, value_name = "ADDR")]
    pub ray_address: Option<String>,
    /// Run attached: logs to the terminal, Ctrl-C stops it
    #[arg(long)]
    pub foreground: bool,
    /// Seconds to wait for the engine's handshake
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub timeout: f64,
    /// Handshake mode: strict fails on a version mismatch, soft warns
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolMode>,
    /// Confirm serving on a non-loopback address (the engine always requires its token)
    #[arg(long)]
    pub allow_remote: bool,
    /// Serve HTTPS with this PEM certificate (chain); needs --ssl-keyfile (env BREADBOARD_SSL_CERTFILE, config
    /// engine.ssl_certfile)
    #[arg(long, value_name = "FILE")]
    pub ssl_certfile: Option<PathBuf>,
    /// The certificate's unencrypted PEM private key, mode 0600 (env BREADBOARD_SSL_KEYFILE, config
    /// engine.ssl_keyfile)
    #[arg(long, value_name = "FILE")]
    pub ssl_keyfile: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
pub struct StartJson<'a> {
    pub action: &'a str,
    pub url: &'a str,
    pub pid: i32,
    pub supervisor_pid: i32,
    pub instance_id: &'a str,
    pub engine_version: Option<&'a str>,
    pub log_path: String,
}

/// The start options; every usage error (exit 2) is found here, before any lock is taken or anything changes. A value
/// `args` gives wins, else the command's settings say: `args` are the command's own flags for `engine start|restart`,
/// and where the crashed engine served for `engine status` (whose settings have no start flags).
pub fn opts(ctx: &Ctx, args: &StartArgs) -> anyhow::Result<StartOpts> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(CliError::new(
            ErrorKind::Usage,
            "--timeout must be a positive number of seconds",
        )
        .into());
    }
    engine::check_host(&args.host, args.allow_remote)?;
    let settings = &ctx.settings;
    settings.restart.get()?;
    Ok(StartOpts {
        port: match &args.port {
            Some(port) => port.clone(),
            None => settings.port.get()?.clone(),
        },
        host: args.host.clone(),
        ray_address: match &args.ray_address {
            Some(a) => Some(a.clone()).filter(|a| !a.is_empty()),
            None => settings.ray_address.get()?.clone(),
        },
        timeout: Duration::from_secs_f64(args.timeout),
        foreground: args.foreground,
        protocol: match args.protocol {
            Some(mode) => mode,
            None => *settings.protocol.get()?,
        },
        allow_remote: args.allow_remote,
        tls: engine::tls_files(ctx, args.ssl_certfile.clone(), args.ssl_keyfile.clone())?,
    })
}

fn print_json(ctx: &Ctx, r: &Registration, action: &str, version: Option<&str>) {
    ctx.printer.json(&StartJson {
        action,
        url: &r.url,
        pid: r.pid,
        supervisor_pid: r.supervisor_pid,
        instance_id: &r.instance_id,
        engine_version: version,
        log_path: r.log_path.display().to_string(),
    });
}

pub fn report(ctx: &Ctx, started: &Started, json: bool, verb: &str) {
    let r = &started.reg;
    let action = if started.already_running {
        "already_running"
    } else {
        verb
    };
    if json {
        print_json(ctx, r, action, started.version.as_deref());
        return;
    }
    let version = started.version.as_deref().unwrap_or("(command override)");
    if started.already_running {
        ctx.printer.result(&format!(
            "engine already running at {} (pid {}, engine {version})",
            r.url, r.pid
        ));
    } else {
        ctx.printer.result(&format!(
            "engine {verb} at {} (pid {}, engine {version})",
            r.url, r.pid
        ));
        ctx.printer.info(&format!("log: {}", r.log_path.display()));
    }
}

/// After `start_locked` and the release of the control lock: reports a detached start, or runs a foreground one
/// (whose `--json` document is printed once its engine is ready; its engine output goes to stderr).
pub fn finish(ctx: &Ctx, started: Started, json: bool, verb: &str) -> anyhow::Result<u8> {
    if started.foreground.is_some() {
        let version = started.version.clone();
        let mut on_ready = |r: &Registration| {
            if json {
                print_json(ctx, r, verb, version.as_deref());
            }
        };
        return engine::run_foreground(ctx, started, &mut on_ready);
    }
    report(ctx, &started, json, verb);
    Ok(0)
}

pub fn run(ctx: &Ctx, args: &StartArgs) -> anyhow::Result<u8> {
    let opts = opts(ctx, args)?;
    let lock = ControlLock::acquire(&ctx.paths, "breadboard engine start", ctx.printer)?;
    let started = engine::start_locked(ctx, &opts)?;
    // The control lock covers the start only; the instance lock covers the engine's life (a foreground start took
    // it under the control lock).
    drop(lock);
    if started.already_running {
        warn_unapplied(ctx, args, &started.reg);
    }
    finish(ctx, started, args.json, "started")
}

/// Flags the running engine was not started with are not applied by a start that finds it running: say so.
fn warn_unapplied(ctx: &Ctx, args: &StartArgs, reg: &Registration) {
    let mut differ = Vec::new();
    if let Some(PortSpec::Fixed(port)) = args.port {
        if port != reg.port {
            differ.push(format!("--port {port} (it uses {})", reg.port));
        }
    }
    if let Some(addr) = args.ray_address.as_deref() {
        if reg.ray_address.as_deref() != Some(addr) {
            differ.push(format!("--ray-address {addr}"));
        }
    }
    if (args.ssl_certfile.is_some() || args.ssl_keyfile.is_some())
        && reg.tls.as_ref().map(|t| &t.certfile) != args.ssl_certfile.as_ref()
    {
        differ.push("--ssl-certfile/--ssl-keyfile".to_owned());
    }
    if !differ.is_empty() {
        ctx.printer.warn(&format!(
            "the engine was already running, so {} was not applied; to apply it, run `breadboard engine restart` with the same flags",
            differ.join(" and ")
        ));
    }
}
