//! What `engine start` is told: the port, the host (loopback unless allowed), the restart policy, the TLS files.
//! The values themselves are resolved in `crate::settings`; this checks them for a start.

use std::path::PathBuf;

use crate::context::Ctx;
use crate::engine::registration::TlsFiles;
use crate::error::{CliError, ErrorKind};
use crate::settings;

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

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSpec::Auto => f.write_str("auto"),
            PortSpec::Fixed(p) => write!(f, "{p}"),
        }
    }
}

pub(crate) const DEFAULT_PORT: u16 = 9099;

/// The port `engine start` uses without `--port`: env `BREADBOARD_CLI_PORT`, else config `engine.port`, else 9099.
pub(crate) fn configured_port(config: &crate::config::Config) -> anyhow::Result<u16> {
    match settings::without_flags(config).port.get()? {
        PortSpec::Fixed(p) => Ok(*p),
        // Only `--port` says `auto`, and there are no flags here.
        PortSpec::Auto => Ok(DEFAULT_PORT),
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
/// Without flags here, the command's settings say (they hold the command's own flags).
pub(crate) fn tls_files(
    ctx: &Ctx,
    cert_flag: Option<PathBuf>,
    key_flag: Option<PathBuf>,
) -> anyhow::Result<Option<TlsFiles>> {
    let pair = if cert_flag.is_some() || key_flag.is_some() {
        let flags = settings::Flags {
            ssl_certfile: cert_flag,
            ssl_keyfile: key_flag,
            ..Default::default()
        };
        let config_file = ctx.paths.config_file();
        let source = settings::ConfigSource {
            config: &ctx.config,
            file: &config_file,
        };
        settings::tls_pair(&flags, &settings::Env::process(), source)
    } else {
        ctx.settings.tls.clone()
    };
    let from = pair.from;
    let Some((certfile, keyfile)) = pair.files()? else {
        return Ok(None);
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
