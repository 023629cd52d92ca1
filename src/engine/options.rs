//! What `engine start` is told: the port, the host (loopback unless allowed), the restart policy, the TLS files.

use std::path::PathBuf;

use crate::config;
use crate::context::Ctx;
use crate::env_vars;
use crate::error::{CliError, ErrorKind};
use crate::registration::TlsFiles;

/// `[engine] restart` of config.toml: the supervisor's restart policy (doctor checks it with the same code).
pub(crate) fn restart_policy(config: &crate::config::Config) -> anyhow::Result<&'static str> {
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

pub(crate) const DEFAULT_PORT: u16 = 9099;

/// The port `engine start` uses without `--port`: env `BREADBOARD_CLI_PORT`, else config `engine.port`, else 9099.
pub(crate) fn configured_port(config: &crate::config::Config) -> anyhow::Result<u16> {
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

/// `localhost`, `127.x.y.z`, `::1` or `[::1]`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = strip_brackets(host);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[::1]` -> `::1` (only a matching pair is removed).
pub(super) fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `--host` other than loopback needs `--allow-remote` (exit 2). Checked before anything else happens, so it is a
/// usage error even when an engine already runs.
pub(crate) fn check_host(host: &str, allow_remote: bool) -> anyhow::Result<()> {
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

/// The TLS files: flags > env > config, each pair from one place; both or neither, made absolute (the supervisor
/// runs elsewhere), the certificate readable as PEM. The engine checks the key itself (its mode, that it matches).
pub(crate) fn tls_files(
    ctx: &Ctx,
    cert_flag: Option<PathBuf>,
    key_flag: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    let (cert, key, from) = if cert_flag.is_some() || key_flag.is_some() {
        (cert_flag, key_flag, "--ssl-certfile and --ssl-keyfile")
    } else if env_vars::get(env_vars::BREADBOARD_SSL_CERTFILE).is_some()
        || env_vars::get(env_vars::BREADBOARD_SSL_KEYFILE).is_some()
    {
        (
            env_vars::get(env_vars::BREADBOARD_SSL_CERTFILE).map(PathBuf::from),
            env_vars::get(env_vars::BREADBOARD_SSL_KEYFILE).map(PathBuf::from),
            "BREADBOARD_SSL_CERTFILE and BREADBOARD_SSL_KEYFILE",
        )
    } else {
        let (cert, key) = config::engine_tls_files(&ctx.config, &ctx.paths.config_file());
        (
            cert,
            key,
            "engine.ssl_certfile and engine.ssl_keyfile in config.toml",
        )
    };
    let (certfile, keyfile) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(CliError::new(
                ErrorKind::Usage,
                format!("serving TLS needs both the certificate and its private key: {from}"),
            )
            .into())
        }
    };
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let (certfile, keyfile) = (absolute(certfile), absolute(keyfile));
    if let Err(e) = crate::http::read_certs(&certfile) {
        return Err(CliError::new(ErrorKind::Usage, format!("{e:#}"))
            .hint(format!("give a PEM certificate (chain) file ({from})"))
            .into());
    }
    if !keyfile.is_file() {
        return Err(CliError::new(
            ErrorKind::Usage,
            format!("the TLS private key {} does not exist", keyfile.display()),
        )
        .hint(format!("give the certificate's PEM private key ({from})"))
        .into());
    }
    Ok(Some(TlsFiles { certfile, keyfile }))
}
